"""Backbone preprocessing of the official run (``docs/tinytl.md`` §4), all pure.

* ``replace_bn_with_gn``: every BatchNorm2d → GroupNorm with 8 channels per group (step 2).
* ``apply_weight_standardization``: every bias-free conv → ``WSConv2d`` (step 7).
* ``fold_weight_standardization``: ``WSConv2d`` → plain Conv2d holding the standardised weight
  (exact up to float rounding; this is how a WS model exports).
* ``kmeans_quantize_frozen``: 8-bit k-means of frozen Conv/Linear weights (step 6).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

_log = logging.getLogger(__name__)
WS_EPS = 1e-5


def _replace_modules(model: nn.Module, want, make) -> nn.Module:
    new = copy.deepcopy(model)
    for name, module in list(new.named_modules()):
        if want(module):
            new.set_submodule(name, make(module))
    return new


def channels_per_group(channels: int, target: int = 8) -> int:
    """ofa ``min_divisible_value``: the largest divisor of ``channels`` that is <= ``target``."""
    if target >= channels:
        return channels
    while channels % target:
        target -= 1
    return target


def replace_bn_with_gn(model: nn.Module, group_channels: int = 8) -> nn.Module:
    """A copy with each BatchNorm2d replaced by GroupNorm (affine weight/bias and eps copied)."""

    def make(bn: nn.BatchNorm2d) -> nn.GroupNorm:
        groups = bn.num_features // channels_per_group(bn.num_features, group_channels)
        gn = nn.GroupNorm(groups, bn.num_features, eps=bn.eps, affine=True)
        with torch.no_grad():
            gn.weight.copy_(bn.weight)
            gn.bias.copy_(bn.bias)
        gn.weight.requires_grad_(bn.weight.requires_grad)
        gn.bias.requires_grad_(bn.bias.requires_grad)
        return gn

    return _replace_modules(model, lambda m: isinstance(m, nn.BatchNorm2d), make)


def standardize(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """Per output filter: subtract the mean, divide by (unbiased std + eps) (ofa MyConv2d)."""
    centred = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
    std = centred.flatten(1).std(dim=1).view(-1, 1, 1, 1) + eps
    return centred / std


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardisation applied on the fly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, standardize(self.weight), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


def _copy_conv(conv: nn.Conv2d, cls: type) -> nn.Conv2d:
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
              conv.dilation, conv.groups, bias=conv.bias is not None)
    new.load_state_dict(conv.state_dict())
    new.weight.requires_grad_(conv.weight.requires_grad)
    return new


def apply_weight_standardization(model: nn.Module) -> nn.Module:
    """A copy in which every bias-free Conv2d standardises its weight (docs/tinytl.md §4 step 7).

    Convs with a single input channel per filter and k=1 are skipped (std of one value is NaN).
    """

    def want(m):
        return (type(m) is nn.Conv2d and m.bias is None
                and m.weight[0].numel() > 1)

    return _replace_modules(model, want, lambda c: _copy_conv(c, WSConv2d))


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """A copy in which each WSConv2d becomes a plain Conv2d with the standardised weight."""

    def make(conv: WSConv2d) -> nn.Conv2d:
        plain = _copy_conv(conv, nn.Conv2d)
        with torch.no_grad():
            plain.weight.copy_(standardize(conv.weight))
        return plain

    return _replace_modules(model, lambda m: isinstance(m, WSConv2d), make)


def has_group_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.GroupNorm) for m in model.modules())


def kmeans_quantize_frozen(model: nn.Module, bits: int = 8, max_iter: int = 20,
                           seed: int = 0) -> nn.Module:
    """A copy whose frozen Conv/Linear weights are replaced by their 2^bits k-means centroids
    (per layer, one scalar per weight; sklearn KMeans, k-means++ init, n_init 1; §4 step 6)."""
    from sklearn.cluster import KMeans

    new = copy.deepcopy(model)
    for module in new.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or module.weight.requires_grad:
            continue
        values = module.weight.detach().reshape(-1, 1).double().numpy()
        clusters = min(2 ** bits, len(set(values[:, 0].tolist())))
        km = KMeans(clusters, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed)
        labels = km.fit_predict(values)
        centroids = torch.from_numpy(km.cluster_centers_[labels, 0]).to(module.weight.dtype)
        with torch.no_grad():
            module.weight.copy_(centroids.view_as(module.weight))
    return new

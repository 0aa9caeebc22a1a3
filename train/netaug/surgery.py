"""Pure surgeries on the NetAug supernet: base extraction and channel sorting.

* ``extract_base_subnet(supernet) -> MBNet``: every tensor of the base model is the leading slice
  of the supernet's tensor (docs/netaug.md §1.8, pitfall 13); the classifier bias is taken whole.
* ``sort_channels(supernet)`` / ``sort_channels_``: reorder the inner (expanded) channels of every
  MB block by the L1 norm of the projection conv's input slices over the full max-size tensor
  (docs/netaug.md §1.5, reference ``models/netaug/utils.py::sort_channels_inner``). The permutation is
  applied consistently to the expand conv (out dim) and its BN, the depthwise conv and its BN, and
  the projection conv (in dim), so the function of every sub-network is unchanged.

  Optimizer momentum is **not** permuted, as in the reference: after a sort the momentum of the
  inner-channel tensors is misaligned for the next few steps (pitfall 7). We keep this on purpose
  so that training follows the reference; it only affects the first steps of an epoch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tinyexport.train.models.mbnet import MBNet
from tinyexport.train.netaug.supernet import NetAugSupernet


def extract_base_subnet(supernet: NetAugSupernet) -> MBNet:
    """A new plain ``MBNet`` holding the base sub-network's weights and BN statistics (pure).

    The new module's init (overwritten at once) draws from a forked RNG: extraction runs before
    every evaluation, and must not shift the training run's augmentation stream (resume and seeds
    stay exact)."""
    with torch.random.fork_rng(devices=[]):
        base = MBNet(supernet.spec)
    source = supernet.state_dict()
    sliced = {}
    for key, target in base.state_dict().items():
        tensor = source[key]
        if tensor.dim() != target.dim():
            raise AssertionError(f"{key}: supernet rank {tensor.dim()} vs base {target.dim()}")
        index = tuple(slice(0, n) for n in target.shape)
        sliced[key] = tensor[index].clone() if target.dim() else tensor.clone()
    base.load_state_dict(sliced, strict=True)
    base.train(supernet.training)
    return base.to(next(supernet.parameters()).device)


@torch.no_grad()
def sort_channels_(supernet: NetAugSupernet) -> NetAugSupernet:
    """In-place channel sorting of every MB block's mid channels (see module docstring)."""
    for block in supernet.blocks:
        if block.expand is None:  # the DS block has no inner channels (§1.5)
            continue
        importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        block.project.conv.weight.copy_(block.project.conv.weight[:, order])
        block.depthwise.conv.weight.copy_(block.depthwise.conv.weight[order])
        block.expand.conv.weight.copy_(block.expand.conv.weight[order])
        for bn in (block.depthwise.bn, block.expand.bn):
            _permute_bn_(bn, order)
    return supernet


def _permute_bn_(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        tensor.copy_(tensor[order])


def sort_channels(supernet: NetAugSupernet) -> NetAugSupernet:
    """Pure variant of :func:`sort_channels_` (returns a sorted deep copy)."""
    return sort_channels_(copy.deepcopy(supernet))

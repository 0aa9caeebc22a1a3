"""BatchNorm statistics re-estimation (``docs/netaug.md`` §1.7, NetAug ``reset_bn``).

Procedure (§1.7): deep-copy the model, eval mode, no grad; every ``BatchNorm2d`` normalises each
batch with that batch's own per-channel mean and *biased* variance (as train-mode BN does, so later
layers see train-like inputs), while the per-batch means and variances are averaged over batches
weighted by batch size (and across ranks with ``all_reduce`` when ``sync`` is set and
``torch.distributed`` is initialised). The averages are then written into ``running_mean`` /
``running_var``. This is an average of per-batch biased variances, not PyTorch's unbiased
cumulative estimate.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


class _BatchStats:
    """Sums of per-batch mean / variance, weighted by batch size."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.mean_sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self.var_sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)


def _distributed_sync(sync: bool) -> bool:
    return bool(sync and torch.distributed.is_available() and torch.distributed.is_initialized())


def _batch_moments(x: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean over (N,H,W) and biased variance around it; averaged over ranks (equal
    weight, §1.7 steps 2–3) when ``sync``."""
    mean = x.mean(dim=(0, 2, 3))
    if sync:
        torch.distributed.all_reduce(mean)
        mean = mean / torch.distributed.get_world_size()
    var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    if sync:
        torch.distributed.all_reduce(var)
        var = var / torch.distributed.get_world_size()
    return mean, var


def _recording_forward(bn: nn.BatchNorm2d, stats: _BatchStats, sync: bool):
    def forward(x: torch.Tensor) -> torch.Tensor:
        mean, var = _batch_moments(x, sync)
        batch = x.shape[0]
        stats.mean_sum += mean.double() * batch
        stats.var_sum += var.double() * batch
        stats.count += batch
        return nn.functional.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

    return forward


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable[torch.Tensor], sync: bool = False
                  ) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``batches``.

    Args:
        model: any module; it is not modified.
        batches: input tensors (N,C,H,W), e.g. calibration images with train-style transforms.
        sync: average statistics across ranks when ``torch.distributed`` is initialised.

    Returns:
        The re-estimated copy, in eval mode.

    Raises:
        ValueError: when ``batches`` is empty (nothing to estimate from).
    """
    sync = _distributed_sync(sync)
    new = copy.deepcopy(model).eval()
    recorders: dict[nn.BatchNorm2d, _BatchStats] = {}
    for module in new.modules():
        if isinstance(module, nn.BatchNorm2d):
            stats = _BatchStats(module.num_features, module.running_mean.device)
            recorders[module] = stats
            module.forward = _recording_forward(module, stats, sync)
    seen = 0
    for batch in batches:
        new(batch)
        seen += 1
    if seen == 0:
        raise ValueError("reestimate_bn needs at least one batch of images, got none")
    for module, stats in recorders.items():
        del module.forward  # back to the class method
        if stats.count > 0:  # a BN not on the forward path keeps its statistics
            _weighted_average_into(module, stats, sync)
    return new


def _weighted_average_into(bn: nn.BatchNorm2d, stats: _BatchStats, sync: bool) -> None:
    """§1.7 steps 5–6: batch-size-weighted averages into ``running_mean`` / ``running_var``."""
    count = stats.count
    if sync:  # the weighting is by local batch size; sum the weighted sums across ranks
        for tensor in (stats.mean_sum, stats.var_sum, count):
            torch.distributed.all_reduce(tensor)
    bn.running_mean.copy_((stats.mean_sum / count).to(bn.running_mean.dtype))
    bn.running_var.copy_((stats.var_sum / count).to(bn.running_var.dtype))

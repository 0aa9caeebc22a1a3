"""Top-1 evaluation over a DataLoader, summed across DDP ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from tinyexport.train.task import AMP_DTYPES, autocast, to_device


@torch.no_grad()
def evaluate_top1(module: nn.Module, loader, device: torch.device | str,
                  amp: str | None = None, channels_last: bool = False) -> dict:
    """Top-1 (percent) and plain CE loss over ``loader``, summed across ranks.

    Returns:
        ``{"top1": percent, "loss": mean cross-entropy, "images": count}``.
    """
    device = torch.device(device)
    module.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, count
    for images, labels in loader:
        images, labels = to_device(images, labels, device, channels_last)
        with autocast(device.type, AMP_DTYPES[amp] if amp else None):
            logits = module(images).float()
        totals[0] += (logits.argmax(1) == labels).sum()
        totals[1] += nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[2] += labels.shape[0]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    count = max(float(totals[2]), 1.0)
    return {"top1": 100.0 * float(totals[0]) / count, "loss": float(totals[1]) / count,
            "images": int(totals[2])}

"""Optimiser helpers: parameter groups, the per-iteration warmup-cosine LR, the AMP-aware step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on BN parameters and biases (1-D tensors) (docs/netaug.md §4, pitfall 10)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, peak_lr: float, start_factor: float,
                  warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (docs/netaug.md §4, pitfall 9): linear warmup from
    ``start_factor × peak_lr`` to ``peak_lr`` over ``warmup_steps``, then cosine from peak to 0 at
    ``total_steps``. The reference's 16-GPU run ramps 0.025 → 0.4 (``start_factor`` 1/16); a ramp
    whose start is tied to the world size vanishes on one process, so the start is a factor here.
    Sets the optimizer's lr to the schedule's step-0 value.

    Raises:
        ValueError: when ``total_steps`` does not exceed ``warmup_steps``, or ``start_factor`` is
            not in (0, 1].
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"start_factor must be in (0, 1], got {start_factor!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start_factor + (1.0 - start_factor) * step / warmup_steps
        t = (step - warmup_steps) / (total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    for group in optimizer.param_groups:
        group["lr"] = peak_lr
        group["initial_lr"] = peak_lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any | None) -> None:
    """``optimizer.step()``, through the fp16 ``GradScaler`` when there is one."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]

"""The step protocol between the training loop and what it trains.

A :class:`TrainTask` supplies the per-step computation (``train_step``), the per-epoch hook
(``on_epoch_start``), evaluation, the ``best.pt`` payload and its own resumable state; the
:class:`~tinyexport.train.trainer.Trainer` does everything else. NetAug
(``tinyexport.train.netaug.task``) and TinyTL (``tinyexport.train.tinytl.transfer``) subclass it.

A custom step overrides ``train_step(ctx)``: it runs forwards under ``ctx.autocast()``, calls
``ctx.backward(loss)`` (inside ``with ctx.no_sync():`` for a pass whose gradient should be
accumulated without an all-reduce) and returns a :class:`StepResult`. The trainer zeroes gradients
before and steps the optimizer/scheduler after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tinyexport.train.checkpoint_format import make_payload

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, amp_dtype: torch.dtype | None):
    """``torch.autocast`` for ``amp_dtype``, or a no-op context when it is None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=amp_dtype)


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device`` (images in channels_last memory format if asked)."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


@dataclass(frozen=True)
class StepResult:
    """What a step reports: the logged loss (a tensor, checked for NaN/Inf) and the logits used
    for the logged top-1 (or None)."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass
class StepContext:
    """Handed to ``TrainTask.train_step``: the (possibly DDP-wrapped / compiled) model, the raw
    module, the batch on the device, and AMP/DDP-aware helpers."""

    model: nn.Module
    module: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    epoch: int
    step: int
    device_type: str
    amp_dtype: torch.dtype | None
    scaler: Any | None

    def autocast(self):
        return autocast(self.device_type, self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def no_sync(self):
        """Accumulate this pass's gradient locally (DDP ``no_sync``); a no-op without DDP."""
        sync_off = getattr(self.model, "no_sync", None)
        return sync_off() if sync_off is not None else contextlib.nullcontext()


def _cuda_devices(module: nn.Module) -> list[int]:
    """The CUDA devices whose RNG ``module``'s evaluation could draw from ([] on CPU)."""
    param = next(module.parameters(), None)
    if param is None or param.device.type != "cuda":
        return []
    return [param.device.index if param.device.index is not None else torch.cuda.current_device()]


class TrainTask:
    """Plain supervised step (one forward, one backward). Subclass to change the step.

    Args:
        criterion: loss on (logits, labels), e.g. label-smoothed cross-entropy.
        evaluate_fn: ``(module, epoch) -> dict`` with at least ``top1`` (percent), or None.
    """

    #: Why ``torch.compile`` cannot pay off for this task (the Trainer refuses ``--compile`` with
    #: it), or None.
    compile_refusal: str | None = None

    def __init__(self, criterion: nn.Module,
                 evaluate_fn: Callable[[nn.Module, int], dict] | None = None):
        self.criterion = criterion
        self.evaluate_fn = evaluate_fn

    def on_epoch_start(self, module: nn.Module, epoch: int) -> None:
        """Called on every rank before an epoch (after resume too). Default: nothing."""

    def cudnn_benchmark(self, epoch: int) -> bool:
        """Whether cuDNN may autotune its algorithms in ``epoch`` (CUDA only). True for a fixed
        architecture: the few input shapes are tuned once and reused."""
        del epoch
        return True

    def train_step(self, ctx: StepContext) -> StepResult:
        with ctx.autocast():
            logits = ctx.model(ctx.images)
            loss = self.criterion(logits.float(), ctx.labels)
        ctx.backward(loss)
        return StepResult(loss.detach(), logits.detach())

    def evaluate(self, module: nn.Module, epoch: int) -> dict:
        """``evaluate_fn`` on a forked RNG: evaluation (loaders draw seeds, BN re-estimation builds
        modules) never moves the training RNG, so a run's augmentation stream does not depend on
        when or whether it evaluates."""
        if self.evaluate_fn is None:
            return {}
        with torch.random.fork_rng(devices=_cuda_devices(module)):
            return self.evaluate_fn(module, epoch)

    def state_dict(self) -> dict:
        """Extra resumable state (plain types / tensors, loadable with weights_only=True)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state

    def export_payload(self, module: nn.Module, meta: dict) -> dict:
        """The ``best.pt`` payload for ``module`` (override to change kind / contents)."""
        return make_payload(module, "base", **meta)

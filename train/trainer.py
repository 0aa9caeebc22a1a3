"""The training loop shared by ``tinytrain`` (NetAug, baseline) and TinyTL transfer.

Model-agnostic: a :class:`~tinyexport.train.task.TrainTask` supplies the step, the epoch hook,
evaluation and its own resumable state; the :class:`Trainer` does the rest — DDP wrapping (torchrun
env, NCCL on CUDA / gloo on CPU), AMP (bf16, or fp16 with a GradScaler), channels_last, optional
``torch.compile``, a per-iteration LR scheduler, a NaN/Inf guard, a rank-0 progress bar,
``metrics.jsonl`` + TensorBoard, and atomic checkpoints in ``out_dir``:

* ``checkpoint.pt`` — everything needed to resume (``tinyexport.train.state``), written at the end
  of every epoch; ``resume=True`` continues from it exactly;
* ``best.pt`` — ``task.export_payload(...)`` of the epoch with the best ``top1`` from
  ``task.evaluate`` (for NetAug: after BN re-estimation).

Usage (a plain step)::

    task = TrainTask(criterion=nn.CrossEntropyLoss(label_smoothing=0.1), evaluate_fn=...)
    config = TrainConfig(epochs=3, out_dir="runs/x")
    result = Trainer(model, task, loader, optimizer, scheduler, config).fit()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tinyexport.atomic import torch_save
from tinyexport.distributed import barrier
from tinyexport.errors import StageError
from tinyexport.train.metrics import EpochMeter, MetricsLog, summary
from tinyexport.train.optim import current_lr, optimizer_step
from tinyexport.train.state import Progress, checkpoint_state, load_resume_state
from tinyexport.train.task import AMP_DTYPES, StepContext, StepResult, TrainTask, to_device

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``max_steps_per_epoch`` truncates epochs (smoke runs and tests)."""

    epochs: int
    out_dir: str
    device: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    resume: bool = False
    seed: int = 0
    max_steps_per_epoch: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16, fp16 or None, got {self.amp!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError("--amp fp16 needs --device cuda (CPU autocast supports bf16 only)")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    best_top1: float | None
    best_epoch: int | None
    last_metrics: dict = field(default_factory=dict)
    out_dir: str = ""


class Trainer:
    """Runs ``config.epochs`` epochs of ``task`` on ``model`` (resuming from
    ``out_dir/checkpoint.pt`` when ``config.resume``).

    Args:
        model: the raw module (moved to the device and DDP-wrapped here; its parameters must be
            the ones ``optimizer`` holds).
        task: the step / eval / state provider.
        loader: the training DataLoader; a ``DistributedSampler`` in ``loader.sampler`` gets
            ``set_epoch(epoch)``.
        scheduler: stepped once per iteration (or None).
        meta: JSON-able facts stored in ``best.pt`` (model name, recipe, ...).

    Raises:
        UserError: ``config.resume`` without a ``checkpoint.pt``.
    """

    def __init__(self, model: nn.Module, task: TrainTask, loader, optimizer: torch.optim.Optimizer,
                 scheduler: Any, config: TrainConfig, meta: dict | None = None):
        self.module, self.task, self.loader, self.config = model, task, loader, config
        self.optimizer, self.scheduler, self.meta = optimizer, scheduler, meta or {}
        distributed = dist.is_available() and dist.is_initialized()
        self.primary = not distributed or dist.get_rank() == 0
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model, self.device = _prepare(model, config, distributed)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.amp_dtype = AMP_DTYPES.get(config.amp)
        self.progress = Progress()
        if config.resume:
            checkpoint = self.out_dir / "checkpoint.pt"
            self.progress = load_resume_state(checkpoint, model, optimizer, scheduler, self.scaler,
                                              task)
            _log.info("resumed from %s at epoch %d (step %d)", checkpoint, self.progress.epoch,
                      self.progress.step)

    def fit(self) -> TrainResult:
        """Run the remaining epochs.

        Returns:
            A :class:`TrainResult`; ``best.pt`` / ``checkpoint.pt`` / ``metrics.jsonl`` are in
            ``out_dir``.

        Raises:
            StageError: on a NaN/Inf loss (the last good ``checkpoint.pt`` is kept).
        """
        start = self.progress.epoch
        log = MetricsLog(self.out_dir, self.primary, self.config.tensorboard, start)
        record: dict = {}
        try:
            for epoch in range(start, self.config.epochs):
                record = self.run_epoch(epoch)
                log.write(record)
        finally:
            log.close()
        return TrainResult(self.config.epochs - start, self.progress.best_top1,
                           self.progress.best_epoch, record, str(self.out_dir))

    def run_epoch(self, epoch: int) -> dict:
        """Epoch hook > train > evaluate > best.pt > checkpoint.pt; returns the epoch's record."""
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.task.on_epoch_start(self.module, epoch)
        train_metrics = self.train_one_epoch(epoch)
        eval_metrics = self.task.evaluate(self.module, epoch)
        top1 = eval_metrics.get("top1")
        if self.progress.improves(top1):
            self.progress.best_top1, self.progress.best_epoch = float(top1), epoch
            if self.primary:
                payload = self.task.export_payload(self.module, {**self.meta, "epoch": epoch,
                                                                 "top1": top1})
                torch_save(payload, self.out_dir / "best.pt")
        self.progress.epoch = epoch + 1
        if self.primary:
            torch_save(checkpoint_state(self.module, self.optimizer, self.scheduler, self.scaler,
                                        self.task, self.progress), self.out_dir / "checkpoint.pt")
        barrier()
        record = {"epoch": epoch, **train_metrics,
                  **{f"val_{k}": v for k, v in eval_metrics.items()},
                  "best_top1": self.progress.best_top1}
        if self.primary:
            _log.info("epoch %d: %s", epoch, summary(record))
        return record

    def train_one_epoch(self, epoch: int) -> dict:
        """One pass over the loader (at most ``max_steps_per_epoch`` steps); returns train metrics."""
        self.model.train()
        total = len(self.loader) if self.config.max_steps_per_epoch is None else min(
            len(self.loader), self.config.max_steps_per_epoch)
        bar = _progress_bar(total, epoch, self.primary and self.config.progress)
        meter = EpochMeter()
        for i, (images, labels) in enumerate(self.loader):
            if i >= total:
                break
            images, labels = to_device(images, labels, self.device, self.config.channels_last)
            result = self.train_step(images, labels, epoch)
            meter.update(result.loss, result.logits, labels)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{meter.loss:.3f}", top1=f"{meter.top1:.1f}",
                                img_s=f"{meter.images_per_s():.0f}",
                                lr=f"{current_lr(self.optimizer):.4g}")
        if bar is not None:
            bar.close()
        return {**meter.as_dict(), "lr": current_lr(self.optimizer), "steps": self.progress.step}

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> StepResult:
        """Zero grads > the task's step > NaN/Inf guard > optimizer and scheduler step."""
        self.optimizer.zero_grad(set_to_none=True)
        ctx = StepContext(self.model, self.module, images, labels, epoch, self.progress.step,
                          self.device.type, self.amp_dtype, self.scaler)
        result = self.task.train_step(ctx)
        if not torch.isfinite(result.loss).all():
            raise StageError(f"loss became {result.loss.item()} at epoch {epoch} step "
                             f"{self.progress.step}; stopped before the optimizer step. The last "
                             f"good checkpoint is {self.out_dir / 'checkpoint.pt'} (lower the LR "
                             f"or disable --amp fp16)")
        optimizer_step(self.optimizer, self.scaler)
        if self.scheduler is not None:
            self.scheduler.step()
        self.progress.step += 1
        return result


def _prepare(model: nn.Module, config: TrainConfig, distributed: bool
             ) -> tuple[nn.Module, torch.device]:
    """Move ``model`` to the device (channels_last if asked); DDP-wrap and compile it."""
    local_rank = torch.cuda.current_device() if config.device == "cuda" else 0
    device = torch.device(config.device, local_rank) if config.device == "cuda" else \
        torch.device("cpu")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = model
    if distributed:
        wrapped = DistributedDataParallel(
            model, device_ids=[local_rank] if config.device == "cuda" else None)
    if config.compile:
        wrapped = torch.compile(wrapped, dynamic=True)
    return wrapped, device


def _progress_bar(total: int, epoch: int, enabled: bool) -> tqdm | None:
    if not enabled:
        return None
    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def train(model: nn.Module, task: TrainTask, loader, optimizer: torch.optim.Optimizer,
          scheduler: Any, config: TrainConfig, meta: dict | None = None) -> TrainResult:
    """``Trainer(...).fit()`` in one call (see :class:`Trainer` for the arguments)."""
    return Trainer(model, task, loader, optimizer, scheduler, config, meta).fit()

"""The generic training loop shared by ``tinytrain`` (NetAug, baseline) and TinyTL transfer.

Model-agnostic: a :class:`TrainTask` supplies the per-step computation (``train_step``), the
per-epoch hook (``on_epoch_start``), evaluation and its own resumable state; :func:`train` does the
rest — DDP wrapping (torchrun env, NCCL on CUDA / gloo on CPU), AMP (bf16, or fp16 with a
GradScaler), channels_last, optional ``torch.compile``, a per-iteration LR scheduler, a NaN/Inf
guard, a rank-0 progress bar, ``metrics.jsonl`` + TensorBoard, and atomic checkpoints:

* ``checkpoint.pt`` — everything needed to resume (model, optimizer, scheduler, scaler, epoch,
  step, best top-1, every RNG state, the task's own state such as NetAug's sampler generator),
  written at the end of every epoch; ``resume=True`` continues from it exactly;
* ``best.pt`` — ``task.export_payload(...)`` of the epoch with the best ``top1`` from
  ``task.evaluate`` (for NetAug: after BN re-estimation).

Usage (a plain step)::

    task = TrainTask(criterion=nn.CrossEntropyLoss(label_smoothing=0.1), evaluate_fn=...)
    config = TrainConfig(epochs=3, out_dir="runs/x")
    result = train(model, task, loader, optimizer, scheduler, config)

A custom step subclasses ``TrainTask`` and overrides ``train_step(ctx)``: it runs forwards under
``ctx.autocast()``, calls ``ctx.backward(loss)`` (inside ``with ctx.no_sync():`` for a pass whose
gradient should be accumulated without an all-reduce) and returns a :class:`StepResult`. The engine
zeroes gradients before and steps the optimizer/scheduler after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyexport.atomic import torch_save, write_text
from tinyexport.errors import StageError, UserError

_log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def no_sync(self):
        """Accumulate this pass's gradient locally (DDP ``no_sync``); a no-op without DDP."""
        sync_off = getattr(self.model, "no_sync", None)
        return sync_off() if sync_off is not None else contextlib.nullcontext()


class TrainTask:
    """Plain supervised step (one forward, one backward). Subclass to change the step.

    Args:
        criterion: loss on (logits, labels), e.g. label-smoothed cross-entropy.
        evaluate_fn: ``(module, epoch) -> dict`` with at least ``top1`` (percent), or None.
    """

    def __init__(self, criterion: nn.Module,
                 evaluate_fn: Callable[[nn.Module, int], dict] | None = None):
        self.criterion = criterion
        self.evaluate_fn = evaluate_fn

    def on_epoch_start(self, module: nn.Module, epoch: int) -> None:
        """Called on every rank before an epoch (after resume too). Default: nothing."""

    def train_step(self, ctx: StepContext) -> StepResult:
        with ctx.autocast():
            logits = ctx.model(ctx.images)
            loss = self.criterion(logits.float(), ctx.labels)
        ctx.backward(loss)
        return StepResult(loss.detach(), logits.detach())

    def evaluate(self, module: nn.Module, epoch: int) -> dict:
        return self.evaluate_fn(module, epoch) if self.evaluate_fn is not None else {}

    def state_dict(self) -> dict:
        """Extra resumable state (plain types / tensors, loadable with weights_only=True)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state

    def export_payload(self, module: nn.Module, meta: dict) -> dict:
        """The ``best.pt`` payload for ``module`` (override to change kind / contents)."""
        from tinyexport.train.checkpoint import make_payload

        return make_payload(module, "base", **meta)


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    best_top1: float | None
    best_epoch: int | None
    last_metrics: dict = field(default_factory=dict)
    out_dir: str = ""


# ---------------------------------------------------------------- RNG and checkpoint state

def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Same seed on every rank (netaug.md §4 "seed"): identical init and sampling everywhere."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _checkpoint_state(module, optimizer, scheduler, scaler, task, epoch, step, best) -> dict:
    return {"model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "step": step, "best_top1": best[0], "best_epoch": best[1],
            "rng": rng_state(), "task": task.state_dict()}


def load_resume_state(path: Path, module, optimizer, scheduler, scaler, task) -> dict:
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {str(path)!r}; run without --resume first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    task.load_state_dict(state["task"])
    set_rng_state(state["rng"])
    return state


# ---------------------------------------------------------------- metrics

class MetricsLog:
    """``metrics.jsonl`` (one JSON line per epoch) and TensorBoard events, rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_epoch: int):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self._truncate(resume_epoch)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: metrics.jsonl only
                _log.warning("tensorboard is not installed; writing metrics.jsonl only")
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def _truncate(self, resume_epoch: int) -> None:
        """Drop lines of epochs re-run after a resume (a kill after the line was written)."""
        if not self.path.is_file():
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("epoch", -1) < resume_epoch]
        write_text(self.path, "".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------- the loop

def _prepare(model: nn.Module, config: TrainConfig, dist_enabled: bool, local_rank: int):
    device = torch.device(config.device, local_rank) if config.device == "cuda" else \
        torch.device("cpu")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = model
    if dist_enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[local_rank] if config.device == "cuda" else None)
    if config.compile:
        wrapped = torch.compile(wrapped, dynamic=True)
    return wrapped, device


def _to_device(images, labels, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _check_finite(loss: torch.Tensor, epoch: int, step: int, out_dir: Path) -> None:
    if not torch.isfinite(loss).all():
        raise StageError(f"loss became {loss.item()} at epoch {epoch} step {step}; stopped before "
                         f"the optimizer step. The last good checkpoint is "
                         f"{out_dir / 'checkpoint.pt'} (lower the LR or disable --amp fp16)")


def _epoch(ctx_args: dict, loader: Iterable, task: TrainTask, optimizer, scheduler, scaler,
           config: TrainConfig, epoch: int, step: int, primary: bool) -> tuple[dict, int]:
    """One training epoch; returns (train metrics, global step)."""
    model, module, device = ctx_args["model"], ctx_args["module"], ctx_args["device"]
    model.train()
    total = len(loader) if config.max_steps_per_epoch is None else min(
        len(loader), config.max_steps_per_epoch)
    bar = _progress(total, epoch, primary and config.progress)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        if i >= total:
            break
        images, labels = _to_device(images, labels, device, config.channels_last)
        optimizer.zero_grad(set_to_none=True)
        ctx = StepContext(model, module, images, labels, epoch, step, device.type,
                          AMP_DTYPES.get(config.amp), scaler)
        result = task.train_step(ctx)
        _check_finite(result.loss, epoch, step, Path(config.out_dir))
        _optimizer_step(optimizer, scaler)
        if scheduler is not None:
            scheduler.step()
        step += 1
        batch = labels.shape[0]
        loss_sum += float(result.loss) * batch
        seen += batch
        if result.logits is not None:
            correct += int((result.logits.argmax(1) == labels).sum())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{100 * correct / seen:.1f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.4g}")
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100.0 * correct / max(seen, 1),
            "images_per_s": seen / max(elapsed, 1e-9), "epoch_time_s": elapsed,
            "lr": optimizer.param_groups[0]["lr"], "steps": step}, step


def _optimizer_step(optimizer, scaler) -> None:
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _progress(total: int, epoch: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def train(model: nn.Module, task: TrainTask, loader, optimizer: torch.optim.Optimizer,
          scheduler: Any, config: TrainConfig, meta: dict | None = None) -> TrainResult:
    """Run ``config.epochs`` epochs (resuming from ``out_dir/checkpoint.pt`` if asked).

    Args:
        model: the raw module (moved to the device and DDP-wrapped here; its parameters must be
            the ones ``optimizer`` holds).
        task: the step / eval / state provider.
        loader: the training DataLoader; a ``DistributedSampler`` in ``loader.sampler`` gets
            ``set_epoch(epoch)``.
        scheduler: stepped once per iteration (or None).
        meta: JSON-able facts stored in ``best.pt`` (model name, recipe, ...).

    Returns:
        A :class:`TrainResult`; ``best.pt`` / ``checkpoint.pt`` / ``metrics.jsonl`` are in out_dir.

    Raises:
        StageError: on a NaN/Inf loss (the last good ``checkpoint.pt`` is kept).
    """
    import torch.distributed as dist

    dist_enabled = dist.is_available() and dist.is_initialized()
    primary = not dist_enabled or dist.get_rank() == 0
    local_rank = torch.cuda.current_device() if config.device == "cuda" else 0
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped, device = _prepare(model, config, dist_enabled, local_rank)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    start_epoch, step, best = 0, 0, (None, None)
    if config.resume:
        state = load_resume_state(out_dir / "checkpoint.pt", model, optimizer, scheduler, scaler,
                                  task)
        start_epoch, step, best = state["epoch"], state["step"], (state["best_top1"],
                                                                  state["best_epoch"])
        _log.info("resumed from %s at epoch %d (step %d)", out_dir / "checkpoint.pt",
                  start_epoch, step)
    log = MetricsLog(out_dir, primary, config.tensorboard, start_epoch)
    ctx_args = {"model": wrapped, "module": model, "device": device}
    record: dict = {}
    try:
        for epoch in range(start_epoch, config.epochs):
            record, step, best = _run_epoch(ctx_args, loader, task, optimizer, scheduler, scaler,
                                            config, epoch, step, best, primary, meta or {})
            log.write(record)
    finally:
        log.close()
    return TrainResult(config.epochs - start_epoch, best[0], best[1], record, str(out_dir))


def _run_epoch(ctx_args, loader, task, optimizer, scheduler, scaler, config, epoch, step, best,
               primary, meta):
    """Epoch hook > train > evaluate > best.pt > checkpoint.pt; returns (record, step, best)."""
    module = ctx_args["module"]
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    task.on_epoch_start(module, epoch)
    train_metrics, step = _epoch(ctx_args, loader, task, optimizer, scheduler, scaler, config,
                                 epoch, step, primary)
    eval_metrics = task.evaluate(module, epoch)
    top1 = eval_metrics.get("top1")
    out_dir = Path(config.out_dir)
    if top1 is not None and (best[0] is None or top1 > best[0]):
        best = (float(top1), epoch)
        if primary:
            torch_save(task.export_payload(module, {**meta, "epoch": epoch, "top1": top1}),
                       out_dir / "best.pt")
    if primary:
        torch_save(_checkpoint_state(module, optimizer, scheduler, scaler, task, epoch + 1, step,
                                     best), out_dir / "checkpoint.pt")
    _barrier()
    record = {"epoch": epoch, **train_metrics, **{f"val_{k}": v for k, v in eval_metrics.items()},
              "best_top1": best[0]}
    if primary:
        _log.info("epoch %d: %s", epoch, _summary(record))
    return record, step, best


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _summary(record: dict) -> str:
    keys = ("train_loss", "train_top1", "val_top1", "images_per_s", "lr")
    return ", ".join(f"{k}={record[k]:.4g}" for k in keys if isinstance(record.get(k), (int, float))
                     and math.isfinite(record[k]))


# ---------------------------------------------------------------- recipe helpers

def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on BN parameters and biases (1-D tensors) (netaug.md §4, pitfall 10)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, base_lr: float, peak_lr: float,
                  warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (netaug.md §4, pitfall 9): linear warmup from the *unscaled*
    ``base_lr`` to ``peak_lr`` over ``warmup_steps``, then cosine from peak to 0 at ``total_steps``.
    The optimizer's lr must be ``peak_lr``."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    start = base_lr / peak_lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start + (1.0 - start) * step / warmup_steps
        t = (step - warmup_steps) / (total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    for group in optimizer.param_groups:
        group["lr"] = peak_lr
        group["initial_lr"] = peak_lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate_top1(module: nn.Module, loader, device: torch.device | str,
                  amp: str | None = None, channels_last: bool = False) -> dict:
    """Top-1 (percent) and plain CE loss over ``loader``, summed across ranks."""
    import torch.distributed as dist

    device = torch.device(device)
    module.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, count
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, channels_last)
        ctx = (torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp
               else contextlib.nullcontext())
        with ctx:
            logits = module(images).float()
        totals[0] += (logits.argmax(1) == labels).sum()
        totals[1] += nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[2] += labels.shape[0]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    count = max(float(totals[2]), 1.0)
    return {"top1": 100.0 * float(totals[0]) / count, "loss": float(totals[1]) / count,
            "images": int(totals[2])}


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)

"""The training loop shared by ``tinytrain`` (NetAug, baseline) and TinyTL transfer.

Model-agnostic: a :class:`~tinyexport.train.task.TrainTask` supplies the step, the epoch hook,
evaluation and its own resumable state; the :class:`Trainer` does the rest — DDP wrapping (torchrun
env, NCCL on CUDA / gloo on CPU), AMP (bf16, or fp16 with a GradScaler), channels_last, optional
``torch.compile`` (refused with the task's reason when ``task.compile_refusal`` is set), cuDNN
autotuning per epoch as the task asks (``task.cudnn_benchmark``, CUDA only), a per-iteration LR
scheduler, a NaN/Inf guard, a rank-0 progress bar, ``metrics.jsonl`` (+ TensorBoard, opt-in), and
atomic checkpoints in ``out_dir``:

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

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tinyexport.atomic import FolderBusy, folder_lock, out_folder_problem, torch_save
from tinyexport.errors import StageError, UserError, describe_os_error
from tinyexport.train.metrics import EpochMeter, MetricsLog, ProgressReport, summary
from tinyexport.train.optim import current_lr, optimizer_step
from tinyexport.train.state import Progress, checkpoint_state, load_resume_state
from tinyexport.train.task import AMP_DTYPES, StepContext, StepResult, TrainTask, to_device
from tinyexport.train.validation import check_int, check_positive, check_seed

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``max_steps_per_epoch`` truncates epochs (smoke runs and tests).

    ``deterministic``: bit-reproducible runs and resumes on CUDA (deterministic cuDNN / cuBLAS
    algorithms, no autotuning; slower). Without it a CUDA run is reproducible only to float
    rounding, which a short high-LR run can amplify (measured on an H200: 2 steps after the first
    epoch, two runs of the same seed differed in loss by 3 %).

    ``progress``: rank 0 shows a tqdm bar when stderr is a terminal, else logs one INFO line every
    ``log_every_steps`` steps or ``log_every_s`` seconds, whichever comes first. ``tensorboard``
    writes TensorBoard events too (opt-in: ``SummaryWriter`` may import TensorFlow).
    """

    epochs: int
    out_dir: str
    device: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    resume: bool = False
    seed: int = 0
    max_steps_per_epoch: int | None = None
    progress: bool = True
    tensorboard: bool = False
    log_every_steps: int = 50
    log_every_s: float = 30.0

    def __post_init__(self) -> None:
        check_int("epochs (--epochs)", self.epochs, 1)
        check_int("max_steps_per_epoch (--max-steps)", self.max_steps_per_epoch, 1, optional=True)
        check_int("log_every_steps", self.log_every_steps, 1)
        check_positive("log_every_s", self.log_every_s)
        check_seed("seed (--seed)", self.seed)
        if not self.out_dir:
            raise ValueError("out_dir (--out) must name a folder, got an empty string")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16, fp16 or None, got {self.amp!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError("--amp fp16 needs --device cuda (CPU autocast supports bf16 only)")


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
        loader: the training DataLoader (or a ``tinyexport.train.device_data`` loader); a
            ``DistributedSampler`` in ``loader.sampler`` gets ``set_epoch(epoch)``; a loader
            with ``state_dict`` (its augmentation generator) is saved in ``checkpoint.pt``.
        scheduler: stepped once per iteration (or None).
        meta: JSON-able facts stored in ``best.pt`` (model name, recipe, ...).

    Raises:
        UserError: ``out_dir`` is a file or not writable; ``config.resume`` without a usable
            ``checkpoint.pt``; ``config.compile`` for a task that refuses it.
    """

    def __init__(self, model: nn.Module, task: TrainTask, loader, optimizer: torch.optim.Optimizer,
                 scheduler: Any, config: TrainConfig, meta: dict | None = None):
        self.module, self.task, self.loader, self.config = model, task, loader, config
        self.optimizer, self.scheduler, self.meta = optimizer, scheduler, meta or {}
        distributed = dist.is_available() and dist.is_initialized()
        self.primary = not distributed or dist.get_rank() == 0
        self.out_dir = prepare_out_dir(config.out_dir)
        if config.compile and task.compile_refusal:
            raise UserError(f"--compile: {task.compile_refusal}")
        self.model, self.device = _prepare(model, config, distributed)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.amp_dtype = AMP_DTYPES.get(config.amp)
        self.progress = Progress()
        if config.resume:
            checkpoint = self.out_dir / "checkpoint.pt"
            self.progress = load_resume_state(checkpoint, model, optimizer, scheduler, self.scaler,
                                              task, loader)
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
            with _backend_settings(self.config.deterministic):
                for epoch in range(start, self.config.epochs):
                    if self.device.type == "cuda":
                        torch.backends.cudnn.benchmark = (not self.config.deterministic
                                                          and self.task.cudnn_benchmark(epoch))
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
        best = self.progress.improves(top1)
        if best:
            self.progress.best_top1, self.progress.best_epoch = float(top1), epoch
        self.progress.epoch = epoch + 1
        self._write_outputs(epoch, top1, best)
        record = {"epoch": epoch, **train_metrics,
                  **{f"val_{k}": v for k, v in eval_metrics.items()},
                  "best_top1": self.progress.best_top1}
        if self.primary:
            _log.info("epoch %d: %s", epoch, summary(record))
        return record

    def _write_outputs(self, epoch: int, top1: float | None, best: bool) -> None:
        """``best.pt`` (when ``best``) and ``checkpoint.pt`` on rank 0. A failed write (disk full,
        read-only) stops every rank, so none waits for rank 0 at the next collective."""
        error = None
        if self.primary:
            try:
                if best:
                    torch_save(self.task.export_payload(
                        self.module, {**self.meta, "epoch": epoch, "top1": top1}),
                        self.out_dir / "best.pt")
                torch_save(checkpoint_state(self.module, self.optimizer, self.scheduler,
                                            self.scaler, self.task, self.progress, self.loader),
                           self.out_dir / "checkpoint.pt")
            except OSError as exc:
                error = exc
        if _any_rank(error is not None, self.device):
            if error is not None:
                raise error
            raise StageError(f"rank 0 could not write to {str(self.out_dir)!r} (its error says "
                             "why); this rank stopped too")

    def train_one_epoch(self, epoch: int) -> dict:
        """One pass over the loader (at most ``max_steps_per_epoch`` steps); returns train metrics."""
        self.model.train()
        total = len(self.loader) if self.config.max_steps_per_epoch is None else min(
            len(self.loader), self.config.max_steps_per_epoch)
        report = ProgressReport(total, epoch, self.primary and self.config.progress,
                                self.config.log_every_steps, self.config.log_every_s)
        meter = EpochMeter()
        for i, (images, labels) in enumerate(self.loader):
            if i >= total:
                break
            images, labels = to_device(images, labels, self.device, self.config.channels_last)
            result = self.train_step(images, labels, epoch)
            meter.update(result.loss, result.logits, labels)
            report.update(meter, current_lr(self.optimizer))
        report.close()
        return {**meter.summary(), "lr": current_lr(self.optimizer), "steps": self.progress.step}

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> StepResult:
        """Zero grads > the task's step > NaN/Inf guard > optimizer and scheduler step."""
        self.optimizer.zero_grad(set_to_none=True)
        ctx = StepContext(self.model, self.module, images, labels, epoch, self.progress.step,
                          self.device.type, self.amp_dtype, self.scaler)
        result = self.task.train_step(ctx)
        if not torch.isfinite(result.loss).all():
            raise StageError(f"loss became {result.loss.item()} at epoch {epoch} step "
                             f"{self.progress.step}; stopped before the optimizer step. "
                             f"{self._last_good()} (lower the LR or disable --amp fp16)")
        optimizer_step(self.optimizer, self.scaler)
        if self.scheduler is not None:
            self.scheduler.step()
        self.progress.step += 1
        return result

    def _last_good(self) -> str:
        checkpoint = self.out_dir / "checkpoint.pt"
        if checkpoint.is_file():
            return f"The last good checkpoint is {checkpoint}"
        return "No checkpoint was written yet (it is written at the end of each epoch)"


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create output folder ``path`` and check that it is writable (before anything is built).

    Raises:
        UserError: ``path`` is an existing file, or cannot be created or written (no permission,
            read-only file system, a file in the way).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {str(path)!r} is an existing file, not a folder; pass a new or "
                        "existing folder as --out (nothing was written)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(describe_os_error(exc)) from None
    return path


# The results a training or transfer run writes into its folder: one of these there means a
# previous run whose work would be lost. (config.yaml and tensorboard/ alone are what a run killed
# before its first epoch ended leaves: a fresh run may start over them.)
RUN_FILES = ("checkpoint.pt", "best.pt", "target.pt", "transfer.pt", "metrics.jsonl",
             "result.json")
WRITTEN_FILES = (*RUN_FILES, "config.yaml", "tensorboard")  # never a source of the same run


@contextlib.contextmanager
def claim_out_dir(path: str | os.PathLike, resume: bool = False,
                  sources: dict[str, str | None] | None = None):
    """Create, lock and check run folder ``path`` for the whole run (the CLIs wrap a run in it).

    A run never loses the user's files: the folder is locked (``OUT/.run.lock``, flock: a second
    run into it fails at once), a folder holding a previous run (:data:`RUN_FILES`) is refused
    unless ``resume``, and ``sources`` (``{"--from": path, "--data": path, ...}``) are refused as
    destinations: a source file among the run's files, or ``path`` inside a source folder
    (symlinks resolved). Only rank 0 of a torchrun job locks (the others share its folder).

    Raises:
        UserError: naming the folder, what is in the way and what to do.
    """
    problem = out_folder_problem(path, allow_cwd=True, what="run's folder", example="runs/exp1")
    if problem:
        raise UserError(problem)
    _check_sources(Path(path), sources or {})  # before the folder is created
    out = prepare_out_dir(path)
    if os.environ.get("RANK", "0") != "0":
        yield out
        return
    try:
        with folder_lock(out / "run"):
            _check_no_previous_run(out, resume)
            yield out
    except FolderBusy:
        raise FolderBusy(f"output folder {str(path)!r} is being written by another run right "
                         "now; wait for it to finish or choose another --out") from None


def _check_no_previous_run(out: Path, resume: bool) -> None:
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not resume:
        raise UserError(f"output folder {str(out)!r} holds a previous run ({', '.join(found)}); "
                        "it is never overwritten: choose another --out, continue it with --resume "
                        "(tinytrain), or move those files away first")


def _check_sources(out: Path, sources: dict[str, str | None]) -> None:
    real_out = out.resolve()
    written = {(real_out / name) for name in WRITTEN_FILES}
    for flag, source in sources.items():
        if not source or not Path(source).exists():
            continue
        real = Path(source).resolve()
        if real in written:
            raise UserError(f"{flag} {source!r} is a file this run writes in --out {str(out)!r}; "
                            "a source is never a destination: choose another --out")
        if real.is_dir() and (real_out == real or real in real_out.parents):
            raise UserError(f"--out {str(out)!r} is inside {flag} {source!r}: the run's files "
                            "would be mixed into it; choose an --out outside it")


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (an all-reduce; plain ``flag`` alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@contextlib.contextmanager
def _backend_settings(deterministic: bool):
    """cuDNN autotuning and determinism for one ``fit`` (process-wide flags, restored after)."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace (read when its handle is created;
        # a user's own setting wins). warn_only: an op without a deterministic kernel warns
        # instead of stopping a long run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


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
        # Fixed shapes (train batches drop the last partial one; evaluation runs the raw module):
        # one graph, no symbolic shapes. Tasks whose shapes change per step refuse --compile.
        wrapped = torch.compile(wrapped, dynamic=False)
    return wrapped, device


def train(model: nn.Module, task: TrainTask, loader, optimizer: torch.optim.Optimizer,
          scheduler: Any, config: TrainConfig, meta: dict | None = None) -> TrainResult:
    """``Trainer(...).fit()`` in one call (see :class:`Trainer` for the arguments)."""
    return Trainer(model, task, loader, optimizer, scheduler, config, meta).fit()

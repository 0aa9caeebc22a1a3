"""Training metrics: the running per-epoch meter, progress (a bar or log lines), ``metrics.jsonl``
+ TensorBoard, the epoch's log line.

``metrics.jsonl`` has one JSON object per epoch (``epoch``, ``train_*``, ``val_*``, ``lr``,
``images_per_s``, ``best_top1``...). TensorBoard's ``SummaryWriter`` is imported only when
TensorBoard logging is on (it may pull in TensorFlow).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from tinyexport.atomic import write_text

_log = logging.getLogger(__name__)

SUMMARY_KEYS = ("train_loss", "train_top1", "val_top1", "images_per_s", "lr")


class EpochMeter:
    """Image-weighted mean loss, top-1 and throughput of the steps of one epoch."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0
        self.start = time.perf_counter()

    def update(self, loss: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor) -> None:
        batch = labels.shape[0]
        self.loss_sum += float(loss) * batch
        self.seen += batch
        if logits is not None:
            self.correct += int((logits.argmax(1) == labels).sum())

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / max(self.seen, 1)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def images_per_s(self) -> float:
        return self.seen / max(self.elapsed(), 1e-9)

    def summary(self) -> dict:
        """The epoch's ``train_*`` figures under their ``metrics.jsonl`` keys."""
        elapsed = self.elapsed()
        return {"train_loss": self.loss, "train_top1": self.top1,
                "images_per_s": self.seen / max(elapsed, 1e-9), "epoch_time_s": elapsed}


class ProgressReport:
    """Rank 0's progress within an epoch: a tqdm bar when stderr is a terminal; else (output to a
    file or a pipe, where a bar prints nothing useful) one INFO line every ``every_steps`` steps or
    ``every_s`` seconds, whichever comes first.

    Args:
        total: steps in this epoch.
        enabled: False on other ranks and with ``--no-progress`` (then nothing is shown).
        tty: show a bar (default: whether stderr is a terminal).
    """

    def __init__(self, total: int, epoch: int, enabled: bool, every_steps: int = 50,
                 every_s: float = 30.0, tty: bool | None = None):
        self.total, self.epoch, self.enabled = total, epoch, enabled
        self.every_steps, self.every_s = every_steps, every_s
        self.done, self.last_log = 0, time.perf_counter()
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True) \
            if enabled and tty else None

    def update(self, meter: EpochMeter, lr: float) -> None:
        """One step done (``meter`` holds the epoch so far)."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{meter.loss:.3f}", top1=f"{meter.top1:.1f}",
                                 img_s=f"{meter.images_per_s():.0f}", lr=f"{lr:.4g}")
        elif self.enabled and self._due():
            self.last_log = time.perf_counter()
            _log.info("epoch %d step %d/%d: loss %.4f, top1 %.1f%%, %.1f images/s, lr %.4g",
                      self.epoch, self.done, self.total, meter.loss, meter.top1,
                      meter.images_per_s(), lr)

    def _due(self) -> bool:
        return (self.done % self.every_steps == 0
                or time.perf_counter() - self.last_log >= self.every_s)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLog:
    """``metrics.jsonl`` (one JSON line per epoch) and TensorBoard events, rank 0 only.

    Args:
        out_dir: the run folder (``metrics.jsonl``, ``tensorboard/``).
        enabled: False on ranks other than 0 (then nothing is written).
        tensorboard: also write TensorBoard events (skipped with a warning if not installed).
        resume_epoch: lines of this epoch and later are dropped (they are re-run after a resume).
    """

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_epoch: int):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self._truncate(resume_epoch)
        if tensorboard:
            self.writer = _summary_writer(out_dir / "tensorboard")

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


def _summary_writer(folder: Path):
    """A TensorBoard ``SummaryWriter``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: may import TensorFlow
    except ImportError:
        _log.warning("tensorboard is not installed; writing metrics.jsonl only")
        return None
    return SummaryWriter(str(folder))


def summary(record: dict) -> str:
    """``train_loss=0.5, train_top1=80, ...`` of the finite numbers in ``record``."""
    return ", ".join(f"{k}={record[k]:.4g}" for k in SUMMARY_KEYS
                     if isinstance(record.get(k), (int, float)) and math.isfinite(record[k]))

"""Plumbing of the export pipeline: stage records and their timer, the result, hashes and array
layout helpers."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyexport.errors import UserError

_log = logging.getLogger(__name__)


@dataclass
class StageRecord:
    name: str
    seconds: float = 0.0
    status: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    out: Path
    provenance: dict[str, Any]
    stages: list[StageRecord]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


class StageTimer:
    """Runs named stages, logs one progress line each and keeps their records."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.records: list[StageRecord] = []
        self.progress = progress or _log.info

    @contextmanager
    def stage(self, name: str):
        record = StageRecord(name)
        index = len(self.records) + 1
        self.progress(f"[{index}] {name} ...")
        start = time.perf_counter()
        try:
            yield record
        except Exception as exc:
            record.status = "FAILED"
            record.details.setdefault("reason", str(exc))
            raise
        finally:
            record.seconds = time.perf_counter() - start
            self.records.append(record)
            self.progress(_stage_line(index, record))


def _stage_line(index: int, record: StageRecord) -> str:
    """``[8] int8 checks: ok in 0.1 s (...)`` or ``[9] int8 gate: FAILED — why``."""
    if record.status == "FAILED":
        return f"[{index}] {record.name}: FAILED — {record.details.get('reason', 'see export.json')}"
    summary = ", ".join(f"{k}={_short(v)}" for k, v in record.details.items()
                        if not isinstance(v, (dict, list)))
    return (f"[{index}] {record.name}: {record.status} in {record.seconds:.1f} s"
            + (f" ({summary})" if summary else ""))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_finite(model: nn.Module) -> None:
    """Raise UserError naming the first parameter/buffer holding NaN or Inf."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"checkpoint weight {name!r} holds NaN/Inf values; the checkpoint is "
                            "corrupt or training diverged — export a good checkpoint")


def nchw_to_nhwc(images: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy(), dtype=np.float32)


@contextmanager
def scratch_dir(out_tmp: Path) -> Iterator[Path]:
    """A scratch folder inside the export's own partial folder (not the system temp dir): a killed
    run leaves it only inside ``.DIR.*.partial``, which the next run removes; removed here when
    the block ends, so it never reaches the final folder."""
    work = out_tmp / ".scratch"
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)

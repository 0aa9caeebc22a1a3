"""The ``tinyexport`` pipeline: load → BN recalibration → fusion → ONNX → float TFLite → int8 →
checks → evaluation, each stage timed and checked. Writes into a temporary folder renamed into
place at the end (``tinyexport.atomic.atomic_dir``), so a failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyexport.errors import UserError

_log = logging.getLogger(__name__)

ARTIFACTS = ("model.onnx", "model_fp32.tflite", "model_int8.tflite")
RANDOM_WEIGHTS_WARNING = ("no --checkpoint: the model has RANDOM weights; the export is valid for "
                          "deployability profiling but every accuracy figure is meaningless")
# Gates on the int8 model vs fp32 (STYLE.md habit 6). Only enforced with trained weights: a
# random-weight net has near-tied logits, so its top-1 agreement means nothing.
MIN_TOP1_AGREEMENT = 0.90


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how (validated on construction)."""

    model: str
    out: Path
    checkpoint: Path | None = None
    resolution: int | None = None
    num_classes: int | None = None
    calib_data: str | None = None
    calib_images: int = 500
    check_images: int = 100
    eval_data: str | None = None
    eval_images: int = 1000
    per_channel: bool = True
    head_as_conv: bool = True  # export.head: classifier as a 1x1 conv (TFLM == LiteRT bit for bit)
    bn_recalibrate: bool | None = None  # None: on for NetAug supernet checkpoints
    quant_report: bool = False
    onnxsim: bool = False
    force: bool = False
    firmware: bool = True
    offline_plan: bool = False
    board: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("calib_images", "check_images", "eval_images"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, "
                                f"got {getattr(self, name)}")
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise UserError(f"--resolution must be in 16..1024, got {self.resolution}")
        if self.num_classes is not None and self.num_classes < 2:
            raise UserError(f"--num-classes must be >= 2, got {self.num_classes}")


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
        finally:
            record.seconds = time.perf_counter() - start
            self.records.append(record)
        summary = ", ".join(f"{k}={_short(v)}" for k, v in record.details.items()
                            if not isinstance(v, (dict, list)))
        self.progress(f"[{index}] {name}: {record.status} in {record.seconds:.1f} s"
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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(dataclasses.asdict(value))
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def default_out(model: str, resolution: int) -> Path:
    return Path("exports") / f"{model}-r{resolution}-int8"


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="tinyexport-")

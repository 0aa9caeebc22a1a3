"""The typed hand-offs between the export stages: what each stage returns, and
:class:`ExportState`, everything ``export.json`` is written from (``export.provenance``).

Every type here is a frozen dataclass; a record of it (``tinyexport.json_record.to_record``) is
what export.json holds, field by field in declaration order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tinyexport.boards import Verdict
from tinyexport.export.config import ExportConfig
from tinyexport.export.gate import GateVerdict
from tinyexport.export.stage_timer import StageRecord
from tinyexport.firmware_eval.evaluate import FirmwareResult
from tinyexport.json_record import NOT_RECORDED, OMIT_NONE
from tinyexport.quantize.int8_checks import Int8Check, Int8Numerics
from tinyexport.quantize.layer_report import LayerError
from tinyexport.train.data import Preprocessing

__all__ = ["Loaded", "DataInfo", "TflmTop1", "Evaluation", "Int8Model", "Artifact", "ExportState",
           "ExportResult"]


@dataclass(frozen=True)
class Loaded:
    """Stage 1: the model (random or from a checkpoint), what its checkpoint says, its input size
    and preprocessing."""

    model: nn.Module
    # The checkpoint's own description (tinyexport.train.model_from_checkpoint), recorded as it is
    # in export.json; the stages read it through the properties below, not by key.
    meta: dict
    resolution: int
    preprocessing: Preprocessing

    @property
    def kind(self) -> str | None:
        """What the weights are: a checkpoint kind (``base``, ``netaug-supernet``, ``tinytl``...)
        or ``random``."""
        return self.meta.get("kind")

    @property
    def model_name(self) -> str | None:
        return self.meta.get("model")


@dataclass(frozen=True)
class DataInfo:
    """Which images a stage used (export.json's ``calibration`` and ``evaluation.data``)."""

    spec: str
    unreadable_skipped: int | None = field(default=None, metadata=OMIT_NONE)
    images: int = 0
    split: str = ""
    classes: int = 0
    warning: str | None = field(default=None, metadata=OMIT_NONE)
    class_names: tuple[str, ...] = field(default=(), metadata=NOT_RECORDED)  # for labels.h

    def names_for(self, outputs: int) -> tuple[str, ...] | None:
        """The data's class names when they label a model with ``outputs`` classes (synthetic
        data has none worth naming)."""
        if self.warning or len(self.class_names) != outputs:
            return None
        return self.class_names


@dataclass(frozen=True)
class TflmTop1:
    """TFLite Micro's top-1 next to LiteRT's on the first evaluation images."""

    images: int
    top1_tflm_int8: float
    top1_litert_int8: float


@dataclass(frozen=True)
class Evaluation:
    """Top-1 of each runtime on ``--eval-data`` (and TFLM's, once the firmware stage ran)."""

    data: DataInfo
    top1: dict[str, float]
    tflm: TflmTop1 | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class Int8Model:
    """The converted model: its bytes, the images it was checked on (NHWC) and the checks."""

    data: bytes
    check_nhwc: np.ndarray
    static: Int8Check
    numerics: Int8Numerics
    layers: tuple[LayerError, ...]


@dataclass(frozen=True)
class Artifact:
    """A model file the export wrote: its size and SHA-256."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportState:
    """What the stages of one export found, in one place: ``export.json`` is written from it."""

    config: ExportConfig = field(metadata=NOT_RECORDED)
    loaded: Loaded = field(metadata=NOT_RECORDED)
    calibration: DataInfo
    classifier: str  # what the exported head is (export.json's classifier)
    static: Int8Check
    numerics: Int8Numerics
    layers: tuple[LayerError, ...]
    gate: GateVerdict
    artifacts: dict[str, Artifact]
    evaluation: Evaluation | None = None
    firmware: FirmwareResult | None = None
    verdicts: tuple[Verdict, ...] = ()  # one per requested board, of the shipped model

    @property
    def warnings(self) -> list[str]:
        """Every warning of the export, in the order they arose."""
        found = [self.calibration.warning]
        if self.evaluation is not None:
            found.append(self.evaluation.data.warning)
        return [w for w in found if w]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`tinyexport.export.pipeline.export` returns: the folder, export.json's document
    and the stage records."""

    out: Path
    provenance: dict[str, Any]
    stages: list[StageRecord]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

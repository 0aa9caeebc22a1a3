"""What to export and how: :class:`ExportConfig` (validated on construction) and its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinyexport.boards import BOARDS, Board
from tinyexport.errors import UserError
from tinyexport.firmware_eval.emulate import CORES
from tinyexport.firmware_eval.optimize import OptimizeOptions
from tinyexport.firmware_eval.verdicts import board_core
from tinyexport.safe_io import short_repr
from tinyexport.train.data import MAX_SYNTHETIC_IMAGES
from tinyexport.train.models import check_bounds
from tinyexport.train.validation import check_seed

__all__ = ["ARTIFACTS", "UNOPTIMIZED", "TFLM_ONLY", "RANDOM_WEIGHTS_WARNING", "MIN_TOP1_AGREEMENT",
           "MAX_TOP1_DROP", "ExportConfig", "default_out"]

ARTIFACTS = ("model.onnx", "model_fp32.tflite", "model_int8.tflite")
UNOPTIMIZED = "model_int8_unoptimized.tflite"  # kept when the memory optimiser rewrote the model
TFLM_ONLY = "model_int8_tflm.tflite"  # the firmware's model array: TFLM-only compaction
RANDOM_WEIGHTS_WARNING = ("no --checkpoint: the model has RANDOM weights; the export is valid for "
                          "deployability profiling but every accuracy figure is meaningless")
# The int8 gate's defaults (export/gate.py): on labelled data int8 may lose 2 points of top-1
# (full-int8 PTQ of these nets usually loses well under 1); without labels it must agree with
# fp32 on 90 % of the check images.
MIN_TOP1_AGREEMENT = 0.90
MAX_IMAGES = MAX_SYNTHETIC_IMAGES  # --calib-images / --check-images / --eval-images
MAX_TOP1_DROP = 2.0


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
    onnxsim: bool = False
    force: bool = False
    firmware: bool = True
    reorder: bool = True  # memory optimiser (firmware_eval/optimize.py), verified in TFLM
    offline_plan: bool = True
    compact: bool = True  # model compaction (tflite_graph/compact.py), verified in TFLM / LiteRT
    patch: str = "auto"  # auto: only when --board is given and the model does not fit it
    patch_max_mac_overhead: float = 0.30
    # The resolved profile: a name (``--board``) is looked up once, here, and never again. It
    # sets the firmware stage's CMSIS-NN scratch, patch budget and emulated core; ``boards`` holds
    # every requested board (``board`` first), each given a verdict.
    board: Board | None = None
    boards: tuple[Board, ...] = ()
    emulate: bool = False  # run the bundle on the board's core in QEMU (firmware_eval/emulate.py)
    seed: int = 0
    min_agreement: float = MIN_TOP1_AGREEMENT
    max_top1_drop: float = MAX_TOP1_DROP
    data_source: str = "flags"  # or "checkpoint": the data the checkpoint was trained on
    weights_source: str | None = None  # --pretrained: which release the checkpoint is

    def __post_init__(self) -> None:
        for name in ("calib_images", "check_images", "eval_images"):
            if not 1 <= getattr(self, name) <= MAX_IMAGES:
                raise UserError(f"--{name.replace('_', '-')} must be in 1..{MAX_IMAGES}, got "
                                f"{short_repr(getattr(self, name))}; a few hundred images "
                                "calibrate and check a model")
        check_seed("--seed", self.seed)

        check_bounds(resolution=self.resolution, num_classes=self.num_classes)
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UserError(f"--min-agreement must be a fraction in 0..1, got {self.min_agreement}")
        if not 0.0 <= self.max_top1_drop <= 100.0:
            raise UserError(f"--max-top1-drop must be in 0..100 (points), got {self.max_top1_drop}")
        if self.check_images > self.calib_images:
            raise UserError(f"--check-images {self.check_images} exceeds --calib-images "
                            f"{self.calib_images}: the int8 check runs on calibration images; "
                            "raise --calib-images or lower --check-images")
        if not self.firmware and (self.board or self.patch == "on"):
            given = " and ".join(f for f, v in (("--board", self.board),
                                                ("--patch on", self.patch == "on")) if v)
            raise UserError(f"{given} need the firmware stage, which --no-firmware skips; drop "
                            "--no-firmware or drop " + given)
        OptimizeOptions(patch=self.patch, max_mac_overhead=self.patch_max_mac_overhead)
        if isinstance(self.board, str):  # unknown: one line with close names, before any work
            object.__setattr__(self, "board", BOARDS.get(self.board))
        if self.board is not None and not self.boards:
            object.__setattr__(self, "boards", (self.board,))
        if self.boards and self.board != self.boards[0]:
            raise ValueError("ExportConfig: board must be the first of boards")
        if self.emulate:
            self._check_emulate()

    def _check_emulate(self) -> None:
        if not self.firmware:
            raise UserError("--emulate runs the C bundle, which --no-firmware skips")
        if self.board is None:
            raise UserError("--emulate runs the bundle on the core of --board; add --board "
                            "(e.g. stm32f746 for a Cortex-M7, stm32f412 for a Cortex-M4)")
        if board_core(self.board) is None:
            raise UserError(f"--emulate: {self.board.name} ({self.board.core}) has no "
                            f"emulated core; emulation covers {', '.join(CORES)}")


def default_out(model: str, resolution: int, boards: tuple[Board, ...] | list[Board] = ()
                ) -> Path:
    """``exports/<model>-r<res>-int8[-<board>...]``: the boards in the name, so exports of one
    model for several boards (the README's order) do not collide; more than three boards are
    counted instead of listed."""
    names = [b.name for b in boards]
    suffix = "".join(f"-{n}" for n in names) if len(names) <= 3 else f"-{len(names)}-boards"
    return Path("exports") / f"{model}-r{resolution}-int8{suffix}"

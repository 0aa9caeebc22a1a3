"""PyTorch → ONNX (opset 18, the dynamo exporter), ``onnx.checker`` and ONNX Runtime parity.

toolchain.md §4: torch 2.13 defaults to the dynamo exporter; opset 18 is its native opset (17 fails
to down-convert). ORT fp32 matches torch to ~1e-7 on small nets.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyexport.errors import StageError

_log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# fp32 reassociation between two runtimes; relative to the output's range (STYLE.md habit 6: ≈1e-4).
PARITY_RTOL = 1e-4


@dataclass(frozen=True)
class Parity:
    """Max |candidate − reference| over a batch, and whether it is within tolerance."""

    name: str
    max_abs_diff: float
    output_scale: float
    tolerance: float
    top1_agreement: float
    passed: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def compare_outputs(name: str, reference: np.ndarray, candidate: np.ndarray,
                    rtol: float = PARITY_RTOL) -> Parity:
    """Parity of two (N, classes) float outputs: max abs diff vs ``rtol`` × max |reference|."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    diff = float(np.abs(reference - candidate).max())
    scale = max(float(np.abs(reference).max()), 1e-12)
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return Parity(name, diff, scale, rtol * scale, agree, diff <= rtol * scale)


@torch.no_grad()
def compare_modules(name: str, reference: nn.Module, candidate: nn.Module, images: torch.Tensor,
                    rtol: float = PARITY_RTOL) -> Parity:
    """``compare_outputs`` of two torch models (eval mode) on the same ``images``: the
    equivalence check after each model surgery (fusion, the 1×1-conv head)."""
    return compare_outputs(name, reference.eval()(images).numpy(),
                           candidate.eval()(images).numpy(), rtol)


def to_onnx(model: nn.Module, path: str | os.PathLike, resolution: int) -> Path:
    """Export ``model`` (eval mode) with a fixed 1×3×R×R input to ``path`` and run ``onnx.checker``."""
    import onnx

    path = Path(path)
    example = torch.zeros(1, 3, resolution, resolution)
    quiet = io.StringIO()
    try:
        # torch.export's own deprecation chatter (FutureWarning); scoped to this call only
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model.eval(), (example,), str(path), opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamo=True, external_data=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise StageError(f"torch.onnx.export failed: {str(exc).splitlines()[0][:300]}") from None
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StageError(f"onnx.checker rejected the exported model: {exc}") from None
    return path


def run_onnxruntime(path: str | os.PathLike, images_nchw: np.ndarray) -> np.ndarray:
    """Logits of the ONNX model on a batch (run one image at a time: the input is fixed 1×3×R×R)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None].astype(np.float32)})[0]
                           for x in images_nchw])

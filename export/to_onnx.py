"""PyTorch → ONNX (opset 18, the dynamo exporter), ``onnx.checker`` and ONNX Runtime parity.

docs/toolchain.md §4: torch 2.13 defaults to the dynamo exporter; opset 18 is its native opset (17 fails
to down-convert). ORT fp32 matches torch to ~1e-7 on small nets.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyexport.errors import StageError

_log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
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

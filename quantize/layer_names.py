"""Map the ops of an int8 ``.tflite`` back to the PyTorch modules they came from.

onnx2tf names TFLite tensors after the TF ops it emitted (``model/tf.nn.convolution_7/...``), not
after the ONNX nodes, so names cannot be followed back. Weights can: every CONV_2D /
DEPTHWISE_CONV_2D / FULLY_CONNECTED carries its filter, which dequantized with its own
per-channel scales (docs/style.md §13) equals the fused PyTorch module's weight in TFLite's layout
(conv OHWI, depthwise 1HWO, dense OI) up to int8 rounding. Each weighted op is matched to the
module with that shape whose weight is closest; any other op (ADD, PAD, MEAN, ...) is reported as
following the last weighted op before it (ops are stored in execution order).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from tinyexport.tflite_graph.quant import dequantize_values
from tinyexport.tflite_graph.reader import Graph, constant_values, parse_graph

_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# int8 rounding error of a weight is ≤ half a step (≈ 0.4 % of the channel range); a wrong
# module of the same shape differs by ~100 %. 5 % separates the two with a wide margin.
MAX_RELATIVE_ERROR = 0.05


def _tflite_layout(module: nn.Module) -> tuple[str, np.ndarray] | None:
    """(op kind, weight in TFLite's layout) of a Conv2d / Linear, else None."""
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return None
    w = module.weight.detach().double().numpy()
    if isinstance(module, nn.Linear):
        return "FULLY_CONNECTED", w
    if module.groups > 1 and module.groups == module.in_channels == w.shape[0]:
        return "DEPTHWISE_CONV_2D", w.transpose(1, 2, 3, 0)  # (O,1,kH,kW) -> (1,kH,kW,O)
    if module.groups == 1:
        return "CONV_2D", w.transpose(0, 2, 3, 1)  # (O,I,kH,kW) -> (O,kH,kW,I)
    return None


def _dequantized_filter(data: bytes, graph: Graph, index: int) -> np.ndarray | None:
    """A constant filter dequantized with its own (per-channel) scales; None if not constant."""
    tensor = graph.tensors[index]
    values = constant_values(data, tensor)
    return None if values is None else dequantize_values(values, tensor.quant)


def _best_module(kind: str, weights: np.ndarray, candidates: dict[str, tuple[str, np.ndarray]]
                 ) -> str | None:
    best, best_err = None, MAX_RELATIVE_ERROR
    for name, (cand_kind, w) in candidates.items():
        if cand_kind != kind or w.shape != weights.shape:
            continue
        err = float(np.linalg.norm(w - weights) / max(np.linalg.norm(w), 1e-30))
        if err < best_err:
            best, best_err = name, err
    return best


def op_modules(model_bytes: bytes, model: nn.Module) -> dict[int, str]:
    """Op index -> PyTorch module name (``blocks.3.depthwise.conv``) for every op of the file;
    ops without weights read ``after <module>`` (or ``model input`` before the first one)."""
    graph = parse_graph(model_bytes)
    candidates = {name: layout for name, m in model.named_modules()
                  if (layout := _tflite_layout(m)) is not None}
    names: dict[int, str] = {}
    last = None
    for op in graph.ops:
        found = None
        if op.opcode in _WEIGHTED and len(op.inputs) > 1 and op.inputs[1] >= 0:
            weights = _dequantized_filter(model_bytes, graph, op.inputs[1])
            found = None if weights is None else _best_module(op.opcode, weights, candidates)
        if found is not None:
            names[op.index], last = found, found
        else:
            names[op.index] = f"after {last}" if last else "model input"
    return names


def tensor_modules(model_bytes: bytes, model: nn.Module) -> dict[str, str]:
    """TFLite tensor name -> PyTorch module name of the op that produces it."""
    graph = parse_graph(model_bytes)
    modules = op_modules(model_bytes, model)
    return {graph.tensors[i].name: modules[op.index]
            for op in graph.ops for i in op.outputs if i >= 0}

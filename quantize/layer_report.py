"""Per-layer int8 error report: every int8 activation vs its float counterpart (SQNR, worst first).

The float model is converted from the same saved_model without quantization, so activation
tensors carry the same names in both files. The producing op of each tensor is read from the
flatbuffer (:mod:`tinyexport.tflite_graph`). Both run on LiteRT with all tensors preserved; each
int8 tensor is dequantized with its own scale / zero point (docs/style.md §13) and compared.
A low SQNR early in the network (typically a depthwise conv, the MobileNetV2 PTQ weak spot)
points at the layer to keep per-channel, recalibrate, or train with QAT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyexport.errors import printable
from tinyexport.quantize.int8_checks import db_text, dequantize, quantize_input, sqnr_db
from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.tflite_graph.reader import parse_graph


@dataclass(frozen=True)
class LayerError:
    tensor: str
    op: str
    shape: tuple[int, ...]
    sqnr_db: float
    module: str = ""  # PyTorch module (tinyexport.quantize.layer_names), when known


def _activations(model_bytes: bytes, images_nhwc: np.ndarray) -> tuple[dict, dict, dict]:
    """name -> list of float activations per image; name -> producing op; name -> detail."""
    interpreter = make_interpreter(model_bytes, preserve_all_tensors=True, delegates=False)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    producers = {i: op.opcode for op in parse_graph(model_bytes).ops for i in op.outputs if i >= 0}
    inp = interpreter.get_input_details()[0]
    values: dict[str, list[np.ndarray]] = {}
    for image in images_nhwc:
        interpreter.set_tensor(inp["index"], quantize_input(image[None], inp))
        interpreter.invoke()
        for index in producers:
            detail = details[index]
            values.setdefault(detail["name"], []).append(
                dequantize(interpreter.get_tensor(index), detail))
    ops = {details[i]["name"]: op for i, op in producers.items()}
    return values, ops, {d["name"]: d for d in details.values()}


def layer_errors(int8_bytes: bytes, float_bytes: bytes, images_nhwc: np.ndarray
                 ) -> list[LayerError]:
    """SQNR of every int8 activation whose float twin (same name and shape) exists; worst first."""
    q_values, q_ops, q_details = _activations(int8_bytes, images_nhwc)
    f_values, _, _ = _activations(float_bytes, images_nhwc)
    rows = []
    for name, q in q_values.items():
        f = f_values.get(name)
        if f is None or np.dtype(q_details[name]["dtype"]).kind == "f" or f[0].shape != q[0].shape:
            continue
        rows.append(LayerError(name, q_ops[name], tuple(int(s) for s in q[0].shape),
                               sqnr_db(np.stack(f), np.stack(q))))
    return sorted(rows, key=lambda r: r.sqnr_db)


def render_layer_table(rows: list[LayerError], limit: int = 15) -> str:
    lines = ["| # | op | module | tensor | shape | SQNR (dB) |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(rows[:limit], 1):
        lines.append(f"| {i} | {printable(row.op)} | {printable(row.module or '?')} | "
                     f"`{printable(row.tensor, 60)}` | {'x'.join(map(str, row.shape))} | "
                     f"{db_text(row.sqnr_db)} |")
    return "\n".join(lines)

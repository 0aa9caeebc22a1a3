"""Checks on a full-int8 ``.tflite``: what TFLite Micro will accept, and how close to float it is.

* ops, read from the flatbuffer (:mod:`tinyexport.tflite_graph`): only builtins registered by
  TFLM (``tflite_graph.ops.TFLM_OPS``); no TRANSPOSE (layout leftovers, docs/tflm_memory.md §11.5), no
  DEQUANTIZE and no op with float operands (float compute; hybrid models are rejected by TFLM);
  int8 input and output (LiteRT's input / output details).
* numerics: LiteRT runs the model (reference kernels = TFLM's arithmetic, docs/toolchain.md §8); int8
  vs float top-1 agreement and output SQNR.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from tinyexport.errors import StageError, printable
from tinyexport.tflite_graph.integrity import check_integrity
from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.tflite_graph.ops import TFLM_OPS
from tinyexport.tflite_graph.quant import dequantize_values, quantize_values
from tinyexport.tflite_graph.reader import Graph, Op, Quant, parse_graph

_log = logging.getLogger(__name__)

FORBIDDEN = frozenset({"TRANSPOSE", "DEQUANTIZE"})
_FLOATS = frozenset({"float16", "float32", "float64"})


def db_text(value: float | str) -> str:
    """A dB figure as printed: one decimal, or ``inf`` for an exact result (an SQNR with no noise
    at all is infinite; export.json stores it as the string ``"inf"``). The one formatter of SQNR
    for every renderer."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return printable(value)
    return f"{number:.1f}" if math.isfinite(number) else str(number)


@dataclass(frozen=True)
class OpProblem:
    index: int
    op: str
    layer: str  # the op's output tensor name (the TF layer it came from)
    reason: str
    module: str = ""  # the PyTorch module, when known (tinyexport.quantize.layer_names)

    def describe(self) -> str:
        where = f"module {self.module}, " if self.module else ""
        return f"op #{self.index} {self.op} ({where}tensor {self.layer!r}): {self.reason}"


@dataclass(frozen=True)
class Int8Check:
    """Static checks of an int8 model (ops, I/O types, quantization parameters)."""

    passed: bool
    size_bytes: int
    op_histogram: dict[str, int]
    input: dict
    output: dict
    problems: tuple[OpProblem, ...]


def _io(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(s) for s in detail["shape"]], "scale": float(scale),
            "zero_point": int(zero_point)}


def _op_problem(graph: Graph, op: Op) -> str | None:
    """Why TFLM cannot run ``op`` as int8, or None."""
    if op.opcode not in TFLM_OPS:
        return "not a TFLite Micro builtin op"
    if op.opcode in FORBIDDEN:
        return "layout transpose left in the graph" if op.opcode == "TRANSPOSE" \
            else "dequantizes to float"
    if any(graph.tensors[i].dtype in _FLOATS for i in (*op.inputs, *op.outputs) if i >= 0):
        return "computes in float"
    return None


def _op_problems(graph: Graph) -> list[OpProblem]:
    problems = []
    for op in graph.ops:
        reason = _op_problem(graph, op)
        if reason:
            outputs = [i for i in op.outputs if i >= 0]
            layer = graph.tensors[outputs[0]].name if outputs else "?"
            problems.append(OpProblem(op.index, op.opcode, layer, reason))
    return problems


def check_int8_model(model_bytes: bytes) -> Int8Check:
    """Static TFLM-readiness checks; the result lists every problem (empty = deployable).

    Raises:
        UserError: the bytes are not a consistent TFLite graph
            (:func:`tinyexport.tflite_graph.integrity.check_integrity`).
    """
    graph = parse_graph(model_bytes, "the int8 model", "TFLite model")
    check_integrity(graph, "the int8 model")
    interpreter = make_interpreter(model_bytes, delegates=False)
    problems = _op_problems(graph)
    inp, out = _io(interpreter.get_input_details()[0]), _io(interpreter.get_output_details()[0])
    for label, io in (("input", inp), ("output", out)):
        if io["dtype"] != "int8":
            problems.append(OpProblem(-1, label.upper(), io["name"],
                                      f"model {label} is {io['dtype']}, TFLM deploys int8"))
    histogram = dict(Counter(op.opcode for op in graph.ops).most_common())
    return Int8Check(passed=not problems, size_bytes=len(model_bytes), op_histogram=histogram,
                     input=inp, output=out, problems=tuple(problems))


def quantize_input(images_nhwc: np.ndarray, detail: dict) -> np.ndarray:
    """Float NHWC images → the model's input dtype, with the scale / zero point read from it."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images_nhwc.astype(dtype)
    scale, zero_point = detail["quantization"]
    return quantize_values(images_nhwc, scale, zero_point, dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A LiteRT output (``detail`` from the interpreter) in float64, with its own scale / zero
    point; float outputs unchanged."""
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float64)
    scale, zero_point = detail["quantization"]
    return dequantize_values(values, Quant((scale,), (zero_point,)))


def run_tflite(model_bytes: bytes, images_nhwc: np.ndarray, reference_kernels: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Run a one-input model image by image. Returns (dequantized float outputs, raw outputs)."""
    interpreter = make_interpreter(model_bytes, reference_kernels)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    raw = []
    for image in images_nhwc:
        interpreter.set_tensor(inp["index"], quantize_input(image[None], inp))
        interpreter.invoke()
        raw.append(interpreter.get_tensor(out["index"])[0].copy())
    raw_arr = np.stack(raw)
    return dequantize(raw_arr, out), raw_arr


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10·log10(Σref² / Σ(ref − cand)²), in dB."""
    reference = np.asarray(reference, np.float64)
    noise = float(((reference - np.asarray(candidate, np.float64)) ** 2).sum())
    signal = float((reference ** 2).sum())
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))


@dataclass(frozen=True)
class Int8Numerics:
    images: int
    top1_agreement: float
    sqnr_db: float
    reference_kernels_ran: bool
    max_lsb_diff_ref_vs_default: int


def compare_int8_to_float(int8_bytes: bytes, float_bytes: bytes, images_nhwc: np.ndarray,
                          ref_images: int = 4) -> tuple[Int8Numerics, np.ndarray]:
    """int8 vs fp32 TFLite on ``images_nhwc``: top-1 agreement and output SQNR; the first
    ``ref_images`` also run on LiteRT's reference kernels (TFLM's arithmetic).

    Returns the numerics and the int8 model's dequantized outputs.
    """
    float_out, _ = run_tflite(float_bytes, images_nhwc)
    int8_out, int8_raw = run_tflite(int8_bytes, images_nhwc)
    try:
        _, ref_raw = run_tflite(int8_bytes, images_nhwc[:ref_images], reference_kernels=True)
    except RuntimeError as exc:
        raise StageError(f"LiteRT reference kernels cannot run the int8 model: {exc}") from None
    lsb = int(np.abs(ref_raw.astype(np.int32) - int8_raw[:ref_images].astype(np.int32)).max())
    agree = float((float_out.argmax(1) == int8_out.argmax(1)).mean())
    numerics = Int8Numerics(len(images_nhwc), agree, sqnr_db(float_out, int8_out), True, lsb)
    return numerics, int8_out

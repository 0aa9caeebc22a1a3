"""Checks on a full-int8 ``.tflite``: what TFLite Micro will accept, and how close to float it is.

* ops: only builtins registered by TFLM's ``MicroMutableOpResolver`` (tflite-micro @ 90b983c2,
  ``micro_mutable_op_resolver.h``); no TRANSPOSE (layout leftovers, tflm_memory.md §11.5), no
  DEQUANTIZE and no op with float operands (float compute; hybrid models are rejected by TFLM);
  int8 input and output.
* numerics: LiteRT runs the model (reference kernels = TFLM's arithmetic, toolchain.md §8); int8
  vs float top-1 agreement and output SQNR.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tinyexport.errors import StageError

_log = logging.getLogger(__name__)

TFLM_BUILTINS = frozenset((
    "ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND "
    "BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM "
    "DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP "
    "EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER "
    "GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG "
    "LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM "
    "MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_ALL REDUCE_MAX "
    "REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT "
    "SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE "
    "SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV "
    "UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE").split())
FORBIDDEN = frozenset({"TRANSPOSE", "DEQUANTIZE"})
_FLOATS = (np.float16, np.float32, np.float64)


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

    op_histogram: dict[str, int]
    problems: tuple[OpProblem, ...]
    input: dict
    output: dict
    size_bytes: int
    passed: bool = field(default=False)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "size_bytes": self.size_bytes,
                "op_histogram": self.op_histogram, "input": self.input, "output": self.output,
                "problems": [p.describe() for p in self.problems]}


def make_interpreter(model_bytes: bytes, reference_kernels: bool = False,
                     preserve_all_tensors: bool = False, delegates: bool = True):
    """A LiteRT interpreter on ``model_bytes`` (reference kernels = TFLM's arithmetic; without
    ``delegates`` the op list is the file's own, with no XNNPACK DELEGATE node)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if reference_kernels:
        resolver = OpResolverType.BUILTIN_REF
    else:
        resolver = (OpResolverType.AUTO if delegates
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_content=model_bytes, experimental_op_resolver_type=resolver,
                              experimental_preserve_all_tensors=preserve_all_tensors)
    interpreter.allocate_tensors()
    return interpreter


def _io(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(s) for s in detail["shape"]], "scale": float(scale),
            "zero_point": int(zero_point)}


def _op_problems(interpreter) -> list[OpProblem]:
    tensors = interpreter.get_tensor_details()
    problems = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - LiteRT's only op listing
        name = op["op_name"]
        outputs = [int(i) for i in op["outputs"] if i >= 0]
        layer = tensors[outputs[0]]["name"] if outputs else "?"
        reason = None
        if name not in TFLM_BUILTINS:
            reason = "not a TFLite Micro builtin op"
        elif name in FORBIDDEN:
            reason = ("layout transpose left in the graph" if name == "TRANSPOSE"
                      else "dequantizes to float")
        elif any(t in _FLOATS for t in list(op["operand_types"]) + list(op["result_types"])):
            reason = "computes in float"
        if reason:
            problems.append(OpProblem(int(op["index"]), name, layer, reason))
    return problems


def check_int8_model(model_bytes: bytes) -> Int8Check:
    """Static TFLM-readiness checks; the result lists every problem (empty = deployable)."""
    interpreter = make_interpreter(model_bytes, delegates=False)
    ops = interpreter._get_ops_details()  # noqa: SLF001
    problems = _op_problems(interpreter)
    inp, out = _io(interpreter.get_input_details()[0]), _io(interpreter.get_output_details()[0])
    for label, io in (("input", inp), ("output", out)):
        if io["dtype"] != "int8":
            problems.append(OpProblem(-1, label.upper(), io["name"],
                                      f"model {label} is {io['dtype']}, TFLM deploys int8"))
    histogram = dict(Counter(op["op_name"] for op in ops).most_common())
    return Int8Check(histogram, tuple(problems), inp, out, len(model_bytes), not problems)


def quantize_input(images_nhwc: np.ndarray, detail: dict) -> np.ndarray:
    """Float NHWC images → the model's input dtype, with the scale / zero point read from it."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images_nhwc.astype(dtype)
    scale, zero_point = detail["quantization"]
    return quantize_values(images_nhwc, scale, zero_point, dtype)


def quantize_values(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """``clip(round(x / scale) + zero_point)`` with round half away from zero, as TFLite's own
    QUANTIZE (``TfLiteRound`` = ``std::round``) and the bundle's ``main.cc`` (``lround``) do."""
    v = np.asarray(values, dtype=np.float64) / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float64)
    return (values.astype(np.float64) - zero_point) * scale


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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

"""Can TFLite Micro run this ``.tflite``? Checks on the flatbuffer, before any figure or run.

* :func:`validate` - refuse a corrupt graph (:mod:`tinyexport.tflite_graph.integrity`: bounds,
  shapes, op rules, quantization parameters) and what the arena analyser and TFLM cannot handle (several subgraphs,
  float / hybrid / 16x8 models, non-int8 I/O, corrupt filters, ops TFLM lacks), as
  :class:`UserError` (docs/tflm_memory.md §11.3).
* :func:`load_verified` - also LiteRT's real flatbuffer verifier, in a child process.
* :func:`runtime_blockers` - models the analyser can plan but TFLM would abort on or compute
  garbage for (a collapsed SOFTMAX input scale, a batch dimension TFLM would not resize).
"""

from __future__ import annotations

import math
from pathlib import Path

from tinyexport.errors import UserError
from tinyexport.firmware_eval.tflm_runner import verify_models
from tinyexport.tflite_graph.integrity import check_integrity
from tinyexport.tflite_graph.ops import TFLM_OPS
from tinyexport.tflite_graph.reader import Graph, read_graph

_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
INVALID = "int8 TFLite model"  # "FILE is not a valid int8 TFLite model: <first problem>"
# Ops whose data input 0 and output 0 are int8 in a full-int8 model (SOFTMAX: input only; its
# output may be int16). Elementwise, shape and data-movement ops may also carry int32 (shape
# arithmetic); no op of a full-int8 model reads or writes float.
_INT8_IO = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
            "MEAN", "RESIZE_BILINEAR"}


def validate(graph: Graph, label: str) -> None:
    """Raise :class:`UserError` unless the graph is consistent (:func:`check_integrity`) and TFLM
    can run it as int8 (docs/tflm_memory.md §11.3)."""
    check_integrity(graph, label, INVALID)
    if graph.num_subgraphs != 1:
        raise UserError(f"{label}: {graph.num_subgraphs} subgraphs (control flow); the arena "
                        "analyser supports single-subgraph models only")
    # An int32/int64 output made by ARG_MAX/ARG_MIN (e.g. a segmentation head) runs in TFLM too.
    index_outputs = {o for op in graph.ops if op.opcode in {"ARG_MAX", "ARG_MIN"}
                     for o in op.outputs}
    io = [graph.tensors[i] for i in (*graph.inputs, *graph.outputs)
          if not (i in index_outputs and graph.tensors[i].dtype in {"int32", "int64"})]
    bad_io = sorted({t.dtype for t in io if t.dtype != "int8"})
    compute = [(op, graph.tensors[op.inputs[2 if op.opcode == "TRANSPOSE_CONV" else 0]],
                graph.tensors[op.inputs[1]])
               for op in graph.ops if op.opcode in _COMPUTE_OPS and len(op.inputs) > 2 - (
                   op.opcode != "TRANSPOSE_CONV") and min(op.inputs[:2]) >= 0]
    if any(w.dtype == "int8" and x.dtype.startswith("float") for _, x, w in compute):
        raise UserError(f"{label} is a hybrid model (int8 weights, float activations); TFLM runs "
                        "int8 compute only - export a full-integer model (--int8)")
    if any(w.dtype.startswith("float") for _, _, w in compute) or (
            "float32" in bad_io and not compute):
        raise UserError(f"{label} is a float model; TFLM needs int8 inputs/outputs and int8 "
                        "compute - export with --int8 (full-integer quantization)")
    if any(x.dtype == "int16" for _, x, _ in compute):
        raise UserError(f"{label} is 16x8-quantized (int16 activations, int8 weights); the arena "
                        "analyser handles int8 models only - export with full int8 quantization")
    if "float32" in bad_io:
        raise UserError(f"{label} has float32 inputs/outputs around int8 compute (QUANTIZE/"
                        "DEQUANTIZE at the edges); TFLM needs int8 I/O - convert with "
                        "inference_input_type = inference_output_type = tf.int8 (--int8)")
    if bad_io:
        hint = " (uint8 quantization is deprecated in TFLM: use int8)" if "uint8" in bad_io else ""
        raise UserError(f"{label}: input/output dtype {', '.join(bad_io)}; TFLM needs int8 I/O"
                        + hint)
    for op, _, w in compute:
        want = 2 if op.opcode == "FULLY_CONNECTED" else 4
        if len(w.shape) != want or any(o < 0 for o in op.outputs):
            raise UserError(f"{label}: {op.opcode} #{op.index} has a {len(w.shape)}-D filter "
                            f"(expected {want}-D); the file is corrupt - re-export it")
    missing = sorted({op.opcode for op in graph.ops} - TFLM_OPS)
    if missing:
        raise UserError(f"{label} uses ops TFLite Micro lacks: {', '.join(missing)}; replace "
                        "them in the model before export")
    _check_int8_ops(graph, label)


def _check_int8_ops(graph: Graph, label: str) -> None:
    """int8 data in and out of the ops a full-int8 model computes with."""
    for op in graph.ops:
        problem = _int8_op_problem(graph, op)
        if problem:
            raise UserError(f"{label} is not a valid {INVALID}: {op.opcode} #{op.index} {problem}")


def _int8_op_problem(graph: Graph, op) -> str | None:
    floats = [i for i in (*op.inputs, *op.outputs)
              if i >= 0 and graph.tensors[i].dtype.startswith(("float", "bfloat"))]
    if floats:
        return f"reads or writes {graph.tensors[floats[0]].dtype} tensor {floats[0]}"
    sides = [("input", op.inputs[0])]
    if op.opcode != "SOFTMAX":
        sides.append(("output", op.outputs[0]))
    for side, i in sides if op.opcode in _INT8_IO | {"SOFTMAX"} else ():
        if graph.tensors[i].dtype != "int8":
            return f"{side} is {graph.tensors[i].dtype}; TFLM's int8 kernels need int8"
    return None


def runtime_blockers(graph: Graph) -> list[str]:
    """Why TFLM would abort or compute garbage on a model the analyser can still plan: reported
    as errors next to the arena analysis, and TFLM is not started on such a model."""
    return _softmax_scale_problems(graph) + _batch_shape_problems(graph)


def _softmax_scale_problems(graph: Graph) -> list[str]:
    """int8 SOFTMAX Prepare (kernels/softmax_common.cc) calls PreprocessSoftmaxScaling, whose
    QuantizeMultiplierGreaterThanOne does TFLITE_CHECK_GT(beta * input_scale * 2^26, 1): a
    smaller input scale aborts the process with no message (quantization_util.cc; seen on a
    randomly initialised Keras MobileNetV2 whose logits calibrated to scale 7.8e-9)."""
    problems = []
    for op in graph.ops:
        if op.opcode != "SOFTMAX" or not op.inputs or op.inputs[0] < 0:
            continue
        x = graph.tensors[op.inputs[0]]
        if x.dtype != "int8" or not x.quant.scales:
            continue
        beta, scale = op.option("beta", 1.0), x.quant.scales[0]
        if beta * scale * 2.0 ** 26 <= 1.0:
            problems.append(
                f"SOFTMAX #{op.index} has input scale {scale:.3g} (beta {beta:g}); TFLM aborts "
                f"(SIGABRT) when beta * scale <= 2^-26 ({2.0 ** -26:.3g}) - the logits collapsed "
                "in calibration (untrained weights or unrepresentative data); recalibrate the "
                "model or export it without the softmax")
    return problems


def _batch_shape_problems(graph: Graph) -> list[str]:
    """TFLM never resizes tensors: SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND Prepare check only the
    rank (kernels/space_to_batch_nd.cc, batch_to_space_nd.cc) and Eval writes/reads by the stored
    shapes. TFLiteConverter can leave an un-fused dilated convolution whose stored batch dims are
    1 where the op makes prod(block_shape); TFLM then reads past a buffer and the output depends on
    the arena contents (seen on a Keras Conv2D(dilation_rate=2, padding='same') int8 export)."""
    problems = []
    for op in graph.ops:
        if op.opcode not in {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} or len(op.inputs) < 2:
            continue
        x, block, y = (graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]],
                       graph.tensors[op.outputs[0]])
        if not (x.shape and y.shape and block.is_const):
            continue
        factor = math.prod(graph.extra.get("int_buffers", {}).get(block.index, ()) or (0,))
        if factor <= 0:
            continue
        want = x.shape[0] * factor if op.opcode == "SPACE_TO_BATCH_ND" else x.shape[0] // factor
        if y.shape[0] != want:
            problems.append(
                f"{op.opcode} #{op.index} stores output batch {y.shape[0]} but makes {want}; "
                "TFLM does not resize tensors, so it would compute garbage (an un-fused dilated "
                "convolution left by the converter) - re-export so the dilation stays inside "
                "CONV_2D / DEPTHWISE_CONV_2D (e.g. padding='valid' with an explicit pad)")
    return problems


def load(path: str | Path) -> Graph:
    """Read and validate a model (static checks only)."""
    graph = read_graph(path, INVALID)
    validate(graph, str(path))
    return graph


def load_verified(path: str | Path) -> Graph:
    """:func:`load`, then LiteRT's flatbuffer verifier and ``allocate_tensors`` in a child
    process (:func:`tflm_runner.verify_models`): what the static checks cannot see (misaligned
    tables, offsets the generated reader follows without complaint) becomes one UserError."""
    graph = load(path)
    problem = verify_models([Path(path)])[0]
    if problem:
        raise UserError(f"{path} is not a valid {INVALID}: {problem}")
    return graph

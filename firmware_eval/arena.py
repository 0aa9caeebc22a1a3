"""Predict TFLite Micro's arena (head / tail / total) from the flatbuffer alone.

* head: :func:`planner.greedy_plan` over the buffers TFLM plans, plus the scratch buffers the
  reference kernels request (MEAN/SUM int8 accumulators, int4 filters; ``reduce_common.cc``,
  ``conv_common.cc``). For a board, the CMSIS-NN scratch of its ISA is added per op
  (tflm_memory.md §5) and the head is re-planned with it.
* tail: the persistent section (tflm_memory.md §1, §6): allocator objects, one 24 B
  ``TfLiteEvalTensor`` per tensor, one 64 B ``NodeAndRegistration`` per op, the Python wrapper's
  persistent I/O tensors, each op's ``OpData`` and builtin-options struct, and the per-channel
  multiplier/shift arrays (2 x int32 per output channel) of conv, depthwise and per-channel FC.
  ``OpData`` sizes were measured with :mod:`calibrate` on tflite-micro 0.dev20261023182759
  (x86-64, reference kernels); builtin-options sizes are the x86-64 sizes of the
  ``TfLite*Params`` structs in ``tensorflow/lite/core/c/builtin_op_data.h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tinyexport.firmware_eval import planner
from tinyexport.firmware_eval.flatbuf import Graph, Op

# Fixed tail of every model: SingleArenaBufferAllocator, RecordingMicroAllocator,
# GreedyMemoryPlanner, MicroBuiltinDataAllocator, SubgraphAllocations (512 B, the part of the tail
# that print_allocations() does not itemise, less the builtin-options structs) + the 2 fixed
# persistent buffers every model requests (16 B). Fitted on 9 int8 models (3 zoo exports, a
# per-tensor export, Keras MobileNetV2, 4 small Keras CNNs; docs/firmware_eval.md): the remainder
# equals 512 B + the builtin structs below + 8 B per scratch handle to within 4 B on each.
FIXED_TAIL = 528
EVAL_TENSOR = 24  # sizeof(TfLiteEvalTensor)
NODE = 64  # sizeof(NodeAndRegistration)
IO_TENSOR = 96  # persistent TfLiteTensor (64 B) + its per-tensor quantization data (32 B)
SCRATCH_HANDLE = 8  # sizeof(ScratchBufferHandle)
# Alignment padding between persistent buffers: "Persistent buffer data" used minus the summed
# per-op sizes measured 0 B on the zoo exports and 32-52 B on the small Keras CNNs (the order of
# allocations decides the padding). 48 B keeps the prediction from falling short on small models.
PERSISTENT_ALIGN_SLACK = 48

# OpData bytes per op (calibrate.py on tflite-micro 0.dev20261023182759, x86-64; zoo models
# re-checked: the summed prediction equals 'Persistent buffer data' to the byte on mcunet).
# RESHAPE allocates none: calibrate reports 0 B for a constant shape input (onnx2tf's head
# reshape); the 8 B it reports for a computed shape input come from that input becoming a
# persistent I/O tensor of the single-op model, not from the kernel.
OP_DATA = {
    "CONV_2D": 80, "DEPTHWISE_CONV_2D": 80, "FULLY_CONNECTED": 72, "ADD": 68, "SUB": 60,
    "MUL": 44, "AVERAGE_POOL_2D": 32, "MAX_POOL_2D": 32, "SHAPE": 0, "PACK": 0, "RESHAPE": 0,
    "STRIDED_SLICE": 84, "SOFTMAX": 80, "MEAN": 44, "PAD": 56, "QUANTIZE": 32, "DEQUANTIZE": 24,
    "CONCATENATION": 88, "HARD_SWISH": 20, "LOGISTIC": 16, "RELU": 16, "RELU6": 16,
    "TRANSPOSE": 0, "SPLIT": 0, "SQUEEZE": 0, "RESIZE_BILINEAR": 0, "LEAKY_RELU": 24,
}
DEFAULT_OP_DATA = 64
# sizeof(TfLite*Params) (tensorflow/lite/core/c/builtin_op_data.h, x86-64) rounded up to 4 B:
# conv / depthwise 7 ints = 28, pool 6 ints + TfLitePaddingValues = 40, FC 16, reshape 9 ints = 36,
# strided slice 24. Ops whose parser allocates nothing (PAD, HARD_SWISH, LOGISTIC, QUANTIZE, ...)
# and MEAN (a 1-byte bool, absorbed by alignment) are 0. Confirmed by the fit above.
BUILTIN_DATA = {
    "CONV_2D": 28, "DEPTHWISE_CONV_2D": 28, "FULLY_CONNECTED": 16, "ADD": 8, "SUB": 8, "MUL": 4,
    "AVERAGE_POOL_2D": 40, "MAX_POOL_2D": 40, "RESHAPE": 36, "STRIDED_SLICE": 24, "PACK": 8,
    "SOFTMAX": 4, "MEAN": 0, "CONCATENATION": 8, "SHAPE": 4, "SQUEEZE": 36, "SPLIT": 4,
    "RESIZE_BILINEAR": 4, "LEAKY_RELU": 4, "TRANSPOSE": 0, "PAD": 0, "QUANTIZE": 0,
    "DEQUANTIZE": 0, "HARD_SWISH": 0, "LOGISTIC": 0, "RELU": 0, "RELU6": 0,
}
DEFAULT_BUILTIN_DATA = 16
# Ops in the TFLM op resolver (all_ops_resolver / micro_mutable_op_resolver.h, @90b983c2) that a
# CNN export may use; anything else is reported as unsupported.
TFLM_OPS = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST",
    "CEIL", "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D",
    "DEQUANTIZE", "DIV", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP", "EXPAND_DIMS", "FILL",
    "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER", "GATHER_ND", "GREATER",
    "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LESS",
    "LESS_EQUAL", "LOG", "LOG_SOFTMAX", "LOGICAL_AND", "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC",
    "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "PACK",
    "PAD", "PADV2", "PRELU", "QUANTIZE", "READ_VARIABLE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND",
    "RSQRT", "SELECT_V2", "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND",
    "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SVDF", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
})
_CONV_LIKE = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}


@dataclass(frozen=True)
class OpRow:
    """One row of the per-op table."""

    index: int
    opcode: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shapes: tuple[tuple[int, ...], ...]
    macs: int
    live_bytes: int
    scratch_bytes: int


@dataclass(frozen=True)
class ArenaPrediction:
    head: int
    tail: int
    lower_bound: int
    linear: int
    scratch: dict[int, list[int]]
    ops: tuple[OpRow, ...]
    offsets: tuple[int, ...] = field(repr=False, default=())

    @property
    def total(self) -> int:
        return self.head + self.tail


def per_channel_bytes(graph: Graph, op: Op) -> int:
    """Per-channel output multiplier + shift (int32 each) that conv-like ops keep in the tail."""
    if op.opcode in _CONV_LIKE or op.opcode == "FULLY_CONNECTED":
        if len(op.inputs) < 2 or op.inputs[1] < 0:
            return 0
        filt = graph.tensors[op.inputs[1]]
        if op.opcode == "FULLY_CONNECTED" and len(filt.quant.scales) <= 1:
            return 0
        channels = graph.tensors[op.outputs[0]].shape[-1] if graph.tensors[op.outputs[0]].shape \
            else 0
        return 2 * 4 * channels
    return 0


def reference_scratch(graph: Graph) -> dict[int, list[int]]:
    """Scratch requests of the reference kernels (what the x86 interpreter plans in the head)."""
    out: dict[int, list[int]] = {}
    for op in graph.ops:
        sizes = []
        first_in = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        if op.opcode in {"MEAN", "SUM"} and first_in is not None:
            axis = graph.tensors[op.inputs[1]]
            if first_in.dtype in {"int8", "int16"}:
                sizes.append(4 * math.prod(graph.tensors[op.outputs[0]].shape or (1,)))
            sizes += [4 * len(first_in.shape), 4 * max(math.prod(axis.shape or (1,)), 0)]
        elif op.opcode in {"REDUCE_MAX", "REDUCE_MIN"} and first_in is not None:
            axis = graph.tensors[op.inputs[1]]
            sizes += [4 * len(first_in.shape), 4 * math.prod(axis.shape or (1,))]
        elif op.opcode in _CONV_LIKE | {"FULLY_CONNECTED"} and len(op.inputs) > 1:
            filt = graph.tensors[op.inputs[1]]
            if filt.dtype == "int4":
                sizes.append(math.prod(filt.shape))
        if sizes:
            out[op.index] = sizes
    return out


def cmsis_scratch(graph: Graph, isa: str) -> dict[int, int]:
    """Extra CMSIS-NN scratch per op for a board ISA (tflm_memory.md §5 table), in bytes."""
    out = {}
    for op in graph.ops:
        if op.opcode not in {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"} or isa == "xtensa":
            continue
        x = graph.tensors[op.inputs[0]].shape
        c_in = x[-1] if x else 0
        if op.opcode == "AVERAGE_POOL_2D":
            size = 4 * c_in if isa in {"dsp", "mve"} else 0
        else:
            _, kh, kw, _ = graph.tensors[op.inputs[1]].shape
            if op.opcode == "CONV_2D":
                k = kh * kw * c_in
                size = 0 if kh == kw == 1 else (
                    4 * math.ceil(k / 16) * 16 if isa == "mve" else 4 * planner.align_up(k, 4))
            else:
                size = (0 if (kh, kw) == (3, 3) and isa != "mve" else
                        4 * c_in * kh * kw if isa == "mve" else 2 * c_in * kh * kw)
        if size:
            out[op.index] = size
    return out


def predict(graph: Graph, isa: str | None = None) -> ArenaPrediction:
    """Predicted arena. ``isa`` (``dsp``/``mve``/``none``/``xtensa``) adds CMSIS-NN scratch."""
    scratch = reference_scratch(graph)
    if isa is not None:
        for op_index, size in cmsis_scratch(graph, isa).items():
            scratch.setdefault(op_index, []).append(size)
    buffers = planner.buffers_for(graph, scratch, graph.offline_offsets)
    offsets = planner.greedy_plan(buffers)
    head = planner.align_up(planner.plan_size(buffers, offsets))
    online = planner.buffers_for(graph, scratch)
    live = planner.live_bytes(online, len(graph.ops))
    rows = tuple(_row(graph, op, live[op.index + 1], sum(scratch.get(op.index, [])))
                 for op in graph.ops)
    return ArenaPrediction(head, predict_tail(graph, scratch), max(live, default=0),
                           planner.linear_size(online), scratch, rows, tuple(offsets))


def predict_tail(graph: Graph, scratch: dict[int, list[int]]) -> int:
    """Persistent bytes (see module docstring)."""
    tail = FIXED_TAIL + PERSISTENT_ALIGN_SLACK + EVAL_TENSOR * len(graph.tensors) + NODE * len(
        graph.ops)
    tail += IO_TENSOR * (len(graph.inputs) + len(graph.outputs))
    for op in graph.ops:
        tail += OP_DATA.get(op.opcode, DEFAULT_OP_DATA) + BUILTIN_DATA.get(
            op.opcode, DEFAULT_BUILTIN_DATA) + per_channel_bytes(graph, op)
    n_scratch = sum(len(v) for v in scratch.values())
    return planner.align_up(tail + SCRATCH_HANDLE * n_scratch)


def _row(graph: Graph, op: Op, live: int, scratch: int) -> OpRow:
    shape = lambda i: graph.tensors[i].shape if i >= 0 else ()  # noqa: E731
    ins = tuple(shape(i) for i in op.inputs if i >= 0 and not graph.tensors[i].is_const)
    outs = tuple(shape(i) for i in op.outputs)
    return OpRow(op.index, op.opcode, ins, outs, op_macs(graph, op), live, scratch)


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates of conv, depthwise and fully-connected ops (0 for the rest)."""
    if op.opcode not in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} or len(op.inputs) < 2:
        return 0
    out = math.prod(graph.tensors[op.outputs[0]].shape)
    w = graph.tensors[op.inputs[1]].shape
    if op.opcode == "CONV_2D":
        return out * math.prod(w[1:])
    if op.opcode == "DEPTHWISE_CONV_2D":
        return out * w[1] * w[2]
    return out * (w[-1] if w else 0)

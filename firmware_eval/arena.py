"""Predict TFLite Micro's arena (head / tail / total) from the flatbuffer alone.

* head: :func:`planner.greedy_plan` over the buffers TFLM plans, plus the scratch buffers the
  reference kernels request (MEAN/SUM int8 accumulators, TRANSPOSE_CONV int32 accumulators,
  MIRROR_PAD / ADD_N index arrays, int4 filters; ``reduce_common.cc``, ``transpose_conv.cc``,
  ``mirror_pad.cc``, ``add_n.cc``, ``conv_common.cc``; UNIDIRECTIONAL_SEQUENCE_LSTM's four int16
  gate buffers, ``unidirectional_sequence_lstm.cc``). For a board, the CMSIS-NN scratch of its
  ISA is added per op (docs/tflm_memory.md §5) and the head is re-planned with it.
* tail: the persistent section (docs/tflm_memory.md §1, §6): allocator objects, one 24 B
  ``TfLiteEvalTensor`` per tensor, one 64 B ``NodeAndRegistration`` per op, the Python wrapper's
  persistent I/O tensors and pointer arrays, each op's ``OpData`` and builtin-options struct, the
  per-channel multiplier/shift arrays (2 x int32 per output channel) of conv, depthwise,
  transpose conv and per-channel FC, other Prepare-time buffers (BATCH_MATMUL transposed copies,
  output dims copies) and variable tensors - replayed in TFLM's allocation order with each
  buffer's alignment (:func:`predict_tail`).
  ``OpData`` sizes were measured with :mod:`calibrate` on tflite-micro 0.dev20261023182759
  (x86-64, reference kernels); builtin-options sizes are the x86-64 sizes of the
  ``TfLite*Params`` structs in ``tensorflow/lite/core/c/builtin_op_data.h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tinyexport.firmware_eval import planner
from tinyexport.tflite_graph.reader import Graph, Op

# Fixed tail of every model: SingleArenaBufferAllocator, RecordingMicroAllocator,
# GreedyMemoryPlanner, MicroBuiltinDataAllocator, SubgraphAllocations - the part of the tail that
# print_allocations() does not itemise, less the builtin-options structs and scratch handles.
# Refitted on a sweep of 23 Keras/TFLiteConverter int8 models (2026-11; multi-I/O, BATCH_MATMUL,
# TRANSPOSE_CONV, pads, reductions, ...): with :func:`predict_tail`'s allocation order every tail
# equals print_allocations() to the byte (any value in 485..488 does; the old 528 = 512 + two
# 8-byte I/O pointer arrays, now counted per input/output in :func:`persistent_buffers`).
# The other host struct sizes are in :data:`HOST` below.
FIXED_TAIL = 488
# OpData bytes per op (calibrate.py on tflite-micro 0.dev20261023182759, x86-64; zoo models
# re-checked: the summed prediction equals 'Persistent buffer data' to the byte on mcunet).
# RESHAPE allocates none: calibrate reports 0 B for a constant shape input (onnx2tf's head
# reshape); the 8 B it reports for a computed shape input come from that input becoming a
# persistent I/O tensor of the single-op model, not from the kernel.
OP_DATA = {
    "CONV_2D": 80, "DEPTHWISE_CONV_2D": 80, "FULLY_CONNECTED": 72, "ADD": 60, "SUB": 52,
    "MUL": 36, "AVERAGE_POOL_2D": 32, "MAX_POOL_2D": 32, "SHAPE": 0, "PACK": 0, "RESHAPE": 0,
    "STRIDED_SLICE": 84, "SOFTMAX": 80, "MEAN": 44, "PAD": 56, "QUANTIZE": 32, "DEQUANTIZE": 32,
    "CONCATENATION": 80, "HARD_SWISH": 20, "LOGISTIC": 16, "RELU": 28, "RELU6": 8,
    "TRANSPOSE": 0, "SPLIT": 0, "SQUEEZE": 0, "RESIZE_BILINEAR": 0, "LEAKY_RELU": 24,
    # Sweep of Keras/TFLiteConverter int8 models (2026-11, same wheel), single-op calibration
    # with the I/O pointer arrays (8 B per model input/output) taken out. ADD/SUB/MUL/CONCATENATION
    # were 8 B too high before: the old calibration counted the second input's pointer as OpData.
    "SPLIT_V": 0, "SLICE": 0, "EXPAND_DIMS": 0, "MAXIMUM": 0, "MINIMUM": 0, "TANH": 16,
    "PRELU": 28, "PADV2": 56, "MIRROR_PAD": 20, "REDUCE_MAX": 44, "REDUCE_MIN": 44, "SUM": 44,
    "SPACE_TO_BATCH_ND": 4, "BATCH_TO_SPACE_ND": 0, "TRANSPOSE_CONV": 88,
    # BATCH_MATMUL: OpDataBatchMatmul (32 B); its quantization struct, transposed operand copies
    # and output dims are added by :func:`persistent_buffers`, like the output dims of the other
    # _WRITABLE_DIMS ops (their whole persistent use).
    "BATCH_MATMUL": 32, "RESIZE_NEAREST_NEIGHBOR": 0, "GATHER": 0, "DEPTH_TO_SPACE": 0,
    "SPACE_TO_DEPTH": 0, "GATHER_ND": 0, "L2_POOL_2D": 0, "ABS": 28, "SQUARE": 0,
    "SQUARED_DIFFERENCE": 112, "ARG_MAX": 0, "ARG_MIN": 0,
    # Kernels whose .cc allocates no persistent buffer at all (grep of AllocatePersistentBuffer in
    # tflite-micro @90b983c2 micro/kernels/*.cc); UNPACK / PACK confirmed by calibration.
    "UNPACK": 0, "BROADCAST_ARGS": 0, "BROADCAST_TO": 0, "CAST": 0, "CEIL": 0, "EXP": 0,
    "FILL": 0, "FLOOR": 0, "FLOOR_DIV": 0, "FLOOR_MOD": 0, "LOGICAL_AND": 0, "LOGICAL_OR": 0,
    "LOGICAL_NOT": 0, "NEG": 0, "READ_VARIABLE": 0, "REVERSE_V2": 0, "ROUND": 0,
    "ZEROS_LIKE": 0,
    # ELU keeps a 256-entry int8 lookup table in its OpData; RELU / RELU6 split refined
    # (ReluOpData 28 B, Relu6OpData 8 B; their sum, 32 B, was right before).
    "ELU": 256, "RSQRT": 28,
    # kernels/unidirectional_sequence_lstm.cc Init: one OpDataLSTM (kernels/lstm_shared.h: size
    # info, cell-state info, 4 x GateParameters of two FullyConnectedParams, 3 ArithmeticParams,
    # buffer_indices[4]); 688 B measured on mnist_lstm / micro_speech_lstm / dtln (same wheel).
    # Its Prepare allocates nothing persistent (LstmTensors are temp tensors).
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 688,
}
DEFAULT_OP_DATA = 64
# sizeof(TfLite*Params) (tensorflow/lite/core/c/builtin_op_data.h, x86-64) rounded up to 4 B:
# conv / depthwise 7 ints = 28, pool 6 ints + TfLitePaddingValues = 40, FC 16, reshape 9 ints = 36,
# strided slice 24. Ops whose parser allocates nothing (PAD, HARD_SWISH, LOGISTIC, QUANTIZE, ...)
# and MEAN (a 1-byte bool, absorbed by alignment) are 0. Confirmed by the fit above.
BUILTIN_DATA = {
    "CONV_2D": 28, "DEPTHWISE_CONV_2D": 28, "FULLY_CONNECTED": 32, "ADD": 8, "SUB": 8, "MUL": 4,
    "AVERAGE_POOL_2D": 40, "MAX_POOL_2D": 40, "RESHAPE": 36, "STRIDED_SLICE": 24, "PACK": 8,
    "SOFTMAX": 4, "MEAN": 1, "CONCATENATION": 8, "SHAPE": 4, "SQUEEZE": 36, "SPLIT": 4,
    "RESIZE_BILINEAR": 4, "LEAKY_RELU": 4, "TRANSPOSE": 0, "PAD": 0, "QUANTIZE": 0,
    "DEQUANTIZE": 0, "HARD_SWISH": 0, "LOGISTIC": 0, "RELU": 0, "RELU6": 0,
    # Parsers without a params struct (micro/kernels + core/api/flatbuffer_conversions.cc), and
    # the small structs of the other ops the sweep of Keras models used.
    "MAXIMUM": 0, "MINIMUM": 0, "SPACE_TO_BATCH_ND": 0, "BATCH_TO_SPACE_ND": 0, "SLICE": 0,
    "REDUCE_MAX": 1, "REDUCE_MIN": 1, "SUM": 1, "PADV2": 0, "TANH": 0, "PRELU": 0,
    "EXPAND_DIMS": 0, "ADD_N": 0, "MIRROR_PAD": 4, "SPLIT_V": 4, "BATCH_MATMUL": 3,
    "TRANSPOSE_CONV": 20, "RESIZE_NEAREST_NEIGHBOR": 2, "GATHER": 8, "UNPACK": 8, "ARG_MAX": 4,
    "ARG_MIN": 4, "DEPTH_TO_SPACE": 4, "SPACE_TO_DEPTH": 4, "DIV": 4, "ABS": 0, "SQUARE": 0,
    "SQUARED_DIFFERENCE": 0, "ELU": 0, "RSQRT": 0,
    # TfLiteUnidirectionalSequenceLSTMParams (activation, cell_clip, proj_clip, 3 bools): 15 -> 16
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 16,
}
# FULLY_CONNECTED: 32 B, not sizeof(TfLiteFullyConnectedParams) = 16 B of the @90b983c2 header: the
# unitemised tail of chains of 1..5 int8 Dense layers measures exactly 488 + 32 n B (2026-11, same
# wheel); the other 16 B per FC op are not found in the mirror's source (newer wheel). The old 36
# only fitted because the builtin structs were summed without their 4-byte alignment (below); it
# over-predicted hello_world_int8 (3 FCs) and dtln by 16 B.
DEFAULT_BUILTIN_DATA = 8
# alignof of the builtin-options structs that are not plain 4-byte structs (default: 4, or 1 for a
# struct under 4 B). TfLiteFullyConnectedParams (32 B in the wheel) is 8-byte aligned: with 4 the
# tail of a two-output model with a 1-byte MEAN params struct before each of two FCs was predicted
# 16 B low (random multi-output sweep, 2026-11; measured 2400 B, predicted 2384 B).
BUILTIN_ALIGN = {"FULLY_CONNECTED": 8}
_DTYPE_BYTES = {"int16": 2, "float32": 4}

@dataclass(frozen=True)
class Sizes:
    """The struct sizes the tail depends on, for one kind of target (the host that the Python
    TFLM runs on, or a 32-bit microcontroller)."""

    fixed_tail: int       # the allocator objects and other unitemised bytes
    eval_tensor: int      # sizeof(TfLiteEvalTensor)
    node: int             # sizeof(NodeAndRegistration)
    pointer: int          # the interpreter's input/output TfLiteTensor* arrays
    scratch_handle: int   # sizeof(ScratchBufferHandle)
    tensor: int           # sizeof(TfLiteTensor): persistent I/O and Prepare-time temp tensors
    affine_quant: int     # sizeof(TfLiteAffineQuantization)
    struct_align: int     # alignment of those structs and of the zero-point arrays
    op_data: dict = field(default_factory=dict)  # OpData sizes that differ from OP_DATA
    arena_slack: int = 0  # the smallest arena_size that allocates, over head + tail
    cmsis_nn: bool = False  # CMSIS-NN kernels' own Prepare buffers (LSTM kernel sums)


# x86-64, where the Python TFLM runs (TF_LITE_STATIC_MEMORY): 24 B TfLiteEvalTensor, 64 B
# NodeAndRegistration, 8 B pointers and ScratchBufferHandles, 64 B TfLiteTensor, 24 B
# TfLiteAffineQuantization, 8-byte alignment.
HOST = Sizes(FIXED_TAIL, 24, 64, 8, 8, 64, 24, 8)
# 32-bit Cortex-M with CMSIS-NN kernels, measured in QEMU (firmware_eval/emulate.py, the
# recording allocator's bytes per type; benchmarks/results/emulated_results.md): 12 B eval
# tensors, 32 B nodes, 4 B pointers and scratch handles, 32 B I/O tensors with a 12 B
# quantization struct, and the OpData of CMSIS-NN's kernels (conv, depthwise, add: 60 B; pooling:
# 36 B; solved from the per-op-type totals of 9 zoo/test models; LSTM: 880 B, the smallest value
# that covers TFLM's mnist_lstm example, whose kernel also keeps eight int32 kernel-sum arrays of
# the state width, :func:`prepare_buffers`). fixed_tail: the smallest value
# for which no measured model is under-predicted (zoo exports over by 0-56 B); ops not measured
# keep the host's (larger, 64-bit) OpData. arena_slack: on every measured model the smallest
# arena that allocates was head + tail + 12 B (the bisection in QEMU, byte exact).
CORTEX_M = Sizes(88, 12, 32, 4, 4, 32, 12, 4,
                 {"CONV_2D": 60, "DEPTHWISE_CONV_2D": 60, "ADD": 60, "AVERAGE_POOL_2D": 36,
                  "MAX_POOL_2D": 36, "UNIDIRECTIONAL_SEQUENCE_LSTM": 880},
                 arena_slack=12, cmsis_nn=True)
# Boards whose kernels are CMSIS-NN (``Board.isa``) get CORTEX_M; xtensa (ESP-NN) keeps the host
# sizes: its 32-bit OpData were never measured.
_SIZES_BY_ISA = {"dsp": CORTEX_M, "mve": CORTEX_M, "none": CORTEX_M}


def sizes_for(isa: str | None) -> Sizes:
    """The struct sizes of a board ISA's build (the host's without a board)."""
    return _SIZES_BY_ISA.get(isa or "", HOST)


def op_data(op: Op, sizes: Sizes = HOST) -> int:
    return sizes.op_data.get(op.opcode, OP_DATA.get(op.opcode, DEFAULT_OP_DATA))
  # TfLiteTypeGetSize of an LSTM cell state
_CONV_LIKE = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
# Kernels that call CreateWritableTensorDimsWithCopy on their output in Prepare (tflite-micro
# @90b983c2: batch_matmul_common.cc, depth_to_space.cc, space_to_depth.cc, gather.cc,
# gather_nd.cc, embedding_lookup.cc, l2_pool_2d.cc).
_WRITABLE_DIMS = frozenset({"BATCH_MATMUL", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "GATHER",
                            "GATHER_ND", "EMBEDDING_LOOKUP", "L2_POOL_2D"})


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
    # Smallest arena_size AllocateTensors succeeds with: the total, or more when the temp section
    # of CommitStaticMemoryPlan does not fit in the final head (:func:`planning_peak`).
    min_arena: int = 0

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
        elif op.opcode == "MIRROR_PAD" and first_in is not None:
            # kernels/mirror_pad.cc Prepare: two int arrays of the input rank.
            sizes += [4 * len(first_in.shape)] * 2
        elif op.opcode == "ADD_N" and first_in is not None and first_in.dtype == "int8":
            sizes.append(8 * len(op.inputs))  # kernels/add_n.cc: one int8_t* per input (x86-64)
        elif (op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" and first_in is not None
              and len(op.inputs) == 24 and min(op.inputs[18:20]) >= 0):
            # kernels/unidirectional_sequence_lstm.cc UnidirectionalSequenceLstmPrepare: four
            # gate buffers of batch_size * state_dimension * sizeof(cell state type) (int16 for
            # the int8 kernel); sizes from CreateLstmSizeInfo (lstm_eval_common.cc): batch =
            # input dims[1 if time_major else 0], state = hidden-state (input 18) dims[1]. The
            # state tensors are variables (tail, below); the intermediates are 0-byte tensors
            # (micro_allocation_info.cc ValidateSubgraph refuses any other size).
            hidden, cell = graph.tensors[op.inputs[18]], graph.tensors[op.inputs[19]]
            if len(first_in.shape) == 3 and len(hidden.shape) == 2:
                batch = first_in.shape[1 if op.option("time_major", False) else 0]
                size = batch * hidden.shape[1] * _DTYPE_BYTES.get(cell.dtype, 0)
                sizes += [size] * 4 if size > 0 else []
        if op.opcode == "TRANSPOSE_CONV" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            # kernels/transpose_conv.cc TransposeConvPrepare: int32 accumulators for the whole
            # output (int64 for 16x8), requested before the int4-filter buffer.
            acc = {"int8": 4, "int16": 8}.get(graph.tensors[op.inputs[2]].dtype, 0)
            if acc:
                sizes.append(acc * math.prod(graph.tensors[op.outputs[0]].shape))
        if op.opcode in _CONV_LIKE | {"FULLY_CONNECTED"} and len(op.inputs) > 1:
            filt = graph.tensors[op.inputs[1]]
            if filt.dtype == "int4":
                sizes.append(math.prod(filt.shape))
        if sizes:
            out[op.index] = sizes
    return out


def cmsis_scratch(graph: Graph, isa: str) -> dict[int, int]:
    """Extra CMSIS-NN scratch per op for a board ISA (docs/tflm_memory.md §5 table), in bytes."""
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
    """Predicted arena. ``isa`` (``dsp``/``mve``/``none``/``xtensa``) adds CMSIS-NN scratch and
    switches the tail to the 32-bit struct sizes measured on Cortex-M (:data:`CORTEX_M`)."""
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
    sizes = sizes_for(isa)
    tail = predict_tail(graph, scratch, sizes)
    peak = max(planning_peak(graph, scratch, len(buffers), sizes),
               prepare_peak(graph, scratch, sizes))
    return ArenaPrediction(head, tail, max(live, default=0), planner.linear_size(online),
                           scratch, rows, tuple(offsets),
                           max(head + tail + sizes.arena_slack, peak))


# Temp section of MicroAllocator::CommitStaticMemoryPlan (micro_allocator.cc), x86-64 sizes.
SCRATCH_REQUEST = 16  # sizeof(internal::ScratchBufferRequest): size_t bytes, int node, subgraph
MAX_SCRATCH_PER_OP = 12  # kMaxScratchBuffersPerOp (micro_allocator.cc)
ALLOCATION_INFO = 32  # sizeof(AllocationInfo) (micro_allocation_info.h)
PLANNER_PER_BUFFER = 40  # GreedyMemoryPlanner::per_buffer_size() (greedy_memory_planner.h)


def planning_peak(graph: Graph, scratch: dict[int, list[int]], n_planned: int,
                  sizes: Sizes = HOST) -> int:
    """Arena needed while ``CommitStaticMemoryPlan`` runs (tflite-micro#2738): the tail at that
    point (all but the interpreter's I/O arrays and tensors, allocated after it) plus, from the
    arena start, the scratch-request head (``16 * (requests + kMaxScratchBuffersPerOp)`` B,
    FinishPrepareNodeAllocations), the temp ``size_t`` subgraph offsets and ``AllocationInfo``
    array (one per tensor of every subgraph and per scratch request, micro_allocation_info.cc
    CreateAllocationInfo), then the 16-aligned planner arena, which must hold 40 B per planned
    buffer or ``GreedyMemoryPlanner::AddBuffer`` fails with "Too many buffers". Above the
    recorded total when the head is small (hello_world_int8: 1936 vs 1504, dtln: 6752 vs 5840,
    both equal to the smallest working arena_size measured). The ops' Prepare-time temp
    tensors are :func:`prepare_peak`."""
    n_req = sum(len(v) for v in scratch.values())
    n_tensors = sum(graph.extra.get("subgraph_tensor_counts", [len(graph.tensors)]))
    temp = (SCRATCH_REQUEST * (n_req + MAX_SCRATCH_PER_OP) + 8 * graph.num_subgraphs
            + ALLOCATION_INFO * (n_tensors + n_req))
    tail = _tail_before_io(graph, scratch, sizes)
    return planner.align_up(planner.align_up(tail) + planner.align_up(temp)
                            + PLANNER_PER_BUFFER * n_planned)


# Kernels whose Prepare holds (output, input, filter) while a helper allocates input, filter, bias
# and output again: conv_common.cc ConvPrepare -> CalculateOpDataConv, depthwise_conv_common.cc,
# transpose_conv.cc (its input is input 2). Value: the input slots of the first set.
_PREPARE_TWICE = {"CONV_2D": (0, 1), "DEPTHWISE_CONV_2D": (0, 1), "TRANSPOSE_CONV": (2, 1)}


def prepare_peak(graph: Graph, scratch: dict[int, list[int]], sizes: Sizes = HOST) -> int:
    """Arena needed while the ops' ``Prepare`` run: the scratch-request head (``16 * (requests so
    far + kMaxScratchBuffersPerOp)`` B), then the op's temp TfLiteTensors (micro_allocator.cc
    AllocateTempTfLiteTensor: on the host each 64 B plus, when quantized, 24 B and a ``4 + 4 n`` B
    zero-point array) above it, and the tail so far (every
    Init, the Prepare buffers up to this op's) below the top. Above the recorded total for tiny
    models (a single 1x1 conv on 8x8x3: 1688 B measured, 1696 B predicted, total 1408 B). Kernels
    allocate every input and output at most once at a time, except :data:`_PREPARE_TWICE`."""
    t, requests, peak = _tail_after_init(graph, sizes), 0, 0
    for op in graph.ops:
        for size in prepare_buffers(graph, op, sizes):
            t = planner.align_up(t + size)
        temps = 0
        for i in _temp_tensors(op):
            temps = _after_temp_tensor(temps, graph.tensors[i], sizes)
        head = planner.align_up(SCRATCH_REQUEST * (requests + MAX_SCRATCH_PER_OP))
        peak = max(peak, planner.align_up(head + temps + planner.align_up(t)))
        requests += len(scratch.get(op.index, []))
    return peak


def _temp_tensors(op: Op) -> list[int]:
    """Tensors whose temp TfLiteTensor an op's Prepare holds at its peak, in allocation order."""
    ids = [i for i in (*op.inputs, *op.outputs) if i >= 0]
    first = _PREPARE_TWICE.get(op.opcode)
    if first is None or len(op.inputs) <= max(first) or not op.outputs:
        return ids
    return [op.outputs[0], *(op.inputs[k] for k in first if op.inputs[k] >= 0), *ids]


def _after_temp_tensor(cursor: int, tensor, sizes: Sizes = HOST) -> int:
    """The temp section's end after one temp TfLiteTensor (``AllocateTemp`` aligns each part up)."""
    cursor = planner.align_up(cursor, sizes.struct_align) + sizes.tensor
    if tensor.quant.scales and tensor.quant.zero_points:
        cursor = planner.align_up(cursor, sizes.struct_align) + sizes.affine_quant
        cursor = planner.align_up(cursor, 4) + 4 + 4 * len(tensor.quant.scales)
    return cursor


def persistent_buffers(graph: Graph, sizes: Sizes = HOST) -> list[int]:
    """Sizes of the ``AllocatePersistentBuffer`` calls (16-byte aligned in the tail) in the order
    TFLM makes them: the interpreter's input/output pointer arrays first in the list (allocated
    last, see :func:`predict_tail`; ``micro_interpreter.cc``, 8 B per tensor), then every op's
    OpData (``Init``, all ops before any ``Prepare``), then the ``Prepare`` buffers op by op:
    per-channel multiplier/shift arrays; BATCH_MATMUL's quantization struct and transposed operand
    copies (``kernels/batch_matmul.cc`` ``AllocInitTransposeTensorFromTfLiteTensor``: a 24 B
    TfLiteEvalTensor, a ``4 + 4 * rank`` B dims array and the operand's data, for the RHS unless
    ``adj_y`` and for the LHS when ``adj_x``); the output dims copies of the _WRITABLE_DIMS ops.
    The order matters: the first buffer absorbs the misalignment left before it."""
    init = [op_data(op, sizes) for op in graph.ops]
    prepare = [n for op in graph.ops for n in prepare_buffers(graph, op, sizes)]
    io_arrays = [sizes.pointer * len(graph.inputs), sizes.pointer * len(graph.outputs)]
    return io_arrays + [n for n in init + prepare if n]


def prepare_buffers(graph: Graph, op: Op, sizes: Sizes = HOST) -> list[int]:
    """The ``AllocatePersistentBuffer`` sizes of one op's ``Prepare`` (see
    :func:`persistent_buffers`), in call order; zero sizes are left out."""
    pc = per_channel_bytes(graph, op)
    out = [pc // 2, pc // 2] if pc else []  # multiplier, shift
    if op.opcode == "BATCH_MATMUL" and len(op.inputs) >= 2:
        out.append(28)  # QuantizationOpDataBatchMatmul (7 x int32)
        for k, transposed in ((0, op.option("adj_x", False)),
                              (1, not op.option("adj_y", False))):
            if transposed and op.inputs[k] >= 0:
                t = graph.tensors[op.inputs[k]]
                out += [sizes.eval_tensor, 4 + 4 * len(t.shape), t.nbytes]
    if sizes.cmsis_nn and op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(op.inputs) > 18 \
            and op.inputs[18] >= 0:
        # kernels/cmsis_nn/unidirectional_sequence_lstm.cc: eight kernel-sum arrays of the
        # state dimension (hidden state dims[1]) x sizeof(bias type) (int32 for int8 models).
        hidden = graph.tensors[op.inputs[18]].shape
        bias = 8 if graph.tensors[op.inputs[0]].dtype == "int16" else 4
        out += [bias * hidden[-1]] * 8 if hidden else []
    if op.opcode in _WRITABLE_DIMS and op.outputs and op.outputs[0] >= 0:
        # micro/kernels/kernel_util.cc CreateWritableTensorDimsWithCopy: a persistent
        # TfLiteIntArray (4 + 4 * rank B) for the output dims.
        out.append(4 + 4 * len(graph.tensors[op.outputs[0]].shape))
    return [n for n in out if n]


def predict_tail(graph: Graph, scratch: dict[int, list[int]], sizes: Sizes = HOST) -> int:
    """Persistent bytes (see module docstring), replaying the order of the tail allocations.

    ``SingleArenaBufferAllocator::AllocatePersistentBuffer`` moves the tail down to
    ``AlignPointerDown(tail - size, alignment)``, so a 16-byte aligned buffer (OpData, per-channel
    arrays, the I/O pointer arrays: ``MicroAllocator::AllocatePersistentBuffer``) also absorbs the
    misalignment left by the 4/8-byte aligned allocations before it (builtin-options structs,
    scratch handles). Order (micro_allocator.cc, micro_interpreter.cc ``AllocateTensors``): fixed
    objects, eval tensors, NodeAndRegistrations, builtin data, then per op Init/Prepare buffers,
    the scratch-buffer handles, variable tensors, the input/output pointer arrays and the
    persistent I/O tensors.
    Matches ``print_allocations()`` to the byte on the 40 int8 sweep models (2026-11), the test /
    zoo / bench exports and TFLM's example models (hello_world_int8, micro_speech, person_detect,
    mnist_lstm, micro_speech_lstm, dtln, pytorch mobilenet_v2): 71 models, since the builtin
    structs are replayed with their 4-byte alignment and FULLY_CONNECTED's is 32 B.
    """
    t = _tail_before_io(graph, scratch, sizes)
    # micro_interpreter.cc AllocateTensors: the input TfLiteTensor* array, the input tensors, then
    # the output array and the output tensors.
    for size, io in zip(persistent_buffers(graph, sizes)[:2], (graph.inputs, graph.outputs),
                        strict=True):
        t = planner.align_up(t + size)
        t += sum(io_tensor_bytes(graph.tensors[i], sizes) for i in io)
    return planner.align_up(t)


def _tail_before_io(graph: Graph, scratch: dict[int, list[int]], sizes: Sizes = HOST) -> int:
    """The tail when ``FinishModelAllocation`` returns (before the interpreter's I/O arrays)."""
    t = _tail_after_init(graph, sizes)
    for op in graph.ops:
        for size in prepare_buffers(graph, op, sizes):
            t = planner.align_up(t + size)
    t += sizes.scratch_handle * sum(len(v) for v in scratch.values())
    # Variable tensors (e.g. LSTM state) not placed by an offline plan: CommitStaticMemoryPlan ->
    # AllocateVariables puts each in the tail, 16-byte aligned (micro_allocator.cc).
    offline = graph.offline_offsets
    for t_ in graph.tensors:
        if t_.is_variable and not (offline and t_.index < len(offline)
                                   and offline[t_.index] != -1):
            t = planner.align_up(t + t_.nbytes)
    return t


def _tail_after_init(graph: Graph, sizes: Sizes = HOST) -> int:
    """The tail after every op's ``Init`` (before the first ``Prepare``): fixed objects, eval
    tensors, NodeAndRegistrations, builtin-options structs, OpData."""
    t = sizes.fixed_tail + sizes.eval_tensor * len(graph.tensors) + sizes.node * len(graph.ops)
    for op in graph.ops:
        # MicroBuiltinDataAllocator::Allocate(size, alignof(T)) (micro_allocator.cc) moves the
        # tail down to a multiple of alignof(T): 4 for the int/float/enum structs, 1 for the
        # bool-only ones (TfLiteReducerParams, TfLiteBatchMatMulParams, resize-nearest: < 4 B).
        t = _after_builtin(t, op.opcode)
    for op in graph.ops:
        size = op_data(op, sizes)
        t = planner.align_up(t + size) if size else t
    return t


def _after_builtin(t: int, opcode: str) -> int:
    """The tail after one op's builtin-options struct (``MicroBuiltinDataAllocator::Allocate``)."""
    size = BUILTIN_DATA.get(opcode, DEFAULT_BUILTIN_DATA)
    return planner.align_up(t, BUILTIN_ALIGN.get(opcode, 4 if size >= 4 else 1)) + size


def io_tensor_bytes(tensor, sizes: Sizes = HOST) -> int:
    """Persistent TfLiteTensor of a model input/output (64 B) plus its quantization data
    (micro_allocator.cc ``InitializeTfLiteTensorFromFlatbuffer``: a 24 B TfLiteAffineQuantization
    and the ``4 + 4 n`` B int zero-point array, 8-aligned; 32 B per-tensor, none when the tensor
    is not quantized, e.g. an ARG_MAX index output)."""
    n = len(tensor.quant.scales)
    return sizes.tensor + (sizes.affine_quant
                           + planner.align_up(4 + 4 * n, sizes.struct_align) if n else 0)


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

"""Is a parsed ``.tflite`` graph internally consistent? Structural checks before any figure.

A flatbuffer that parses can still be nonsense: a tensor dimension flipped to ``0x7fffffff`` or to
a negative value, a buffer index past the buffer list, a constant whose data is shorter than its
shape, an opcode index that turns a DEPTHWISE_CONV_2D into an ADD with one input, a stride that no
longer matches the stored output shape. Figures computed from such a graph (arena, MACs) are
impossible, so :func:`check_integrity` refuses the model with its first problem instead.

Checked here, for any dtype (so quantize and firmware_eval share it):

* tensors: each dimension in ``1..MAX_DIM`` (``0..`` for a tensor no op reads or writes), rank
  <= ``MAX_RANK``, at most ``MAX_TENSOR_BYTES`` bytes; buffer index in range; a constant's data
  exactly ``prod(shape) x dtype size`` bytes; quantization scales finite and >= 0 (> 0 for a
  non-constant int8 tensor), one zero point per scale, one scale or one per channel of the
  quantized dimension; an int8 tensor used by an op has quantization parameters.
* graph: inputs and outputs present, each non-constant op input made by an earlier op (or a graph
  input, or a variable), no tensor written twice, an offline memory plan with one offset a tensor.
* ops: input/output counts, dtypes that must agree, and the output shape each op's rule gives from
  its input shapes, filter, strides, padding, axes (:data:`_RULES`: the ops our models use; other
  ops get the generic checks only).

The real flatbuffer verifier (LiteRT's ``tflite::Verify`` + ``AllocateTensors``) runs in a child
process: :func:`tinyexport.firmware_eval.tflm_runner.verify_models`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tinyexport.errors import UserError
from tinyexport.tflite_graph.reader import Graph, Op, Tensor

MAX_DIM = 1 << 24
MAX_RANK = 8
MAX_TENSOR_BYTES = 1 << 31
_PADDINGS = {0: "SAME", 1: "VALID"}  # schema.fbs enum Padding
_MAX_ACTIVATION = 5  # schema.fbs ActivationFunctionType: NONE .. SIGN_BIT
# Dtypes whose activations carry affine quantization parameters in an integer model.
_QUANTIZED = {"int8", "uint8", "int16"}


def check_integrity(graph: Graph, label: str, what: str = "TFLite model") -> None:
    """Raise one :class:`UserError` naming the first problem of :func:`integrity_problems`.

    Args:
        label: the file, as the message names it.
        what: the kind of model the caller expects, e.g. ``"int8 TFLite model"``.
    """
    problems = integrity_problems(graph)
    if problems:
        raise UserError(f"{label} is not a valid {what}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1
                           else ""))


def integrity_problems(graph: Graph) -> list[str]:
    """Every structural problem of subgraph 0 (empty: consistent), tensors first, then the graph,
    then the ops in execution order; checks whose inputs are already broken are skipped."""
    used = {i for op in graph.ops for i in (*op.inputs, *op.outputs)} | {*graph.inputs,
                                                                          *graph.outputs}
    problems = [p for t in graph.tensors for p in tensor_problems(t, graph, t.index in used)]
    if problems:
        return problems
    problems = _graph_problems(graph)
    for op in graph.ops:
        problems += op_problems(graph, op)
    return problems


def tensor_problems(t: Tensor, graph: Graph, used: bool = True) -> list[str]:
    """Shape, buffer and quantization problems of one tensor. ``used``: an op input or output
    or a graph input or output (an LSTM's intermediates, used by no op as either, are shape
    [0] in TFLite's own models)."""
    where = f"tensor {t.index} ({t.name!r})"
    low = 1 if used else 0
    if len(t.shape) > MAX_RANK or any(not low <= d <= MAX_DIM for d in t.shape):
        return [f"{where} has shape {list(t.shape)}; each dimension must be {low}..{MAX_DIM} "
                f"(rank <= {MAX_RANK})"]
    if t.nbytes > MAX_TENSOR_BYTES:
        return [f"{where} has {t.nbytes:,} bytes (shape {list(t.shape)}); at most "
                f"{MAX_TENSOR_BYTES:,}"]
    n_buffers = graph.extra.get("num_buffers")
    if n_buffers is not None and t.buffer >= n_buffers:
        return [f"{where} uses buffer {t.buffer} of {n_buffers}"]
    if t.is_const and t.dtype != "string" and t.data_bytes != t.nbytes:
        return [f"{where} stores {t.data_bytes} bytes of data; shape {list(t.shape)} x "
                f"{t.dtype} needs {t.nbytes}"]
    return _quant_problems(t, where)


def _quant_problems(t: Tensor, where: str) -> list[str]:
    q = t.quant
    if not q.scales:
        return [f"{where} has zero points but no scales"] if q.zero_points else []
    if len(q.zero_points) not in (0, 1, len(q.scales)):
        # One zero point for N scales is TFLM's space-saving form for weights: micro_allocator.cc
        # fills every channel from element 0 (docs/tflm_memory.md §13); any other
        # count is a broken file (TFLM would silently use element 0 of it).
        return [f"{where} has {len(q.scales)} scales but {len(q.zero_points)} zero points (1 or "
                f"{len(q.scales)} expected)"]
    if len(q.scales) > 1 and not (0 <= q.axis < len(t.shape)
                                  and t.shape[q.axis] == len(q.scales)):
        return [f"{where} has {len(q.scales)} scales on quantized dimension {q.axis} of shape "
                f"{list(t.shape)}; need 1 or one per channel"]
    if any(not math.isfinite(s) or s < 0 for s in q.scales):
        return [f"{where} has a negative or non-finite quantization scale"]
    if t.dtype == "int8" and any(not -128 <= z <= 127 for z in q.zero_points):
        return [f"{where} is int8 with a zero point outside -128..127"]
    if t.dtype in _QUANTIZED and not t.is_const and min(q.scales) <= 0:
        return [f"{where} is {t.dtype} with quantization scale 0"]
    return []


def _graph_problems(graph: Graph) -> list[str]:
    n = len(graph.tensors)
    if not graph.inputs or not graph.outputs:
        return [f"the subgraph has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs"]
    if any(i < 0 for i in (*graph.inputs, *graph.outputs)):
        return ["a subgraph input or output is tensor -1"]
    offsets = graph.offline_offsets
    if offsets is not None and (len(offsets) != n or any(not -1 <= o < MAX_TENSOR_BYTES
                                                         for o in offsets)):
        return [f"the offline memory plan has {len(offsets)} offsets for {n} tensors (or an "
                "offset outside -1..2^31)"]
    return _dataflow_problems(graph)


def _dataflow_problems(graph: Graph) -> list[str]:
    """Every non-constant input made before it is read; no tensor written twice or a constant /
    graph input written at all."""
    ready = {t.index for t in graph.tensors if t.is_const or t.is_variable} | set(graph.inputs)
    written: set[int] = set()
    for op in graph.ops:
        where = f"{op.opcode} #{op.index}"
        missing = [i for i in op.inputs if i >= 0 and i not in ready]
        if missing:
            return [f"{where} reads tensor {missing[0]} before any op writes it"]
        if any(o < 0 for o in op.outputs) or not op.outputs:
            return [f"{where} has outputs {list(op.outputs)}"]
        clash = [o for o in op.outputs if o in written or o in ready]
        if clash and not graph.tensors[clash[0]].is_variable:
            return [f"{where} writes tensor {clash[0]}, which is a constant, a graph input or "
                    "already written"]
        written.update(op.outputs)
        ready.update(op.outputs)
    unmade = [o for o in graph.outputs if o not in ready]
    if unmade:
        return [f"graph output tensor {unmade[0]} is never written"]
    return _dead_ops(graph)


def _dead_ops(graph: Graph) -> list[str]:
    """An op none of whose outputs is read or a graph output (converters never leave one: a
    graph output pointed elsewhere, or an op input index changed, leaves one behind)."""
    read = {i for op in graph.ops for i in op.inputs} | set(graph.outputs)
    for op in graph.ops:
        if not read.intersection(op.outputs):
            return [f"{op.opcode} #{op.index} writes {list(op.outputs)}, which no op reads and "
                    "which are not graph outputs"]
    return []


def op_problems(graph: Graph, op: Op) -> list[str]:
    """Counts, dtypes and the output-shape rule of one op (generic checks for ops without one)."""
    where = f"{op.opcode} #{op.index}"
    quant = _unquantized(graph, op)
    if quant:
        return [f"{where}: {quant}"]
    rule = _RULES.get(op.opcode)
    if rule is None:
        return []
    lo, hi, outs, check = rule
    if not lo <= len(op.inputs) <= hi or len(op.outputs) != outs:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        return [f"{where} has {len(op.inputs)} inputs and {len(op.outputs)} outputs; "
                f"{op.opcode} takes {want} inputs and {outs} output{'s' * (outs > 1)}"]
    if any(i < 0 for i in op.inputs[:_REQUIRED.get(op.opcode, lo)]):
        return [f"{where} lacks a required input (tensor -1)"]
    problem = check(graph, op)
    return [f"{where}: {problem}"] if problem else []


def _unquantized(graph: Graph, op: Op) -> str | None:
    for i in (*op.inputs, *op.outputs):
        t = graph.tensors[i] if i >= 0 else None
        if t is not None and t.dtype == "int8" and not t.quant.scales:
            return f"int8 tensor {i} ({t.name!r}) has no quantization parameters"
    return None


# --- output-shape rules ------------------------------------------------------------------------

def _shape(graph: Graph, i: int) -> tuple[int, ...]:
    return graph.tensors[i].shape


def _dtype(graph: Graph, i: int) -> str:
    return graph.tensors[i].dtype


def _want(graph: Graph, op: Op, shape) -> str | None:
    """The stored output shape against the one the op's rule gives."""
    got = _shape(graph, op.outputs[0])
    if tuple(got) != tuple(shape):
        return f"output shape {list(got)}, but the inputs give {list(shape)}"
    return None


def _same_dtype(graph: Graph, op: Op, inputs: tuple[int, ...]) -> str | None:
    out = _dtype(graph, op.outputs[0])
    for i in inputs:
        if _dtype(graph, op.inputs[i]) != out:
            return f"input {i} is {_dtype(graph, op.inputs[i])} but the output is {out}"
    return None


def _window(op: Op) -> str | None:
    """Padding, strides, dilations and activation of conv / pool options."""
    if op.option("padding") is None:
        return "its builtin options (strides, padding) are missing"
    if op.option("padding") not in _PADDINGS:
        return f"padding {op.option('padding')} is neither SAME (0) nor VALID (1)"
    values = [op.option(k, 1) for k in ("stride_h", "stride_w", "dilation_h", "dilation_w",
                                        "filter_h", "filter_w")]
    if any(not 1 <= v <= MAX_DIM for v in values):
        return f"strides / dilations / filter sizes {values} must each be 1..{MAX_DIM}"
    if not 0 <= op.option("activation", 0) <= _MAX_ACTIVATION:
        return f"fused activation {op.option('activation')} is not a TFLite activation"
    return None


def _out_size(size: int, filt: int, stride: int, dilation: int, padding: int) -> int:
    """TFLite's ComputeOutSize (kernels/padding.h)."""
    if _PADDINGS[padding] == "SAME":
        return (size + stride - 1) // stride
    return (size - ((filt - 1) * dilation + 1) + stride) // stride


def _spatial(op: Op, x, kh: int, kw: int) -> tuple[int, int]:
    return (_out_size(x[1], kh, op.option("stride_h"), op.option("dilation_h", 1),
                      op.option("padding")),
            _out_size(x[2], kw, op.option("stride_w"), op.option("dilation_w", 1),
                      op.option("padding")))


def _bias(graph: Graph, op: Op, channels: int) -> str | None:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return None
    b = graph.tensors[op.inputs[2]]
    if math.prod(b.shape) != channels:
        return f"bias has shape {list(b.shape)} for {channels} output channels"
    want = {"int8": {"int32"}, "int16": {"int64", "int32"}}.get(_dtype(graph, op.inputs[0]))
    if want and b.dtype not in want:
        return f"bias is {b.dtype}; a {_dtype(graph, op.inputs[0])} input needs {sorted(want)[0]}"
    return None


def _conv(graph: Graph, op: Op) -> str | None:
    x, w = _shape(graph, op.inputs[0]), _shape(graph, op.inputs[1])
    if len(x) != 4 or len(w) != 4:
        return f"input {list(x)} and filter {list(w)} must both be 4-D (NHWC, OHWI)"
    if x[3] % w[3]:
        return f"input has {x[3]} channels but the filter takes {w[3]}"
    problem = _window(op) or _bias(graph, op, w[0]) or _same_dtype(graph, op, (0,))
    return problem or _want(graph, op, (x[0], *_spatial(op, x, w[1], w[2]), w[0]))


def _depthwise(graph: Graph, op: Op) -> str | None:
    x, w = _shape(graph, op.inputs[0]), _shape(graph, op.inputs[1])
    if len(x) != 4 or len(w) != 4 or w[0] != 1:
        return f"input {list(x)} must be 4-D and filter {list(w)} 1xHxWxC"
    if w[3] % x[3]:
        return f"filter has {w[3]} channels, not a multiple of the input's {x[3]}"
    problem = _window(op) or _bias(graph, op, w[3]) or _same_dtype(graph, op, (0,))
    return problem or _want(graph, op, (x[0], *_spatial(op, x, w[1], w[2]), w[3]))


def _pool(graph: Graph, op: Op) -> str | None:
    x = _shape(graph, op.inputs[0])
    if len(x) != 4:
        return f"input {list(x)} must be 4-D (NHWC)"
    problem = _window(op) or _same_dtype(graph, op, (0,))
    kh, kw = op.option("filter_h", 1), op.option("filter_w", 1)
    return problem or _want(graph, op, (x[0], *_spatial(op, x, kh, kw), x[3]))


def _fully_connected(graph: Graph, op: Op) -> str | None:
    x, w = _shape(graph, op.inputs[0]), _shape(graph, op.inputs[1])
    if len(w) != 2 or not x or math.prod(x) % w[1]:
        return f"input {list(x)} does not split into rows of the filter {list(w)} (units x depth)"
    problem = _bias(graph, op, w[0]) or _same_dtype(graph, op, (0,))
    if problem:
        return problem
    if op.option("keep_num_dims"):
        return _want(graph, op, (*x[:-1], w[0]))
    out = _shape(graph, op.outputs[0])
    if not out or out[-1] != w[0] or math.prod(out) != math.prod(x) // w[1] * w[0]:
        return f"output shape {list(out)}, but input {list(x)} and filter {list(w)} give " \
               f"{[math.prod(x) // w[1], w[0]]}"
    return None


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + tuple(a), (1,) * (rank - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
        return None
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


def _elementwise(graph: Graph, op: Op) -> str | None:
    a, b = _shape(graph, op.inputs[0]), _shape(graph, op.inputs[1])
    shape = _broadcast(a, b)
    if shape is None:
        return f"input shapes {list(a)} and {list(b)} do not broadcast"
    if not 0 <= op.option("activation", 0) <= _MAX_ACTIVATION:
        return f"fused activation {op.option('activation')} is not a TFLite activation"
    return _same_dtype(graph, op, (0, 1)) or _want(graph, op, shape)


def _unary(graph: Graph, op: Op) -> str | None:
    return _want(graph, op, _shape(graph, op.inputs[0]))


def _unary_same_dtype(graph: Graph, op: Op) -> str | None:
    return _same_dtype(graph, op, (0,)) or _unary(graph, op)


def _reshape(graph: Graph, op: Op) -> str | None:
    x, y = _shape(graph, op.inputs[0]), _shape(graph, op.outputs[0])
    if math.prod(x) != math.prod(y):
        return f"reshapes {list(x)} ({math.prod(x)} elements) to {list(y)} ({math.prod(y)})"
    new_shape = _shape(graph, op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if new_shape is not None and len(new_shape) == 1 and new_shape[0] != len(y):
        return f"shape input has {new_shape[0]} values for an output of rank {len(y)}"
    return _same_dtype(graph, op, (0,))


def _pack(graph: Graph, op: Op) -> str | None:
    shapes = {_shape(graph, i) for i in op.inputs}
    if len(shapes) != 1:
        return f"input shapes {sorted(list(s) for s in shapes)} differ"
    (x,) = shapes
    axis, count = op.option("axis", 0), op.option("values_count", len(op.inputs))
    if count != len(op.inputs) or not -len(x) - 1 <= axis <= len(x):
        return f"values_count {count} / axis {axis} do not fit {len(op.inputs)} inputs {list(x)}"
    axis %= len(x) + 1
    return _same_dtype(graph, op, tuple(range(len(op.inputs)))) or _want(
        graph, op, (*x[:axis], len(op.inputs), *x[axis:]))


def _const_ints(graph: Graph, i: int) -> tuple[int, ...] | None:
    return graph.extra.get("int_buffers", {}).get(i)


def _pad(graph: Graph, op: Op) -> str | None:
    x, pads = _shape(graph, op.inputs[0]), _const_ints(graph, op.inputs[1])
    problem = _same_dtype(graph, op, (0,))
    if problem or pads is None:
        return problem
    if len(pads) != 2 * len(x) or min(pads, default=0) < 0:
        return f"paddings {list(pads)} do not fit an input of rank {len(x)}"
    return _want(graph, op, tuple(d + pads[2 * k] + pads[2 * k + 1] for k, d in enumerate(x)))


def _mean(graph: Graph, op: Op) -> str | None:
    x, axes = _shape(graph, op.inputs[0]), _const_ints(graph, op.inputs[1])
    problem = _same_dtype(graph, op, (0,))
    if problem or axes is None:
        return problem
    if any(not -len(x) <= a < len(x) for a in axes):
        return f"reduction axes {list(axes)} are outside an input of rank {len(x)}"
    axes = {a % len(x) for a in axes}
    if op.option("keep_dims"):
        return _want(graph, op, tuple(1 if k in axes else d for k, d in enumerate(x)))
    return _want(graph, op, tuple(d for k, d in enumerate(x) if k not in axes))


def _concatenation(graph: Graph, op: Op) -> str | None:
    shapes = [_shape(graph, i) for i in op.inputs]
    rank, axis = len(shapes[0]), op.option("axis", 0)
    if not -rank <= axis < rank or any(len(s) != rank for s in shapes):
        return f"axis {axis} and input shapes {[list(s) for s in shapes]} do not concatenate"
    axis %= rank
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) != 1:
        return f"input shapes {[list(s) for s in shapes]} differ off axis {axis}"
    shape = list(shapes[0])
    shape[axis] = sum(s[axis] for s in shapes)
    return _same_dtype(graph, op, tuple(range(len(op.inputs)))) or _want(graph, op, shape)


def _resize(graph: Graph, op: Op) -> str | None:
    x, size = _shape(graph, op.inputs[0]), _const_ints(graph, op.inputs[1])
    if len(x) != 4:
        return f"input {list(x)} must be 4-D (NHWC)"
    problem = _same_dtype(graph, op, (0,))
    if problem or size is None:
        return problem
    if len(size) != 2:
        return f"size {list(size)} must be [height, width]"
    return _want(graph, op, (x[0], size[0], size[1], x[3]))


def _strided_slice(graph: Graph, op: Op) -> str | None:
    if len(_shape(graph, op.outputs[0])) > len(_shape(graph, op.inputs[0])) + 4:
        return "output rank exceeds the input's"
    return _same_dtype(graph, op, (0,))


def _quantize(graph: Graph, op: Op) -> str | None:
    return _unary(graph, op)


def _softmax(graph: Graph, op: Op) -> str | None:
    if not _shape(graph, op.inputs[0]):
        return "input is a scalar; SOFTMAX needs at least one dimension"
    return _unary(graph, op)


def _lstm(graph: Graph, op: Op) -> str | None:
    """Input 0 is the sequence; every other present input is a weight, bias (constant) or state
    (variable); input and output are [batch, time, features] alike in their first two dims."""
    x, y = _shape(graph, op.inputs[0]), _shape(graph, op.outputs[0])
    loose = [i for i in op.inputs[1:] if i >= 0 and not (graph.tensors[i].is_const
                                                          or graph.tensors[i].is_variable)]
    if loose:
        return f"input tensor {loose[0]} is neither a constant nor a state variable"
    if len(x) != 3 or len(y) != 3 or x[:2] != y[:2]:
        return f"input {list(x)} and output {list(y)} must be 3-D with the same first two dims"
    return None


def _any(graph: Graph, op: Op) -> str | None:
    return None


# Ops whose optional inputs sit before required ones: how many leading inputs must be present.
_REQUIRED = {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}
_Check = Callable[[Graph, Op], "str | None"]
_MANY = 1 << 16
# opcode -> (min inputs, max inputs, outputs, output-shape / dtype rule)
_RULES: dict[str, tuple[int, int, int, _Check]] = {
    "CONV_2D": (2, 3, 1, _conv),
    "DEPTHWISE_CONV_2D": (2, 3, 1, _depthwise),
    "FULLY_CONNECTED": (2, 3, 1, _fully_connected),
    "ADD": (2, 2, 1, _elementwise),
    "SUB": (2, 2, 1, _elementwise),
    "MUL": (2, 2, 1, _elementwise),
    "AVERAGE_POOL_2D": (1, 1, 1, _pool),
    "MAX_POOL_2D": (1, 1, 1, _pool),
    "MEAN": (2, 2, 1, _mean),
    "PAD": (2, 2, 1, _pad),
    "RESHAPE": (1, 2, 1, _reshape),
    "SOFTMAX": (1, 1, 1, _softmax),
    "CONCATENATION": (1, _MANY, 1, _concatenation),
    "STRIDED_SLICE": (4, 4, 1, _strided_slice),
    "RESIZE_BILINEAR": (2, 2, 1, _resize),
    "QUANTIZE": (1, 1, 1, _quantize),
    "DEQUANTIZE": (1, 1, 1, _quantize),
    "RELU": (1, 1, 1, _unary_same_dtype),
    "RELU6": (1, 1, 1, _unary_same_dtype),
    "LOGISTIC": (1, 1, 1, _unary_same_dtype),
    "TANH": (1, 1, 1, _unary_same_dtype),
    "HARD_SWISH": (1, 1, 1, _unary_same_dtype),
    "LEAKY_RELU": (1, 1, 1, _unary_same_dtype),
    "SHAPE": (1, 1, 1, _any),
    "PACK": (1, _MANY, 1, _pack),
    "BATCH_MATMUL": (2, 2, 1, _any),
    "TRANSPOSE_CONV": (3, 4, 1, _any),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (24, 24, 1, _lstm),
}

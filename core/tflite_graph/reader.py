"""Read a ``.tflite`` flatbuffer into plain dataclasses, without TensorFlow or an interpreter.

The schema is the generated one of :mod:`tinyexport.tflite_graph.schema`. :class:`Graph` holds
subgraph 0 (tensors with shapes, dtypes and quantization; ops in execution order with their
inputs, outputs and the few builtin options the analysers need; I/O; metadata, the offline memory
plan); :func:`constant_values` reads a constant tensor's data (weights, biases).

Every vector length read from the file is checked against the file size before it is iterated, so
a corrupt or hostile file fails fast with :class:`UserError` instead of hanging.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError, printable
from tinyexport.safe_io import MiB, read_capped
from tinyexport.tflite_graph.schema import DTYPE_BYTES, DTYPES, op_names, schema

_PARSE_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError,
                 UnicodeDecodeError, AttributeError, KeyError, RecursionError)


@dataclass(frozen=True)
class Quant:
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    axis: int = 0


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    is_const: bool
    is_variable: bool
    quant: Quant
    buffer: int = 0  # index into the model's buffers (0: none)
    data_bytes: int = 0  # bytes stored in that buffer (in the flatbuffer or after it)

    @property
    def nbytes(self) -> int:
        """Byte length as TFLM computes it (``TfLiteEvalTensorByteLength``)."""
        size = DTYPE_BYTES.get(self.dtype, 1)
        return int(math.ceil(math.prod(max(d, 0) for d in self.shape) * size))


@dataclass(frozen=True)
class Op:
    index: int
    opcode: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...] = ()
    # The builtin options the analyser and the integrity checks need (:data:`_OPTIONS`):
    # BATCH_MATMUL adj_x / adj_y decide whether TFLM copies a transposed operand into the tail
    # (kernels/batch_matmul.cc); SOFTMAX beta; UNIDIRECTIONAL_SEQUENCE_LSTM time_major (which
    # input dim is the batch of its scratch); strides, padding, filter sizes, axes (the output
    # shape rules of :mod:`tinyexport.tflite_graph.integrity`).
    options: tuple[tuple[str, object], ...] = ()

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class Graph:
    """One subgraph of a model, plus model-level facts the analyser needs."""

    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    model_bytes: int
    num_subgraphs: int = 1
    metadata: tuple[str, ...] = ()
    offline_offsets: tuple[int, ...] | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def opcodes(self) -> list[str]:
        """Distinct op names in first-use order."""
        return list(dict.fromkeys(op.opcode for op in self.ops))


def read_graph(path: str | Path, what: str = "TFLite model") -> Graph:
    """Parse a ``.tflite`` file. ``what``: the kind of model the caller expects, as a corrupt
    file's message names it ("FILE is not a valid <what>: ...").

    Raises:
        UserError: missing, empty, truncated or non-TFLite file; no subgraph (only subgraph 0
            is read: callers that need one subgraph check :attr:`Graph.num_subgraphs`).
    """
    return parse_graph(read_model_bytes(path), str(path), what)


# A flatbuffer is at most 2 GiB; the models TFLM runs are a few MB (the zoo's fp32 files < 20 MB).
MAX_TFLITE_BYTES = 256 * MiB


def read_model_bytes(path: str | Path) -> bytes:
    """The bytes of a ``.tflite`` file: a regular file (a FIFO, ``/dev/zero`` or a folder is
    refused by name) of at most :data:`MAX_TFLITE_BYTES`, checked before it is read (a 20 GB
    sparse file starting with ``TFL3`` is refused, not loaded)."""
    return read_capped(path, "TFLite model", MAX_TFLITE_BYTES)


def parse_graph(data: bytes, label: str = "<bytes>", what: str = "TFLite model") -> Graph:
    """Parse flatbuffer bytes (see :func:`read_graph`)."""
    if len(data) < 16:
        raise UserError(f"{label} is empty or truncated ({len(data)} bytes); "
                        "expected a .tflite flatbuffer")
    if data[4:8] != b"TFL3":
        raise UserError(f"{label} is not a TFLite flatbuffer (file identifier "
                        f"{bytes(data[4:8])!r}, expected b'TFL3')")
    try:
        return _Reader(bytes(data)).graph()
    except UserError:
        raise
    except _PARSE_ERRORS as exc:
        raise UserError(f"{label} is not a valid {what}: corrupt or truncated flatbuffer "
                        f"({type(exc).__name__}: {exc}); re-export it") from None


_ACT, _PAD = ("activation", "FusedActivationFunction", int), ("padding", "Padding", int)
_STRIDES = (("stride_h", "StrideH", int), ("stride_w", "StrideW", int))
_DILATIONS = (("dilation_h", "DilationHFactor", int), ("dilation_w", "DilationWFactor", int))
# opcode -> (options table, ((key, accessor, conversion), ...)).
_OPTIONS = {
    "SOFTMAX": ("SoftmaxOptions", (("beta", "Beta", float),)),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("UnidirectionalSequenceLSTMOptions",
                                     (("time_major", "TimeMajor", bool),)),
    "BATCH_MATMUL": ("BatchMatMulOptions", (("adj_x", "AdjX", bool), ("adj_y", "AdjY", bool))),
    "CONV_2D": ("Conv2DOptions", (_PAD, *_STRIDES, *_DILATIONS, _ACT)),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", (
        _PAD, *_STRIDES, *_DILATIONS, _ACT, ("depth_multiplier", "DepthMultiplier", int))),
    "AVERAGE_POOL_2D": ("Pool2DOptions", (_PAD, *_STRIDES, _ACT, ("filter_h", "FilterHeight", int),
                                          ("filter_w", "FilterWidth", int))),
    "FULLY_CONNECTED": ("FullyConnectedOptions", (_ACT, ("keep_num_dims", "KeepNumDims", bool))),
    "ADD": ("AddOptions", (_ACT,)),
    "SUB": ("SubOptions", (_ACT,)),
    "MUL": ("MulOptions", (_ACT,)),
    "CONCATENATION": ("ConcatenationOptions", (("axis", "Axis", int), _ACT)),
    "MEAN": ("ReducerOptions", (("keep_dims", "KeepDims", bool),)),
    "PACK": ("PackOptions", (("values_count", "ValuesCount", int), ("axis", "Axis", int))),
}
_OPTIONS["MAX_POOL_2D"] = _OPTIONS["AVERAGE_POOL_2D"]
# Schema defaults of the options the arena analyser reads, for ops stored without their table.
_DEFAULTS = {"SOFTMAX": (("beta", 0.0),), "UNIDIRECTIONAL_SEQUENCE_LSTM": (("time_major", False),),
             "BATCH_MATMUL": (("adj_x", False), ("adj_y", False)), "MEAN": (("keep_dims", False),),
             "FULLY_CONNECTED": (("activation", 0), ("keep_num_dims", False))}

_NO_NUMPY_DTYPE = frozenset({"int4", "string", "bfloat16"})


def constant_values(data: bytes, tensor: Tensor) -> np.ndarray | None:
    """The stored values of a constant tensor of subgraph 0 of the model ``data`` (parsed into
    the graph ``tensor`` belongs to), with its dtype and shape; None for a non-constant tensor or a
    dtype numpy cannot hold (int4, string, bfloat16)."""
    if not tensor.is_const or tensor.dtype in _NO_NUMPY_DTYPE:
        return None
    model = schema().Model.GetRootAs(data, 0)
    buf = model.Buffers(model.Subgraphs(0).Tensors(tensor.index).Buffer())
    if buf.DataLength() > 0:
        raw = buf.DataAsNumpy().tobytes()
    else:  # stored after the flatbuffer (models over 2 GB): offset and size into the file
        raw = bytes(data[buf.Offset():buf.Offset() + buf.Size()])
    return np.frombuffer(raw, dtype=np.dtype(tensor.dtype)).reshape(tensor.shape)


class _Reader:
    """Bounds-checked walk over the generated flatbuffer accessors."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fb = schema()
        self.model = self.fb.Model.GetRootAs(data, 0)

    def _n(self, n: int, what: str) -> int:
        if n < 0 or n * 4 > len(self.data):
            raise ValueError(f"{what} length {n} exceeds the file size")
        return n

    def graph(self) -> Graph:
        m = self.model
        n_sub = self._n(m.SubgraphsLength(), "subgraphs")
        if n_sub == 0:
            raise ValueError("the model has no subgraph")
        codes = [self._opcode(m.OperatorCodes(i))
                 for i in range(self._n(m.OperatorCodesLength(), "operator codes"))]
        sub = m.Subgraphs(0)
        tensors = tuple(self._tensor(sub.Tensors(i), i)
                        for i in range(self._n(sub.TensorsLength(), "tensors")))
        ops = tuple(self._op(sub.Operators(i), i, codes, len(tensors))
                    for i in range(self._n(sub.OperatorsLength(), "operators")))
        inputs = self._ints(sub.InputsAsNumpy, sub.InputsLength, len(tensors))
        outputs = self._ints(sub.OutputsAsNumpy, sub.OutputsLength, len(tensors))
        metadata, offline = self._metadata()
        extra = {"subgraph_tensor_counts": [m.Subgraphs(i).TensorsLength() for i in range(n_sub)],
                 "int_buffers": self._small_int_constants(sub, tensors),
                 "num_buffers": m.BuffersLength()}
        return Graph(tensors, ops, inputs, outputs, len(self.data), n_sub,
                     metadata, offline, extra)

    def _opcode(self, code) -> tuple[str, int]:
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names().get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.CustomCode()
            name = f"CUSTOM:{printable(custom.decode('utf-8', 'replace')) if custom else '?'}"
        return name, code.Version()

    def _ints(self, as_numpy, length, n_tensors: int) -> tuple[int, ...]:
        if self._n(length(), "index vector") == 0:
            return ()
        values = tuple(int(v) for v in as_numpy())
        for v in values:
            if v >= n_tensors or v < -1:
                raise ValueError(f"tensor index {v} out of range (model has {n_tensors})")
        return values

    def _tensor(self, t, index: int) -> Tensor:
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if self._n(t.ShapeLength(), "shape") else ()
        dtype = DTYPES.get(t.Type(), (f"type{t.Type()}", 1))[0]
        buffers = self._n(self.model.BuffersLength(), "buffers")
        b = t.Buffer()
        stored = self._buffer_bytes(b) if 0 < b < buffers else 0
        name = t.Name()
        return Tensor(index, printable(name.decode("utf-8", "replace")) if name else f"t{index}", shape,
                      dtype, stored > 0, bool(t.IsVariable()), self._quant(t.Quantization()),
                      b, stored)

    def _small_int_constants(self, sub, tensors) -> dict[int, tuple[int, ...]]:
        """Values of constant int32 tensors of up to 16 elements (block shapes, paddings, axes)."""
        out = {}
        for t in tensors:
            if t.dtype != "int32" or not t.is_const or math.prod(t.shape) > 16:
                continue
            raw = self.model.Buffers(sub.Tensors(t.index).Buffer()).DataAsNumpy()
            if not isinstance(raw, int) and len(raw) % 4 == 0:
                out[t.index] = struct.unpack(f"<{len(raw) // 4}i", raw.tobytes())
        return out

    def _buffer_bytes(self, b: int) -> int:
        """Bytes buffer ``b`` holds: its data vector, or (models over 2 GB) the ``size`` bytes at
        ``offset`` after the flatbuffer, which must lie inside the file."""
        buf = self.model.Buffers(b)
        if buf.DataLength() > len(self.data):
            raise ValueError(f"buffer {b} length {buf.DataLength()} exceeds the file size")
        if buf.DataLength() > 0 or buf.Offset() <= 1:
            return buf.DataLength()
        if buf.Offset() + buf.Size() > len(self.data):
            raise ValueError(f"buffer {b} lies outside the file (offset {buf.Offset()}, size "
                             f"{buf.Size()}, file {len(self.data)} bytes)")
        return buf.Size()

    def _quant(self, q) -> Quant:
        if q is None:
            return Quant()
        scales = tuple(float(s) for s in q.ScaleAsNumpy()) if self._n(q.ScaleLength(), "q") else ()
        zps = tuple(int(z) for z in q.ZeroPointAsNumpy()) if self._n(q.ZeroPointLength(), "q") \
            else ()
        return Quant(scales, zps, int(q.QuantizedDimension()))

    def _op(self, op, index: int, codes, n_tensors: int) -> Op:
        idx = op.OpcodeIndex()
        if idx >= len(codes):
            raise ValueError(f"operator {index} has opcode index {idx} of {len(codes)}")
        name, version = codes[idx]
        inter = self._ints(op.IntermediatesAsNumpy, op.IntermediatesLength, n_tensors)
        return Op(index, name, version,
                  self._ints(op.InputsAsNumpy, op.InputsLength, n_tensors),
                  self._ints(op.OutputsAsNumpy, op.OutputsLength, n_tensors), inter,
                  self._options(op, name))

    def _options(self, op, name: str) -> tuple[tuple[str, object], ...]:
        """The :data:`_OPTIONS` fields of ``op``; without its options table, the schema defaults
        where TFLite has usable ones (:data:`_DEFAULTS`), else none (the integrity checks then
        say the table is missing)."""
        if name not in _OPTIONS:
            return ()
        table_name, fields = _OPTIONS[name]
        table = op.BuiltinOptions()
        if table is None or op.BuiltinOptionsType() != getattr(self.fb.BuiltinOptions, table_name):
            return _DEFAULTS.get(name, ())
        opts = getattr(self.fb, table_name)()
        opts.Init(table.Bytes, table.Pos)
        return tuple((key, convert(getattr(opts, accessor)()))
                     for key, accessor, convert in fields)

    def _metadata(self) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
        m = self.model
        names, offline = [], None
        for i in range(self._n(m.MetadataLength(), "metadata")):
            entry = m.Metadata(i)
            name = (entry.Name() or b"").decode("utf-8", "replace")
            names.append(printable(name))
            if name == "OfflineMemoryAllocation":
                raw = m.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
                values = struct.unpack(f"<{len(raw) // 4}i", raw)
                offline = tuple(values[3:3 + values[2]])
        return tuple(names), offline

"""Read a ``.tflite`` flatbuffer into plain dataclasses, without TensorFlow.

The schema is the generated ``schema_py_generated.py`` shipped inside the ``tflite-micro`` wheel
(tflm_memory.md §9.1). It is loaded from its file path, so the package ``__init__`` (which loads the
TFLM C library) never runs in the caller's process; the module itself only needs ``flatbuffers``.

Every vector length read from the file is checked against the file size before it is iterated, so
a corrupt or hostile file fails fast with :class:`UserError` instead of hanging.
"""

from __future__ import annotations

import importlib.util
import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from tinyexport.errors import UserError

# TensorType enum value -> (name, bytes per element); tflite schema.fbs `enum TensorType`.
_DTYPES = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
    5: ("string", 1), 6: ("bool", 1), 7: ("int16", 2), 8: ("complex64", 8), 9: ("int8", 1),
    10: ("float64", 8), 11: ("complex128", 16), 12: ("uint64", 8), 15: ("uint32", 4),
    16: ("uint16", 2), 17: ("int4", 0.5), 18: ("bfloat16", 2),
}
_PARSE_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError,
                 UnicodeDecodeError, AttributeError, KeyError, RecursionError)


@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The tflite flatbuffer schema module from the installed tflite-micro wheel."""
    spec = importlib.util.find_spec("tflite_micro")
    if spec is None or spec.origin is None:
        raise UserError("the 'tflite-micro' package is not installed; "
                        "install it (pip install tflite-micro) to read .tflite files")
    path = Path(spec.origin).parent / "tensorflow/lite/micro/python/schema_py_generated.py"
    mod_spec = importlib.util.spec_from_file_location("_tinyexport_tflite_schema", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def op_names() -> dict[int, str]:
    """BuiltinOperator code -> name (e.g. 3 -> 'CONV_2D')."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


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

    @property
    def nbytes(self) -> int:
        """Byte length as TFLM computes it (``TfLiteEvalTensorByteLength``)."""
        size = _DTYPES_BY_NAME.get(self.dtype, 1)
        return int(math.ceil(math.prod(max(d, 0) for d in self.shape) * size))


_DTYPES_BY_NAME = {name: size for name, size in _DTYPES.values()}


@dataclass(frozen=True)
class Op:
    index: int
    opcode: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...] = ()
    # The few builtin options the analyser needs: BATCH_MATMUL adj_x / adj_y decide whether TFLM
    # copies a transposed operand into the tail (kernels/batch_matmul.cc); SOFTMAX beta;
    # UNIDIRECTIONAL_SEQUENCE_LSTM time_major (which input dim is the batch of its scratch).
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


def read_graph(path: str | Path) -> Graph:
    """Parse a ``.tflite`` file.

    Raises:
        UserError: missing, empty, truncated or non-TFLite file; several subgraphs.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} is not a file; pass the path of an int8 .tflite model")
    return parse_graph(path.read_bytes(), str(path))


def parse_graph(data: bytes, label: str = "<bytes>") -> Graph:
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
        raise UserError(f"{label} is a corrupt or truncated TFLite file "
                        f"({type(exc).__name__}: {exc}); re-export it") from None


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
            raise UserError("the model has no subgraph")
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
                 "int_buffers": self._small_int_constants(sub, tensors)}
        return Graph(tensors, ops, inputs, outputs, len(self.data), n_sub,
                     metadata, offline, extra)

    def _opcode(self, code) -> tuple[str, int]:
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names().get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.CustomCode()
            name = f"CUSTOM:{custom.decode('utf-8', 'replace') if custom else '?'}"
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
        dtype = _DTYPES.get(t.Type(), (f"type{t.Type()}", 1))[0]
        buffers = self._n(self.model.BuffersLength(), "buffers")
        b = t.Buffer()
        is_const = 0 < b < buffers and self._buffer_has_data(b)
        name = t.Name()
        return Tensor(index, name.decode("utf-8", "replace") if name else f"t{index}", shape,
                      dtype, is_const, bool(t.IsVariable()), self._quant(t.Quantization()))

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

    def _buffer_has_data(self, b: int) -> bool:
        buf = self.model.Buffers(b)
        return buf.DataLength() > 0 or buf.Offset() > 1

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
        if name == "SOFTMAX":  # beta decides whether TFLM's Prepare aborts (api.validate)
            table = op.BuiltinOptions()
            if table is None or op.BuiltinOptionsType() != self.fb.BuiltinOptions.SoftmaxOptions:
                return (("beta", 0.0),)  # schema default
            opts = self.fb.SoftmaxOptions()
            opts.Init(table.Bytes, table.Pos)
            return (("beta", float(opts.Beta())),)
        if name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            # kernels/lstm_eval_common.cc CreateLstmSizeInfo: batch = input dims[time_major].
            table = op.BuiltinOptions()
            kind = self.fb.BuiltinOptions.UnidirectionalSequenceLSTMOptions
            if table is None or op.BuiltinOptionsType() != kind:
                return (("time_major", False),)  # schema default
            opts = self.fb.UnidirectionalSequenceLSTMOptions()
            opts.Init(table.Bytes, table.Pos)
            return (("time_major", bool(opts.TimeMajor())),)
        if name != "BATCH_MATMUL":
            return ()
        table = op.BuiltinOptions()
        if table is None or op.BuiltinOptionsType() != self.fb.BuiltinOptions.BatchMatMulOptions:
            return (("adj_x", False), ("adj_y", False))  # schema defaults
        opts = self.fb.BatchMatMulOptions()
        opts.Init(table.Bytes, table.Pos)
        return (("adj_x", bool(opts.AdjX())), ("adj_y", bool(opts.AdjY())))

    def _metadata(self) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
        m = self.model
        names, offline = [], None
        for i in range(self._n(m.MetadataLength(), "metadata")):
            entry = m.Metadata(i)
            name = (entry.Name() or b"").decode("utf-8", "replace")
            names.append(name)
            if name == "OfflineMemoryAllocation":
                raw = m.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
                values = struct.unpack(f"<{len(raw) // 4}i", raw)
                offline = tuple(values[3:3 + values[2]])
        return tuple(names), offline

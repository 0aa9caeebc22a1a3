"""Generic editing helpers on the flatbuffer object API (``ModelT``), for graph rewrites.

A rewrite is ``bytes -> bytes``: :func:`unpack` the model, add buffers, tensors, opcodes and ops
with the helpers here, replace subgraph 0's op list (:func:`set_operators`), drop the tensors no
op or I/O uses any more (:func:`drop_unused_tensors`) and :func:`pack` it again (16-byte aligned
buffers, :mod:`tinyexport.tflite_graph.writer`). The helpers mutate the ``ModelT`` they are given;
only the unpacked copy of the caller's bytes is ever touched, so the rewrite stays pure.
"""

from __future__ import annotations

import copy

import numpy as np

from tinyexport.tflite_graph.schema import op_names, schema
from tinyexport.tflite_graph.writer import _pack, _unpack

# schema.fbs ``enum TensorType`` values of the dtypes the helpers create.
TENSOR_TYPES = {"float32": 0, "int32": 2, "int8": 9, "int16": 7}
# BuiltinOperator codes above this are only in ``builtin_code`` (schema.fbs, OperatorCode).
_DEPRECATED_CODE_MAX = 127


def unpack(data: bytes):
    """The model ``data`` as a mutable ``ModelT`` (a fresh copy: ``data`` is never changed)."""
    return _unpack(data)


def pack(model) -> bytes:
    """``ModelT`` -> ``.tflite`` bytes, buffers 16-byte aligned like the converter writes them."""
    return _pack(model)


def builtin_code(name: str) -> int:
    """BuiltinOperator code of an op name (``'PAD'`` -> 34). Raises KeyError for an unknown name."""
    codes = {v: k for k, v in op_names().items()}
    return codes[name]


def opcode_name(model, opcode_index: int) -> str:
    code = model.operatorCodes[opcode_index]
    return op_names().get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")


def opcode_index(model, name: str, version: int = 1) -> int:
    """Index of the builtin opcode ``name`` in the model's opcode list, added when missing (with
    ``version``; an existing entry keeps its own)."""
    code = builtin_code(name)
    for i, oc in enumerate(model.operatorCodes or []):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code and not oc.customCode:
            return i
    oc = schema().OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, _DEPRECATED_CODE_MAX)
    oc.version = version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def add_buffer(model, raw: bytes | None = None) -> int:
    """Append a buffer holding ``raw`` (None or b'': an empty one); return its index."""
    buf = schema().BufferT()
    if raw:
        buf.data = np.frombuffer(raw, dtype=np.uint8).copy()
    model.buffers.append(buf)
    return len(model.buffers) - 1


def empty_buffer(model) -> int:
    """Index of an empty buffer for activation tensors: buffer 0 (the schema's reserved empty
    buffer) when it is empty, else a new one."""
    first = model.buffers[0] if model.buffers else None
    if first is not None and (first.data is None or len(first.data) == 0):
        return 0
    return add_buffer(model)


def add_tensor(model, name: str, shape, dtype: str | int, quantization=None,
               buffer: int = 0) -> int:
    """Append a tensor to subgraph 0; return its index. ``quantization``: a
    ``QuantizationParametersT`` (deep-copied) or None."""
    t = schema().TensorT()
    t.name = name
    t.shape = [int(d) for d in shape]
    t.type = TENSOR_TYPES[dtype] if isinstance(dtype, str) else int(dtype)
    t.buffer = buffer
    t.quantization = copy.deepcopy(quantization)
    sub = model.subgraphs[0]
    sub.tensors.append(t)
    return len(sub.tensors) - 1


def add_constant(model, name: str, values: np.ndarray) -> int:
    """Append a constant tensor holding ``values`` (int32 / int8 / float32) with its own buffer."""
    values = np.ascontiguousarray(values)
    buffer = add_buffer(model, values.tobytes())
    return add_tensor(model, name, values.shape, str(values.dtype), None, buffer)


def make_op(model, name: str, inputs, outputs, options=None, version: int = 1):
    """A new ``OperatorT`` of builtin ``name`` (opcode added when missing). ``options``: the
    op's ``*OptionsT`` object; its union type is looked up from its class name."""
    op = schema().OperatorT()
    op.opcodeIndex = opcode_index(model, name, version)
    op.inputs = [int(i) for i in inputs]
    op.outputs = [int(o) for o in outputs]
    if options is not None:
        op.builtinOptionsType = getattr(schema().BuiltinOptions,
                                        type(options).__name__.removesuffix("T"))
        op.builtinOptions = options
    return op


def copy_op(op, inputs, outputs):
    """A deep copy of ``op`` (options included) reading ``inputs`` and writing ``outputs``."""
    new = copy.deepcopy(op)
    new.inputs = [int(i) for i in inputs]
    new.outputs = [int(o) for o in outputs]
    return new


def set_operators(model, operators: list, subgraph: int = 0) -> None:
    """Replace the op list of ``subgraph`` (execution order)."""
    model.subgraphs[subgraph].operators = list(operators)


def drop_unused_tensors(model) -> dict[int, int]:
    """Remove the tensors of subgraph 0 that no op, graph input/output or signature uses, and
    renumber the rest (order kept) everywhere they are named. Returns old -> new index.

    Raises:
        ValueError: the model has an ``OfflineMemoryAllocation`` plan (its offsets are per
            tensor index; plan after the rewrite instead) or more than one subgraph.
    """
    if len(model.subgraphs) != 1:
        raise ValueError(f"tensor renumbering supports 1 subgraph, the model has "
                         f"{len(model.subgraphs)}")
    names = [m.name.decode() if isinstance(m.name, bytes) else str(m.name)
             for m in model.metadata or []]
    if "OfflineMemoryAllocation" in names:
        raise ValueError("the model has an offline memory plan (per tensor index); rewrite the "
                         "graph first, then add the plan")
    sub = model.subgraphs[0]
    used = set(sub.inputs) | set(sub.outputs)
    for sig in model.signatureDefs or []:
        used.update(m.tensorIndex for m in (*(sig.inputs or []), *(sig.outputs or [])))
    for op in sub.operators:
        used.update(i for i in (*op.inputs, *op.outputs, *(op.intermediates or [])) if i >= 0)
    keep = [i for i in range(len(sub.tensors)) if i in used]
    remap = {old: new for new, old in enumerate(keep)}
    sub.tensors = [sub.tensors[i] for i in keep]
    sub.inputs = [remap[i] for i in sub.inputs]
    sub.outputs = [remap[i] for i in sub.outputs]
    for op in sub.operators:
        op.inputs = [remap[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [remap[i] if i >= 0 else i for i in op.outputs]
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = [remap[i] if i >= 0 else i for i in op.intermediates]
    for sig in model.signatureDefs or []:
        for tmap in (*(sig.inputs or []), *(sig.outputs or [])):
            tmap.tensorIndex = remap[tmap.tensorIndex]
    return remap


def drop_unused_buffers(model) -> dict[int, int]:
    """Remove the buffers no tensor or metadata entry refers to (buffer 0, the reserved empty
    one, is kept) and renumber the rest. Returns old -> new index."""
    used = {0} | {m.buffer for m in model.metadata or []}
    for sub in model.subgraphs:
        used.update(t.buffer for t in sub.tensors)
    keep = [i for i in range(len(model.buffers)) if i in used]
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sub in model.subgraphs:
        for t in sub.tensors:
            t.buffer = remap[t.buffer]
    for m in model.metadata or []:
        m.buffer = remap[m.buffer]
    return remap

"""Rewrite ``.tflite`` flatbuffers: add or drop an offline memory plan, cut single-op models.

Both are pure functions ``bytes -> bytes`` over the schema's object API. Buffers are re-packed
16-byte aligned, as the TFLite converter writes them (schema.fbs ``data:[ubyte] (force_align: 16)``;
the generated Python ``Pack`` would align them to 1 byte only, leaving int32 biases misaligned).
"""

from __future__ import annotations

import copy
import struct

import numpy as np

from tinyexport.tflite_graph.schema import op_names, schema

OFFLINE_KEY = "OfflineMemoryAllocation"  # micro_allocation_info.cc kOfflineMemAllocMetadata
_OFFLINE_VERSION = 1


def _unpack(data: bytes):
    fb = schema()
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))


def _aligned_buffer_class():
    fb = schema()

    class AlignedBufferT(fb.BufferT):
        def Pack(self, builder):  # noqa: N802 - overrides the generated name
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head -= len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
            return fb.BufferEnd(builder)

    return AlignedBufferT


def _pack(model) -> bytes:
    import flatbuffers

    cls = _aligned_buffer_class()
    for buf in model.buffers or []:
        buf.__class__ = cls
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_offline_plan(data: bytes, offsets: list[int]) -> bytes:
    """Return the model with ``offsets`` (one per tensor of subgraph 0, -1 = online) stored as
    TFLM's ``OfflineMemoryAllocation`` metadata (docs/tflm_memory.md §4); an old plan is replaced."""
    fb = schema()
    model = _unpack(data)
    n_tensors = len(model.subgraphs[0].tensors)
    if len(offsets) != n_tensors or len(model.subgraphs) != 1:
        raise ValueError(f"offline plan has {len(offsets)} offsets for {n_tensors} tensors "
                         f"in {len(model.subgraphs)} subgraph(s); need one per tensor, 1 subgraph")
    payload = struct.pack(f"<{3 + n_tensors}i", _OFFLINE_VERSION, 1, n_tensors, *offsets)
    buf = fb.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.metadata = [m for m in (model.metadata or []) if _name(m) != OFFLINE_KEY]
    model.buffers.append(buf)
    meta = fb.MetadataT()
    meta.name = OFFLINE_KEY
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    return _pack(model)


def without_offline_plan(data: bytes) -> bytes:
    """The model without its ``OfflineMemoryAllocation`` metadata (the same bytes when it has
    none): TFLM then plans it online, as a keep-every-tensor run needs (a plan reuses offsets)."""
    model = _unpack(data)
    kept = [m for m in (model.metadata or []) if _name(m) != OFFLINE_KEY]
    if len(kept) == len(model.metadata or []):
        return data
    model.metadata = kept or None  # its buffer stays: the indices of the others do not move
    return _pack(model)


def _name(meta) -> str:
    name = meta.name
    return name.decode() if isinstance(name, bytes) else str(name)


def single_op_models(data: bytes) -> list[tuple[str, bytes]]:
    """One model per operator of subgraph 0: same tensors and buffers, one operator, its
    non-constant inputs as subgraph inputs and its outputs as subgraph outputs. Used to measure
    the persistent (tail) bytes each op type costs in TFLM (``tinyexport.firmware_eval.calibrate``)."""
    model = _unpack(data)
    sub = model.subgraphs[0]
    out = []
    for op in sub.operators:
        one = copy.copy(model)
        one.metadata = None
        one.signatureDefs = None
        s = copy.copy(sub)
        s.operators = [op]
        s.inputs = [i for i in op.inputs if i >= 0 and not _is_const(model, sub.tensors[i])]
        s.outputs = list(op.outputs)
        one.subgraphs = [s]
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names().get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        out.append((name, _pack(one)))
    return out


def _is_const(model, tensor) -> bool:
    buf = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0

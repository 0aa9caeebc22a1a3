"""Model compaction: drop from a ``.tflite`` what the interpreter never reads (pure ``bytes -> bytes``).

Two levels (docs/tflm_memory.md §13):

* :func:`compact_portable` — what no interpreter reads, so the file still loads in LiteRT with
  identical outputs: the quantization parameters of int32 biases of int8 per-channel
  ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` (``kernel_util.cc`` derives the per-channel multipliers from
  input × filter / output scales; the bias check is commented out), min/max arrays, the names of
  internal tensors, the converter's metadata (``min_runtime_version``, ``CONVERSION_METADATA``)
  and description. Graph input/output names and signature defs stay: LiteRT's signature runner
  and users' code look tensors up by them.
* :func:`compact_for_tflm` — the portable steps, then what only TFLM can do without: all-zero
  per-channel weight zero points collapsed to one element (``micro_allocator.cc`` fills every
  channel from ``zero_point()->Get(0)`` when the sizes differ, "a space-saving optimization";
  LiteRT rejects it), every name, and the signature defs.

Kept always: ``OfflineMemoryAllocation`` (TFLM reads it by name), the bias scale of a
per-tensor ``FULLY_CONNECTED`` (TFLM checks it within 2 %), nonzero zero points (never collapsed).
Each step records the bytes it saved; ``Compacted.kept`` says, per kind of tensor, what stayed and
why. The caller verifies the result bit for bit in TFLM (and in
LiteRT for the portable file) before it replaces anything.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinyexport.errors import UserError
from tinyexport.tflite_graph.edit import (
    TENSOR_TYPES,
    drop_unused_buffers,
    opcode_name,
    pack,
    unpack,
)
from tinyexport.tflite_graph.reader import parse_graph
from tinyexport.tflite_graph.writer import OFFLINE_KEY

# Ops whose int32 bias quantization TFLM and LiteRT never read when the filter is per-channel.
_PER_CHANNEL_BIAS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
# Metadata TFLM reads by name (micro_allocation_info.cc; COMPRESSION_METADATA only under
# USE_TFLM_COMPRESSION, which the converter never writes for us): everything else goes.
_METADATA_READ = (OFFLINE_KEY, "COMPRESSION_METADATA")


# What the flatbuffer object API raises on a damaged file (offsets past the end, bad vectors).
UNREADABLE_FLATBUFFER = (struct.error, IndexError, KeyError, AttributeError, ValueError, TypeError,
                         OverflowError, UnicodeDecodeError, MemoryError, RecursionError)


@dataclass(frozen=True)
class CompactionStep:
    """One removal: what it dropped, how many bytes it saved, and on how many tensors."""

    name: str
    saved_bytes: int
    tensors: int
    why: str


@dataclass(frozen=True)
class KeptItem:
    """What a level left in place on purpose (an interpreter reads it), on how many tensors."""

    name: str
    tensors: int
    why: str


@dataclass(frozen=True)
class Compacted:
    """The compacted model, its size before and after, the steps in order and what was kept."""

    data: bytes
    bytes_before: int
    steps: tuple[CompactionStep, ...]
    kept: tuple[KeptItem, ...] = ()

    @property
    def bytes_after(self) -> int:
        return len(self.data)


def compact_portable(data: bytes) -> Compacted:
    """The removals every interpreter tolerates (module docstring); LiteRT still loads the file."""
    return _apply(data, _PORTABLE_STEPS, tflm=False)


def compact_for_tflm(data: bytes) -> Compacted:
    """The portable removals, then the TFLM-only ones; LiteRT no longer loads the result."""
    return _apply(data, _PORTABLE_STEPS + _TFLM_STEPS, tflm=True)


def litert_form(data: bytes) -> bytes:
    """``data`` as LiteRT loads it: TFLM's one-element zero points of per-channel tensors expanded
    to one per scale (the same values TFLM fills in, micro_allocator.cc). The same bytes when the
    model has none, so LiteRT can run, verify and give the golden outputs of a TFLM-only model."""
    try:
        tensors = parse_graph(data).tensors
    except (UserError, *UNREADABLE_FLATBUFFER):
        return data  # not readable here: LiteRT's own verifier says what is wrong with it
    if not any(len(t.quant.zero_points) == 1 < len(t.quant.scales) for t in tensors):
        return data
    model = unpack(data)
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and _length(q.zeroPoint) == 1 < _length(q.scale):
            q.zeroPoint = np.full(len(q.scale), int(q.zeroPoint[0]), dtype=np.int64)
    return pack(model)


def _apply(data: bytes, steps: tuple, tflm: bool) -> Compacted:
    """The steps on one unpacked copy of ``data``, packed after each step that changed anything
    (its bytes saved are measured on the packed file), and what the level kept (:func:`_kept`)."""
    done, current, model = [], data, unpack(data)
    for name, step, why in steps:
        tensors = step(model)
        if not tensors:
            continue
        drop_unused_buffers(model)
        smaller = pack(model)
        done.append(CompactionStep(name, len(current) - len(smaller), tensors, why))
        current = smaller
    return Compacted(current, len(data), tuple(done), _kept(model, tflm))


def _kept(model, tflm: bool) -> tuple[KeptItem, ...]:
    """Per tensor, what the steps left because an interpreter reads it: the bias quantization of
    ops other than per-channel conv / depthwise (a per-tensor FULLY_CONNECTED's: TFLM checks it),
    nonzero per-channel weight zero points (TFLM-only level) and the offline memory plan."""
    tensors = model.subgraphs[0].tensors
    biases: dict[str, int] = {}
    for index, users in _consumers(model).items():
        q = tensors[index].quantization
        if (tensors[index].type == _INT32 and q is not None and _length(q.scale)
                and _is_constant(model, tensors[index])):
            ops = "/".join(sorted({name for name, _, _ in users}))
            biases[ops] = biases.get(ops, 0) + 1
    kept = [KeptItem(f"bias quantization ({ops})", count,
                     "not the bias of a per-channel CONV_2D / DEPTHWISE_CONV_2D, so the kernel "
                     "reads its scale; TFLM checks a per-tensor FULLY_CONNECTED's within 2 %")
            for ops, count in sorted(biases.items())]
    nonzero = sum(1 for t in tensors if t.quantization is not None
                  and _length(t.quantization.zeroPoint) > 1 and _is_constant(model, t))
    if tflm and nonzero:
        kept.append(KeptItem("nonzero weight zero points", nonzero,
                             "TFLM would read element 0 for every channel: only all-zero arrays "
                             "collapse"))
    if any(_text(m.name) == OFFLINE_KEY for m in model.metadata or []):
        kept.append(KeptItem("offline memory plan", 0,
                             f"TFLM reads the {OFFLINE_KEY} metadata by name"))
    return tuple(kept)


def _consumers(model) -> dict[int, list[tuple[str, int, object]]]:
    """tensor index -> [(op name, input position, op)] over subgraph 0."""
    users: dict[int, list] = {}
    for op in model.subgraphs[0].operators or []:
        name = opcode_name(model, op.opcodeIndex)
        for position, index in enumerate(op.inputs):
            if index >= 0:
                users.setdefault(index, []).append((name, position, op))
    return users


def _is_per_channel(tensor) -> bool:
    q = tensor.quantization
    return q is not None and q.scale is not None and len(q.scale) > 1


def _drop_bias_quantization(model) -> int:
    """Int32 biases read only as the bias (input 2) of int8 per-channel conv / depthwise ops."""
    tensors = model.subgraphs[0].tensors
    dropped = 0
    for index, users in _consumers(model).items():
        tensor = tensors[index]
        if tensor.quantization is None or tensor.type != _INT32:
            continue
        if all(name in _PER_CHANNEL_BIAS_OPS and position == 2
               and _is_per_channel(tensors[op.inputs[1]]) for name, position, op in users):
            tensor.quantization = None
            dropped += 1
    return dropped


def _drop_min_max(model) -> int:
    dropped = 0
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and (_length(q.min) or _length(q.max)):
            q.min = q.max = None
            dropped += 1
    return dropped


def _drop_internal_names(model) -> int:
    sub = model.subgraphs[0]
    io = set(sub.inputs) | set(sub.outputs)
    return _clear_names(sub, [i for i in range(len(sub.tensors)) if i not in io])


def _drop_all_names(model) -> int:
    sub = model.subgraphs[0]
    cleared = _clear_names(sub, range(len(sub.tensors)))
    if sub.name:
        sub.name = None
        cleared += 1
    return cleared


def _clear_names(sub, indices) -> int:
    cleared = 0
    for i in indices:
        if sub.tensors[i].name:
            sub.tensors[i].name = None
            cleared += 1
    return cleared


def _drop_unread_metadata(model) -> int:
    entries = model.metadata or []
    keep = [m for m in entries if _text(m.name) in _METADATA_READ]
    dropped = len(entries) - len(keep) + (1 if model.description else 0)
    model.metadata = keep or None
    model.description = None
    return dropped


def _drop_signature_defs(model) -> int:
    count = len(model.signatureDefs or [])
    model.signatureDefs = None
    return count


def _collapse_weight_zero_points(model) -> int:
    """Per-channel zero points of constant tensors that are all 0 -> one element."""
    collapsed = 0
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if (q is None or not _length(q.zeroPoint) or _length(q.zeroPoint) < 2
                or not _is_constant(model, tensor)):
            continue
        if np.any(np.asarray(q.zeroPoint) != 0):
            continue  # TFLM would read Get(0) for every channel: only all-zero arrays collapse
        q.zeroPoint = np.zeros(1, dtype=np.int64)
        collapsed += 1
    return collapsed


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _length(values) -> int:
    return 0 if values is None else len(values)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_INT32 = TENSOR_TYPES["int32"]

_PORTABLE_STEPS: tuple[tuple[str, Callable, str], ...] = (
    ("bias quantization", _drop_bias_quantization,
     "int8 per-channel CONV_2D / DEPTHWISE_CONV_2D derive their multipliers from input x filter / "
     "output scales; the bias scale and zero point are never read"),
    ("min/max", _drop_min_max, "never read by any interpreter"),
    ("internal tensor names", _drop_internal_names,
     "names of tensors other than the graph's inputs and outputs are never read"),
    ("converter metadata", _drop_unread_metadata,
     "min_runtime_version, CONVERSION_METADATA and the description are never read"),
)
_TFLM_STEPS: tuple[tuple[str, Callable, str], ...] = (
    ("weight zero points", _collapse_weight_zero_points,
     "TFLM fills every channel's zero point from element 0 (micro_allocator.cc); LiteRT rejects"),
    ("all names", _drop_all_names, "TFLM never reads tensor or subgraph names"),
    ("signature defs", _drop_signature_defs, "TFLM never reads signature defs"),
)

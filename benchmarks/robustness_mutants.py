"""Seeded, deterministic mutants of a file (byte flips, int32 field flips, truncation,
``.tflite`` opcode-index swaps) for the robustness benchmark.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinyexport.tflite_graph import edit

# ---------------------------------------------------------------------------------------------
# Mutations (seeded, deterministic)


@dataclass(frozen=True)
class Mutant:
    source: str
    index: int
    kind: str
    detail: str
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:04d}-{self.kind}"


def _offset(rng: np.random.Generator, size: int, regions: tuple[tuple[int, int], ...]) -> int:
    """A random offset, inside one of ``regions`` (start, end) when given."""
    if regions:
        start, end = regions[int(rng.integers(len(regions)))]
        return int(rng.integers(start, max(start + 1, min(end, size))))
    return int(rng.integers(size))


def byte_flips(data: bytes, rng: np.random.Generator,
               regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """1-8 bytes XORed with a random non-zero mask."""
    out = bytearray(data)
    flips = []
    for _ in range(int(rng.integers(1, 9))):
        at, mask = _offset(rng, len(out), regions), int(rng.integers(1, 256))
        out[at] ^= mask
        flips.append(f"{at}^{mask:#04x}")
    return bytes(out), "xor " + ",".join(flips)


def int32_field(data: bytes, rng: np.random.Generator,
                regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """One 4-aligned little-endian int32 replaced by a boundary or random value."""
    out = bytearray(data)
    at = min(_offset(rng, len(out), regions) // 4 * 4, max(0, len(out) - 4))
    (old,) = struct.unpack_from("<i", out, at)
    choices = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, old + 1, old - 1, old + 4096, old * 7919,
               int(rng.integers(-2 ** 31, 2 ** 31))]
    new = int(choices[int(rng.integers(len(choices)))])
    new = (new + 2 ** 31) % 2 ** 32 - 2 ** 31
    struct.pack_into("<i", out, at, new)
    return bytes(out), f"int32 @{at}: {old} -> {new}"


def truncate(data: bytes, rng: np.random.Generator,
             regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    keep = int(rng.integers(0, len(data)))
    return data[:keep], f"truncated to {keep} of {len(data)} bytes"


def opcode_swap(data: bytes, rng: np.random.Generator,
                regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """Two ops of different opcodes swap their opcode index; with one opcode only, one op gets
    another (possibly out-of-range) index. Re-packed with the project's flatbuffer writer."""
    model = edit.unpack(data)
    ops = model.subgraphs[0].operators
    a = int(rng.integers(len(ops)))
    others = [i for i, op in enumerate(ops) if op.opcodeIndex != ops[a].opcodeIndex]
    if others:
        b = others[int(rng.integers(len(others)))]
        ops[a].opcodeIndex, ops[b].opcodeIndex = ops[b].opcodeIndex, ops[a].opcodeIndex
        detail = f"opcode index of op {a} <-> op {b}"
    else:
        new = int(rng.integers(len(model.operatorCodes) + 2))
        detail = f"op {a} opcode index {ops[a].opcodeIndex} -> {new}"
        ops[a].opcodeIndex = new
    return edit.pack(model), detail


MUTATORS: dict[str, Callable[..., tuple[bytes, str]]] = {
    "byte_flip": byte_flips, "struct_flip": byte_flips, "int32_field": int32_field,
    "truncate": truncate, "opcode_swap": opcode_swap}


def make_mutants(sources: dict[str, bytes], count: int, seed: int, kinds: tuple[str, ...],
                 regions: dict[str, tuple[tuple[int, int], ...]] | None = None) -> list[Mutant]:
    """``count`` mutants, round robin over ``sources`` and ``kinds``; mutant ``i`` depends only on
    (``seed``, ``i``) and its source bytes. ``struct_flip`` and half of the ``int32_field``
    mutants stay inside ``regions[source]`` (a file's structure rather than its tensor data)."""
    names, mutants = sorted(sources), []
    for i in range(count):
        source, kind = names[i % len(names)], kinds[(i // len(names)) % len(kinds)]
        rng = np.random.default_rng([seed, i])
        where = (regions or {}).get(source, ())
        if kind == "byte_flip" or (kind == "int32_field" and rng.integers(2)):
            where = ()
        try:
            data, detail = MUTATORS[kind](sources[source], rng, where)
        except Exception as exc:  # noqa: BLE001 - an unpackable model: fall back to a byte flip
            data, detail = byte_flips(sources[source], rng)
            detail += f" (opcode swap impossible: {type(exc).__name__})"
        mutants.append(Mutant(source, i, kind, detail, data))
    return mutants


def zip_structure(data: bytes) -> tuple[tuple[int, int], ...]:
    """Byte ranges of a torch zip file that are not tensor data: local headers, the pickle, the
    small records and the central directory."""
    import io

    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        for info in infos:
            start = info.header_offset
            body = start + 30 + len(info.filename.encode()) + len(info.extra)
            tensor = "/data/" in info.filename and not info.filename.endswith(".pkl")
            regions.append((start, body if tensor else body + info.compress_size))
        last = infos[-1]
        regions.append((last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
                        + last.compress_size, len(data)))
    return tuple(regions)

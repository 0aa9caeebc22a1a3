"""Tensor lifetimes and arena planners, replicating TFLite Micro's head planning.

* :func:`buffers_for` - the planned buffers exactly as ``AllocationInfoBuilder`` builds them
  (docs/tflm_memory.md §2; ``micro_allocation_info.cc``): non-constant, non-variable tensors with a
  non-zero size, lifetimes as inclusive op-scope intervals, then the scratch buffers.
* :func:`greedy_plan` - ``GreedyMemoryPlanner::CalculateOffsetsIfNeeded`` (docs/tflm_memory.md §3.1),
  including the equal-size tie-break (buffers are filled into the sort array from the tail, so
  equal sizes end up in descending planner index) and the first-fit walk over the offset list.
* :func:`linear_size`, :func:`lower_bound`, :func:`tight_plan` - the linear planner, the live-set
  lower bound (§7.1) and our tighter offline placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyexport.tflite_graph.reader import Graph

ALIGN = 16  # MicroArenaBufferAlignment(), micro_arena_constants.h


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Buffer:
    """One planned allocation: ``size`` already 16-byte aligned; ``first``/``last`` inclusive."""

    key: str  # "t<tensor index>" or "s<op index>.<k>" for a scratch buffer
    size: int
    first: int
    last: int
    offline: int = -1  # fixed offset from an offline plan; -1 = plan online

    def overlaps(self, other: Buffer) -> bool:
        return not (other.first > self.last or self.first > other.last)


def buffers_for(graph: Graph, scratch: dict[int, list[int]] | None = None,
                offline: tuple[int, ...] | None = None) -> list[Buffer]:
    """The planner's buffer list in TFLM's insertion order (tensors, then scratch buffers).

    Args:
        scratch: op index -> scratch request sizes in bytes, in request order.
        offline: per-tensor offsets from an ``OfflineMemoryAllocation`` plan (-1 = online).
    """
    first = {t.index: -1 for t in graph.tensors}
    last = dict(first)
    for i in graph.inputs:
        first[i], last[i] = 0, 0
    scope = 0
    for op in graph.ops:
        scope += 1
        for o in op.outputs:
            if o >= 0 and first[o] == -1:
                first[o] = scope
        for i in (*op.inputs, *op.outputs):
            if i >= 0:  # -1 marks an omitted optional input
                last[i] = scope
    for o in graph.outputs:
        if first[o] == -1:
            first[o] = scope
        last[o] = scope
    out = []
    for t in graph.tensors:
        fixed = offline[t.index] if offline else -1
        needs = (not t.is_const and not t.is_variable and t.nbytes != 0) or (
            t.is_variable and fixed != -1)
        if needs:
            out.append(Buffer(f"t{t.index}", align_up(t.nbytes), first[t.index], last[t.index],
                              fixed))
    for op_index, sizes in sorted((scratch or {}).items()):
        for k, size in enumerate(sizes):
            out.append(Buffer(f"s{op_index}.{k}", align_up(size), op_index + 1, op_index + 1))
    return out


def greedy_plan(buffers: list[Buffer]) -> list[int]:
    """Offsets chosen by TFLM's ``GreedyMemoryPlanner`` for ``buffers`` (same order)."""
    if not buffers:
        return []
    offline = [i for i, b in enumerate(buffers) if b.offline != -1]
    online = [i for i, b in enumerate(buffers) if b.offline == -1][::-1]  # filled from the tail
    online = _reverse_bubble_sort(online, [buffers[i].size for i in online])
    order = offline + online
    offsets = [-1] * len(buffers)
    placed: list[int] = []  # buffer indices sorted by offset (ties: insertion order)
    for n, bid in enumerate(order):
        want = buffers[bid]
        if want.offline != -1:
            offset = want.offline
        elif n == 0:
            offset = 0
        else:
            offset = _first_fit(want, placed, offsets, buffers)
        offsets[bid] = offset
        pos = next((k for k, p in enumerate(placed) if offsets[p] > offset), len(placed))
        placed.insert(pos, bid)
    return offsets


def _reverse_bubble_sort(ids: list[int], sizes: list[int]) -> list[int]:
    """``ReverseSortInPlace``: stable bubble sort to descending size."""
    pairs = list(zip(sizes, ids, strict=True))
    return [i for _, i in sorted(pairs, key=lambda p: -p[0])]  # Python's sort is stable too


def _first_fit(want: Buffer, placed: list[int], offsets: list[int], buffers: list[Buffer]) -> int:
    candidate = 0
    for pid in placed:
        other = buffers[pid]
        if not want.overlaps(other):
            continue
        if offsets[pid] - candidate >= want.size:
            return candidate
        candidate = max(candidate, offsets[pid] + other.size)
    return candidate


def plan_size(buffers: list[Buffer], offsets: list[int]) -> int:
    """High-water mark of a plan (``GetMaximumMemorySize``)."""
    return max((o + b.size for b, o in zip(buffers, offsets, strict=True)), default=0)


def linear_size(buffers: list[Buffer]) -> int:
    """``LinearMemoryPlanner``: every buffer gets its own slot (running sum)."""
    return sum(b.size for b in buffers)


def live_bytes(buffers: list[Buffer], n_ops: int) -> list[int]:
    """Bytes that must be alive at each op scope 1..n_ops (scope 0 = graph inputs)."""
    return [sum(b.size for b in buffers if b.first <= s <= b.last) for s in range(n_ops + 1)]


def lower_bound(buffers: list[Buffer], n_ops: int) -> int:
    """Max over op scopes of the live bytes: no plan (without in-place reuse) can go lower."""
    return max(live_bytes(buffers, n_ops), default=0)


def check_plan(buffers: list[Buffer], offsets: list[int]) -> None:
    """Assert that no two buffers alive at the same time overlap in memory (internal check)."""
    for i, a in enumerate(buffers):
        for j in range(i):
            b = buffers[j]
            if a.overlaps(b):
                disjoint = offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i]
                assert disjoint, f"plan overlaps {a.key} and {b.key}"

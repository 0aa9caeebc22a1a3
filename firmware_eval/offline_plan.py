"""A tighter arena placement than TFLM's greedy planner, written as its offline plan.

Method (heuristic, near-optimal): first-fit placement (lowest offset that does not collide with
any already-placed buffer alive at the same time) tried over several buffer orderings - by size,
by lifetime start, by size x lifetime, by live-set pressure - and the smallest high-water mark
wins. The result is provably optimal when it equals the live-set lower bound
(:func:`planner.lower_bound`); the report says which. Scratch buffers stay online: TFLM fits them
into the gaps of the fixed plan (docs/tflm_memory.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyexport.firmware_eval import planner
from tinyexport.firmware_eval.planner import Buffer
from tinyexport.tflite_graph.reader import Graph


@dataclass(frozen=True)
class OfflinePlan:
    tensor_offsets: tuple[int, ...]  # one per tensor, -1 = online
    head: int  # predicted head with this plan (scratch included, via the greedy replica)
    greedy_head: int
    lower_bound: int
    ordering: str

    @property
    def optimal(self) -> bool:
        return self.head == self.lower_bound


def _first_fit(order: list[int], buffers: list[Buffer]) -> list[int]:
    offsets = [-1] * len(buffers)
    placed: list[int] = []
    for i in order:
        b = buffers[i]
        busy = sorted((offsets[j], offsets[j] + buffers[j].size) for j in placed
                      if b.overlaps(buffers[j]))
        offset = 0
        for lo, hi in busy:
            if lo - offset >= b.size:
                break
            offset = max(offset, hi)
        offsets[i] = offset
        placed.append(i)
    return offsets


def _orderings(buffers: list[Buffer], n_ops: int) -> dict[str, list[int]]:
    live = planner.live_bytes(buffers, n_ops)
    pressure = [max(live[b.first:b.last + 1], default=0) for b in buffers]
    idx = range(len(buffers))
    return {
        "size": sorted(idx, key=lambda i: -buffers[i].size),
        "start": sorted(idx, key=lambda i: (buffers[i].first, -buffers[i].size)),
        "area": sorted(idx, key=lambda i: -buffers[i].size * (buffers[i].last - buffers[i].first
                                                             + 1)),
        "pressure": sorted(idx, key=lambda i: (-pressure[i], -buffers[i].size)),
        "pressure-start": sorted(idx, key=lambda i: (-pressure[i], buffers[i].first)),
    }


def tight_plan(graph: Graph, scratch: dict[int, list[int]]) -> OfflinePlan:
    """Best first-fit placement of the tensor buffers; scratch buffers are left online."""
    all_buffers = planner.buffers_for(graph, scratch)
    greedy = planner.plan_size(all_buffers, planner.greedy_plan(all_buffers))
    bound = planner.lower_bound(all_buffers, len(graph.ops))
    tensors = [b for b in all_buffers if b.key.startswith("t")]
    best = None
    for name, order in _orderings(all_buffers, len(graph.ops)).items():
        offsets = _first_fit(order, all_buffers)  # plan scratch too, so its room is reserved
        planner.check_plan(all_buffers, offsets)
        per_tensor = [-1] * len(graph.tensors)
        for b, o in zip(all_buffers, offsets, strict=True):
            if b.key.startswith("t"):
                per_tensor[int(b.key[1:])] = o
        fixed = planner.buffers_for(graph, scratch, tuple(per_tensor))
        head = planner.plan_size(fixed, planner.greedy_plan(fixed))
        if best is None or head < best[0]:
            best = (head, tuple(per_tensor), name)
    if best is None or not tensors or best[0] >= greedy:
        return OfflinePlan(tuple([-1] * len(graph.tensors)), greedy, greedy, bound, "greedy")
    return OfflinePlan(best[1], best[0], greedy, bound, best[2])

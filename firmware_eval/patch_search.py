"""The search for a patch plan (:mod:`tinyexport.firmware_eval.patching`): the lowest predicted
TFLM arena (head + tail, :func:`tinyexport.firmware_eval.arena.predict`) within a MAC overhead
limit, over single prefix stages and greedily grown multi-stage plans; every plan evaluated and
the frontier are kept for the report."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tinyexport.errors import UserError
from tinyexport.firmware_eval import arena
from tinyexport.firmware_eval.patching import PatchPlan, patch_model, stage_of
from tinyexport.tflite_graph.reader import Graph, parse_graph

DEFAULT_GRIDS = ((2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8))
GREEDY_GRIDS = ((2, 2), (2, 3), (3, 3), (4, 4), (5, 5))
MAX_SEGMENT_OPS = 10


@dataclass(frozen=True)
class PlanRow:
    """One evaluated plan: its stages (none: the unpatched model) and predicted figures."""

    plan: tuple[PatchPlan, ...]
    head: int
    tail: int
    total: int
    min_arena: int  # the arena TFLM needs: total, or more while it plans (arena.planning_peak)
    macs: int
    mac_overhead: float  # percent over the unpatched model
    flash_delta: int  # bytes: len(patched) - len(original)
    ops: int

    @property
    def label(self) -> str:
        return " + ".join(str(p) for p in self.plan) or "unpatched"


@dataclass(frozen=True)
class PatchSearch:
    """Every plan evaluated (single prefix stages, then the greedy multi-stage steps), the
    frontier (no other plan has a lower arena at no more MACs) and the chosen plan: the lowest
    predicted arena within the MAC overhead limit, or None when no plan beats the unpatched
    model."""

    baseline: PlanRow
    rows: tuple[PlanRow, ...]
    frontier: tuple[PlanRow, ...]
    chosen: PlanRow | None
    refused: tuple[tuple[int, str], ...]  # (split op, why) of the candidates not evaluated
    max_mac_overhead: float


def evaluate(data: bytes, plan: PatchPlan | Sequence[PatchPlan] = (),
             baseline_macs: int | None = None) -> PlanRow:
    """Predicted arena, MACs and flash growth of ``data`` patched by ``plan`` (empty: as is)."""
    return _evaluate(data, plan, baseline_macs)[0]


def _evaluate(data: bytes, plan, baseline_macs: int | None = None):
    plans = (plan,) if isinstance(plan, PatchPlan) else tuple(plan)
    patched = patch_model(data, plans) if plans else data
    graph = parse_graph(patched)
    pred = arena.predict(graph)
    macs = sum(row.macs for row in pred.ops)
    base = baseline_macs or macs
    row = PlanRow(plans, pred.head, pred.tail, pred.total, pred.min_arena, macs,
                  100.0 * (macs - base) / base if base else 0.0, len(patched) - len(data),
                  len(graph.ops))
    return row, graph, pred


def candidate_splits(graph: Graph) -> tuple[list[int], list[tuple[int, str]]]:
    """Prefix split points to try: every op in the first quarter of the graph and every op that
    shrinks the spatial size (with the op after it, often the 1x1 projection that shrinks the
    channels), kept where :func:`stage_of` accepts the stage; the others with the reason."""
    wanted = set(range(max(1, len(graph.ops) // 4)))
    for op in graph.ops:
        ins = [graph.tensors[i].shape for i in op.inputs[:1] if i >= 0]
        out = graph.tensors[op.outputs[0]].shape if op.outputs else ()
        if ins and len(ins[0]) == 4 and len(out) == 4 and out[1] * out[2] < ins[0][1] * ins[0][2]:
            wanted |= {op.index, op.index + 1}
    ok, refused = [], []
    for k in sorted(i for i in wanted if i < len(graph.ops) - 1):
        try:
            stage = stage_of(graph, k)
        except UserError as exc:
            refused.append((k, str(exc)))
            continue
        if min(graph.tensors[stage.output].shape[1:3]) >= 2:
            ok.append(k)
    return ok, refused


def blocks(graph: Graph, max_ops: int = MAX_SEGMENT_OPS) -> list[tuple[int, int]]:
    """The graph's smallest stages from op 0 on, as (first, last) op: single ops along a chain,
    whole residual blocks where a branch joins (earlier pieces are merged until the stage reads
    one activation); stops at the first op no stage of at most ``max_ops`` ops can hold."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < len(graph.ops) - 1:
        found = None
        for first in [start] + [s for s, _ in reversed(out)]:
            last_end = min(first + max_ops, len(graph.ops) - 1)
            found = next(((first, e) for e in range(start, last_end)
                          if _is_stage(graph, first, e)), None)
            if found is not None:
                break
        if found is None:
            break
        out = [b for b in out if b[0] < found[0]] + [found]
        start = found[1] + 1
    return out


def _is_stage(graph: Graph, start: int, end: int) -> bool:
    try:
        stage = stage_of(graph, end, start)
    except UserError:
        return False
    return min(graph.tensors[stage.output].shape[1:3]) >= 2


def search_patch_plans(data: bytes, max_mac_overhead: float = 0.30,
                       grids: tuple[tuple[int, int], ...] = DEFAULT_GRIDS,
                       splits: list[int] | None = None, greedy_rounds: int = 12) -> PatchSearch:
    """Evaluate patch plans with the arena predictor and choose one.

    Two families: one prefix stage (every split of :func:`candidate_splits` x ``grids``), then
    several disjoint stages found greedily: each round takes the op where the current plan's
    live set peaks and tries every run of :func:`blocks` around it (at most
    :data:`MAX_SEGMENT_OPS` ops) with each of :data:`GREEDY_GRIDS`, replacing the stages it
    overlaps; the move with the lowest head (then arena) within the MAC limit is kept while the
    head falls. The head, not the total, drives the rounds: removing one of several equal
    bottlenecks lowers no total but is needed before the next step can. The choice is then the
    lowest predicted arena over every plan tried.

    Args:
        max_mac_overhead: allowed extra MACs (halo recomputation) as a fraction (0.30 = 30 %).
        grids: (rows, cols) to try at each prefix split.
        splits: prefix split points to try; default :func:`candidate_splits`.
        greedy_rounds: rounds of the multi-stage search (0: prefix plans only).
    """
    graph = parse_graph(data)
    base = evaluate(data)
    refused: list[tuple[int, str]] = []
    if splits is None:
        splits, refused = candidate_splits(graph)
    rows = []
    for k in splits:
        for r, c in grids:
            try:
                rows.append(evaluate(data, PatchPlan(k, r, c), base.macs))
            except UserError as exc:
                refused.append((k, f"{r}x{c}: {exc}"))
    limit = 100.0 * max_mac_overhead + 1e-9
    rows += _greedy(data, graph, base, limit, greedy_rounds)
    ok = [row for row in rows if row.mac_overhead <= limit]
    best = min(ok, key=lambda row: (row.min_arena, row.macs), default=None)
    chosen = best if best is not None and best.min_arena < base.min_arena else None
    return PatchSearch(base, tuple(rows), _frontier(rows), chosen, tuple(refused),
                       max_mac_overhead)


def _greedy(data: bytes, graph: Graph, base: PlanRow, limit: float,
            rounds: int) -> list[PlanRow]:
    """Rows of the multi-stage greedy search (see :func:`search_patch_plans`)."""
    parts = blocks(graph)
    current, tried = base, []
    for _ in range(rounds):
        _, patched, pred = _evaluate(data, current.plan, base.macs)
        peak = max(pred.ops, key=lambda r: r.live_bytes)
        at = original_producer(graph, patched.tensors[patched.ops[peak.index].outputs[0]].name)
        step = [row for plan in _moves(graph, parts, current.plan, at)
                for row in _try(data, plan, base.macs)]
        tried += step
        ok = [row for row in step if row.mac_overhead <= limit]
        best = min(ok, key=lambda row: (row.head, row.min_arena, row.macs), default=None)
        if best is None or best.head >= current.head:
            break
        current = best
    return tried


def original_producer(graph: Graph, name: str) -> int | None:
    """The op of the unpatched ``graph`` behind a tensor of a patched model: a patch copy is
    named ``t<original tensor index>/<tag>`` (:meth:`patching._Writer.like`), any other tensor
    keeps its original name."""
    found = re.match(r"t(\d+)/", name)
    if found:
        index = int(found.group(1))
        return next((op.index for op in graph.ops if index in op.outputs), None)
    return next((op.index for op in graph.ops
                 if any(graph.tensors[o].name == name for o in op.outputs)), None)


def _moves(graph: Graph, parts: list[tuple[int, int]], plan: tuple[PatchPlan, ...],
           at: int | None) -> list[tuple[PatchPlan, ...]]:
    """Plans that put op ``at`` in a (new or re-gridded) stage made of consecutive blocks."""
    home = [k for k, (s, e) in enumerate(parts) if at is not None and s <= at <= e]
    out = []
    for i in range(home[0] + 1 if home else 0):
        for j in range(home[0] if home else 0, len(parts)):
            s, e = parts[i][0], parts[j][1]
            if e - s + 1 > MAX_SEGMENT_OPS or not _is_stage(graph, s, e):
                continue
            keep = tuple(p for p in plan if p.split_after < s or p.start > e)
            out += [keep + (PatchPlan(e, r, c, s),) for r, c in GREEDY_GRIDS]
    return out


def _try(data: bytes, plan: tuple[PatchPlan, ...], baseline_macs: int) -> list[PlanRow]:
    try:
        return [evaluate(data, plan, baseline_macs)]
    except UserError:
        return []


def _frontier(rows: list[PlanRow]) -> tuple[PlanRow, ...]:
    """Plans no other plan beats on both arena and MACs, by increasing MACs."""
    out, best = [], math.inf
    for row in sorted(rows, key=lambda r: (r.macs, r.min_arena)):
        if row.min_arena < best:
            out.append(row)
            best = row.min_arena
    return tuple(out)

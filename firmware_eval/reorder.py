"""Memory-optimal operator order for branchy graphs, written back into the flatbuffer.

TFLM runs the ops of subgraph 0 in flatbuffer order, and that order decides every tensor's
lifetime (docs/tflm_memory.md §2), so for graphs with branches (residuals, lite-residual adapters,
inception blocks, multi-output heads) another topological order can need a smaller head.

Method (Serenity, "Ordering Chaos", MLSys'20):

* search objective: the live-set peak - at each op scope the bytes of every planned tensor alive
  then (its inputs, outputs and scratch included; TFLM never computes in place), the 16-byte
  aligned sizes of :func:`planner.buffers_for`. It depends only on the *set* of ops already run,
  so dynamic programming over those sets (the "zero-indegree frontier") with memoised best peak
  is exact for it;
* divide and conquer: an op that every other op either precedes or follows (a cut point, e.g.
  the op after a residual ADD) is at the same position in every topological order, so the ops
  between two cut points form a segment whose best order does not depend on the others. Each
  segment is solved on its own. Where a segment's DP would exceed ``max_states`` states, each
  layer of the DP keeps only its best ``max_states / ops`` sets by (peak, live bytes) - a beam
  search, at width 1 the greedy "lowest peak, then the op that frees the most memory" - and
  the method is then ``"heuristic"``;
* final choice: the real objective, TFLM's head as :func:`arena.predict` computes it for the
  order (greedy planner replica, tie-break included), over the candidates (the original order,
  the DP / heuristic orders with two tie-breaks); the original order is kept unless a candidate
  is strictly better.

:func:`reorder_model` permutes the subgraph's operator list only (tensors, buffers and every op's
inputs/outputs unchanged, so the outputs are bit-identical) after checking that the order is a
topological one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinyexport.firmware_eval import arena, planner
from tinyexport.tflite_graph.reader import Graph, parse_graph
from tinyexport.tflite_graph.writer import _pack, _unpack

DEFAULT_MAX_STATES = 50_000


@dataclass(frozen=True)
class OrderResult:
    """The best order found: original op indices in their new execution order."""

    order: tuple[int, ...]
    head_before: int  # predicted TFLM head in the model's own order
    head_after: int  # predicted TFLM head in ``order``
    arena_before: int  # predicted smallest arena (ArenaPrediction.min_arena), own order
    arena_after: int
    method: str  # "dp" (every segment solved exactly) or "heuristic"
    states: int  # DP states explored over all segments
    live_peak: int  # live-set peak of ``order`` (the search objective; a lower bound on the head)

    @property
    def changed(self) -> bool:
        return self.order != tuple(range(len(self.order)))


@dataclass(frozen=True)
class _Dag:
    """Op dependencies and the planned bytes each op creates and frees (bit masks over ops)."""

    preds: tuple[int, ...]  # ops whose outputs the op reads
    born: tuple[int, ...]  # bytes of the planned outputs, plus its scratch (this scope only)
    scratch: tuple[int, ...]
    touches: tuple[tuple[int, ...], ...]  # planned tensors the op reads or writes
    users: dict[int, int]  # tensor -> mask of the ops that read or write it
    size: dict[int, int]  # planned tensor -> aligned bytes
    keep: frozenset[int]  # graph outputs: alive to the end
    start_mem: int  # graph inputs alive before the first op
    start_peak: int


def _dag(graph: Graph) -> _Dag:
    scratch_req = arena.reference_scratch(graph)
    bufs = planner.buffers_for(graph, scratch_req)
    size = {int(b.key[1:]): b.size for b in bufs if b.key.startswith("t")}
    scratch = [0] * len(graph.ops)
    for b in bufs:
        if b.key.startswith("s"):
            scratch[int(b.key[1:].split(".")[0])] += b.size
    producer = {o: op.index for op in graph.ops for o in op.outputs if o >= 0}
    users: dict[int, int] = {}
    preds, born, touches = [], [], []
    for op in graph.ops:
        ins = {i for i in op.inputs if i >= 0}
        preds.append(sum(1 << producer[i] for i in ins if i in producer and producer[i] != op.index))
        outs = {o for o in op.outputs if o >= 0 and o in size}
        born.append(sum(size[o] for o in outs) + scratch[op.index])
        touch = tuple(sorted(t for t in ins | outs if t in size))
        touches.append(touch)
        for t in touch:
            users[t] = users.get(t, 0) | 1 << op.index
    inputs = {i for i in graph.inputs if i in size}
    start = sum(size[i] for i in inputs)
    keep = frozenset(graph.outputs)
    unused = sum(size[i] for i in inputs if i not in users and i not in keep)
    return _Dag(tuple(preds), tuple(born), tuple(scratch), tuple(touches), users, size, keep,
                start - unused, start)


def _step(dag: _Dag, done: int, mem: int, op: int) -> tuple[int, int]:
    """(peak during ``op``, live bytes after it) when ``done`` ran before it with ``mem`` live."""
    during = mem + dag.born[op]
    after = done | 1 << op
    freed = sum(dag.size[t] for t in dag.touches[op]
                if t not in dag.keep and not dag.users[t] & ~after)
    return during, during - dag.scratch[op] - freed


def live_peak(graph: Graph, order: tuple[int, ...]) -> int:
    """Live-set peak of running ``graph``'s ops in ``order`` (the search objective)."""
    dag = _dag(graph)
    done, mem, peak = 0, dag.start_mem, dag.start_peak
    for op in order:
        during, mem = _step(dag, done, mem, op)
        peak, done = max(peak, during), done | 1 << op
    return peak


def _segments(dag: _Dag, n: int) -> list[int]:
    """Masks of the op segments between cut points, in execution order (cut ops alone)."""
    anc = [0] * n
    for op in _topo(dag, n):
        for p in _bits(dag.preds[op]):
            anc[op] |= anc[p] | 1 << p
    desc = [0] * n
    for op in range(n):
        for a in _bits(anc[op]):
            desc[a] |= 1 << op
    full = (1 << n) - 1
    cuts = [op for op in _topo(dag, n) if anc[op] | desc[op] | 1 << op == full]
    out, before = [], 0
    for c in cuts:
        if anc[c] & ~before:
            out.append(anc[c] & ~before)
        out.append(1 << c)
        before = anc[c] | 1 << c
    if full & ~before:
        out.append(full & ~before)
    return out


def _topo(dag: _Dag, n: int) -> list[int]:
    """A topological order, the file order where it is one (Kahn, lowest index first)."""
    done, order = 0, []
    while len(order) < n:
        op = next(o for o in range(n) if not done >> o & 1 and not dag.preds[o] & ~done)
        order.append(op)
        done |= 1 << op
    return order


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _dp(dag: _Dag, base: int, seg: int, mem0: int, max_states: int, reverse: bool
        ) -> tuple[list[int], int, bool]:
    """Best order of the ops in ``seg`` after ``base`` ran (``mem0`` live): (order, states,
    exact). Layer k holds the sets of k ops run; each keeps its lowest (peak, live) path. A layer
    over ``max_states / len(seg)`` sets keeps only the best of them (beam search: a heuristic,
    ``exact`` False; width 1 is the greedy "lowest peak, then most memory freed" schedule).
    ``reverse`` flips the tie-break between equal peaks."""
    ops = _bits(seg)[::-1] if reverse else _bits(seg)
    width = max(1, max_states // max(len(ops), 1))
    layer = {0: (0, mem0, None, -1)}  # sub-mask -> (peak, live after, parent sub-mask, last op)
    memo: dict[int, tuple] = dict(layer)
    exact = True
    for _ in ops:
        nxt: dict[int, tuple] = {}
        for sub, (peak, mem, _, _) in layer.items():
            done = base | sub
            for op in ops:
                if sub >> op & 1 or dag.preds[op] & ~done:
                    continue
                during, after = _step(dag, done, mem, op)
                key = sub | 1 << op
                if key not in nxt or max(peak, during) < nxt[key][0]:
                    nxt[key] = (max(peak, during), after, sub, op)
        if len(nxt) > width:
            exact = False
            nxt = dict(sorted(nxt.items(), key=lambda kv: kv[1][:2])[:width])
        memo.update(nxt)
        layer = nxt
    order, sub = [], seg
    while sub:
        _, _, parent, op = memo[sub]
        order.append(op)
        sub = parent
    return order[::-1], len(memo), exact


def _search(dag: _Dag, n: int, max_states: int, reverse: bool) -> tuple[list[int], bool, int]:
    """(order, exact, states) over all segments."""
    order, done, mem, exact, states = [], 0, dag.start_mem, True, 0
    for seg in _segments(dag, n):
        part, count, seg_exact = _dp(dag, done, seg, mem, max_states, reverse)
        exact, states = exact and seg_exact, states + count
        for op in part:
            mem = _step(dag, done, mem, op)[1]
            done |= 1 << op
        order += part
    return order, exact, states


def search_order(graph: Graph, max_states: int = DEFAULT_MAX_STATES, reverse: bool = False
                 ) -> tuple[tuple[int, ...], bool, int]:
    """The order with the lowest live-set peak: (order, exact, DP states). ``exact`` is False
    when a segment's DP was cut to a beam (more than ``max_states`` states)."""
    _check_reorderable(graph)
    order, exact, states = _search(_dag(graph), len(graph.ops), max_states, reverse)
    return tuple(order), exact, states


def reordered_graph(graph: Graph, order: tuple[int, ...] | list[int]) -> Graph:
    """``graph`` with its ops in ``order`` (original indices), renumbered 0..n-1."""
    _check_order(graph, order)
    ops = tuple(dataclasses.replace(graph.ops[i], index=k) for k, i in enumerate(order))
    return dataclasses.replace(graph, ops=ops)


def best_order(graph: Graph, max_states: int = DEFAULT_MAX_STATES) -> OrderResult:
    """The op order with the lowest predicted TFLM head (see module docstring).

    Raises:
        ValueError: a model with several subgraphs or an offline memory plan (reorder first,
            then plan).
    """
    _check_reorderable(graph)
    n = len(graph.ops)
    own = tuple(range(n))
    candidates, exact, states = {own}, True, 0
    for reverse in (False, True):
        order, seg_exact, count = search_order(graph, max_states, reverse)
        candidates.add(order)
        exact, states = exact and seg_exact, states + count
    method = "dp" if exact else "heuristic"
    scored = {o: arena.predict(reordered_graph(graph, o)) for o in candidates}
    best = min(candidates, key=lambda o: (scored[o].head, scored[o].min_arena, o != own))
    before, after = scored[own], scored[best]
    return OrderResult(best, before.head, after.head, before.min_arena, after.min_arena, method,
                       states, live_peak(graph, best))


def reorder_model(data: bytes, order: tuple[int, ...] | list[int]) -> bytes:
    """The model ``data`` with subgraph 0's operators in ``order`` (original op indices).

    Raises:
        ValueError: ``order`` is not a permutation of the ops, or runs an op before one that
            produces its input; several subgraphs; an offline memory plan.
    """
    graph = parse_graph(data)
    _check_reorderable(graph)
    _check_order(graph, order)
    model = _unpack(data)
    sub = model.subgraphs[0]
    sub.operators = [sub.operators[i] for i in order]
    return _pack(model)


def _check_reorderable(graph: Graph) -> None:
    if graph.num_subgraphs != 1:
        raise ValueError(f"the model has {graph.num_subgraphs} subgraphs; only single-subgraph "
                         "models can be reordered")
    if graph.offline_offsets is not None:
        raise ValueError("the model has an OfflineMemoryAllocation plan, made for its current op "
                         "order; reorder the model without it, then plan it again")


def _check_order(graph: Graph, order) -> None:
    n = len(graph.ops)
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of the {n} op indices 0..{n - 1}, "
                         f"got {list(order)!r}")
    producer = {o: op.index for op in graph.ops for o in op.outputs if o >= 0}
    pos = {op: k for k, op in enumerate(order)}
    for op in graph.ops:
        for i in op.inputs:
            if i in producer and producer[i] != op.index and pos[producer[i]] > pos[op.index]:
                raise ValueError(f"order runs op {op.index} ({op.opcode}) before op "
                                 f"{producer[i]}, which produces its input tensor {i}; "
                                 "pass a topological order")

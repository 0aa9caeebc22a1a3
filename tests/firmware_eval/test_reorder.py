"""Operator reordering (firmware_eval.reorder) on hand-built graphs: the DP finds the minimum
live-set peak over every topological order (brute force on random DAGs), its objective is the
planner's own lower bound for that order, a hand-computable bad order is fixed, and bad orders
are refused. The TFLM / LiteRT checks on converted Keras models are in test_reorder_tflm.py."""

import itertools
import random

import pytest

from tinyexport.firmware_eval import arena, planner, reorder
from tinyexport.tflite_graph.reader import Graph, Op, Quant, Tensor

Q = Quant((0.1,), (0,))


def _graph(sizes: list[int], ops: list[tuple[str, tuple[int, ...], int]],
           outputs: tuple[int, ...]) -> Graph:
    """Tensor k has ``sizes[k]`` int8 bytes (shape (1, size)); tensor 0 is the graph input; op
    (opcode, inputs, output)."""
    tensors = tuple(Tensor(k, f"t{k}", (1, s), "int8", False, False, Q)
                    for k, s in enumerate(sizes))
    return Graph(tensors, tuple(Op(i, code, 1, ins, (out,)) for i, (code, ins, out)
                                in enumerate(ops)), (0,), outputs, 1000)


def _random_dag(seed: int, n: int) -> Graph:
    rng = random.Random(seed)
    sizes = [rng.choice([16, 64, 160, 320, 1024]) for _ in range(n + 1)]
    ops, used = [], set()
    for i in range(n):
        ins = tuple(sorted(set(rng.sample(range(i + 1), k=min(i + 1, rng.choice([1, 2]))))))
        used.update(ins)
        ops.append(("ADD" if len(ins) == 2 else "RELU", ins, i + 1))
    outputs = tuple(t for t in range(1, n + 1) if t not in used) + (rng.randint(1, n),)
    return _graph(sizes, ops, tuple(dict.fromkeys(outputs)))


def _topological_orders(graph: Graph):
    producer = {op.outputs[0]: op.index for op in graph.ops}
    for perm in itertools.permutations(range(len(graph.ops))):
        pos = {op: k for k, op in enumerate(perm)}
        if all(pos[producer[i]] < pos[op.index] for op in graph.ops for i in op.inputs
               if i in producer):
            yield perm


def _planner_bound(graph: Graph, order) -> int:
    g = reorder.reordered_graph(graph, order)
    return planner.lower_bound(planner.buffers_for(g, arena.reference_scratch(g)), len(g.ops))


@pytest.mark.parametrize("seed", range(8))
def test_dp_finds_the_minimum_over_all_topological_orders(seed):
    graph = _random_dag(seed, n=7)
    orders = list(_topological_orders(graph))
    best = min(_planner_bound(graph, o) for o in orders)
    order, exact, states = reorder.search_order(graph)
    assert exact and states > 0
    assert _planner_bound(graph, order) == reorder.live_peak(graph, order) == best
    # the search objective is the planner's live-set bound for every order, not only the best
    assert all(reorder.live_peak(graph, o) == _planner_bound(graph, o) for o in orders[:50])
    result = reorder.best_order(graph)
    assert result.head_after <= result.head_before


def test_state_limit_falls_back_to_the_heuristic():
    graph = _random_dag(3, n=7)
    order, exact, _ = reorder.search_order(graph, max_states=2)
    assert not exact and sorted(order) == list(range(7))
    assert reorder.best_order(graph, max_states=2).method == "heuristic"
    assert reorder.best_order(graph).method == "dp"


def _wide_first() -> Graph:
    """Input t0 (64 B) feeds a wide op 0 (t1, 1024 B) and a narrow chain, ops 1..3 (t2, t3, t4:
    256 B each); op 4 reduces t1 to t5 (64 B) and op 5 joins t5 and t4 into t6 (64 B).

    File order: t1 is held while the chain runs; at op 2, t1 + t2 + t3 = 1536 B are live (the
    peak), and TFLM's greedy plan reaches it. Running op 4 right after op 0 frees t1 at once:
    the peak is op 4's t0 + t1 + t5 = 1152 B, the chain then needs at most 64 + 256 + 256."""
    sizes = [64, 1024, 256, 256, 256, 64, 64]
    ops = [("RELU", (0,), 1), ("RELU", (0,), 2), ("RELU", (2,), 3), ("RELU", (3,), 4),
           ("RELU", (1,), 5), ("ADD", (5, 4), 6)]
    return _graph(sizes, ops, (6,))


def test_wide_branch_held_during_narrow_chain_is_moved():
    graph = _wide_first()
    result = reorder.best_order(graph)
    assert result.method == "dp" and result.changed
    assert (result.head_before, result.head_after) == (1536, 1152)
    assert result.order == (0, 4, 1, 2, 3, 5)
    assert result.live_peak == 1152 and result.arena_after == result.arena_before - 384
    g = reorder.reordered_graph(graph, result.order)
    assert [op.index for op in g.ops] == list(range(6)) and g.ops[1].inputs == (1,)


def test_bad_orders_are_refused():
    graph = _wide_first()
    with pytest.raises(ValueError, match="permutation"):
        reorder.reordered_graph(graph, (0, 1, 2))
    with pytest.raises(ValueError, match="before op 0, which produces its input tensor 1"):
        reorder.reordered_graph(graph, (4, 0, 1, 2, 3, 5))

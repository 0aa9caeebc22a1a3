"""TFLM's example models mnist_lstm (UNIDIRECTIONAL_SEQUENCE_LSTM, int8 with int16 cell state)
and hello_world_int8 (3 FULLY_CONNECTED): the LSTM's four gate scratch buffers in the head, its
OpDataLSTM / params in the tail, FULLY_CONNECTED's builtin data with 4-byte alignment, and the
arena TFLM needs while planning (tflite-micro#2738). Expected values: print_allocations() and the
smallest working arena_size of tflite-micro 0.dev20261023182759 (x86-64, 2026-11)."""

from pathlib import Path

import numpy as np
import pytest

from tinyexport.firmware_eval import arena, tflm_runner
from tinyexport.tflite_graph.reader import read_graph

DATA = Path(__file__).parent / "data"
# model: (head, tail, smallest arena_size that allocates)
EXPECTED = {"trained_lstm_int8.tflite": (1536, 2672, 4208),
            "hello_world_int8.tflite": (32, 1472, 1936)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_static_prediction(name):
    graph = read_graph(DATA / name)
    pred = arena.predict(graph)
    assert (pred.head, pred.tail, pred.min_arena) == EXPECTED[name]
    if name.startswith("trained_lstm"):
        assert graph.ops[0].option("time_major") is False
        assert pred.scratch[0] == [20 * 2] * 4  # batch 1 x 20 units x int16, four gate buffers


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tflm_agrees(name):
    pytest.importorskip("tflite_micro")
    path = DATA / name
    graph = read_graph(path)
    x = np.zeros((1, *graph.tensors[graph.inputs[0]].shape[1:]), np.int8)
    run = tflm_runner.run_tflm(path, x, arena_size=1 << 16)
    head, tail, smallest = EXPECTED[name]
    assert (run.head, run.tail) == (head, tail)
    # the smallest arena_size TFLM accepts, bisected in the real interpreter, is what we predict
    found = tflm_runner.min_arena(path, x, run.outputs, start=run.total)
    assert found.min_arena == smallest == arena.predict(graph).min_arena

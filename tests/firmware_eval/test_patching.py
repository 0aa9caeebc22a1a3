"""Patch-based inference rewrite (firmware_eval.patching): region arithmetic by hand, refusals,
and the patched models against the unpatched one in TFLite Micro and LiteRT reference kernels
(bit for bit, 64 inputs) with the predicted arena equal to TFLM's.

The model: conv 3x3 s2 SAME (asymmetric padding: 0 before, 1 after) -> depthwise 3x3 SAME ->
conv 1x1 -> explicit PAD + depthwise 3x3 s2 VALID (onnx2tf's form) -> conv 1x1 -> residual block
(expand 1x1, depthwise 5x5 SAME, project 1x1, ADD) -> conv 1x1 -> global pool -> dense; 40x40x3.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tinyexport.errors import UserError
from tinyexport.firmware_eval import arena, patch_search, patching, tflm_runner
from tinyexport.firmware_eval.patching import PatchPlan, Rect
from tinyexport.firmware_eval.tflm_measurement import measure_arena_size
from tinyexport.tflite_graph.reader import Graph, Op, Quant, Tensor, parse_graph

RES = 40
N_INPUTS = 64


def _keras_model():
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    x_in = keras.Input((RES, RES, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x_in)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Conv2D(24, 1)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu")(x)
    x = layers.Conv2D(8, 1)(x)
    y = layers.Conv2D(32, 1, activation="relu")(x)
    y = layers.DepthwiseConv2D(5, padding="same", activation="relu")(y)
    y = layers.Conv2D(8, 1)(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(32, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(x_in, layers.Dense(10)(x))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, keras_to_tflite):
    """The int8 model, its path, 64 random int8 inputs and the unpatched outputs of both
    runtimes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = tmp_path_factory.mktemp("patching")
    data = keras_to_tflite(_keras_model())
    path = folder / "tiny.tflite"
    path.write_bytes(data)
    x = np.random.default_rng(7).integers(-128, 128, (N_INPUTS, RES, RES, 3), np.int8)
    return {"data": data, "path": path, "folder": folder, "x": x,
            "tflm": tflm_runner.run_tflm(path, x, arena_size=1 << 20).outputs,
            "litert": tflm_runner.run_litert_ref(path, x)}


def test_tiny_model_has_the_ops_under_test(tiny):
    graph = parse_graph(tiny["data"])
    assert [op.opcode for op in graph.ops] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D",
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "CONV_2D", "MEAN", "FULLY_CONNECTED"]


PLANS = {
    "prefix-through-residual-2x2": PatchPlan(9, 2, 2),
    "prefix-to-1x1-3x3": PatchPlan(10, 3, 3),
    "prefix-at-downsample-2x3": PatchPlan(4, 2, 3),
    "first-conv-4x1": PatchPlan(0, 4, 1),
    "two-stages": (PatchPlan(3, 2, 2), PatchPlan(9, 3, 2, start=6)),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_patched_model_is_bit_identical_and_predicted_exactly(tiny, name):
    patched = patching.patch_model(tiny["data"], PLANS[name])
    path = tiny["folder"] / f"{name}.tflite"
    path.write_bytes(patched)
    graph = parse_graph(patched)
    pred = arena.predict(graph)
    run = tflm_runner.run_tflm(path, tiny["x"], arena_size=measure_arena_size(graph, pred.total))
    assert np.array_equal(run.outputs, tiny["tflm"])
    assert np.array_equal(tflm_runner.run_litert_ref(path, tiny["x"]), tiny["litert"])
    assert (pred.head, pred.tail, pred.total) == (run.head, run.tail, run.total)


def test_patched_model_runs_in_its_predicted_arena(tiny):
    """The smallest arena_size TFLM accepts is the predicted total (to 16 B alignment)."""
    patched = patching.patch_model(tiny["data"], PLANS["prefix-through-residual-2x2"])
    path = tiny["folder"] / "min_arena.tflite"
    path.write_bytes(patched)
    pred = arena.predict(parse_graph(patched))
    x = tiny["x"][:1]
    found = tflm_runner.min_arena(path, x, tiny["tflm"][:1], start=pred.min_arena)
    assert pred.min_arena - 16 <= found.min_arena <= pred.min_arena


def test_patching_lowers_the_head_shares_weights_and_adds_metadata_only(tiny):
    data = tiny["data"]
    base = patch_search.evaluate(data)
    row = patch_search.evaluate(data, PLANS["prefix-to-1x1-3x3"], base.macs)
    assert row.head < base.head and row.tail > base.tail  # fewer live bytes, more copies
    assert row.mac_overhead > 0 and row.flash_delta == len(
        patching.patch_model(data, PLANS["prefix-to-1x1-3x3"])) - len(data)
    graph, patched = parse_graph(data), parse_graph(patching.patch_model(data, PatchPlan(10, 3, 3)))
    convs = {"CONV_2D", "DEPTHWISE_CONV_2D"}
    filters = {graph.tensors[op.inputs[1]].name for op in graph.ops[:11] if op.opcode in convs}
    copies = [op for op in patched.ops if op.opcode in convs]
    assert len(copies) == 9 * 9 and {patched.tensors[op.inputs[1]].name for op in copies} \
        == filters  # 9 patches x 9 convs, all reading the original weight tensors
    weights = sum(t.data_bytes for t in graph.tensors if t.is_const)
    new_weights = sum(t.data_bytes for t in patched.tensors if t.is_const)
    assert 0 < new_weights - weights < 1024  # slice bounds and paddings only (int32 vectors)
    assert all(op.option("padding", 1) == 1 for op in copies)  # every copy is VALID


def test_search_chooses_lowest_arena_within_mac_limit(tiny):
    found = patch_search.search_patch_plans(tiny["data"], max_mac_overhead=0.30, greedy_rounds=3)
    base = found.baseline
    ok = [r for r in found.rows if r.mac_overhead <= 30.0]
    assert ok and found.rows
    best = min(r.min_arena for r in ok)
    if best < base.min_arena:
        assert found.chosen is not None and found.chosen.min_arena == best
    else:
        assert found.chosen is None
    macs = [r.macs for r in found.frontier]
    arenas = [r.min_arena for r in found.frontier]
    assert macs == sorted(macs) and arenas == sorted(arenas, reverse=True)
    assert any(r.plan[0].start > 0 for r in found.rows)  # the greedy stage rounds ran


def test_search_on_a_head_bound_model_picks_a_patched_plan(tiny):
    """With a low MAC limit the search still finds a plan that lowers the head-bound arena of
    the prefix conv alone (split after op 4: nothing but the early layers)."""
    found = patch_search.search_patch_plans(tiny["data"], max_mac_overhead=0.5,
                                        grids=((2, 2), (4, 4)), splits=[4], greedy_rounds=0)
    assert {r.plan[0].split_after for r in found.rows} == {4}
    assert all(len(r.plan) == 1 for r in found.rows)


# ------------------------------------------------------------------- region arithmetic by hand


def _one_conv_graph(padding: int = 0) -> Graph:
    """Input 32x32x3 -> CONV_2D 3x3 stride 2 (SAME: 0 rows before, 1 after) -> 16x16x8."""
    q = Quant((0.1,), (0,))
    tensors = (Tensor(0, "in", (1, 32, 32, 3), "int8", False, False, q),
               Tensor(1, "w", (8, 3, 3, 3), "int8", True, False, q, 1, 216),
               Tensor(2, "b", (8,), "int32", True, False, q, 2, 32),
               Tensor(3, "out", (1, 16 if padding == 0 else 15, 16 if padding == 0 else 15, 8),
                      "int8", False, False, q))
    opts = (("padding", padding), ("stride_h", 2), ("stride_w", 2), ("dilation_h", 1),
            ("dilation_w", 1), ("activation", 0))
    return Graph(tensors, (Op(0, "CONV_2D", 1, (0, 1, 2), (3,), (), opts),), (0,), (3,), 1000)


def test_regions_of_a_stride2_same_conv_by_hand():
    """2x1 grid over the 16x16 output. Top patch: output rows [0, 8) read input rows
    0*2-0 .. 7*2-0+2 = [0, 17), no padding. Bottom: rows [8, 16) read [16, 33): [16, 32) inside
    plus 1 row of SAME padding after; columns [0, 16) read [0, 33): 1 column of padding after."""
    top, bottom = patching.plan_regions(_one_conv_graph(), PatchPlan(0, 2, 1))
    assert top.regions[3] == Rect(0, 8, 0, 16) and bottom.regions[3] == Rect(8, 16, 0, 16)
    assert top.needs[(0, 0)] == patching.Need(Rect(0, 17, 0, 32), (0, 0, 0, 1))
    assert bottom.needs[(0, 0)] == patching.Need(Rect(16, 32, 0, 32), (0, 1, 0, 1))
    assert patching.same_padding_before(32, 3, 2, 1) == 0
    assert patching.same_padding_before(33, 3, 2, 1) == 1
    assert patching.same_padding_before(20, 5, 1, 1) == 2


def test_regions_of_a_valid_conv_need_no_padding():
    """VALID 3x3 s2 on 32: 15 outputs; 3x3 grid: output rows [5, 10) read [10, 21)."""
    regions = patching.plan_regions(_one_conv_graph(padding=1), PatchPlan(0, 3, 3))
    centre = regions[4]
    assert centre.regions[3] == Rect(5, 10, 5, 10)
    assert centre.needs[(0, 0)] == patching.Need(Rect(10, 21, 10, 21))
    assert all(not any(p.needs[(0, 0)].pads) for p in regions)


def test_grid_edges_are_even():
    assert patching.grid_edges(22, 3) == [0, 7, 15, 22]
    with pytest.raises(UserError, match="cannot cut 2 pixels into 3"):
        patching.grid_edges(2, 3)


# ------------------------------------------------------------------- refusals


@pytest.mark.parametrize("plan,match", [
    (PatchPlan(7, 2, 2), "residual branch crosses the split"),
    (PatchPlan(11, 2, 2), "MEAN.*cannot be run patch by patch"),
    (PatchPlan(9, 2, 2, start=7), "read 2 activations from before them"),
    (PatchPlan(40, 2, 2), "not a range of op indices"),
])
def test_plans_that_cannot_apply_say_why(tiny, plan, match):
    with pytest.raises(UserError, match=match):
        patching.patch_model(tiny["data"], plan)


def test_overlapping_stages_and_bad_grids_are_refused(tiny):
    with pytest.raises(UserError, match="overlap"):
        patching.patch_model(tiny["data"], (PatchPlan(4, 2, 2), PatchPlan(5, 2, 2, start=3)))
    with pytest.raises(ValueError, match="rows must be in 1..10"):
        PatchPlan(3, 11, 2)
    with pytest.raises(ValueError, match="at least 2 patches"):
        PatchPlan(3, 1, 1)


def test_optimizer_patches_only_when_the_budget_is_missed(tiny):
    """patch="auto": no search when the model fits the budget; below it, the chosen plan is
    applied and the predicted arena falls under the budget."""
    from tinyexport.firmware_eval.optimize import OptimizeOptions, needed, optimize

    data = tiny["data"]
    base = needed(data)
    fits = optimize(data, OptimizeOptions(reorder=False, offline_plan=False, budget=base))
    assert not fits.changed and fits.search is None
    assert fits.steps[0].reason.startswith("fits the board as it is")
    tight = optimize(data, OptimizeOptions(reorder=False, offline_plan=False, budget=base - 1))
    step = tight.steps[0]
    assert step.applied and step.arena_after < base and tight.search is not None
    assert needed(tight.data) == step.arena_after
    flash = optimize(data, OptimizeOptions(reorder=False, offline_plan=False, budget=base - 1,
                                           flash_budget=1000))  # nothing fits 1 KB of flash
    assert "flash" in flash.steps[0].details


def test_patch_copies_lead_back_to_their_original_op(tiny):
    """The greedy search steers by the op where the patched model peaks; a patch copy's tensor
    must map back to the original op (a renaming once cut mcunet-in3's search short: 413,632 B
    instead of 323,600 B)."""
    graph = parse_graph(tiny["data"])
    patched = parse_graph(patching.patch_model(tiny["data"], PatchPlan(4, 2, 2)))
    copies = [t.name for t in patched.tensors if "/patch" in t.name]
    assert copies
    for name in copies:
        op = patch_search.original_producer(graph, name)
        index = int(name[1:].split("/")[0])
        if index in graph.inputs:  # a crop of the model input: no op produced it
            assert op is None
        else:
            assert op is not None and index in graph.ops[op].outputs and op <= 4, name
    last = graph.ops[-1]
    assert patch_search.original_producer(graph, graph.tensors[last.outputs[0]].name) == last.index

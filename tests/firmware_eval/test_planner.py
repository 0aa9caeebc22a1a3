"""Planner replica, lower bound and tight plan on buffers worked out by hand (the style of
tflite-micro's memory_planner tests)."""

from tinyexport.firmware_eval import planner
from tinyexport.firmware_eval.planner import Buffer


def test_greedy_equal_sizes_go_in_descending_index_order():
    # Two 32 B buffers alive together: TFLM places the higher index first, at offset 0.
    bufs = [Buffer("t0", 32, 0, 1), Buffer("t1", 32, 0, 1)]
    assert planner.greedy_plan(bufs) == [32, 0]


def test_greedy_first_fit_uses_gap():
    # big (0..2) at 0; a (0..0) and b (2..2) never overlap each other -> both fit at 64.
    bufs = [Buffer("t0", 64, 0, 2), Buffer("t1", 16, 0, 0), Buffer("t2", 16, 2, 2)]
    offsets = planner.greedy_plan(bufs)
    assert offsets == [0, 64, 64]
    assert planner.plan_size(bufs, offsets) == 80


def test_gap_too_small_goes_after():
    # t0 (32 B, 0..1) placed first at 0; t1 (16 B, 1..1) overlaps it -> 32; t2 (16 B, 1..1)
    # overlaps both; gap before t0 is 0 -> placed after t1 at 48. High-water 64.
    bufs = [Buffer("t0", 32, 0, 1), Buffer("t1", 16, 1, 1), Buffer("t2", 16, 1, 1)]
    offsets = planner.greedy_plan(bufs)
    assert offsets == [0, 48, 32]  # equal sizes: t2 (higher index) placed before t1
    assert planner.lower_bound(bufs, 1) == 64
    planner.check_plan(bufs, offsets)


def test_linear_and_live():
    bufs = [Buffer("t0", 16, 0, 1), Buffer("t1", 32, 1, 1)]
    assert planner.linear_size(bufs) == 48
    assert planner.live_bytes(bufs, 1) == [16, 48]

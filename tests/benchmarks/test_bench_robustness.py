"""The robustness benchmark's pure helpers (seeded mutants, outcome classifier, judges) and one
real mutant through its worker process."""

import json
from pathlib import Path

import pytest
import torch

from tinyexport.benchmarks.robustness_files import comparable, insane_figures, judge_measured, judge_tflite, report_of
from tinyexport.benchmarks.robustness_harness import CHECKPOINT_KINDS, TFLITE_KINDS, Bench, WorkerRun, classify
from tinyexport.benchmarks.robustness_kills import state_equal
from tinyexport.benchmarks.robustness_mutants import Mutant, make_mutants

DATA = Path(__file__).resolve().parents[1] / "firmware_eval" / "data"
HELLO = DATA / "hello_world_int8.tflite"


def test_mutants_are_seeded_and_deterministic():
    sources = {"hello": HELLO.read_bytes(), "blob": bytes(range(256)) * 8}
    first = make_mutants(sources, 24, seed=3, kinds=TFLITE_KINDS)
    again = make_mutants(sources, 24, seed=3, kinds=TFLITE_KINDS)
    other = make_mutants(sources, 24, seed=4, kinds=TFLITE_KINDS)
    assert [(m.name, m.detail, m.data) for m in first] == [(m.name, m.detail, m.data) for m in again]
    assert [m.data for m in first] != [m.data for m in other]
    assert {m.kind for m in first} == set(TFLITE_KINDS)
    assert all(m.data != sources[m.source] for m in first if m.kind != "opcode_swap")
    truncated = [m for m in first if m.kind == "truncate"]
    assert all(len(m.data) < len(sources[m.source]) for m in truncated)


def test_struct_mutants_stay_in_their_regions():
    data = bytes(1000)
    mutants = make_mutants({"f": data}, 40, seed=0, kinds=CHECKPOINT_KINDS,
                           regions={"f": ((100, 110), (900, 1000))})
    for m in (m for m in mutants if m.kind == "struct_flip"):
        changed = [i for i, (a, b) in enumerate(zip(data, m.data, strict=True)) if a != b]
        assert changed and all(100 <= i < 110 or 900 <= i < 1000 for i in changed), m.detail


@pytest.mark.parametrize("rc, stderr, timed_out, want", [
    (2, "error: checkpoint 'x' is empty\n", False, "clean error"),
    (2, "usage: tinyexport ...\ntinyexport: error: argument --lr: invalid float value\n", False,
     "clean error"),
    (1, "warning: something\nerror: one line\n", False, "clean error"),
    (1, "error: one\nerror: two\n", False, "unclean exit"),
    (1, "", False, "unclean exit"),
    (1, "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n", False, "traceback"),
    (-11, "", False, "crash"),
    (139, "", False, "crash"),
    (None, "", False, "crash"),
    (None, "", True, "hang"),
    (0, "", False, None),
])
def test_classify(rc, stderr, timed_out, want):
    assert classify(rc, stderr, timed_out) == want


def _report(**arena) -> dict:
    a = {"head": 32, "tail": 1472, "total": 1504, **arena}
    return {"model": "m.tflite", "model_bytes": 2704, "arena": a, "min_arena": 1936,
            "lower_bound": 32, "linear_planner": 64,
            "ops": [{"index": 0, "macs": 16, "live_bytes": 32, "scratch_bytes": 0}]}


def test_insane_figures():
    assert insane_figures(_report()) is None
    assert "impossible" in insane_figures(_report(head=-5, total=1467))
    assert "impossible" in insane_figures(_report(tail=2 ** 31, total=2 ** 31 + 32))
    assert "!= total" in insane_figures(_report(total=9))
    assert "lacks" in insane_figures({"arena": {}})


def test_judge_tflite_and_measured():
    m = Mutant("hello", 0, "byte_flip", "xor 5^0x01", b"")
    original = comparable(_report())
    same = WorkerRun(0, json.dumps({**_report(), "model": "other.tflite"}))
    assert judge_tflite("g", m, same, original, None, Path("x")).outcome == "correct"
    changed = WorkerRun(0, json.dumps(_report(head=64, total=1536)))
    refused = WorkerRun(1, "", "error: LiteRT says no\n")
    assert judge_tflite("g", m, changed, original, refused, Path("x")).outcome == "wrong success"
    assert judge_tflite("g", m, changed, original, WorkerRun(0), Path("x")).outcome == "correct"
    assert judge_tflite("g", m, WorkerRun(0, "not json"), original, None,
                        Path("x")).outcome == "wrong success"
    assert judge_tflite("g", m, WorkerRun(-11), original, None, Path("x")).outcome == "crash"
    rep = _report()
    assert judge_measured({**rep, "measured": {"total": 1504, "min_arena": 1936}})["outcome"] \
        == "correct"
    assert judge_measured({**rep, "measured": {"total": 1600, "min_arena": 1936}})["outcome"] \
        == "wrong success"


def test_state_equal_is_bit_exact():
    a = {"model": {"w": torch.ones(3)}, "optimizer": {"state": [torch.zeros(2)], "lr": 0.1}}
    b = {"model": {"w": torch.ones(3)}, "optimizer": {"state": [torch.zeros(2)], "lr": 0.1}}
    assert state_equal(a, b) is None
    b["model"]["w"] = torch.ones(3) + 1e-7
    assert state_equal(a, b) == ".model.w"
    b["model"]["w"] = torch.ones(3)
    b["optimizer"]["lr"] = 0.2
    assert state_equal(a, b) == ".optimizer.lr"


def test_one_real_mutant_through_the_worker(tmp_path):
    """hello_world and a truncated copy through the tinyreport worker process: a report, then
    one clean error line."""
    bench = Bench(tmp_path, seed=0)
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(HELLO.read_bytes()[:700])
    runs = bench.run_worker("tinyreport", [("good", [str(HELLO), "--json"]),
                                           ("bad", [str(bad), "--json"])], timeout_s=120)
    assert runs["good"].rc == 0 and report_of(runs["good"].stdout)["arena"]["total"] == 1504
    assert classify(runs["bad"].rc, runs["bad"].stderr) == "clean error", runs["bad"].stderr

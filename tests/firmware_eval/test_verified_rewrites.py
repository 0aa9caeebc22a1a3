"""The verified-rewrite results (``verified_rewrites``) keep export.json's and ``tinyreport
--optimize --json``'s records as they were: the same keys, in the same order, with the same values;
an outcome read back from its record is the one written."""

from __future__ import annotations

import json

from tinyexport.firmware_eval.compaction_report import compaction_lines
from tinyexport.firmware_eval.optimize import Step
from tinyexport.firmware_eval.verified_rewrites import (
    Compaction,
    CompactionLevel,
    OptimizeResult,
    PlanRow,
    RewriteVerification,
)
from tinyexport.json_record import to_record
from tinyexport.tflite_graph.compact import CompactionStep, KeptItem

CHECK = RewriteVerification(inputs=64, outputs_equal_to_original=True,
                            litert_reference_equal_to_original=True,
                            tflm_equals_litert_reference={"equal": True, "values": 10},
                            measured={"head": 1, "tail": 2, "total": 3, "min_arena": 3},
                            predicted={"head": 1, "tail": 2, "total": 3}, errors=[],
                            confirmed=True)
# the record verify_rewrite wrote as a dict, key by key
CHECK_RECORD = {"inputs": 64, "outputs_equal_to_original": True,
                "litert_reference_equal_to_original": True,
                "tflm_equals_litert_reference": {"equal": True, "values": 10},
                "measured": {"head": 1, "tail": 2, "total": 3, "min_arena": 3},
                "predicted": {"head": 1, "tail": 2, "total": 3}, "errors": [], "confirmed": True}


def _same(value, expected) -> None:
    """Equal, and equal as JSON text: the key order too; an outcome read back is the one written."""
    assert to_record(value) == expected
    assert json.dumps(to_record(value)) == json.dumps(expected)
    if isinstance(value, OptimizeResult):
        assert OptimizeResult.from_record(json.loads(json.dumps(expected))) == value


def _compaction() -> Compaction:
    step = CompactionStep(name="min/max", saved_bytes=40, tensors=3, why="unread")
    kept = KeptItem(name="zero points", tensors=2, why="per-channel")
    return Compaction(bytes_before=1000,
                      portable=CompactionLevel(bytes_after=960, steps=(step,), kept=(kept,),
                                               verification=CHECK, applied=True),
                      tflm=CompactionLevel(bytes_after=900, steps=(step,), kept=(),
                                           verification=CHECK, applied=False),
                      firmware_model="out/m.tflite", firmware_model_bytes=960)


COMPACTION_RECORD = {
    "bytes_before": 1000,
    "portable": {"bytes_after": 960,
                 "steps": [{"name": "min/max", "saved_bytes": 40, "tensors": 3, "why": "unread"}],
                 "kept": [{"name": "zero points", "tensors": 2, "why": "per-channel"}],
                 "verification": CHECK_RECORD, "applied": True},
    "tflm": {"bytes_after": 900,
             "steps": [{"name": "min/max", "saved_bytes": 40, "tensors": 3, "why": "unread"}],
             "kept": [], "verification": CHECK_RECORD, "applied": False},
    "firmware_model": "out/m.tflite", "firmware_model_bytes": 960}


def test_verification_record_keeps_its_layout():
    _same(CHECK, CHECK_RECORD)


def test_compaction_record_keeps_its_layout_and_reads_back():
    _same(_compaction(), COMPACTION_RECORD)
    back = Compaction.from_record(json.loads(json.dumps(COMPACTION_RECORD)))
    assert back == _compaction()
    assert compaction_lines(back) == compaction_lines(_compaction())
    assert "NOT applied" in compaction_lines(back)[0] and "m.tflite (960 B)" in \
        compaction_lines(back)[0]


def test_optimize_records_keep_their_layout():
    step = Step(name="operator order", applied=True, reason="lower head", arena_before=100,
                arena_after=80)
    step_record = {"name": "operator order", "applied": True, "reason": "lower head",
                   "arena_before": 100, "arena_after": 80, "details": {}, "saved": 20}
    row = PlanRow(plan="p", head=1, tail=2, total=3, min_arena=3, macs=9,
                  mac_overhead_percent=1.5, flash_delta=-4)
    row_record = {"plan": "p", "head": 1, "tail": 2, "total": 3, "min_arena": 3, "macs": 9,
                  "mac_overhead_percent": 1.5, "flash_delta": -4}
    _same(OptimizeResult(reason="not applied: TFLM cannot run this model to verify"),
          {"applied": False, "reason": "not applied: TFLM cannot run this model to verify"})
    _same(OptimizeResult(steps=(), changed=False, reason="nothing lowered the arena"),
          {"steps": [], "changed": False, "applied": False,
           "reason": "nothing lowered the arena"})
    _same(OptimizeResult(steps=(step,), changed=True, applied=True, patch_frontier=(row,),
                         verification=CHECK),
          {"steps": [step_record], "changed": True, "applied": True, "patch_frontier": [row_record],
           "verification": CHECK_RECORD})
    _same(OptimizeResult(steps=(step,), changed=True, patch_frontier=(), verification=CHECK,
                         reason="kept"),
          {"steps": [step_record], "changed": True, "applied": False, "patch_frontier": [],
           "verification": CHECK_RECORD, "reason": "kept"})

"""The int8 gate is a verdict: judged on labelled data when there is some, written down, and a
failure still leaves the whole export to look at (issue 12 §1)."""

import json

import pytest

from tinyexport.export import pipeline
from tinyexport.export.cli import main
from tinyexport.export.gate import GateVerdict, judge_int8

TOP1 = {"torch_fp32": 0.80, "onnxruntime_fp32": 0.80, "litert_int8": 0.785}


def test_labelled_data_decides_when_given():
    """84 % agreement (near ties of a weak model) but 1.5 points lost: passes on labels."""
    verdict = judge_int8(True, 0.84, 100, 0.90, TOP1, 2.0)
    assert verdict.passed and verdict.basis == "labelled top-1" and verdict.measured == 1.5
    assert not judge_int8(True, 0.99, 100, 0.90, TOP1, 1.0).passed


def test_agreement_decides_without_labels():
    verdict = judge_int8(True, 0.84, 100, 0.90, None, 2.0)
    assert not verdict.passed and verdict.basis == "top-1 agreement"
    assert "84.0% of 100" in verdict.reason and "--min-agreement 0.9" in verdict.reason
    assert judge_int8(True, 0.84, 100, 0.80, None, 2.0).passed


def test_random_weights_are_not_judged():
    verdict = judge_int8(False, 0.10, 100, 0.90, None, 2.0)
    assert verdict.passed and verdict.basis == "not applied"


@pytest.mark.parametrize("flag, value", [("--min-agreement", "1.5"), ("--min-agreement", "nan"),
                                         ("--max-top1-drop", "-1")])
def test_thresholds_are_validated(tmp_path, capsys, flag, value):
    assert main(["--model", "mbv2-tiny", "--resolution", "32", flag, value,
                 "--out", str(tmp_path / "o")]) == 2
    assert flag in capsys.readouterr().err


def test_a_failed_gate_writes_everything_and_exits_1(tmp_path, capsys, monkeypatch,
                                                     digits_checkpoint):
    """The verdict itself is tested above; here a failing one is forced to follow the path.
    ``--out`` is relative (onnx2tf runs in a scratch folder: relative paths once broke it)."""
    failing = GateVerdict(False, "top-1 agreement", 0.5, 0.9, "forced failure for the test")
    monkeypatch.setattr(pipeline, "judge_int8", lambda *a, **k: failing)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    code = main(["--checkpoint", str(digits_checkpoint), "--resolution", "32", "--calib-data",
                 "digits", "--calib-images", "32", "--check-images", "16", "--no-firmware",
                 "--out", "o"])
    captured = capsys.readouterr()
    assert code == 1 and "failed the gate: forced failure" in captured.err
    # the stage's progress line is on stderr, the summary's gate line on stdout
    assert "int8 gate: FAILED — forced failure for the test" in captured.err
    assert "FAILED — forced failure for the test" in captured.out
    doc = json.loads((out / "export.json").read_text())
    assert doc["gate"]["passed"] is False and doc["checks"]["int8 gate"]["status"] == "FAILED"
    assert doc["quant_report"] and (out / "model_int8.tflite").is_file()
    assert "Per-layer int8 error" in (out / "report.md").read_text()

"""``tinyreport FILE.tflite --optimize`` compacts as the export does: each level verified bit for
bit in TFLM (and LiteRT for the portable one) before anything is written, the flash figures and
verdicts count the TFLM-compacted model, the bytes saved per step are in the table and the JSON,
and what a model keeps (a per-tensor FULLY_CONNECTED's bias scale, nonzero weight zero points)
is said with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tinyexport.benchmarks.report_cli import main
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.tflm_measurement import prepare_inputs
from tinyexport.tflite_graph.compact import compact_for_tflm, compact_portable
from tinyexport.tflite_graph.edit import opcode_name, pack, unpack
from tinyexport.tflite_graph.reader import parse_graph

DATA = Path(__file__).resolve().parent / "data"


def _json_report(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    # the offline plan the optimiser writes no longer stops the TFLM / LiteRT op-by-op replay
    assert "could not localize" not in captured.err
    return code, json.loads(captured.out)


def test_optimize_compacts_verifies_and_writes_both_levels(capsys, tmp_path):
    source = DATA / "keras_tiny_int8.tflite"
    out = tmp_path / "out" / "tiny.tflite"
    code, report = _json_report(capsys, [str(source), "--optimize", "--board", "stm32f746",
                                         "--out", str(out)])
    assert code == 0
    record = report["compaction"]
    data = source.read_bytes()
    tflm_only = tmp_path / "out" / "tiny_tflm.tflite"
    # the library's compaction of the optimised model, not a second implementation
    assert record["portable"]["bytes_after"] == len(out.read_bytes())
    assert tflm_only.read_bytes() == compact_for_tflm(out.read_bytes()).data
    assert compact_portable(out.read_bytes()).steps == ()  # the portable steps are all done
    for level in ("portable", "tflm"):
        check = record[level]["verification"]
        assert record[level]["applied"] and check["confirmed"] and check["inputs"] == 64
        assert check["outputs_equal_to_original"] and check["litert_reference_equal_to_original"]
        assert all(s["saved_bytes"] > 0 for s in record[level]["steps"])
    saved = sum(s["saved_bytes"] for lv in ("portable", "tflm") for s in record[lv]["steps"])
    assert saved == report["after"]["model_bytes"] - record["firmware_model_bytes"]
    # flash: the compacted model, in the figures and in the verdict
    assert report["after"]["firmware_model_bytes"] == record["firmware_model_bytes"] < len(data)
    board = report["boards"][0]
    assert board["flash_needed"] - record["firmware_model_bytes"] > 0  # + the runtime estimate
    plain = main([str(out), "--board", "stm32f746", "--json"])  # the file as written
    assert plain == 0
    file_report = json.loads(capsys.readouterr().out)
    assert file_report["boards"][0]["flash_needed"] == board["flash_needed"]
    # both files written, each what it says it is
    written = {w["level"]: w for w in report["written"]}
    assert written["portable"]["path"] == str(out) and written["TFLM-only"]["path"] == str(tflm_only)
    assert written["TFLM-only"]["bytes"] == record["firmware_model_bytes"]
    assert "LiteRT rejects" in written["TFLM-only"]["loads_in"]
    assert record["firmware_model"] == str(tflm_only)
    x = prepare_inputs(parse_graph(data), None, count=8)
    base = tflm_runner.run_tflm(source, x).outputs
    assert np.array_equal(tflm_runner.run_tflm(tflm_only, x).outputs, base)
    assert np.array_equal(tflm_runner.run_litert_ref(out, x), tflm_runner.run_litert_ref(source, x))


def test_optimize_table_shows_steps_kept_and_flash(capsys, tmp_path):
    source = DATA / "hello_world_int8.tflite"
    assert main([str(source), "--optimize", "--out", str(tmp_path / "hw.tflite")]) == 0
    out = capsys.readouterr().out
    compacted = compact_for_tflm(source.read_bytes())
    assert f"the firmware links {compacted.bytes_after:,} B of model" in out
    for step in compacted.steps:
        assert f"-{step.saved_bytes:,}" in out and step.name in out
    # hello_world's FULLY_CONNECTEDs are per-tensor: TFLM reads their bias scale
    assert "kept: bias quantization (FULLY_CONNECTED) on 3 tensors" in out
    assert "within 2 %" in out
    # no per-channel weights, so its TFLM-only file still loads in LiteRT, and says so
    assert "hw_tflm.tflite" in out and "loads in TFLM and LiteRT" in out


def test_nonzero_weight_zero_points_are_kept_and_said(capsys, tmp_path):
    model = unpack((DATA / "keras_tiny_int8.tflite").read_bytes())
    tensors = model.subgraphs[0].tensors
    conv = next(op for op in model.subgraphs[0].operators
                if opcode_name(model, op.opcodeIndex) == "CONV_2D")
    q = tensors[conv.inputs[1]].quantization
    q.zeroPoint = np.zeros(len(q.zeroPoint), dtype=np.int64)
    q.zeroPoint[-1] = 1
    data = pack(model)
    compacted = compact_for_tflm(data)
    kept = {k.name: k for k in compacted.kept}
    assert kept["nonzero weight zero points"].tensors == 1
    left = unpack(compacted.data).subgraphs[0].tensors[conv.inputs[1]].quantization
    assert list(left.zeroPoint) == list(q.zeroPoint)  # per tensor: this one stays whole
    source = tmp_path / "nonzero.tflite"
    source.write_bytes(data)
    # LiteRT's conv refuses a nonzero filter zero point: --optimize says so in one line, before
    # any rewrite or file
    assert main([str(source), "--optimize", "--out", str(tmp_path / "o.tflite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "zero_point" in err[0]
    assert not (tmp_path / "o.tflite").exists()


def test_nothing_written_when_nothing_verifies(capsys, tmp_path):
    """Without --out nothing is written next to the model; the figures are still reported."""
    source = tmp_path / "m.tflite"
    shutil.copy(DATA / "keras_tiny_int8.tflite", source)
    code, report = _json_report(capsys, [str(source), "--optimize"])
    assert code == 0 and "written" not in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]
    assert report["compaction"]["firmware_model"].startswith("not written")

"""``tinyreport FILE.tflite`` through the real CLI entry point (benchmarks/report_cli.py), the plan
plot, and (slow) the zoo acceptance: a real export measured in TFLM."""

import json
import struct

import pytest

from tinyexport.benchmarks.report_cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_measure_json_keys(models, capsys):
    assert main([str(models["int8"]), "--measure", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["arena"]) == {"head", "tail", "total"}
    assert set(rep["measured"]) == {"head", "tail", "total", "min_arena"}
    assert rep["lower_bound"] > 0 and rep["model_bytes"] == models["int8"].stat().st_size
    assert [o["op"] for o in rep["ops"]][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert rep["arena"]["head"] == rep["measured"]["head"]
    assert abs(rep["arena"]["total"] - rep["measured"]["total"]) <= 0.01 * rep["measured"]["total"]


def test_cli_measure_with_labelled_images_reports_tflm_top1(models, tmp_path, capsys):
    import numpy as np

    from tinyexport.firmware_eval.tflm_runner import run_tflm

    images = np.random.default_rng(3).standard_normal((6, 16, 16, 3)).astype(np.float32)
    data = tmp_path / "eval.npz"
    # labels = TFLM's own answers on 4 images, deliberately wrong on the last 2: top-1 = 4/6
    from tinyexport.firmware_eval.tflm_measurement import prepare_inputs
    from tinyexport.firmware_eval.tflm_readiness import load

    x = prepare_inputs(load(models["int8"]), images)
    answers = run_tflm(models["int8"], x).outputs.argmax(1)
    labels = np.concatenate([answers[:4], (answers[4:] + 1) % 10])
    np.savez(data, images=images, labels=labels)
    assert main([str(models["int8"]), "--measure", "--images", str(data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["inputs"] == {"count": 6, "source": "file"}
    assert rep["top1"] == pytest.approx(4 / 6)
    assert rep["bit_exact"]["values"] == 60  # every image compared with LiteRT reference kernels


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), (b"not numpy", "not a readable"), ("wrong_key", "needs 'images'"),
    ("bad_labels", "integer class ids"), ("str_labels", "integer class ids"),
    ("no_measure", "add --measure")])
def test_cli_images_file_errors_are_one_line(models, tmp_path, capsys, content, message):
    import numpy as np

    path = tmp_path / "x.npz"
    args = [str(models["int8"]), "--measure", "--images", str(path)]
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "wrong_key":
        np.savez(path, pics=np.zeros((1, 16, 16, 3), np.float32))
    elif content == "str_labels":
        np.savez(path, images=np.zeros((2, 16, 16, 3), np.float32), labels=np.array(["a", "b"]))
    elif content in ("bad_labels", "no_measure"):
        np.savez(path, images=np.zeros((2, 16, 16, 3), np.float32), labels=np.zeros(3, int))
        if content == "no_measure":
            args.remove("--measure")
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_cli_plot_writes_png(models, tmp_path, capsys):
    out = tmp_path / "plan.png"
    assert main([str(models["int8"]), "--plot", str(out), "--board", "stm32f746"]) == 0
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 100 and height > 100
    assert "stm32f746" in capsys.readouterr().out


def test_cli_bad_target_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 7)
    assert main([str(bad), "--json"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "x.tflite" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mcunet", "mbv2-tiny", "proxylessnas-w0.35"])
def test_zoo_export_prediction_matches_tflm(model, tmp_path, capsys):
    """Export the zoo model (random weights) and check the acceptance figures against TFLM."""
    from tinyexport.export.cli import main as export_main

    out = tmp_path / model
    assert export_main(["--model", model, "--int8", "--no-firmware", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([str(out / "model_int8.tflite"), "--measure", "--json"]) in (0, 1)
    rep = json.loads(capsys.readouterr().out)
    pred, meas = rep["arena"], rep["measured"]
    assert pred["head"] == meas["head"]
    assert abs(pred["total"] - meas["total"]) <= 0.01 * meas["total"]
    assert abs(meas["min_arena"] - meas["total"]) <= 16
    # the classifier is exported as a 1x1 CONV_2D (export/head.py), so no FULLY_CONNECTED is left
    # whose int8 rounding differs between the two runtimes: every output is bit-identical
    assert "FULLY_CONNECTED" not in {op["op"] for op in rep["ops"]}
    assert rep["bit_exact"]["equal"], rep["bit_exact"]


def test_optimize_report_names_the_reason_and_shows_whole_plan_labels():
    """`--optimize`: a verdict that fails on flash says so (with both figures), and two frontier
    plans whose labels differ only at the end stay distinguishable."""
    from tinyexport.boards import BOARDS, verdict
    from tinyexport.firmware_eval.optimize_report import _frontier_lines
    from tinyexport.firmware_eval.verdicts import verdict_lines

    v = verdict(BOARDS.get("stm32f746"), 301_052, 1_164_036)
    (line,) = verdict_lines(v, "tinyreport-optimize")
    assert "DOES NOT FIT (flash)" in line and "flash 1,164,036 / 1,048,576 B" in line
    assert "SRAM 301,052 / 327,680 B (margin +26,628)" in line
    label = "patch 3x3 over ops #0..#12 (first_conv .. blocks.3.project), branch to op #"
    rows = [{"plan": label + end, "head": 1, "tail": 2, "total": 3, "mac_overhead_percent": 1.0,
             "flash_delta": 4, "chosen": end == "13"} for end in ("13", "14")]
    lines = _frontier_lines(rows)
    assert any(line.endswith(label + "13  <- chosen") for line in lines)
    assert any(line.endswith(label + "14") for line in lines)

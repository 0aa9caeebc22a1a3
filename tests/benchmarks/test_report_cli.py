"""``tinyreport`` through ``main([...])``: JSON keys, human tables, boards, plot, bad input."""

import json

import pytest

from tinyexport.benchmarks.report_cli import main


def test_json_keys_and_figures(capsys):
    assert main(["--model", "mcunet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("model", "resolution", "params", "macs", "peak_activation_bytes",
                "weight_bytes_int8", "layers"):
        assert key in report
    assert (report["params"], report["macs"], report["peak_activation_bytes"]) == (
        737_408, 81_785_520, 340_736)
    assert report["resolution"] == 176
    assert max(layer["activation_bytes"] for layer in report["layers"]) == 340_736


def test_resolution_and_classes_change_figures(capsys):
    assert main(["--model", "mbv2-tiny", "--resolution", "96", "--num-classes", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resolution"] == 96
    assert report["layers"][-1]["output_shape"] == [10]
    assert report["macs"] < 23_499_152


def test_human_output_and_board_verdict(capsys):
    assert main(["--model", "mcunet-in2", "--board", "stm32f412", "--board", "stm32h743"]) == 0
    out = capsys.readouterr().out
    assert "peak activation" in out and "332,800 B" in out and "blocks.2.depthwise.conv" in out
    # 332,800 B of activations exceed the F412's 256 KiB and fit the H743's 512 KiB
    assert "stm32f412      DOES NOT FIT" in out and "margin -70,656" in out
    assert "stm32h743      fits" in out


def test_board_verdict_in_json(capsys):
    assert main(["--model", "mcunet-in0", "--board", "rp2040", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["boards"][0]
    assert verdict["board"] == "rp2040" and verdict["fits"]
    assert verdict["sram_margin"] == 270_336 - 46_080


def test_plot_writes_png(tmp_path):
    path = tmp_path / "act.png"
    assert main(["--model", "mcunet-in0", "--board", "stm32f746", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "mcunett"], "unknown model 'mcunett'"),
    (["--model", "mcunet", "--board", "stm32f999"], "unknown board 'stm32f999'"),
    (["--model", "mcunet", "--resolution", "0"], "--resolution: resolution must be"),
    (["--model", "mcunet", "--resolution", "16"], "--resolution: resolution must be"),
    (["--model", "mcunet", "--num-classes", "0"], "--num-classes: num_classes must be in 2..100,000, got 0"),
    ([], "nothing to report"),
    (["--model", "mcunet", "--plot", "out.jpg"], "PNG"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_boards_lists_the_board_table(capsys):
    assert main(["--boards"]) == 0
    out = capsys.readouterr().out
    assert "stm32f746" in out and "320 KB" in out and "f746" in out and "rp2040" in out
    assert main(["--boards", "--json"]) == 0
    rows = {r["board"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["stm32f746"]["sram_bytes"] == 320 * 1024 and "f746" in rows["stm32f746"]["aliases"]

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
    # a requested board that does not fit: exit 3 (EXIT_DOES_NOT_FIT), the report still printed
    assert main(["--model", "mcunet-in2", "--board", "stm32f412", "--board", "stm32h743"]) == 3
    out = capsys.readouterr().out
    assert "peak activation" in out and "332,800 B" in out and "blocks.2.depthwise.conv" in out
    # 332,800 B of activations exceed the F412's 256 KiB and fit the H743's 512 KiB; the
    # TFLM-compacted model + runtime code fits the F412's 1 MiB flash
    assert "stm32f412      DOES NOT FIT (SRAM)" in out and "margin -70,656" in out
    assert "stm32h743      fits" in out


def test_exit_code_names_the_reason_flash(capsys):
    # proxylessnas-w0.35 (1.8 M parameters) fits the F765's 512 KiB SRAM, not its 1 MiB flash even
    # TFLM-compacted; mcunet-in3 compacted fits both (tests/benchmarks/test_model_flash.py)
    assert main(["--model", "proxylessnas-w0.35", "--board", "stm32f765", "--json"]) == 3
    verdict = json.loads(capsys.readouterr().out)["boards"][0]
    assert verdict["short_of"] == "flash" and verdict["sram_margin"] > 0
    assert main(["--model", "mcunet", "--board", "stm32f765"]) == 0
    assert main(["--model", "proxylessnas-w0.35", "--board", "stm32h743"]) == 0


def test_budgets_from_flags_and_board_file(capsys, tmp_path):
    assert main(["--model", "mcunet", "--sram", "400KiB", "--flash", "2MiB", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["boards"][0]
    assert (verdict["board"], verdict["sram_budget"], verdict["flash_budget"]) == (
        "custom", 400 * 1024, 2 * 1024 * 1024)
    # --flash replaces the board's region: the F765 with 2 MiB of flash fits
    assert main(["--model", "mcunet", "--board", "f765", "--flash", "2MiB"]) == 0
    capsys.readouterr()
    board = tmp_path / "my_board.yaml"
    board.write_text("name: cam-board\ncore: Cortex-M7 @ 400 MHz\nsram: 512 KiB\n"
                     "flash: 2 MiB\nreserve:\n  sram: 200 KiB\n  flash: 64 KiB\n")
    assert main(["--model", "mcunet", "--board", str(board), "--json"]) == 3
    verdict = json.loads(capsys.readouterr().out)["boards"][0]
    assert verdict["sram_budget"] == (512 - 200) * 1024 and verdict["short_of"] == "SRAM"
    assert verdict["flash_budget"] == 2 * 1024 * 1024 - 64 * 1024


@pytest.mark.parametrize("text, fragment", [
    ("name: b\nsram: 10 parsecs\nflash: 1MiB\n", "is not a size"),
    ("name: b\nflash: 1MiB\n", "lacks sram"),
    ("name: b\nsram: 1KiB\nflash: 1MiB\nreserve: {sram: 2KiB}\n", "reserve"),
    ("name: b\nsram: 1KiB\nflash: 1MiB\nram: 3\n", "unknown keys ram"),
    ("{{{", "not valid YAML"),
])
def test_bad_board_file_is_one_line(capsys, tmp_path, text, fragment):
    board = tmp_path / "b.yaml"
    board.write_text(text)
    assert main(["--model", "mcunet-in0", "--board", str(board)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_board_verdict_in_json(capsys):
    assert main(["--model", "mcunet-in0", "--board", "rp2040", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["boards"][0]
    assert verdict["board"] == "rp2040" and verdict["fits"]
    assert verdict["sram_margin"] == 270_336 - 46_080


def test_plot_writes_png(tmp_path):
    path = tmp_path / "act.png"
    assert main(["--model", "mcunet-in0", "--board", "stm32h743", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "mcunett"], "unknown model 'mcunett'"),
    (["--model", "mcunet", "--board", "stm32f999"], "unknown board 'stm32f999'"),
    (["--model", "mcunet", "--resolution", "0"], "--resolution: resolution must be"),
    (["--model", "mcunet", "--resolution", "16"], "--resolution: resolution must be"),
    (["--model", "mcunet", "--num-classes", "0"], "--num-classes: num_classes must be in 2..100,000, got 0"),
    ([], "nothing to report"),
    (["--model", "mcunet", "--plot", "out.jpg"], "PNG"),
    (["--model", "mcunet", "--sram", "lots"], "--sram: 'lots' is not a size"),
    (["--model", "mcunet", "--board", "missing.yaml"], "board file 'missing.yaml'"),
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

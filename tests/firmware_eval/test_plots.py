"""``tinyreport ... --plot``: the PNG is written, each requested board gets its SRAM line, the
peak op is named, and the command says where the file went (issue 12 §7)."""

import logging
from pathlib import Path

from tinyexport.benchmarks.report_cli import plot_model_report
from tinyexport.firmware_eval.report import build_report, plot_plan
from tinyexport.firmware_eval.tflm_readiness import load
from tinyexport.firmware_eval.verdicts import resolve_boards
from tinyexport.json_record import to_record

DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_plan_has_board_lines_and_names_the_peak(tmp_path, caplog):
    path = DATA / "hello_world_int8.tflite"
    report = to_record(build_report(str(path), resolve_boards(["stm32f746", "nrf52840"]),
                                    verify=False))
    out = tmp_path / "plan.png"
    with caplog.at_level(logging.INFO):
        summary = plot_plan(load(path), str(out), report["boards"], path.name)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [name for name, _ in summary.board_lines] == ["stm32f746", "nrf52840"]
    assert [b for _, b in summary.board_lines] == [v["sram_budget"] for v in report["boards"]]
    assert summary.peak_label.endswith("FULLY_CONNECTED")
    assert summary.peak_bytes >= report["arena"]["tail"]
    assert f"wrote plot {out}" in caplog.text


def test_plot_model_report_puts_boards_in_the_legend(tmp_path, caplog):
    layers = [{"name": f"l{k}", "activation_bytes": 1000 * (k + 1)} for k in range(5)]
    boards = [{"board": "a", "sram_budget": 4096, "fits": True},
              {"board": "b", "sram_budget": 4100, "fits": False}]  # labels would overlap
    report = {"model": "m", "resolution": 32, "layers": layers, "bottleneck": "l4",
              "peak_activation_bytes": 5000, "boards": boards}
    out = tmp_path / "model.png"
    with caplog.at_level(logging.INFO):
        summary = plot_model_report(report, str(out))
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert summary.board_lines == (("a", 4096), ("b", 4100))
    assert summary.peak_label == "l4" and summary.peak_bytes == 5000
    assert f"wrote plot {out}" in caplog.text


def test_cli_plot_logs_where_it_wrote(tmp_path, caplog, capsys):
    from tinyexport.benchmarks.report_cli import main

    out = tmp_path / "cli.png"
    assert main([str(DATA / "hello_world_int8.tflite"), "--plot", str(out), "--board",
                 "rp2040"]) == 0
    assert out.is_file()
    assert f"wrote plot {out}" in capsys.readouterr().err + caplog.text

"""``tinyreport --zoo --board B``: every MCU zoo model against a board from the repo's own
measured arenas, the pinned flash predictor and the published top-1, in seconds, exit 0."""

import json

from tinyexport.benchmarks.report_cli import main
from tinyexport.benchmarks.zoo_fit import ZOO, _measured_arenas, analytic_graph
from tinyexport.firmware_eval.model_flash import predict_model_flash
from tinyexport.train.models.profile import profile_zoo_model
from tinyexport.train.pretrained import release_for


def _tables(capsys, argv):
    assert main(argv) == 0  # informational, whatever the verdicts
    return json.loads(capsys.readouterr().out)


def test_zoo_json_rows_and_sources(capsys):
    (table,) = _tables(capsys, ["--zoo", "--board", "stm32f746", "--json"])
    rows = {r["model"]: r for r in table["rows"]}
    assert tuple(rows) == ZOO
    measured = _measured_arenas()
    for name, row in rows.items():
        prof = profile_zoo_model(name)
        assert row["resolution"] == prof.resolution and row["resolution_note"] == "native = released"
        # the arena after the optimiser is one the memory benchmark measured for this model
        assert row["arena_bytes"] in {r["measured"]["total"] for r in measured[name].values()}
        assert row["arena_basis"].startswith("measured")
        compacted = predict_model_flash(analytic_graph(prof), compaction="tflm").total
        assert row["model_flash_bytes"] >= compacted and row["flash_bytes"] > row["model_flash_bytes"]
        assert release_for(name).top1 in " ".join(row["top1"])
        v = row["verdict"]
        assert v["fits"] == (v["sram_needed"] <= v["sram_budget"]
                             and v["flash_needed"] <= v["flash_budget"])
        # the F746 is a Cortex-M7: calibrated, so every model has a latency estimate
        assert row["latency_ms"] and row["latency_ms"] > 0
    # patched only when the unpatched arena exceeds the board's SRAM
    assert rows["mcunet-in0"]["optimiser"] == "as exported"
    assert rows["mcunet-in3"]["optimiser"].startswith("patched")
    assert rows["mcunet-in3"]["verdict"]["fits"]
    assert not all(r["verdict"]["fits"] for r in rows.values())  # yet exit 0


def test_zoo_table_on_a_cortex_m4_board_and_bad_requests(capsys):
    assert main(["--zoo", "--board", "stm32f412"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("zoo on stm32f412")
    assert "mbv2-tiny" in out and "n/c" in out and "exits 0" in out
    assert main(["--zoo"]) == 2
    assert "--zoo needs --board" in capsys.readouterr().err
    assert main(["--zoo", "--model", "mcunet", "--board", "stm32f412"]) == 2


def test_zoo_at_another_resolution_says_analytic(capsys):
    (table,) = _tables(capsys, ["--zoo", "--board", "stm32f746", "--resolution", "96", "--json"])
    for row in table["rows"]:
        assert row["resolution"] == 96
        if row["resolution_note"] != "native = released":
            assert row["arena_basis"].startswith("analytic") and row["latency_ms"] is None
            assert row["top1"] == []

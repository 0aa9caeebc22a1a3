"""Every zoo model exports end to end at native resolution (random weights). Slow: minutes each."""

import json

import pytest

from tinyexport.benchmarks.report_cli import analytic_graph
from tinyexport.benchmarks.report_cli import main as tinyreport
from tinyexport.export.cli import main
from tinyexport.firmware_eval.model_flash import FLASH_TOLERANCE, predict_model_flash
from tinyexport.tflite_graph.compact import compact_for_tflm
from tinyexport.train.models import list_models
from tinyexport.train.models.profile import profile_zoo_model


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_zoo_model_exports(name, tmp_path):
    out = tmp_path / name
    code = main(["--model", name, "--int8", "--calib-images", "32", "--check-images", "8",
                 "--no-firmware", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "export.json").read_text())
    assert doc["checks"]["int8 checks"]["static"]["passed"]
    assert doc["weights"] == "random" and doc["warnings"]
    # the classifier left as a 1x1 CONV_2D (export/head.py): no FULLY_CONNECTED in any zoo net
    assert len(doc["checks"]["classifier as 1x1 conv"]["converted"]) == 1
    assert "FULLY_CONNECTED" not in doc["op_histogram"]
    if name == "mcunet-in3":
        assert (out / "model_int8.tflite").stat().st_size < 1_100_000
    _check_predicted_flash(name, out / "model_int8.tflite")


def _check_predicted_flash(name, path):
    """tinyreport --model predicts this file (and its TFLM-compacted form) within the stated
    tolerance (firmware_eval/model_flash.py)."""
    graph = analytic_graph(profile_zoo_model(name))
    data = path.read_bytes()
    assert abs(predict_model_flash(graph).total - len(data)) <= FLASH_TOLERANCE * len(data)
    compacted = len(compact_for_tflm(data).data)
    predicted = predict_model_flash(graph, compaction="tflm").total
    assert abs(predicted - compacted) <= FLASH_TOLERANCE * compacted


@pytest.mark.slow
def test_model_and_file_verdicts_agree(tmp_path, capsys):
    """The issue's case: `tinyreport --model mcunet --board stm32f765` and `tinyreport` on the
    exported file give the same verdict and exit code. Both count the TFLM-compacted model the
    firmware links, which fits the F765's 1 MiB of flash (the file as written would not)."""
    out = tmp_path / "mcunet"
    assert main(["--model", "mcunet", "--int8", "--calib-images", "16", "--check-images", "8",
                 "--no-firmware", "--out", str(out)]) == 0
    capsys.readouterr()
    codes, verdicts = [], []
    for target in (["--model", "mcunet"], [str(out / "model_int8.tflite")]):
        codes.append(tinyreport([*target, "--board", "stm32f765", "--json"]))
        verdicts.append(json.loads(capsys.readouterr().out)["boards"][0])
    assert codes == [0, 0]
    assert [v["fits"] for v in verdicts] == [True, True]

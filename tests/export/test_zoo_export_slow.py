"""Every zoo model exports end to end at native resolution (random weights). Slow: minutes each."""

import json

import pytest

from tinyexport.export.cli import main
from tinyexport.train.models import list_models


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

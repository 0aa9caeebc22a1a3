"""An adapted model exports to int8 and runs in TFLite Micro (slow: onnx2tf + TFLM)."""

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("tinyexport.export.cli") is None,
                    reason="tinyexport.export is not available")
def test_adapted_model_exports_to_int8_and_runs_in_tflm(tmp_path):
    from tinyexport.export.cli import main as export_main
    from tinyexport.train.checkpoint_format import save_checkpoint
    from tinyexport.train.models import build_model
    from tinyexport.train.tinytl.cli import main as transfer_main

    torch.manual_seed(0)
    save_checkpoint(build_model("mbv2-tiny", num_classes=10, resolution=64), tmp_path / "b.pt")
    assert transfer_main(["--from", str(tmp_path / "b.pt"), "--method", "tinytl-lb",
                          "--data", "digits", "--out", str(tmp_path / "run"), "--epochs", "1",
                          "--max-steps", "5", "--limit-val", "50",
                          "--resolution", "64"]) == 0
    out = tmp_path / "export"
    assert export_main(["--model", "mbv2-tiny", "--checkpoint", str(tmp_path / "run/transfer.pt"),
                        "--int8", "--calib-data", "digits", "--calib-images", "64",
                        "--check-images", "32", "--out", str(out)]) == 0
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(out / "model_int8.tflite"))
    ops = [d["op_name"] for d in interpreter._get_ops_details()]
    assert {"AVERAGE_POOL_2D", "CONV_2D", "RESIZE_BILINEAR", "ADD"} <= set(ops)
    assert "TRANSPOSE" not in ops  # the global-pool adapters of blocks 14–16 used to leave three
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    grouped = [d for d in interpreter._get_ops_details() if d["op_name"] == "CONV_2D"
               and tensors[d["inputs"][1]]["shape"][3] < tensors[d["inputs"][0]]["shape"][3]]
    assert len(grouped) == 16  # one grouped conv1 per adapter, kept as one CONV_2D each
    doc = json.loads((out / "export.json").read_text())
    firmware = doc["firmware"]
    assert firmware["errors"] == [] and firmware["measured"]["total"] > 0  # ran in TFLM
    assert doc["checkpoint_meta"]["adapter_inference"]["adapters"] == 16
    assert "TinyTL adapters (16)" in (out / "report.md").read_text()

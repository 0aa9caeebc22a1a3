"""The full pipeline on a trained small model (one shared real export, see conftest)."""

import subprocess
import sys

import numpy as np

from tinyexport.quantize.int8_checks import check_int8_model
from tinyexport.tflite_graph.ops import TFLM_OPS


def test_export_succeeds_with_fixed_names(digits_export):
    out, doc, code = digits_export
    assert code == 0
    for name in ("model.onnx", "model_fp32.tflite", "model_int8.tflite", "export.json",
                 "report.md"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".out.*.partial"))  # the temp folder was renamed away


def test_int8_model_is_tflm_ready(digits_export):
    out, doc, _ = digits_export
    check = check_int8_model((out / "model_int8.tflite").read_bytes())
    assert check.passed, check.problems
    assert check.input["dtype"] == check.output["dtype"] == "int8"
    assert set(check.op_histogram) <= TFLM_OPS
    assert not {"TRANSPOSE", "DEQUANTIZE", "QUANTIZE"} & set(check.op_histogram)
    # the classifier is a 1x1 CONV_2D (export/head.py): no FULLY_CONNECTED whose int8 rounding
    # differs between TFLite Micro and LiteRT
    assert "FULLY_CONNECTED" not in check.op_histogram
    assert doc["checks"]["classifier as 1x1 conv"]["converted"] == ["classifier"]
    assert doc["quantization"]["input"] == check.input  # recorded from the model itself


def test_int8_top1_within_the_gate_of_fp32(digits_export):
    """int8 within the project's gate (2 points) of fp32 on the 360 eval images, either way.

    The fixture's model differs by CPU (its float kernels differ by ISA, and four epochs of SGD
    amplify that), so the gap is a random variable, not one machine's number: measured
    0, +0.56, -1.39, -0.56, 0 points over ATEN_CPU_CAPABILITY default / avx2 / avx512 and three
    seeds (sd ~0.7 point = 2.5 images). One point (3.6 images) failed on another CPU; two points is
    ~3 sd and is the gate the export itself enforces (--max-top1-drop). A broken quantizer costs
    tens of points."""
    _, doc, _ = digits_export
    top1 = doc["evaluation"]["top1"]
    assert top1["torch_fp32"] > 0.5, "the test model did not learn; the comparison is void"
    assert abs(top1["litert_int8"] - top1["torch_fp32"]) <= 0.02
    assert doc["gate"]["passed"] and doc["gate"]["basis"] == "labelled top-1"
    # ONNX Runtime and torch both run the same fp32 graph; only near-tied images can flip.
    assert abs(top1["onnxruntime_fp32"] - top1["torch_fp32"]) <= 2 / 360


def test_tflm_scores_the_eval_images(digits_export):
    _, doc, _ = digits_export
    tflm = doc["evaluation"]["tflm"]
    assert tflm["images"] == 200  # the first TFLM_EVAL_IMAGES of the 360 eval images
    # TFLM is bit-exact with LiteRT's *reference* kernels on these images (firmware.bit_exact);
    # the litert_int8 column uses LiteRT's optimised kernels, a few LSB away (README: "max LSB
    # ref vs default"), which flips near-tied images: measured 2 of 200. Allow 4.
    assert abs(tflm["top1_tflm_int8"] - tflm["top1_litert_int8"]) <= 0.02
    assert doc["firmware"]["bit_exact"]["equal"]
    assert doc["firmware"]["bit_exact"]["values"] == 200 * 10 and doc["firmware"]["top1"] == \
        tflm["top1_tflm_int8"]


def test_provenance_records_every_check(digits_export):
    out, doc, _ = digits_export
    import hashlib

    for name, entry in doc["artifacts"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    checks = doc["checks"]
    assert checks["BN recalibration"]["status"] == "ok"
    assert checks["Conv+BN fusion"]["passed"] and checks["ONNX export"]["passed"]
    assert checks["onnx2tf float TFLite"]["passed"]
    assert checks["int8 checks"]["static"]["passed"]
    assert doc["weights"] == "trained" and doc["warnings"] == []
    assert doc["preprocessing"]["resolution"] == 32
    assert doc["package_versions"]["onnx2tf"]
    assert doc["quant_report"] and doc["quant_report"][0]["sqnr_db"] <= doc["quant_report"][-1][
        "sqnr_db"]
    assert "firmware" in doc


def test_quant_report_names_the_pytorch_modules(digits_export):
    _, doc, _ = digits_export
    weighted = [r for r in doc["quant_report"]
                if r["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert weighted
    modules = [r["module"] for r in weighted]
    # every weighted op found its own module of the fused mbv2-tiny (matched by its weights)
    assert all(m.split(".")[0] in ("first_conv", "blocks", "final_conv", "classifier")
               for m in modules), modules
    assert len(set(modules)) == len(modules)
    assert any(m.endswith("depthwise.conv") for m in modules)


def test_firmware_record_names_final_files(digits_export):
    _, doc, _ = digits_export
    text = str(doc)
    assert ".partial" not in text
    if "model" in doc["firmware"]:
        assert doc["firmware"]["model"] == "model_int8.tflite"
        assert doc["firmware"]["bit_exact"]["equal"]  # TFLM == LiteRT reference kernels


def test_compacted_model_and_class_names_reach_the_bundle(digits_export):
    out, doc, _ = digits_export
    compaction = doc["firmware"]["compaction"]
    assert compaction["portable"]["applied"] and compaction["tflm"]["applied"]
    assert doc["artifacts"]["model_int8_tflm.tflite"]["bytes"] == compaction["firmware_model_bytes"]
    assert doc["artifacts"]["model_int8_tflm.tflite"]["bytes"] < \
        doc["artifacts"]["model_int8.tflite"]["bytes"]
    labels = (out / "firmware" / "labels.h").read_text()
    assert "the export's class names" in labels  # digits' own names, "0".."9"


_TFLM_CHILD = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_file(sys.argv[1])
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], dtype=np.int8), 0)
it.invoke()
out = it.get_output(0)
print("TFLM_OK", out.dtype, out.shape)
"""


def test_tflite_micro_loads_and_invokes(digits_export):
    out, _, _ = digits_export
    proc = subprocess.run([sys.executable, "-c", _TFLM_CHILD, str(out / "model_int8.tflite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TFLM_OK int8 (1, 10)" in proc.stdout


def test_existing_output_needs_force(digits_export, capsys):
    from tinyexport.export.cli import main

    out, _, _ = digits_export
    before = (out / "model_int8.tflite").read_bytes()
    code = main(["--model", "mbv2-tiny", "--int8", "--out", str(out)])
    assert code != 0
    assert "--force" in capsys.readouterr().err
    assert np.array_equal(np.frombuffer(before, np.uint8),
                          np.frombuffer((out / "model_int8.tflite").read_bytes(), np.uint8))


def test_memory_optimiser_ran_and_is_recorded(digits_export):
    """tinyexport applies the memory optimiser by default (no --board: no patching) and records
    every step; whatever it applied was confirmed in TFLM before replacing the model."""
    out, doc, _ = digits_export
    record = doc["firmware"]["optimization"]
    assert [s["name"] for s in record["steps"]] == ["operator order", "patch-based inference",
                                                    "offline plan"]
    assert not record["steps"][1]["applied"]
    if record["applied"]:
        assert record["verification"]["confirmed"]
        assert (out / "model_int8_unoptimized.tflite").is_file()
        assert "model_int8_unoptimized.tflite" in doc["artifacts"]

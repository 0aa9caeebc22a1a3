"""The analyser against the real TFLM interpreter, LiteRT reference kernels, the offline plan, the
bundle and the report (tiny int8 model; each TFLM run is a child process)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyexport.boards import BOARDS
from tinyexport.errors import UserError
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.arena_analysis import analyse
from tinyexport.firmware_eval.bundle import add_method, resolver_ops
from tinyexport.firmware_eval.evaluate import evaluate_firmware
from tinyexport.firmware_eval.optimize import OptimizeOptions
from tinyexport.firmware_eval.report import run_tflite_report
from tinyexport.firmware_eval.tflm_measurement import prepare_inputs
from tinyexport.firmware_eval.tflm_readiness import load
from tinyexport.json_record import to_record


def test_prediction_matches_tflm_and_litert_bit_exact(models, capsys):
    assert run_tflite_report(str(models["int8"]), run_tflm=True, as_json=True) == 0
    rep = json.loads(capsys.readouterr().out)
    pred, meas = rep["arena"], rep["measured"]
    assert pred["head"] == meas["head"]
    assert abs(pred["total"] - meas["total"]) <= 0.01 * meas["total"]
    assert abs(meas["min_arena"] - meas["total"]) <= 16
    assert rep["bit_exact"]["equal"] and rep["bit_exact"]["values"] > 0
    assert rep["lower_bound"] <= pred["head"] <= rep["linear_planner"]
    assert {"head", "tail", "total"} <= set(pred) and rep["ops"] and rep["model_bytes"] > 0


def test_offline_plan_lowers_measured_head_bit_identical(models, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(models["int8"], model)
    before = evaluate_firmware(model, tmp_path / "plain")
    after = evaluate_firmware(model, tmp_path / "bundle", optimize_options=OptimizeOptions())
    record = after.optimization
    plan = next(s for s in record.steps if s.name == "offline plan")
    assert before.measured["head"] > before.lower_bound  # greedy above the bound here
    assert record.applied and plan.applied
    assert record.verification.outputs_equal_to_original
    assert after.measured["head"] < before.measured["head"]
    assert after.measured["head"] == plan.details["head"] == after.arena["head"]
    assert "OfflineMemoryAllocation" in load(model).metadata
    assert (tmp_path / "m_unoptimized.tflite").read_bytes() == models["int8"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "m.tflite",
                                                          "m_unoptimized.tflite", "plain"]


def test_bundle_lists_exact_ops_and_input_quantization(models, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype(np.float32)
    out = evaluate_firmware(models["int8"], tmp_path, images=x, labels=[0, 1],
                            board=BOARDS.get("stm32f746"))
    graph = load(models["int8"])
    ops = resolver_ops((tmp_path / "op_resolver.h").read_text())
    assert ops == [add_method(o) for o in graph.opcodes]
    assert f"MicroMutableOpResolver<{len(ops)}>" in (tmp_path / "op_resolver.h").read_text()
    assert "alignas(16)" in (tmp_path / "model_data.cc").read_text()
    assert str(graph.model_bytes) in (tmp_path / "model_data.h").read_text()
    assert "input->params.scale" in (tmp_path / "main.cc").read_text()
    assert 0.0 <= out.top1 <= 1.0 and out.board.board == "stm32f746"
    q = prepare_inputs(graph, x)
    t = graph.tensors[graph.inputs[0]]
    expect = np.clip(np.round(x / t.quant.scales[0]) + t.quant.zero_points[0], -128, 127)
    assert np.array_equal(q, expect.astype(np.int8))
    json.dumps(to_record(out))


def test_arena_too_small_says_how_much(models):
    graph = load(models["int8"])
    x = prepare_inputs(graph, None)[:1]
    with pytest.raises(tflm_runner.TflmFailure, match="more bytes needed"):
        tflm_runner.run_tflm(models["int8"], x, arena_size=analyse(graph).prediction.total // 2)


def test_board_adds_cmsis_scratch_and_uses_32_bit_structs(models):
    """A Cortex-M board: CMSIS-NN scratch in the head (3x3 s2 conv im2col, 5x5 depthwise), the
    32-bit struct sizes in the tail; both measured in QEMU on this model (2,080 B head, 2,384 B
    tail, smallest arena 4,476 B: benchmarks/results/emulated_results.md)."""
    from tinyexport.firmware_eval.arena import predict

    graph = load(models["int8"])
    host, board = predict(graph), predict(graph, "dsp")
    assert board.head > host.head and board.tail < host.tail
    assert (board.head, board.tail) == (2080, 2384) and board.min_arena == 4476
    assert analyse(graph, "dsp").board_total == board.total


def test_cli_bad_input_no_traceback(tmp_path, models):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    for target in (bad, models["float"]):
        proc = subprocess.run([sys.executable, "-m", "tinyexport.benchmarks", str(target)],
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error:")


def test_import_is_light():
    code = ("import sys, tinyexport.firmware_eval.report, tinyexport.firmware_eval.evaluate;"
            "bad=[m for m in ('tensorflow','tflite_micro','ai_edge_litert','onnx') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_user_error_for_bad_images(models):
    with pytest.raises(UserError, match="NHWC"):
        prepare_inputs(load(models["int8"]), np.zeros((1, 3, 16, 16), np.float32))


def test_first_difference_walks_every_op_output(models):
    """Both interpreters keep all tensors; on the tiny model every op output agrees (None), and a
    tensor index that is not an op output of this graph is rejected by the child, not ignored."""
    graph = load(models["int8"])
    x = prepare_inputs(graph, None)[:1]
    pairs = [(op.index, op.outputs[0]) for op in graph.ops]
    size = 4 * analyse(graph).prediction.linear + (1 << 16)
    assert tflm_runner.first_difference(models["int8"], x, pairs, size) is None
    with pytest.raises(tflm_runner.TflmFailure):
        tflm_runner.first_difference(models["int8"], x, [(0, len(graph.tensors) + 5)], size)

"""Model compaction (tinyexport.tflite_graph.compact) on real converter output: every step saves
bytes, TFLM's outputs stay identical bit for bit, the portable file still loads in LiteRT with
identical outputs, and the one-element weight zero points are accepted exactly where TFLM
accepts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyexport.errors import UserError
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.tflm_measurement import prepare_inputs
from tinyexport.tflite_graph.compact import compact_for_tflm, compact_portable, litert_form
from tinyexport.tflite_graph.edit import opcode_name, pack, unpack
from tinyexport.tflite_graph.integrity import check_integrity
from tinyexport.tflite_graph.reader import parse_graph

DATA = Path(__file__).resolve().parents[1] / "firmware_eval" / "data"
MODELS = ("keras_tiny_int8.tflite", "hello_world_int8.tflite", "trained_lstm_int8.tflite")


def _inputs(data: bytes, count: int = 12) -> np.ndarray:
    return prepare_inputs(parse_graph(data), None, count=count)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", MODELS)
def test_tflm_only_compaction_is_bit_exact_in_tflm(tmp_path, name):
    data = (DATA / name).read_bytes()
    compacted = compact_for_tflm(data)
    assert compacted.bytes_after < len(data)
    assert sum(s.saved_bytes for s in compacted.steps) == len(data) - compacted.bytes_after
    assert all(s.saved_bytes > 0 and s.tensors > 0 for s in compacted.steps)
    check_integrity(parse_graph(compacted.data), name)  # TFLM's form passes our own checks
    x = _inputs(data)
    before = tflm_runner.run_tflm(_write(tmp_path, "a.tflite", data), x)
    after = tflm_runner.run_tflm(_write(tmp_path, "b.tflite", compacted.data), x)
    assert np.array_equal(before.outputs, after.outputs)
    assert after.total <= before.total  # nothing it drops lives in the arena


@pytest.mark.parametrize("name", MODELS)
def test_portable_compaction_still_loads_in_litert_with_identical_outputs(tmp_path, name):
    data = (DATA / name).read_bytes()
    portable = compact_portable(data)
    assert portable.bytes_after < len(data)
    names = {s.name for s in portable.steps}
    assert not names & {"weight zero points", "all names", "signature defs"}
    x = _inputs(data)
    before = tflm_runner.run_litert_ref(_write(tmp_path, "a.tflite", data), x)
    after = tflm_runner.run_litert_ref(_write(tmp_path, "b.tflite", portable.data), x)
    assert np.array_equal(before, after)


def test_litert_runs_a_tflm_only_model_in_its_litert_form(tmp_path):
    """LiteRT itself rejects one zero point for N scales (docs/tflm_memory.md §13); our
    interpreter loads the model's LiteRT form, whose outputs are the original's."""
    from ai_edge_litert.interpreter import Interpreter

    data = (DATA / "keras_tiny_int8.tflite").read_bytes()
    tflm_only = compact_for_tflm(data).data
    with pytest.raises((RuntimeError, ValueError), match="zero_point"):
        Interpreter(model_content=tflm_only).allocate_tensors()
    assert litert_form(data) is data  # nothing to expand
    x = _inputs(data)
    before = tflm_runner.run_litert_ref(_write(tmp_path, "a.tflite", data), x)
    after = tflm_runner.run_litert_ref(_write(tmp_path, "t.tflite", tflm_only), x)
    assert np.array_equal(before, after)


def test_what_tflm_reads_is_kept():
    data = (DATA / "keras_tiny_int8.tflite").read_bytes()
    model = unpack(compact_for_tflm(data).data)
    tensors = model.subgraphs[0].tensors
    for op in model.subgraphs[0].operators:
        name = opcode_name(model, op.opcodeIndex)
        if name == "FULLY_CONNECTED" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            assert len(tensors[op.inputs[1]].quantization.scale) == 1  # per-tensor weights
            assert tensors[op.inputs[2]].quantization is not None  # TFLM checks its bias scale
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weights = tensors[op.inputs[1]].quantization
            assert len(weights.scale) > 1 and len(weights.zeroPoint) == 1
    for index in (*model.subgraphs[0].inputs, *model.subgraphs[0].outputs):
        assert tensors[index].quantization.scale is not None  # I/O quantization stays


def test_nonzero_zero_points_are_never_collapsed():
    model = unpack((DATA / "keras_tiny_int8.tflite").read_bytes())
    tensor = next(t for t in model.subgraphs[0].tensors
                  if t.quantization is not None and t.quantization.zeroPoint is not None
                  and len(t.quantization.zeroPoint) > 1)
    tensor.quantization.zeroPoint = np.arange(len(tensor.quantization.zeroPoint), dtype=np.int64)
    compacted = unpack(compact_for_tflm(pack(model)).data)
    kept = [t for t in compacted.subgraphs[0].tensors
            if t.quantization is not None and t.quantization.zeroPoint is not None
            and len(t.quantization.zeroPoint) > 1]
    assert len(kept) == 1


def test_integrity_accepts_one_zero_point_but_no_other_short_count():
    model = unpack((DATA / "keras_tiny_int8.tflite").read_bytes())
    tensor = next(t for t in model.subgraphs[0].tensors
                  if t.quantization is not None and t.quantization.zeroPoint is not None
                  and len(t.quantization.zeroPoint) > 2)
    tensor.quantization.zeroPoint = np.zeros(1, dtype=np.int64)
    check_integrity(parse_graph(pack(model)), "one zero point")
    tensor.quantization.zeroPoint = np.zeros(2, dtype=np.int64)
    with pytest.raises(UserError, match="zero points"):
        check_integrity(parse_graph(pack(model)), "two zero points")

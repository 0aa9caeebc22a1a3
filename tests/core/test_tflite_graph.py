"""The ``.tflite`` graph layer on TFLM's hello_world_int8 (3 int8 FULLY_CONNECTED, checked in under
tests/firmware_eval/data): the reader agrees with LiteRT's public tensor API, the writer's output
reads back, the quantization arithmetic is worked out by hand, and the layer sits below quantize
and firmware_eval."""

import ast
from pathlib import Path

import numpy as np
import pytest

from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.tflite_graph.ops import TFLM_OPS
from tinyexport.tflite_graph.quant import dequantize_values, quantize_values
from tinyexport.tflite_graph.reader import Quant, constant_values, parse_graph, read_graph
from tinyexport.tflite_graph.schema import op_names
from tinyexport.tflite_graph.writer import OFFLINE_KEY, single_op_models, with_offline_plan

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "tests/firmware_eval/data/hello_world_int8.tflite"


def test_reader_structure():
    graph = read_graph(HELLO)
    assert [op.opcode for op in graph.ops] == ["FULLY_CONNECTED"] * 3
    assert graph.inputs == (0,) and graph.outputs == (9,) and graph.num_subgraphs == 1
    # dense 1 -> 16 -> 16 -> 1: weights (16, 1), (16, 16), (1, 16), int32 biases
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops]
    assert [w.shape for w in weights] == [(16, 1), (16, 16), (1, 16)]
    assert all(w.is_const and w.dtype == "int8" for w in weights)
    assert [graph.tensors[op.inputs[2]].dtype for op in graph.ops] == ["int32"] * 3
    assert graph.model_bytes == HELLO.stat().st_size


def test_reader_matches_litert_tensor_details():
    data = HELLO.read_bytes()
    graph = parse_graph(data)
    interpreter = make_interpreter(data, delegates=False)
    for detail in interpreter.get_tensor_details():
        t = graph.tensors[detail["index"]]
        assert (t.name, t.shape, t.dtype) == (
            detail["name"], tuple(int(s) for s in detail["shape"]), np.dtype(detail["dtype"]).name)
        q = detail["quantization_parameters"]
        assert t.quant.scales == tuple(float(s) for s in q["scales"])
        assert t.quant.zero_points == tuple(int(z) for z in q["zero_points"])
        if t.is_const:
            assert np.array_equal(constant_values(data, t), interpreter.get_tensor(t.index))
        else:
            assert constant_values(data, t) is None


def test_quantize_rounds_half_away_from_zero_and_clips():
    x = np.array([0.5, -0.5, 1.5, -2.5, 2.49, 1000.0, -1000.0])
    assert quantize_values(x, 1.0, 0, np.int8).tolist() == [1, -1, 2, -3, 2, 127, -128]
    # scale 0.5, zero point -10: 1.25 / 0.5 = 2.5 -> 3 -> -7
    assert quantize_values(np.array([1.25]), 0.5, -10, np.int8).tolist() == [-7]


def test_dequantize_per_tensor_and_per_channel():
    q = np.array([[1, 2], [3, 4]], np.int8)
    assert dequantize_values(q, Quant((0.5,), (1,))).tolist() == [[0.0, 0.5], [1.0, 1.5]]
    # channel axis 0: row 0 scale 1 zp 0, row 1 scale 2 zp 1
    per_row = Quant((1.0, 2.0), (0, 1), axis=0)
    assert dequantize_values(q, per_row).tolist() == [[1.0, 2.0], [4.0, 6.0]]
    assert dequantize_values(q, Quant()).dtype == np.float64  # unquantized: values as float


def test_writer_offline_plan_reads_back():
    data = HELLO.read_bytes()
    graph = parse_graph(data)
    offsets = [-1] * len(graph.tensors)
    offsets[0], offsets[7] = 0, 16
    planned = parse_graph(with_offline_plan(data, offsets))
    assert planned.offline_offsets == tuple(offsets) and OFFLINE_KEY in planned.metadata
    assert planned.ops == graph.ops and planned.tensors == graph.tensors
    replanned = parse_graph(with_offline_plan(with_offline_plan(data, offsets), offsets))
    assert replanned.metadata.count(OFFLINE_KEY) == 1  # an old plan is replaced
    with pytest.raises(ValueError, match="one per tensor"):
        with_offline_plan(data, offsets[:-1])


def test_single_op_models():
    graph = read_graph(HELLO)
    singles = single_op_models(HELLO.read_bytes())
    assert [name for name, _ in singles] == ["FULLY_CONNECTED"] * 3
    for (_, blob), op in zip(singles, graph.ops, strict=True):
        one = parse_graph(blob)
        assert [o.opcode for o in one.ops] == ["FULLY_CONNECTED"]
        assert one.inputs == (op.inputs[0],) and one.outputs == op.outputs


def test_tflm_ops_are_schema_builtins():
    assert len(TFLM_OPS) == 100 and TFLM_OPS <= set(op_names().values())


def test_graph_layer_imports_nothing_above_it():
    """tflite_graph is ground for quantize and firmware_eval: it imports only tinyexport.errors,
    tinyexport.safe_io (which imports only errors: how user files are read) and itself among our
    modules."""
    for path in (ROOT / "core/tflite_graph").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            ours = [n for n in names if n.startswith("tinyexport")]
            assert all(n in ("tinyexport.errors", "tinyexport.safe_io")
                       or n.startswith("tinyexport.tflite_graph")
                       for n in ours), (path.name, ours)

"""Bad files give one clear UserError; the analyser survives hypothesis-mutated flatbuffers."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyexport.errors import UserError
from tinyexport.firmware_eval.arena_analysis import analyse
from tinyexport.firmware_eval.tflm_readiness import validate
from tinyexport.tflite_graph.reader import parse_graph, read_graph


def test_empty_truncated_and_foreign_files(tmp_path, models):
    data = models["int8"].read_bytes()
    cases = {"empty": b"", "truncated": data[: len(data) // 3], "text": b"hello world, no model"}
    for name, blob in cases.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(blob)
        with pytest.raises(UserError, match="tflite|TFLite|truncated"):
            read_graph(path)
    with pytest.raises(UserError, match="does not exist"):
        read_graph(tmp_path / "missing.tflite")


@pytest.mark.parametrize("mode,msg", [("float", "float model"), ("hybrid", "hybrid")])
def test_float_and_hybrid_rejected(models, mode, msg):
    with pytest.raises(UserError, match=msg):
        validate(read_graph(models[mode]), mode)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_flatbuffer(models, data):
    blob = bytearray(models["int8"].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        graph = parse_graph(bytes(blob))
        validate(graph, "fuzz")
        analyse(graph)
    except UserError:
        pass

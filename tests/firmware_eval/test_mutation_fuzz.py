"""Corrupt models are never reported as fine (issue 11 §2): seeded mutants of small int8 models
each end as a clean UserError, as the original report (the mutation hit a byte the report does
not depend on, e.g. a weight), or as a different model LiteRT's verifier accepts - never as
another exception or an impossible figure."""

import json
import random
import struct
from collections import Counter
from pathlib import Path

import pytest

from tinyexport.errors import UserError
from tinyexport.firmware_eval.report import build_report
from tinyexport.firmware_eval.tflm_runner import _explain, verify_models
from tinyexport.json_record import to_record
from tinyexport.tflite_graph.schema import schema

DATA = Path(__file__).parent / "data"
N_MUTANTS = 200
LIMIT = 1 << 31
_NASTY = (0, -1, 1, 2, 3, 0x7FFFFFFF, -(1 << 31), 0x10000)


def _fields(data: bytes) -> dict[str, list[int]]:
    """File offsets of int32 fields worth flipping: tensor shape dims, tensor buffer indices,
    operator opcode indices and operator input indices (subgraph 0)."""
    sub = schema().Model.GetRootAs(data, 0).Subgraphs(0)
    out: dict[str, list[int]] = {"shape": [], "buffer": [], "opcode": [], "input": []}
    for i in range(sub.TensorsLength()):
        tab = sub.Tensors(i)._tab
        if tab.Offset(4):
            start = tab.Vector(tab.Offset(4))
            out["shape"] += [start + 4 * k for k in range(tab.VectorLen(tab.Offset(4)))]
        if tab.Offset(8):
            out["buffer"].append(tab.Pos + tab.Offset(8))
    for i in range(sub.OperatorsLength()):
        tab = sub.Operators(i)._tab
        if tab.Offset(4):
            out["opcode"].append(tab.Pos + tab.Offset(4))
        if tab.Offset(6):
            start = tab.Vector(tab.Offset(6))
            out["input"] += [start + 4 * k for k in range(tab.VectorLen(tab.Offset(6)))]
    return out


def _mutant(data: bytes, fields: dict[str, list[int]], rng: random.Random) -> bytes:
    blob = bytearray(data)
    kind = rng.choice(["byte", "byte", "int32", "shape", "buffer", "opcode", "input"])
    if kind == "byte":
        blob[rng.randrange(len(blob))] = rng.randrange(256)
        return bytes(blob)
    if kind == "int32" or not fields[kind]:
        pos = rng.randrange(0, len(blob) - 4) & ~3
    else:
        pos = rng.choice(fields[kind])
    value = rng.choice(_NASTY + (rng.randrange(-64, 64),))
    blob[pos:pos + 4] = struct.pack("<i", value)
    return bytes(blob)


def _figures(report: dict) -> list[int]:
    a = report["arena"]
    ops = [v for r in report["ops"] for v in (r["macs"], r["live_bytes"], r["scratch_bytes"])]
    return [a["head"], a["tail"], a["total"], report["min_arena"], report["lower_bound"],
            report["linear_planner"], *ops]


def _same(report: dict, base: dict) -> bool:
    return {**report, "model": None} == {**base, "model": None}


def _fuzz(source: Path, tmp_path: Path, seed: int) -> Counter:
    data = source.read_bytes()
    base = to_record(build_report(str(source), verify=False))
    fields, rng = _fields(data), random.Random(seed)
    outcome: Counter = Counter()
    reports = {}
    for k in range(N_MUTANTS):
        path = tmp_path / f"{source.stem}_{k}.tflite"
        path.write_bytes(_mutant(data, fields, rng))
        try:
            reports[path] = to_record(build_report(str(path), verify=False))  # static checks
        except UserError as exc:
            assert "\n" not in str(exc)
            outcome["static error"] += 1
    for (path, report), problem in zip(reports.items(), verify_models(list(reports)),
                                       strict=True):
        if problem:  # build_report(verify=True) raises UserError for these
            outcome["verifier error"] += 1
            continue
        assert all(0 <= v <= LIMIT for v in _figures(report)), (path, report)
        outcome["same report" if _same(report, base) else "valid, different"] += 1
    return outcome


def test_fuzz_mutants_of_tflm_examples(tmp_path):
    """hello_world (3 FULLY_CONNECTED) and mnist_lstm (LSTM, RESHAPE, FC, SOFTMAX)."""
    for seed, name in enumerate(("hello_world_int8", "trained_lstm_int8")):
        outcome = _fuzz(DATA / f"{name}.tflite", tmp_path, seed)
        assert sum(outcome.values()) == N_MUTANTS
        assert outcome["static error"] > N_MUTANTS // 10, outcome
        # A mutant that is still a valid model but reports differently: a graph output moved,
        # an LSTM intermediate's shape (LiteRT accepts both). Few, and LiteRT-valid.
        assert outcome["valid, different"] <= N_MUTANTS // 50, outcome


def test_fuzz_mutants_of_conv_model(models, tmp_path):
    """CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, SHAPE/STRIDED_SLICE/PACK, RESHAPE, FC."""
    outcome = _fuzz(models["int8"], tmp_path, 7)
    assert outcome["static error"] > N_MUTANTS // 4, outcome
    assert outcome["valid, different"] <= N_MUTANTS // 50, outcome


def _patch(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + struct.pack("<i", value) + data[pos + 4:]


def _cli_error(path: Path, capsys) -> str:
    from tinyexport.benchmarks.report_cli import main

    assert main([str(path), "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1, captured
    return err[0]


@pytest.mark.parametrize("case", ["huge_dim", "negative_dim", "depthwise_as_add"])
def test_issue_mutants_are_one_error_exit_2(models, tmp_path, capsys, case):
    """The three mutants of issue 11 §2 that were reported with exit 0 and impossible figures."""
    data = models["int8"].read_bytes()
    fields = _fields(data)
    model = schema().Model.GetRootAs(data, 0)
    if case == "depthwise_as_add":
        codes = [max(model.OperatorCodes(i).BuiltinCode(),
                     model.OperatorCodes(i).DeprecatedBuiltinCode())
                 for i in range(model.OperatorCodesLength())]
        depthwise = model.Subgraphs(0).Operators(1)  # op 1 is the first DEPTHWISE_CONV_2D
        assert codes[depthwise.OpcodeIndex()] == schema().BuiltinOperator.DEPTHWISE_CONV_2D
        pos = depthwise._tab.Pos + depthwise._tab.Offset(4)
        blob = _patch(data, pos, codes.index(schema().BuiltinOperator.ADD))
    else:
        blob = _patch(data, fields["shape"][1], 0x7FFFFFFF if case == "huge_dim" else -3)
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(blob)
    line = _cli_error(path, capsys)
    assert line.startswith(f"error: {path} is not a valid int8 TFLite model: "), line


def test_verifier_flags_a_model_the_static_checks_pass(tmp_path):
    """LiteRT's verifier (a child process) sees what the graph checks cannot: here the schema
    version field."""
    data = (DATA / "hello_world_int8.tflite").read_bytes()
    model = schema().Model.GetRootAs(data, 0)
    bad = tmp_path / "version.tflite"
    bad.write_bytes(_patch(data, model._tab.Pos + model._tab.Offset(4), 7))
    build_report(str(bad), verify=False)
    assert verify_models([DATA / "hello_world_int8.tflite", bad]) == [
        None, "Model provided is schema version 7 not equal to supported version 3."]
    with pytest.raises(UserError, match="not a valid int8 TFLite model: Model provided is"):
        build_report(str(bad))


def test_crash_message_names_the_signal_and_softmax_only_when_present():
    plain = _explain("tflm", -11, "", ("CONV_2D", "ADD"))
    assert "SIGSEGV" in plain and "signal 11" in plain and "SOFTMAX" not in plain
    assert "SOFTMAX" in _explain("tflm", -6, "", ("CONV_2D", "SOFTMAX"))
    assert "exit status 3" in _explain("tflm", 3, "", ())


def test_report_of_a_valid_model_is_unchanged_by_verification():
    path = str(DATA / "hello_world_int8.tflite")
    assert json.dumps(to_record(build_report(path))) == json.dumps(
        to_record(build_report(path, verify=False)))

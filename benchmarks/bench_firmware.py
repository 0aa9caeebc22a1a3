"""Predicted vs measured TFLM arena, lower bound, greedy vs our offline plan, board verdicts.

    .venv/bin/python benchmarks/bench_firmware.py MODEL.tflite [...] \
        [--boards stm32f412 stm32f746 stm32h743] [--bitexact-inputs 64]

Writes benchmarks/results/firmware_results.json and firmware_results.md (one row per model). Each model is copied
to a temp folder; the offline plan is applied to the copy and measured in TFLM (only when our
plan is below the greedy head; the row says so otherwise). Board verdicts use the arena with that
board's CMSIS-NN scratch (SRAM) and the model file + runtime-code estimate (flash).
Bit-exactness (TFLM vs LiteRT reference kernels) is counted on evaluate_firmware's 4 inputs plus
``--bitexact-inputs`` seeded uniform int8 inputs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tinyexport.benchmarks.publish import write_results
from tinyexport.boards import Verdict
from tinyexport.errors import UserError
from tinyexport.firmware_eval.arena import predict
from tinyexport.firmware_eval.evaluate import evaluate_firmware
from tinyexport.firmware_eval.tflm_measurement import bit_exactness, measure_arena_size
from tinyexport.firmware_eval.tflm_readiness import load
from tinyexport.firmware_eval.tflm_runner import TflmFailure, run_litert_ref, run_tflm
from tinyexport.firmware_eval.verdicts import board_verdicts, resolve_boards, verdict_lines
from tinyexport.json_record import to_record

RESULTS = Path(__file__).resolve().parent / "results"
BOARDS = ("stm32f412", "stm32f746", "stm32h743")


def wide_bit_exactness(model: Path, count: int) -> dict:
    """TFLM vs LiteRT reference kernels on ``count`` seeded uniform int8 inputs (evaluate_firmware
    compares 4; rounding-boundary differences show up only over many outputs)."""
    graph = load(model)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(1).integers(-128, 128, (count, *shape), np.int8)
    size = measure_arena_size(graph, predict(graph).total)
    try:
        found = bit_exactness(run_litert_ref(model, x), run_tflm(model, x, arena_size=size).outputs)
    except TflmFailure as exc:
        return {"error": str(exc)}
    return {**found, "inputs": count}


def bench(path: Path, boards: list[str], bitexact_inputs: int = 0) -> dict:
    """One row: run evaluate_firmware on a copy, then once more with the offline plan. A model the
    analyser refuses (UserError) gets a row with only its error."""
    try:
        graph = load(path)
    except UserError as exc:
        return {"model": path.name, "rejected": str(exc).replace(str(path), path.name)}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / path.name
        shutil.copy(path, model)
        plain = evaluate_firmware(model, Path(tmp) / "b0")
        wide = wide_bit_exactness(model, bitexact_inputs) if bitexact_inputs and \
            plain.measured is not None else None
        planned = evaluate_firmware(model, Path(tmp) / "b1", offline_plan=True)
    plan = planned["offline_plan"]
    verdicts = board_verdicts(graph, resolve_boards(boards))
    return {"model": path.name, "model_bytes": graph.model_bytes, "ops": len(graph.ops),
            "predicted": plain.arena, "measured": plain.measured or {},
            "lower_bound": plain.lower_bound, "linear": plain.linear_planner,
            "greedy_head": plan["greedy_head"], "plan_head_predicted": plan["predicted_head"],
            "plan_head_measured": plan.get("measured_head"), "plan_applied": plan["applied"],
            "plan_note": plan.get("reason", plan["ordering"]),
            "bit_exact": plain.bit_exact, "bit_exact_wide": wide,
            "boards": [to_record(v) for v in verdicts], "errors": plain.errors}


def _verdict(v: dict) -> str:
    return verdict_lines(Verdict.from_record(v), "benchmark-table")[0]


def _row(r: dict) -> str:
    if "rejected" in r:
        return f"| {r['model']} |" + " - |" * 12 + f" rejected: {r['rejected'][:160]} |"
    p, m = r["predicted"], r["measured"]
    err = f"{100 * (p['total'] - m['total']) / m['total']:+.2f}" if m else "not run"
    meas = lambda k: f"{m[k]:,}" if m.get(k) is not None else "-"  # noqa: E731
    plan = (f"{r['plan_head_measured']:,} (TFLM)" if r["plan_head_measured"] is not None
            else f"{r['plan_head_predicted']:,} (= greedy)")
    exact = " + ".join(_exactness(b) for b in (r["bit_exact"], r.get("bit_exact_wide")) if b) or "-"
    verdicts = "; ".join(_verdict(v) for v in r["boards"])
    if r["errors"]:
        verdicts += "; " + r["errors"][0][:110]
    return (f"| {r['model']} | {p['head']:,} | {meas('head')} | {p['tail']:,} | {meas('tail')} | "
            f"{p['total']:,} | {meas('total')} | {err} | {meas('min_arena')} | "
            f"{r['lower_bound']:,} | {r['greedy_head']:,} | {plan} | {exact} | {verdicts} |")


def _exactness(b: dict) -> str:
    if "error" in b:
        return "not run"
    if b["equal"]:
        return f"0/{b['values']:,}"
    return f"{b['mismatches']}/{b['values']:,} differ (max {b['max_abs_diff']} LSB)"


def table(rows: list[dict]) -> str:
    head = ("| model | pred head | meas head | pred tail | meas tail | pred total | meas total | "
            "err % | min arena | lower bound | greedy head | our plan head | TFLM≠LiteRT ref | "
            "board verdicts (SRAM margin) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    return "\n".join([head, *map(_row, rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--boards", nargs="+", default=list(BOARDS))
    parser.add_argument("--bitexact-inputs", type=int, default=64,
                        help="extra seeded int8 inputs for the TFLM vs LiteRT-reference comparison "
                             "(0: only the 4 of evaluate_firmware)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [bench(p, args.boards, args.bitexact_inputs) for p in args.models]
    write_results(args.out, "firmware_results", rows, table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

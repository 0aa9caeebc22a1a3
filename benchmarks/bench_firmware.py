"""Predicted vs measured TFLM arena, lower bound, greedy vs our offline plan, board verdicts.

    .venv/bin/python benchmarks/bench_firmware.py MODEL.tflite [...] \
        [--boards stm32f412 stm32f746 stm32h743]

Writes benchmarks/results/firmware.json and firmware.md (one row per model). Each model is copied
to a temp folder; the offline plan is applied to the copy and measured in TFLM (only when our
plan is below the greedy head; the row says so otherwise). Board verdicts use the arena with that
board's CMSIS-NN scratch (SRAM) and the model file + runtime-code estimate (flash).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tinyexport.atomic import write_json, write_text
from tinyexport.firmware_eval.api import analyse, firmware_check, load
from tinyexport.firmware_eval.report import board_verdicts

RESULTS = Path(__file__).resolve().parent / "results"
BOARDS = ("stm32f412", "stm32f746", "stm32h743")


def bench(path: Path, boards: list[str]) -> dict:
    """One row: run firmware_check on a copy, then once more with the offline plan."""
    graph = load(path)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / path.name
        shutil.copy(path, model)
        plain = firmware_check(model, Path(tmp) / "b0")
        planned = firmware_check(model, Path(tmp) / "b1", offline_plan=True)
    plan = planned["offline_plan"]
    verdicts = board_verdicts(graph, analyse(graph), boards)
    return {"model": path.name, "model_bytes": graph.model_bytes, "ops": len(graph.ops),
            "predicted": plain["arena"], "measured": plain.get("measured", {}),
            "lower_bound": plain["lower_bound"], "linear": plain["linear_planner"],
            "greedy_head": plan["greedy_head"], "plan_head_predicted": plan["predicted_head"],
            "plan_head_measured": plan.get("measured_head"), "plan_applied": plan["applied"],
            "plan_note": plan.get("reason", plan["ordering"]),
            "bit_exact": plain.get("bit_exact"), "boards": verdicts, "errors": plain["errors"]}


def _verdict(v: dict) -> str:
    return f"{v['board']} {'fits' if v['fits'] else 'NO'} ({v['sram_margin'] / 1024:+,.0f} KiB)"


def _row(r: dict) -> str:
    p, m = r["predicted"], r["measured"]
    err = f"{100 * (p['total'] - m['total']) / m['total']:+.2f}" if m else "not run"
    meas = lambda k: f"{m[k]:,}" if m.get(k) is not None else "-"  # noqa: E731
    plan = (f"{r['plan_head_measured']:,} (TFLM)" if r["plan_head_measured"] is not None
            else f"{r['plan_head_predicted']:,} (= greedy)")
    b = r["bit_exact"]
    exact = ("yes" if b["equal"] else f"{b['mismatches']}/{b['values']} differ (max "
             f"{b['max_abs_diff']} LSB)") if b else "-"
    verdicts = "; ".join(_verdict(v) for v in r["boards"])
    if r["errors"]:
        verdicts += "; " + r["errors"][0][:110]
    return (f"| {r['model']} | {p['head']:,} | {meas('head')} | {p['tail']:,} | {meas('tail')} | "
            f"{p['total']:,} | {meas('total')} | {err} | {meas('min_arena')} | "
            f"{r['lower_bound']:,} | {r['greedy_head']:,} | {plan} | {exact} | {verdicts} |")


def table(rows: list[dict]) -> str:
    head = ("| model | pred head | meas head | pred tail | meas tail | pred total | meas total | "
            "err % | min arena | lower bound | greedy head | our plan head | TFLM==LiteRT ref | "
            "board verdicts (SRAM margin) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    return "\n".join([head, *map(_row, rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--boards", nargs="+", default=list(BOARDS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [bench(p, args.boards) for p in args.models]
    write_json(args.out / "firmware.json", rows)
    write_text(args.out / "firmware.md", table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Memory benchmark: the TFLM arena of every zoo export (and other tools' int8 models) before and
after each step of the memory optimiser, measured in the real TFLite Micro interpreter.

    .venv/bin/python -m tinyexport.benchmarks.bench_memory [--models mcunet mbv2-tiny ...]
        [--tflite OTHER.tflite ...] [--work DIR] [--inputs 16] [--max-mac-overhead 0.30]

For each model: the export (random weights, seeded: memory does not depend on the weights), then
the steps of :mod:`tinyexport.firmware_eval.optimize` one at a time — operator order, offline
plan, patch-based inference (forced on, the best plan within the MAC limit) and all of them as
``tinyexport --board`` applies them — each model run in TFLM (measured head / tail / total) and
compared with the unoptimised model on ``--inputs`` seeded inputs in TFLM and LiteRT's reference
kernels (bit for bit); MAC overhead, flash growth and the boards each version fits. Writes
``benchmarks/results/memory_results.{json,md}`` and the per-op arena plot of mcunet-in3 before
and after patching (``memory_mcunet-in3.png``).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyexport.atomic import atomic_path
from tinyexport.benchmarks.publish import write_results
from tinyexport.boards import BOARDS
from tinyexport.export.config import ExportConfig
from tinyexport.export.pipeline import export
from tinyexport.firmware_eval import arena, tflm_runner
from tinyexport.firmware_eval.optimize import OptimizeOptions, optimize
from tinyexport.firmware_eval.verdicts import board_verdicts, resolve_boards
from tinyexport.tflite_graph.reader import parse_graph

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MCU_ZOO = ("mcunet-in0", "mcunet-in1", "mcunet-in2", "mcunet-in3", "mcunet-in4", "mbv2-tiny",
           "proxyless-w0.3", "proxylessnas-w0.35")
OTHER_MODELS = tuple(sorted((ROOT / "tests" / "firmware_eval" / "data").glob("*.tflite")))
STEPS = {  # row -> optimiser options (patch forced on for its own row and the full run)
    "operator order": OptimizeOptions(reorder=True, patch="off", offline_plan=False),
    "offline plan": OptimizeOptions(reorder=False, patch="off", offline_plan=True),
    "patch-based inference": OptimizeOptions(reorder=False, patch="on", offline_plan=False),
    "all (as tinyexport --board applies them)": OptimizeOptions(patch="on"),
}
RUN_ARENA = 4 << 20


def export_zoo(name: str, work: Path) -> Path:
    """The int8 export of a zoo model (cached in ``work``)."""
    out = work / name
    if not (out / "model_int8.tflite").is_file():
        export(ExportConfig(model=name, out=out, calib_images=64, check_images=16,
                            firmware=False, force=True), progress=lambda line: None)
    return out / "model_int8.tflite"


def _inputs(data: bytes, count: int) -> np.ndarray:
    graph = parse_graph(data)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    return np.random.default_rng(0).integers(-128, 128, (count, *shape), np.int8)


def _run(data: bytes, x: np.ndarray, tmp: Path) -> dict:
    path = tmp / "m.tflite"
    path.write_bytes(data)
    run = tflm_runner.run_tflm(path, x, arena_size=RUN_ARENA)
    return {"tflm": run.outputs, "litert": tflm_runner.run_litert_ref(path, x),
            "measured": {"head": run.head, "tail": run.tail, "total": run.total}}


def _row(name: str, data: bytes, base: bytes, runs: dict, x: np.ndarray, tmp: Path) -> dict:
    """Predicted and measured arena of one version, its cost and its equality with ``base``."""
    graph, base_graph = parse_graph(data), parse_graph(base)
    pred = arena.predict(graph)
    macs, base_macs = (sum(r.macs for r in arena.predict(g).ops) for g in (graph, base_graph))
    run = runs.setdefault(data, _run(data, x, tmp))
    ref = runs[base]
    fits = [v.board for v in board_verdicts(graph, resolve_boards("all")) if v.fits]
    return {"step": name, "predicted": {"head": pred.head, "tail": pred.tail,
                                        "total": pred.total, "min_arena": pred.min_arena},
            "measured": run["measured"], "mac_overhead_pct": round(100 * (macs - base_macs)
                                                                   / base_macs, 2),
            "flash_delta": len(data) - len(base),
            "outputs_equal": bool(np.array_equal(run["tflm"], ref["tflm"])
                                  and np.array_equal(run["litert"], ref["litert"])),
            "fits": fits}


def bench_model(label: str, path: Path, inputs: int, max_overhead: float) -> dict:
    base = path.read_bytes()
    x = _inputs(base, inputs)
    runs: dict = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_row("as exported", base, base, runs, x, Path(tmp))]
        for name, options in STEPS.items():
            options = OptimizeOptions(options.reorder, options.patch, options.offline_plan,
                                      max_overhead)
            result = optimize(base, options)
            row = _row(name, result.data, base, runs, x, Path(tmp))
            row["applied"] = [s.name for s in result.steps if s.applied]
            row["plan"] = next((s.details.get("plan") for s in result.steps
                                if s.applied and "plan" in s.details), None)
            rows.append(row)
    return {"model": label, "inputs": inputs, "rows": rows,
            "seconds": round(time.perf_counter() - start, 1)}


def render(doc: dict) -> str:
    lines = ["# TFLite Micro arena before and after the memory optimiser", "",
             f"{doc['date']} on {doc['host']}; {doc['inputs']} seeded inputs per version, "
             f"outputs compared with the unoptimised model in TFLM and LiteRT's reference kernels; "
             f"patch plans within {100 * doc['max_mac_overhead']:g} % extra MACs. "
             "Measured = the real TFLM interpreter's arena (head + tail).", "",
             "| model | step | measured head | tail | total | = predicted | +MACs | flash Δ B | "
             "outputs equal | fits |", "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for model in doc["models"]:
        for row in model["rows"]:
            m, p = row["measured"], row["predicted"]
            lines.append(f"| {model['model']} | {row['step']} | {m['head']:,} | {m['tail']:,} | "
                         f"{m['total']:,} | {'yes' if p['total'] == m['total'] else 'NO'} | "
                         f"{row['mac_overhead_pct']:.1f} % | {row['flash_delta']:+,} | "
                         f"{'yes' if row['outputs_equal'] else 'NO'} | "
                         f"{', '.join(row['fits']) or '—'} |")
    return "\n".join(lines) + "\n"


def plot_per_op(path: Path, out: Path, max_overhead: float) -> None:
    """Arena needed at each op (live activations + the persistent tail) of a model before and
    after patching, over the fraction of MACs done (the two have different op counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = path.read_bytes()
    patched = optimize(base, STEPS["all (as tinyexport --board applies them)"]).data
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, data in (("as exported", base), ("patched", patched)):
        pred = arena.predict(parse_graph(data))
        macs = np.cumsum([r.macs for r in pred.ops]) / max(1, sum(r.macs for r in pred.ops))
        need = [(r.live_bytes + r.scratch_bytes + pred.tail) / 1024 for r in pred.ops]
        ax.step(100 * macs, need, where="post",
                label=f"{label}: peak {max(pred.total, pred.min_arena) / 1024:.0f} KiB")
    for name in ("stm32f746", "stm32f412"):
        board = BOARDS.get(name)
        ax.axhline(board.sram_bytes / 1024, ls="--", lw=1, color="grey")
        ax.text(1, board.sram_bytes / 1024, f" {name} SRAM", va="bottom", fontsize=8)
    ax.set_xlabel("MACs done (%)")
    ax.set_ylabel("arena needed at the op (KiB)")
    ax.set_title(f"TFLM arena per op: {path.parent.name}, before and after patching")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MCU_ZOO))
    p.add_argument("--tflite", nargs="*", type=Path, default=list(OTHER_MODELS))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_memory")
    p.add_argument("--inputs", type=int, default=16)
    p.add_argument("--max-mac-overhead", type=float, default=0.30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    paths = [(name, export_zoo(name, args.work)) for name in args.models]
    paths += [(path.stem, path) for path in args.tflite]
    models = []
    for label, path in paths:
        models.append(bench_model(label, path, args.inputs, args.max_mac_overhead))
        print(f"{label}: {models[-1]['seconds']} s", flush=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "host": f"{platform.machine()}, "
           f"{platform.python_version()}", "inputs": args.inputs,
           "max_mac_overhead": args.max_mac_overhead, "models": models}
    write_results(args.out, "memory_results", doc, render(doc))
    if "mcunet-in3" in args.models:
        plot_per_op(args.work / "mcunet-in3" / "model_int8.tflite",
                    args.out / "memory_mcunet-in3.png", args.max_mac_overhead)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

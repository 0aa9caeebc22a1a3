"""Patch-based inference in stock TFLite Micro: searched plans, predicted vs measured arena, bit-exactness.

    .venv/bin/python benchmarks/bench_patching.py MODEL.tflite [...] [--max-mac-overhead 0.30] \
        [--inputs 64] [--frontier-inputs 2] [--budgets 327680 262144 ...] [--save-dir DIR]

For each model, :func:`tinyexport.firmware_eval.patch_search.search_patch_plans` evaluates plans
with the arena predictor; every frontier plan, the best single prefix stage and the chosen plan
are then built and run in the real TFLM interpreter (measured head / tail / total). The chosen
plan is compared with the unpatched model on ``--inputs`` seeded int8 inputs, in TFLM and in
LiteRT's reference kernels, bit for bit, and its smallest working ``arena_size`` is bisected; the
other rows are checked on ``--frontier-inputs`` inputs (TFLM).
Writes benchmarks/results/patching_results.json and patching_results.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from tinyexport.benchmarks.publish import write_results
from tinyexport.firmware_eval import patch_search, patching
from tinyexport.firmware_eval.tflm_measurement import bit_exactness
from tinyexport.firmware_eval.tflm_runner import TflmFailure, min_arena, run_litert_ref, run_tflm
from tinyexport.tflite_graph.reader import parse_graph

RESULTS = Path(__file__).resolve().parent / "results"
RUN_ARENA = 4 << 20  # arena_size for the measuring runs: above every model here


def _inputs(data: bytes, count: int) -> np.ndarray:
    graph = parse_graph(data)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    return np.random.default_rng(0).integers(-128, 128, (count, *shape), np.int8)


def _plan_dict(row: patch_search.PlanRow) -> dict:
    return {"label": row.label, "stages": [vars(p) for p in row.plan],
            "predicted": {"head": row.head, "tail": row.tail, "total": row.total,
                          "min_arena": row.min_arena},
            "macs": row.macs, "mac_overhead_pct": round(row.mac_overhead, 2),
            "flash_delta": row.flash_delta, "ops": row.ops}


def _measure(data: bytes, row: patch_search.PlanRow, x: np.ndarray, reference: dict,
             litert: bool, tmp: Path) -> dict:
    """Build ``row``'s model, run TFLM (and LiteRT reference kernels) on ``x``, compare."""
    out = _plan_dict(row)
    path = tmp / "patched.tflite"
    path.write_bytes(patching.patch_model(data, row.plan) if row.plan else data)
    try:
        run = run_tflm(path, x, arena_size=RUN_ARENA)
        out["measured"] = {"head": run.head, "tail": run.tail, "total": run.total}
        out["tflm_vs_unpatched"] = bit_exactness(reference["tflm"][:len(x)], run.outputs)
        if litert:
            out["litert_vs_unpatched"] = bit_exactness(reference["litert"][:len(x)],
                                                       run_litert_ref(path, x))
            found = min_arena(path, x[:1], run.outputs[:1], start=row.min_arena)
            out["measured"]["min_arena"] = found.min_arena
    except TflmFailure as exc:
        out["error"] = str(exc)
    return out


def bench(path: Path, max_overhead: float, n_inputs: int, frontier_inputs: int,
          save_dir: Path | None = None) -> dict:
    """One model: the search, then the measured frontier / prefix / chosen rows."""
    data = path.read_bytes()
    found = patch_search.search_patch_plans(data, max_mac_overhead=max_overhead)
    x = _inputs(data, n_inputs)
    reference = {"tflm": run_tflm(path, x, arena_size=RUN_ARENA).outputs,
                 "litert": run_litert_ref(path, x)}
    limit = 100.0 * max_overhead + 1e-9
    prefix = min((r for r in found.rows if len(r.plan) == 1 and r.plan[0].start == 0
                  and r.mac_overhead <= limit), key=lambda r: r.min_arena, default=None)
    result = {"model": path.name, "model_bytes": len(data), "max_mac_overhead": max_overhead,
              "plans_evaluated": len(found.rows), "inputs": n_inputs}
    with tempfile.TemporaryDirectory() as tmp:
        base = _measure(data, found.baseline, x[:frontier_inputs], reference, False, Path(tmp))
        result["baseline"] = base
        result["frontier"] = [_measure(data, r, x[:frontier_inputs], reference, False, Path(tmp))
                              for r in found.frontier]
        result["best_prefix"] = prefix and _measure(data, prefix, x[:frontier_inputs],
                                                    reference, False, Path(tmp))
        result["chosen"] = found.chosen and _measure(data, found.chosen, x, reference, True,
                                                     Path(tmp))
    if save_dir is not None and found.chosen is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / f"{path.stem}_patched.tflite").write_bytes(
            patching.patch_model(data, found.chosen.plan))
    return result


def _cells(r: dict, budget: int | None) -> str:
    p, m = r["predicted"], r.get("measured", {})
    meas = lambda k: f"{m[k]:,}" if k in m else "error"  # noqa: E731
    exact = [f"{k.split('_')[0]} {'yes' if v['equal'] else 'NO'} ({v['values']:,})"
             for k, v in r.items() if k.endswith("_vs_unpatched")]
    fits = "" if budget is None or "total" not in m else (
        " (fits)" if m["total"] <= budget else " (over)")
    if m.get("min_arena") is not None:
        fits += f", min arena {m['min_arena']:,}"
    return (f"{r['label']} | {p['head']:,} | {meas('head')} | {p['tail']:,} | {meas('tail')} | "
            f"{p['total']:,} | {meas('total')}{fits} | {r['macs']:,} | "
            f"{r['mac_overhead_pct']:.1f} | {r['flash_delta']:+,} | {'; '.join(exact) or '-'}")


def table(results: list[dict], budgets: list[int | None]) -> str:
    head = ("| model | row | plan | pred head | meas head | pred tail | meas tail | pred total | "
            "meas total | MACs | MAC +% | flash Δ B | outputs = unpatched (values) |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for res, budget in zip(results, budgets, strict=True):
        rows = [("baseline", res["baseline"]), *(("frontier", r) for r in res["frontier"])]
        rows += [(k, res[k]) for k in ("best_prefix", "chosen") if res[k]]
        lines += [f"| {res['model']} | {kind} | {_cells(r, budget)} |" for kind, r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--max-mac-overhead", type=float, default=0.30)
    parser.add_argument("--inputs", type=int, default=64,
                        help="seeded int8 inputs for the chosen plan's bit-exactness check")
    parser.add_argument("--frontier-inputs", type=int, default=2,
                        help="inputs for the other measured rows (arena and a quick check)")
    parser.add_argument("--budgets", type=int, nargs="*", default=None,
                        help="arena budget in bytes per model (e.g. 327680 for 320 KB)")
    parser.add_argument("--save-dir", type=Path, default=None,
                        help="also write each chosen patched model there")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    budgets = args.budgets or [None] * len(args.models)
    if len(budgets) != len(args.models):
        parser.error(f"--budgets has {len(budgets)} values for {len(args.models)} models")
    results = [bench(p, args.max_mac_overhead, args.inputs, args.frontier_inputs, args.save_dir)
               for p in args.models]
    for res, budget in zip(results, budgets, strict=True):
        res["budget"] = budget
    write_results(args.out, "patching_results", results, table(results, budgets))
    print(table(results, budgets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``tinyreport FILE.tflite``: per-op table, predicted (and measured) TFLM arena, lower bound,
greedy vs our plan, flash, runtime-code estimate and board verdicts; JSON and a plan plot.

The argparse side lives in ``tinyexport.benchmarks.report_cli``; :func:`run_tflite_report` takes
plain values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinyexport.atomic import atomic_path
from tinyexport.errors import UserError
from tinyexport.firmware_eval import planner
from tinyexport.firmware_eval.analysis import Analysis, analyse, arena_dict
from tinyexport.firmware_eval.check import load, runtime_blockers
from tinyexport.firmware_eval.measure import check_labels, measure, prepare_inputs, top1
from tinyexport.firmware_eval.verdicts import (
    RUNTIME_BASIS,
    board_names,
    board_verdicts,
    runtime_estimate,
)
from tinyexport.tflite_graph.reader import Graph


def load_images_file(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from ``.npy`` (images only) or ``.npz`` (``images`` [+ ``labels``]):
    NHWC, int8 (used as they are) or float (quantized with the model's input scale / zero point)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--images {path!r} does not exist")
    try:
        data = np.load(file, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types on bad files
        raise UserError(f"--images {path!r} is not a readable .npy / .npz file ({exc})") from None
    if isinstance(data, np.ndarray):
        return data, None
    with data:
        if "images" not in data.files:
            raise UserError(f"--images {path!r} has arrays {data.files}; it needs 'images' "
                            "(NHWC) and optionally 'labels' (class ids)")
        return data["images"], (data["labels"] if "labels" in data.files else None)


def build_report(path: str, boards: str | Sequence[str] | None = None, do_measure: bool = False,
                 images: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict:
    """The report as a JSON-serialisable dict. ``images`` / ``labels``: what TFLM runs with
    ``do_measure`` (seeded uniform int8 when None); top-1 is reported when labels are given."""
    graph = load(path)
    ana = analyse(graph)
    pred = ana.prediction
    report = {
        "model": str(path), "model_bytes": graph.model_bytes,
        "arena": arena_dict(pred), "min_arena": pred.min_arena, "lower_bound": pred.lower_bound,
        "linear_planner": pred.linear,
        "plans": {"greedy_head": ana.plan.greedy_head, "our_head": ana.plan.head,
                  "our_ordering": ana.plan.ordering, "our_optimal": ana.plan.optimal},
        "runtime_code_bytes": {"value": runtime_estimate(graph), "basis": RUNTIME_BASIS},
        "ops": [{"index": r.index, "op": r.opcode, "inputs": r.in_shapes,
                 "outputs": r.out_shapes, "macs": r.macs, "live_bytes": r.live_bytes,
                 "scratch_bytes": r.scratch_bytes} for r in pred.ops],
        "boards": board_verdicts(graph, board_names(boards)),
    }
    blockers = runtime_blockers(graph)
    if blockers and not do_measure:
        report["errors"] = [f"TFLM would fail: {b}" for b in blockers]
    if do_measure:
        x = prepare_inputs(graph, images)
        result = measure(Path(path), graph, x, pred.total, pred.min_arena)
        outputs = result.pop("outputs", None)
        report.update(result)
        report["inputs"] = {"count": len(x), "source": "synthetic" if images is None else "file"}
        if outputs is not None and labels is not None:
            report["top1"] = top1(graph, outputs, labels)
    return report


def render(report: dict) -> str:
    """Human-readable tables."""
    lines = [f"{'#':>3} {'op':18s} {'in':>18s} {'out':>18s} {'MACs':>11s} {'live B':>9s}"]
    for r in report["ops"]:
        shp = lambda s: "x".join(map(str, s[0])) if s else "-"  # noqa: E731
        lines.append(f"{r['index']:>3} {r['op'][:18]:18s} {shp(r['inputs']):>18s} "
                     f"{shp(r['outputs']):>18s} {r['macs']:>11,} {r['live_bytes']:>9,}")
    a, p = report["arena"], report["plans"]
    lines += ["", f"arena predicted: head {a['head']:,} + tail {a['tail']:,} = {a['total']:,} B"]
    if report.get("min_arena", 0) > a["total"]:  # planning temp > head (arena.planning_peak)
        lines[-1] += f"; min arena_size {report['min_arena']:,} (tflite-micro#2738)"
    if "measured" in report:
        m = report["measured"]
        lines.append(f"arena measured:  head {m['head']:,} + tail {m['tail']:,} = "
                     f"{m['total']:,} B; min arena_size {m['min_arena']}")
    if "top1" in report:
        lines.append(f"TFLM top-1 on {report['inputs']['count']} labelled images: "
                     f"{report['top1']:.2%}")
    if "bit_exact" in report:
        b = report["bit_exact"]
        lines.append(f"TFLM vs LiteRT reference kernels: {b['mismatches']}/{b['values']} values "
                     f"differ (max {b['max_abs_diff']})")
        first = b.get("first_difference")
        if first:
            lines.append(f"  first differing op: #{first['op']} {first['opcode']} "
                         f"({first['mismatches']}/{first['values']} values, max "
                         f"{first['max_abs_diff']} LSB)")
    lines += [f"lower bound (live set): {report['lower_bound']:,} B; linear planner "
              f"{report['linear_planner']:,} B",
              f"head: TFLM greedy {p['greedy_head']:,} B, our plan {p['our_head']:,} B "
              f"({p['our_ordering']}{', optimal' if p['our_optimal'] else ''})",
              f"flash: model {report['model_bytes']:,} B + runtime "
              f"~{report['runtime_code_bytes']['value']:,} B "
              f"({report['runtime_code_bytes']['basis']})"]
    for v in report["boards"]:
        lines.append(f"{v['board']:14s} {'fits' if v['fits'] else 'DOES NOT FIT':12s} "
                     f"SRAM {v['sram_needed']:,}/{v['sram_budget']:,} (margin "
                     f"{v['sram_margin']:,}), flash {v['flash_needed']:,}/{v['flash_budget']:,} "
                     f"(margin {v['flash_margin']:,})")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    lines += [f"error: {e}" for e in report.get("errors", [])]
    return "\n".join(lines)


def plot_plan(graph: Graph, ana: Analysis, out: str) -> None:
    """Memory-plan timeline: each buffer a box over op index (x) x arena offset (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    buffers = planner.buffers_for(graph, ana.prediction.scratch)
    offsets = planner.greedy_plan(buffers)
    fig, ax = plt.subplots(figsize=(10, 5))
    for b, o in zip(buffers, offsets, strict=True):
        color = "tab:orange" if b.key.startswith("s") else "tab:blue"
        ax.add_patch(Rectangle((b.first - 0.4, o), b.last - b.first + 0.8, b.size,
                               facecolor=color, edgecolor="black", alpha=0.6))
    ax.axhline(ana.prediction.lower_bound, color="red", ls="--", label="live-set lower bound")
    ax.axhline(ana.prediction.head, color="black", ls=":", label="greedy head")
    ax.set_xlim(-1, len(graph.ops) + 1)
    ax.set_ylim(0, max(ana.prediction.head, 1) * 1.05)
    ax.set_xlabel("op index (scope)")
    ax.set_ylabel("arena offset (bytes)")
    ax.set_title(f"TFLM greedy plan: head {ana.prediction.head:,} B")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_tflite_report(target: str, *, boards: Sequence[str] | None = None,
                      run_tflm: bool = False, images_path: str | None = None,
                      plot_path: str | None = None, as_json: bool = False) -> int:
    """Print the report of the model ``target`` (``tinyreport FILE.tflite``); 1 if it has errors.

    Args:
        boards: board names (or ``all``) for fit verdicts.
        run_tflm: also run TFLite Micro and LiteRT's reference kernels (``--measure``).
        images_path: ``.npy`` / ``.npz`` images (and labels) TFLM runs; needs ``run_tflm``.
        plot_path: write the memory-plan timeline PNG there.
        as_json: print JSON instead of tables.
    Raises:
        UserError: bad model, images file or labels.
    """
    images = labels = None
    if images_path:
        if not run_tflm:
            raise UserError("--images is what TFLite Micro runs: add --measure")
        images, labels = load_images_file(images_path)
        if labels is not None:
            check_labels(load(target), labels, len(images))
    report = build_report(target, boards, run_tflm, images, labels)
    if plot_path:
        graph = load(target)
        plot_plan(graph, analyse(graph), plot_path)
    print(json.dumps(report, indent=2, default=list) if as_json else render(report))
    return 1 if report.get("errors") else 0

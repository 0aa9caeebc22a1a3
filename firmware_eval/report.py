"""``tinyreport FILE.tflite``: per-op table, predicted (and measured) TFLM arena, lower bound,
greedy vs our plan, flash, runtime-code estimate and board verdicts; JSON and a plan plot.

The argparse side lives in ``tinyexport.benchmarks.report_cli``; :func:`run_tflite_report` takes
plain values. :func:`build_report` returns a frozen :class:`TfliteReport`, rendered by attribute
and made JSON only at the edge (``--json``: ``tinyexport.json_record.to_record``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tinyexport.atomic import atomic_path
from tinyexport.boards import Board, Verdict
from tinyexport.errors import UserError, printable
from tinyexport.firmware_eval import planner
from tinyexport.firmware_eval.arena import ArenaPrediction
from tinyexport.firmware_eval.arena_analysis import Analysis, analyse, arena_dict
from tinyexport.firmware_eval.emulate import emulate_cores, emulation_lines
from tinyexport.firmware_eval.emulation_summary import EmulationSummary
from tinyexport.firmware_eval.tflm_measurement import check_labels, measure, prepare_inputs, top1
from tinyexport.firmware_eval.tflm_readiness import load, load_verified, runtime_blockers
from tinyexport.firmware_eval.verdicts import (
    RUNTIME_BASIS,
    board_verdicts,
    check_consistent,
    firmware_graph,
    fit_exit_code,
    runtime_estimate,
    verdict_lines,
)
from tinyexport.json_record import OMIT_NONE, to_record
from tinyexport.safe_io import check_finite, read_array_file, short_repr
from tinyexport.tflite_graph.reader import Graph

__all__ = ["load_images_file", "OpRow", "HeadPlans", "RuntimeCode", "InputsUsed", "TfliteReport",
           "build_report", "render", "PlotSummary", "draw_board_lines",
           "finish_plot", "plot_plan", "run_tflite_report"]

_log = logging.getLogger(__name__)


MAX_IMAGES = 10_000  # --images: TFLM runs each (reference kernels: ~0.1 s a zoo image)


def load_images_file(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from ``.npy`` (images only) or ``.npz`` (``images`` [+ ``labels``]):
    NHWC, int8 (used as they are) or float (quantized with the model's input scale / zero point).
    Read through :func:`tinyexport.safe_io.read_array_file` (sizes bounded before allocation); at most
    :data:`MAX_IMAGES` images, float images finite."""
    arrays = read_array_file(path, "--images file")
    if "" in arrays:
        images, labels = arrays[""], None
    elif "images" not in arrays:
        raise UserError(f"--images {path!r} has arrays {short_repr(sorted(arrays))}; it needs "
                        "'images' (NHWC) and optionally 'labels' (class ids)")
    else:
        images, labels = arrays["images"], arrays.get("labels")
    if images.ndim < 2 or not 1 <= len(images) <= MAX_IMAGES:
        raise UserError(f"--images {path!r}: images have shape {short_repr(images.shape)}; pass "
                        f"1..{MAX_IMAGES} images shaped like the model's input (N, H, W, C)")
    check_finite(images, f"--images {path!r}")
    return images, labels


@dataclass(frozen=True)
class OpRow:
    """One op of the per-op table: shapes, MACs, live and scratch bytes while it runs."""

    index: int
    op: str
    inputs: list
    outputs: list
    macs: int
    live_bytes: int
    scratch_bytes: int


@dataclass(frozen=True)
class HeadPlans:
    """The arena head as TFLM's greedy planner places it and as our plan does."""

    greedy_head: int
    our_head: int
    our_ordering: str
    our_optimal: bool


@dataclass(frozen=True)
class RuntimeCode:
    """The flash the TFLM runtime takes besides the model, and where the figure comes from."""

    value: int
    basis: str


@dataclass(frozen=True)
class InputsUsed:
    """What TFLM ran on with ``--measure``: how many inputs, ``synthetic`` or from a ``file``."""

    count: int
    source: str


@dataclass(frozen=True, kw_only=True)
class TfliteReport:
    """``tinyreport FILE.tflite`` (:func:`build_report`), in the order of its ``--json`` record.
    ``emulated``: core -> QEMU run; ``errors``: why TFLM would fail (static) or what failed
    (``--measure``, with ``measured``, ``notes``, ``bit_exact``, ``inputs``, ``top1``)."""

    model: str
    model_bytes: int
    arena: dict
    min_arena: int
    lower_bound: int
    linear_planner: int
    plans: HeadPlans
    runtime_code_bytes: RuntimeCode
    ops: tuple[OpRow, ...]
    boards: tuple[Verdict, ...]
    emulated: dict[str, EmulationSummary] | None = field(default=None, metadata=OMIT_NONE)
    firmware_model_bytes: int
    errors: list[str] | None = field(default=None, metadata=OMIT_NONE)
    measured: dict | None = field(default=None, metadata=OMIT_NONE)
    notes: list[str] | None = field(default=None, metadata=OMIT_NONE)
    bit_exact: dict | None = field(default=None, metadata=OMIT_NONE)
    inputs: InputsUsed | None = field(default=None, metadata=OMIT_NONE)
    top1: float | None = field(default=None, metadata=OMIT_NONE)


def _firmware_model_text(report: TfliteReport) -> str:
    linked, size = report.firmware_model_bytes, report.model_bytes
    if linked == size:
        return f"{size:,} B"
    return f"{linked:,} B as the firmware links it (TFLM-compacted; the file is {size:,} B)"


def build_report(path: str, boards: Sequence[Board] = (), do_measure: bool = False,
                 images: np.ndarray | None = None, labels: np.ndarray | None = None,
                 verify: bool = True, emulate: Sequence[str] = ()) -> TfliteReport:
    """The report (``to_record`` makes it the ``--json`` record). ``images`` / ``labels``: what
    TFLM runs with ``do_measure`` (seeded uniform int8 when None); top-1 is reported when labels
    are given. ``verify``: also run LiteRT's flatbuffer verifier in a child
    (:func:`check.load_verified`); the static checks of :func:`check.load` always run.
    ``emulate``: cores (``cortex-m4``, ``cortex-m7``) to build and run the model on in QEMU with
    CMSIS-NN; their measured flash and SRAM replace the runtime-code estimate and the verdicts of
    boards with that core.

    Raises:
        UserError: the file is not a valid int8 TFLite model (one message, its first problem).
    """
    graph = load_verified(path) if verify else load(path)
    analysis = analyse(graph)
    pred = analysis.prediction
    emulated = emulate_cores(path, list(emulate)) if emulate else None
    firmware = firmware_graph(Path(path).read_bytes(), graph)
    report = TfliteReport(
        **_static_figures(path, graph, analysis), runtime_code_bytes=_runtime_code(graph, emulated, emulate),
        boards=tuple(board_verdicts(firmware, boards, emulated)), emulated=emulated or None,
        firmware_model_bytes=firmware.model_bytes)
    blockers = runtime_blockers(graph)
    if blockers and not do_measure:
        report = replace(report, errors=[f"TFLM would fail: {b}" for b in blockers])
    if do_measure:
        report = _measured(report, path, graph, pred, images, labels)
    check_consistent(pred.head, pred.lower_bound, report.bit_exact)
    return report


def _static_figures(path: str, graph: Graph, analysis: Analysis) -> dict:
    """The report's fields read from the flatbuffer alone."""
    pred = analysis.prediction
    return {"model": str(path), "model_bytes": graph.model_bytes, "arena": arena_dict(pred),
            "min_arena": pred.min_arena, "lower_bound": pred.lower_bound,
            "linear_planner": pred.linear,
            "plans": HeadPlans(analysis.plan.greedy_head, analysis.plan.head,
                               analysis.plan.ordering, analysis.plan.optimal),
            "ops": tuple(OpRow(r.index, r.opcode, r.in_shapes, r.out_shapes, r.macs,
                               r.live_bytes, r.scratch_bytes) for r in pred.ops)}


def _runtime_code(graph: Graph, emulated: dict[str, EmulationSummary] | None,
                  emulate: Sequence[str]) -> RuntimeCode:
    """The runtime's flash: measured in the first emulated core's firmware, else estimated."""
    if not emulated:
        return RuntimeCode(runtime_estimate(graph), RUNTIME_BASIS)
    first = emulated[emulate[0]]
    return RuntimeCode(first.flash_bytes - first.flash["model"],
                       f"measured: {first.core} firmware in QEMU, model array excluded")


def _measured(report: TfliteReport, path: str, graph: Graph, pred: ArenaPrediction,
              images: np.ndarray | None, labels: np.ndarray | None) -> TfliteReport:
    """The report with TFLM's run on ``images`` (seeded inputs when None)."""
    x = prepare_inputs(graph, images)
    result = measure(Path(path), graph, x, pred.total, pred.min_arena)
    labelled = result.outputs is not None and labels is not None
    return replace(report, errors=result.errors, measured=result.measured, notes=result.notes,
                   bit_exact=result.bit_exact,
                   inputs=InputsUsed(len(x), "synthetic" if images is None else "file"),
                   top1=top1(graph, result.outputs, labels) if labelled else None)


def render(report: TfliteReport) -> str:
    """Human-readable tables."""
    lines = [f"{'#':>3} {'op':18s} {'in':>18s} {'out':>18s} {'MACs':>11s} {'live B':>9s}"]
    for r in report.ops:
        shp = lambda s: "x".join(map(str, s[0])) if s else "-"  # noqa: E731
        lines.append(f"{r.index:>3} {r.op[:18]:18s} {shp(r.inputs):>18s} "
                     f"{shp(r.outputs):>18s} {r.macs:>11,} {r.live_bytes:>9,}")
    a, p = report.arena, report.plans
    lines += ["", f"arena predicted: head {a['head']:,} + tail {a['tail']:,} = {a['total']:,} B"]
    if report.min_arena > a["total"]:  # planning temp > head (arena.planning_peak)
        lines[-1] += f"; min arena_size {report.min_arena:,} (tflite-micro#2738)"
    if report.measured is not None:
        m = report.measured
        lines.append(f"arena measured:  head {m['head']:,} + tail {m['tail']:,} = "
                     f"{m['total']:,} B; min arena_size {m['min_arena']}")
    if report.top1 is not None:
        lines.append(f"TFLM top-1 on {report.inputs.count} labelled images: {report.top1:.2%}")
    lines += _bit_exact_lines(report.bit_exact)
    runtime = report.runtime_code_bytes
    lines += [f"lower bound (live set): {report.lower_bound:,} B; linear planner "
              f"{report.linear_planner:,} B",
              f"head: TFLM greedy {p.greedy_head:,} B, our plan {p.our_head:,} B "
              f"({p.our_ordering}{', optimal' if p.our_optimal else ''})",
              f"flash: model {_firmware_model_text(report)} + runtime "
              f"{'' if report.emulated else '~'}{runtime.value:,} B ({runtime.basis})"]
    for run in (report.emulated or {}).values():
        lines += emulation_lines(run)
    for v in report.boards:
        lines += verdict_lines(v, "tinyreport-tflite")
    lines += [f"note: {printable(n, 2000)}" for n in report.notes or []]
    lines += [f"error: {printable(e, 2000)}" for e in report.errors or []]
    return "\n".join(lines)


def _bit_exact_lines(b: dict | None) -> list[str]:
    if b is None:
        return []
    lines = [f"TFLM vs LiteRT reference kernels: {b['mismatches']}/{b['values']} values "
             f"differ (max {b['max_abs_diff']})"]
    first = b.get("first_difference")
    if first:
        lines.append(f"  first differing op: #{first['op']} {first['opcode']} "
                     f"({first['mismatches']}/{first['values']} values, max "
                     f"{first['max_abs_diff']} LSB)")
    return lines


@dataclass(frozen=True)
class PlotSummary:
    """What a written plot shows: the peak bar and one SRAM line per board."""

    path: str
    peak_label: str
    peak_bytes: int
    board_lines: tuple[tuple[str, int], ...]


def draw_board_lines(ax, boards: Sequence[dict]) -> tuple[tuple[str, int], ...]:
    """A dashed horizontal line per board at its SRAM, labelled in the legend (not on the axes,
    where labels of boards with similar SRAM overlap); returns ``(board, bytes)`` per line.
    ``boards``: verdict records (``board``, ``sram_budget``, ``fits``)."""
    lines = tuple((v["board"], int(v["sram_budget"])) for v in boards)
    for k, (v, (name, sram)) in enumerate(zip(boards, lines, strict=True)):
        fits = {True: ", fits", False: ", DOES NOT FIT"}.get(v.get("fits"), "")
        ax.axhline(sram / 1024, linestyle=(0, (4, 2 + k % 3)), linewidth=1.2,
                   color=f"C{(k + 2) % 10}", label=f"{name} SRAM {sram / 1024:,.0f} KiB{fits}")
    return lines


def finish_plot(fig, ax, out: str) -> None:
    """Legend outside the axes (right), save atomically as PNG, log where it went."""
    import matplotlib.pyplot as plt

    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    _log.info("wrote plot %s", out)


def plot_plan(graph: Graph, out: str, boards: Sequence[dict] = (), title: str = "model"
              ) -> PlotSummary:
    """The arena as TFLM lays it out: each planned buffer a box spanning the ops it lives through
    (x, op index) at its offset in the arena (y), activations blue and scratch orange; the
    persistent tail as a band above the head; the peak op annotated, a line per board at its
    SRAM.

    Args:
        boards: board verdicts (:func:`board_verdicts`), one SRAM line each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    analysis = analyse(graph)
    pred = analysis.prediction
    rows = pred.ops
    buffers = planner.buffers_for(graph, pred.scratch, graph.offline_offsets)
    fig, ax = plt.subplots(figsize=(max(8.0, len(rows) * 0.22), 5.2))
    for buf, offset in zip(buffers, pred.offsets, strict=True):
        scratch = buf.key.startswith("s")
        ax.add_patch(Rectangle((buf.first - 0.45, offset / 1024), buf.last - buf.first + 0.9,
                               buf.size / 1024, facecolor="tab:orange" if scratch else "tab:blue",
                               edgecolor="white", linewidth=0.6, alpha=0.85))
    ax.add_patch(Rectangle((-0.5, pred.head / 1024), max(len(rows), 1), pred.tail / 1024,
                           facecolor="0.8", edgecolor="0.5", linewidth=0.6))
    # legend entries for the patches (drawn above without labels, one per buffer)
    ax.bar([0], [0], color="tab:blue", label="activation buffer (op span × arena offset)")
    ax.bar([0], [0], color="tab:orange", label="scratch buffer")
    ax.bar([0], [0], color="0.8", label=f"tail (persistent) {pred.tail:,} B")
    live = [r.live_bytes + r.scratch_bytes for r in rows]
    peak = int(np.argmax(live)) if rows else 0
    peak_label = f"#{rows[peak].index} {rows[peak].opcode}" if rows else "-"
    peak_bytes = int(pred.tail + (live[peak] if rows else 0))
    ax.annotate(f"peak {peak_label}\n{live[peak] if rows else 0:,} B live", (peak, pred.head / 1024),
                xytext=(0, 14), textcoords="offset points", ha="center", fontsize=8,
                arrowprops={"arrowstyle": "->"})
    lines = draw_board_lines(ax, boards)
    ax.axhline(analysis.arena_needed / 1024, color="black", ls=":", lw=1,
               label=f"arena needed {analysis.arena_needed:,} B")
    top = max([analysis.arena_needed, pred.head + pred.tail] + [b for _, b in lines]) / 1024
    ax.set_xlim(-0.5, max(len(rows), 1) - 0.5)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("op index (execution order)")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title(f"{title}: TFLM memory plan, head {pred.head:,} + tail {pred.tail:,} B; peak at "
                 f"{peak_label}")
    finish_plot(fig, ax, out)
    return PlotSummary(out, peak_label, peak_bytes, lines)


def run_tflite_report(target: str, *, boards: Sequence[Board] = (),
                      run_tflm: bool = False, images_path: str | None = None,
                      plot_path: str | None = None, as_json: bool = False,
                      emulate: Sequence[str] = ()) -> int:
    """Print the report of the model ``target`` (``tinyreport FILE.tflite``); 1 if it has errors,
    3 (:data:`tinyexport.errors.EXIT_DOES_NOT_FIT`) if a board's verdict is DOES NOT FIT.

    Args:
        boards: board profiles for fit verdicts.
        run_tflm: also run TFLite Micro and LiteRT's reference kernels (``--measure``).
        images_path: ``.npy`` / ``.npz`` images (and labels) TFLM runs; needs ``run_tflm``.
        plot_path: write the memory-plan timeline PNG there.
        as_json: print JSON instead of tables.
        emulate: cores to run the model on in QEMU (:func:`build_report`).
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
    report = build_report(target, boards, run_tflm, images, labels, emulate=emulate)
    if plot_path:
        plot_plan(load(target), plot_path, to_record(report.boards), Path(target).name)
    print(json.dumps(to_record(report), indent=2, default=list) if as_json else render(report))
    return 1 if report.errors else fit_exit_code(report.boards)

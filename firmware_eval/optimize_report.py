"""``tinyreport FILE.tflite --optimize`` / ``--patch auto``: the memory optimiser and the model
compaction on any int8 model, verified in TFLite Micro, with the steps, the patch-plan frontier,
the bytes each compaction step saved and the optimised, compacted model.

The optimiser (:mod:`optimize`) only predicts; here the original and the optimised model both run
in TFLM and LiteRT's reference kernels on the same inputs, the outputs are compared bit for bit
and the optimised model's arena is measured. The compaction is the export's
(:func:`tinyexport.firmware_eval.evaluate.compact_verified`: each level kept only when TFLM, and
LiteRT for the portable level, give the original outputs bit for bit). Flash figures and board
verdicts count the TFLM-compacted model the firmware links. Files are written only when
confirmed: ``--out X.tflite`` gets the portable model (loads in LiteRT and TFLM), ``X_tflm.tflite``
the TFLM-only one (TFLM only; the firmware's model array).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

from tinyexport.atomic import write_bytes
from tinyexport.boards import Board, Verdict
from tinyexport.errors import UserError
from tinyexport.firmware_eval.arena_analysis import analyse, arena_dict
from tinyexport.firmware_eval.compaction_report import compaction_lines
from tinyexport.firmware_eval.evaluate import compact_verified, seeded_baseline, verify_rewrite
from tinyexport.firmware_eval.optimize import Optimized, OptimizeOptions, needed, optimize
from tinyexport.firmware_eval.report import draw_board_lines, finish_plot
from tinyexport.firmware_eval.tflm_readiness import load_verified, runtime_blockers
from tinyexport.firmware_eval.verdicts import (
    board_verdicts,
    fit_exit_code,
    verdict_lines,
)
from tinyexport.firmware_eval.verified_rewrites import Compaction, RewriteVerification
from tinyexport.json_record import to_record
from tinyexport.tflite_graph.compact import litert_form
from tinyexport.tflite_graph.reader import parse_graph

__all__ = ["VERIFY_INPUTS", "optimize_report", "render", "plot_optimize", "run_optimize_report"]

_log = logging.getLogger(__name__)

VERIFY_INPUTS = 64  # the bar for bit-exactness of a rewrite


def optimize_report(target: str, options: OptimizeOptions, boards: list[Board],
                    out: str | None = None, inputs: int = VERIFY_INPUTS) -> dict:
    """Optimise ``target``, verify it in TFLM / LiteRT-reference on ``inputs`` seeded inputs and
    write it to ``out`` when confirmed. ``boards[0]`` gives the patch budget (``patch="auto"``)."""
    path = Path(target)
    graph = load_verified(path)
    blockers = runtime_blockers(graph)
    if blockers:
        raise UserError(f"{target}: TFLite Micro cannot run this model, so no rewrite could be "
                        f"verified: {blockers[0]}")
    options = options.for_board(boards[0] if boards else None)
    original = path.read_bytes()
    result = optimize(original, options)
    report = {"model": str(path), "options": _options_dict(options), **to_record(result),
              "before": _figures(original, options.isa)}
    report["after"] = _figures(result.data, options.isa)
    report["frontier"] = _frontier(result)
    x, base = seeded_baseline(path, inputs, graph)
    if result.changed:
        report["verification"] = verify_rewrite(path, result.data, x, base)
    confirmed = result.changed and report["verification"].confirmed
    final = result.data if confirmed else original
    compaction, files = _compact(final, x, base)
    report["compaction"] = compaction  # renamed below, once written (the record's key order)
    flash = compaction.firmware_model_bytes
    report["before"]["firmware_model_bytes"] = len(original)
    report["after"]["firmware_model_bytes"] = flash
    report["boards"] = [to_record(v) for v in board_verdicts(
        replace(parse_graph(final), model_bytes=flash), boards)]
    if out:
        report["written"] = _write(out, files, original)
    report["compaction"] = compaction.naming(_linked_name(report.get("written")))
    return report


def _linked_name(written: list[dict] | None) -> str:
    """The file the firmware links, as the report names it: the TFLM-only one when written."""
    if written is None:
        return "not written (--out writes it)"
    return next((w["path"] for w in written if w["level"] == "TFLM-only"),
                written[0]["path"] if written else "not written")


def _options_dict(options: OptimizeOptions) -> dict:
    return {"reorder": options.reorder, "patch": options.patch,
            "offline_plan": options.offline_plan,
            "max_mac_overhead_percent": 100 * options.max_mac_overhead, "budget": options.budget}


def _figures(data: bytes, isa: str | None) -> dict:
    analysis = analyse(parse_graph(data), isa)
    macs = sum(row.macs for row in analysis.prediction.ops)
    return {**arena_dict(analysis.prediction), "needed": needed(data, isa), "macs": macs,
            "model_bytes": len(data)}


def _frontier(result: Optimized) -> list[dict]:
    if result.search is None:
        return []
    chosen = result.search.chosen
    return [{"plan": r.label, "head": r.head, "tail": r.tail, "total": r.total,
             "min_arena": r.min_arena, "mac_overhead_percent": round(r.mac_overhead, 2),
             "flash_delta": r.flash_delta, "chosen": chosen is not None and r.plan == chosen.plan}
            for r in result.search.frontier]


def _compact(data: bytes, x, base) -> tuple[Compaction, dict[str, bytes]]:
    """The export's compaction (:func:`compact_verified`) of ``data`` in a scratch folder: its
    record, and the verified files (level -> bytes) to write."""
    with tempfile.TemporaryDirectory(prefix="tinyreport-compact-") as work:
        model = Path(work) / "model.tflite"
        model.write_bytes(data)
        record = compact_verified(model, x, base)
        files = {"portable": model.read_bytes()}
        firmware = model.with_name("model_tflm.tflite")
        if firmware.is_file():
            files["TFLM-only"] = firmware.read_bytes()
    return record, files


# What each written level loads in (docs/tflm_memory.md §13).
LOADS_IN = {"portable": "loads in LiteRT and TFLM",
            "TFLM-only": "the model array the firmware links; loads in TFLM only (one zero point "
                         "per per-channel weight tensor: LiteRT rejects it)",
            "TFLM-only, no collapsed zero points": "the model array the firmware links; loads in "
                                                   "TFLM and LiteRT (no names or signature defs)"}


def _write(out: str, files: dict[str, bytes], original: bytes) -> list[dict]:
    """``out`` <- the portable model when anything changed (optimised or compacted), ``<out
    stem>_tflm.tflite`` <- the TFLM-only one when verified; one row per file written."""
    paths = {"portable": out if files["portable"] != original else None,
             "TFLM-only": (os.path.splitext(out)[0] + "_tflm.tflite"
                           if "TFLM-only" in files else None)}
    written = []
    for level, path in paths.items():
        if path:
            write_bytes(path, files[level])
            written.append({"path": path, "level": level, "bytes": len(files[level]),
                            "loads_in": LOADS_IN[_loads_key(level, files[level])]})
    return written


def _loads_key(level: str, data: bytes) -> str:
    """A TFLM-only model without one-element zero points still loads in LiteRT."""
    if level == "TFLM-only" and litert_form(data) is data:
        return "TFLM-only, no collapsed zero points"
    return level


def render(report: dict) -> str:
    before, after = report["before"], report["after"]
    lines = [f"memory optimiser on {report['model']}",
             f"  before: head {before['head']:,} + tail {before['tail']:,} = {before['total']:,} B"
             f" (needs {before['needed']:,} B), {before['macs']:,} MACs, "
             f"{before['model_bytes']:,} B model file"]
    for step in report["steps"]:
        mark = f"-{step['saved']:,} B" if step["applied"] else "not applied"
        lines.append(f"  {step['name']:<22} {mark:<14} {step['reason']}")
    lines.append(f"  after:  head {after['head']:,} + tail {after['tail']:,} = {after['total']:,} B"
                 f" (needs {after['needed']:,} B), {after['macs']:,} MACs "
                 f"({_percent(after['macs'], before['macs'])}), {after['model_bytes']:,} B model "
                 f"file ({after['model_bytes'] - before['model_bytes']:+,} B)")
    lines += _verification_lines(report.get("verification"))
    lines += _compaction_table(report.get("compaction"))
    lines.append(f"  flash: the firmware links {after['firmware_model_bytes']:,} B of model "
                 f"({after['firmware_model_bytes'] - before['firmware_model_bytes']:+,} B vs "
                 "the file as given); board verdicts count it")
    lines += _frontier_lines(report["frontier"])
    for v in report["boards"]:
        lines += [f"  {line}" for line in verdict_lines(Verdict.from_record(v),
                                                        "tinyreport-optimize")]
    if "written" in report:
        lines += [f"  wrote {w['path']} ({w['bytes']:,} B, {w['level']}: {w['loads_in']})"
                  for w in report["written"]] or ["  nothing written: no rewrite was kept"]
    return "\n".join(lines)


def _compaction_table(compaction: Compaction | None) -> list[str]:
    """The compaction's summary (:func:`compaction_lines`) with one row per step applied."""
    if compaction is None:
        return []
    steps = [*compaction.portable.applied_steps(), *compaction.tflm.applied_steps()]
    return [*compaction_lines(compaction, indent="  "),
            *(f"    {s.name:<22} -{s.saved_bytes:<12,} x{s.tensors:<4} {s.why}" for s in steps)]


def _percent(value: int, base: int) -> str:
    return f"{100.0 * (value - base) / base:+.1f} %" if base else "n/a"


def _verification_lines(check: RewriteVerification | None) -> list[str]:
    if check is None:
        return []
    measured = check.measured or {}
    return [f"  verified on {check.inputs} inputs: TFLM outputs equal the original's: "
            f"{'yes' if check.outputs_equal_to_original else 'NO'}; LiteRT reference kernels: "
            f"{'yes' if check.litert_reference_equal_to_original else 'NO'}; TFLM measured "
            f"arena {measured.get('total', 'n/a'):,} B (predicted {check.predicted['total']:,})"
            if measured else f"  verification failed: {check.errors}"]


def _frontier_lines(frontier: list[dict]) -> list[str]:
    # The plan label goes last and whole: cut to a column, two plans that differ only at the end
    # (the patched branch's last op, the patch grid) looked identical.
    if not frontier:
        return []
    lines = ["  patch plans on the frontier (no other plan has a lower arena at no more MACs):",
             f"    {'head':>9} {'tail':>9} {'total':>9} {'+MACs':>7} {'flash':>8}  plan"]
    for row in frontier:
        lines.append(f"    {row['head']:>9,} {row['tail']:>9,} {row['total']:>9,} "
                     f"{row['mac_overhead_percent']:>6.1f}% {row['flash_delta']:>+8,}  "
                     f"{row['plan']}" + ("  <- chosen" if row["chosen"] else ""))
    return lines


def plot_optimize(report: dict, path: str) -> None:
    """Frontier of the patch search: predicted arena vs extra MACs, the chosen plan marked and
    each board's SRAM as a line (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["frontier"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["mac_overhead_percent"] for r in rows], [r["total"] / 1024 for r in rows], "o-",
            label="patch plans (frontier)")
    ax.plot([0], [report["before"]["total"] / 1024], "s", color="grey", label="unpatched")
    for r in rows:
        if r["chosen"]:
            ax.plot([r["mac_overhead_percent"]], [r["total"] / 1024], "*", ms=14, color="red",
                    label="chosen: " + "\n".join(textwrap.wrap(r["plan"], 40)))
    draw_board_lines(ax, report["boards"])
    ax.set_xlabel("extra MACs (%)")
    ax.set_ylabel("TFLM arena, predicted (KiB)")
    ax.set_title(f"patch plans: {Path(report['model']).name}")
    finish_plot(fig, ax, path)  # the legend outside the axes, kept whole in the PNG


def run_optimize_report(target: str, options: OptimizeOptions, boards: list[Board],
                        out: str | None, plot_path: str | None, as_json: bool) -> int:
    """Entry point of ``tinyreport FILE.tflite --optimize`` / ``--patch``; 1 if not confirmed,
    3 (:data:`tinyexport.errors.EXIT_DOES_NOT_FIT`) if a board's verdict is DOES NOT FIT."""
    report = optimize_report(target, options, boards, out)
    if plot_path and report["frontier"]:
        plot_optimize(report, plot_path)
    print(json.dumps(to_record(report), indent=2, default=list) if as_json else render(report))
    check = report.get("verification")
    return 1 if check is not None and not check.confirmed else fit_exit_code(report["boards"])


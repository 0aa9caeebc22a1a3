"""``export.json`` (provenance + every check) and ``report.md`` (human summary) of an export."""

from __future__ import annotations

from tinyexport.boards import Verdict
from tinyexport.config import git_sha, package_versions
from tinyexport.export.config import RANDOM_WEIGHTS_WARNING
from tinyexport.export.stage_timer import StageRecord
from tinyexport.export.state import ExportState
from tinyexport.firmware_eval.compaction_report import compaction_lines
from tinyexport.firmware_eval.emulate import emulation_lines
from tinyexport.firmware_eval.emulation_summary import EmulationSummary
from tinyexport.firmware_eval.verdicts import verdict_lines
from tinyexport.firmware_eval.verified_rewrites import Compaction, OptimizeResult
from tinyexport.json_record import to_record
from tinyexport.quantize.int8_checks import db_text
from tinyexport.quantize.layer_report import LayerError, render_layer_table
from tinyexport.train.data import preprocessing_record

__all__ = ["build_provenance", "layer_rows", "render_report", "verdict_records"]


def build_provenance(state: ExportState, stages: list[StageRecord]) -> dict:
    """The export.json document (plain JSON types), written once from the typed stage results."""
    config, loaded, static = state.config, state.loaded, state.static
    doc = {
        "tool": "tinyexport", "git_sha": git_sha(), "package_versions": package_versions(),
        "model": loaded.model_name, "resolution": loaded.resolution,
        "checkpoint": str(config.checkpoint) if config.checkpoint else None,
        "checkpoint_meta": loaded.meta,
        "weights_source": config.weights_source,
        "weights": "trained" if config.checkpoint else "random",
        "warnings": ([RANDOM_WEIGHTS_WARNING] if config.checkpoint is None else [])
        + state.warnings,
        "preprocessing": preprocessing_record(loaded.preprocessing),
        "calibration": state.calibration,
        "data_source": config.data_source,
        "classifier": state.classifier,
        "quantization": {"weights": "per-channel" if config.per_channel else "per-tensor",
                         "input": static.input, "output": static.output},
        "artifacts": state.artifacts,
        "op_histogram": static.op_histogram,
        "checks": {s.name: {"status": s.status, "seconds": round(s.seconds, 3), **s.details}
                   for s in stages},
        "evaluation": state.evaluation,
        "gate": state.gate,
        "quant_report": state.layers,
        "firmware": _firmware_record(state),
        "total_seconds": round(sum(s.seconds for s in stages), 3),
    }
    return to_record(doc)


def _firmware_record(state: ExportState) -> dict:
    """export.json's ``firmware``: the stage's result, with ``boards`` (every requested board's
    verdict) when more than one board was asked for."""
    if state.firmware is None:
        return {"status": "skipped: disabled"}
    record = to_record(state.firmware)
    if len(state.verdicts) > 1:
        record["boards"] = to_record(list(state.verdicts))
    return record


def verdict_records(firmware: dict) -> list[dict]:
    """The board verdicts of export.json's ``firmware`` record (one per requested board)."""
    return firmware.get("boards") or ([firmware["board"]] if firmware.get("board") else [])


def _firmware_lines(firmware: dict) -> list[str]:
    if "arena" not in firmware:
        return [f"- firmware: {firmware.get('status', 'not run')}"]
    arena, measured = firmware["arena"], firmware.get("measured") or {}
    lines = [f"- TFLite Micro arena: {arena['total']:,} B predicted (activations {arena['head']:,} "
             f"+ persistent {arena['tail']:,}); measured {_bytes(measured.get('total'))}; "
             f"smallest arena that allocates: {_bytes(firmware.get('min_arena'))}"]
    lines += [f"- TFLite Micro problem: {p}" for p in firmware.get("errors") or []]
    optimization = firmware.get("optimization")
    for step in (optimization and OptimizeResult.from_record(optimization).steps) or ():
        lines.append(f"- memory optimiser, {step.name}: "
                     + (f"applied, -{step.saved:,} B ({step.reason})" if step.applied
                        else f"not applied ({step.reason})"))
    compaction = firmware.get("compaction")
    lines += compaction_lines(compaction and Compaction.from_record(compaction), indent="- ")
    for run in (firmware.get("emulation") or {}).values():  # product flash, what the harness adds
        first, *rest = emulation_lines(EmulationSummary.from_record(run))
        lines += [f"- {first}", *(f"  - {line.strip()}" for line in rest)]
    for record in verdict_records(firmware):
        lines += verdict_lines(Verdict.from_record(record), "report.md")
    return lines


def _bytes(value: int | None) -> str:
    return f"{value:,} B" if isinstance(value, int) else "not measured"


def layer_rows(doc: dict) -> list[LayerError]:
    """The per-layer int8 error rows of an export.json document, worst first."""
    return [LayerError(r["tensor"], r["op"], tuple(r["shape"]), r["sqnr_db"], r.get("module", ""))
            for r in doc.get("quant_report") or []]


def render_report(doc: dict) -> str:
    """report.md: stages with times, artifact sizes, checks, warnings."""
    lines = [f"# tinyexport: {doc['model']} @ {doc['resolution']} px, full int8", ""]
    lines += [f"> **WARNING**: {w}" for w in doc["warnings"]] + [""] if doc["warnings"] else []
    lines += ["| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {c['status']} | {c['seconds']:.1f} |"
              for name, c in doc["checks"].items()]
    lines += [f"| **total** | | **{doc['total_seconds']:.1f}** |", "",
              "| artifact | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {n} | {a['bytes']:,} | `{a['sha256'][:16]}…` |"
              for n, a in doc["artifacts"].items()]
    q = doc["quantization"]
    lines += ["", f"- input: {q['input']['dtype']} {q['input']['shape']} scale "
              f"{q['input']['scale']:.6g} zero point {q['input']['zero_point']}",
              f"- output: {q['output']['dtype']} {q['output']['shape']} scale "
              f"{q['output']['scale']:.6g} zero point {q['output']['zero_point']}",
              f"- weights: {q['weights']}",
              "- ops: " + ", ".join(f"{k} {v}" for k, v in doc["op_histogram"].items())]
    lines += _check_lines(doc)
    lines += _adapter_lines((doc.get("checkpoint_meta") or {}).get("adapter_inference"))
    return "\n".join(lines) + "\n"


def _adapter_lines(cost: dict | None) -> list[str]:
    """TinyTL checkpoints: what the lite residual adapters add at inference (int8 bytes)."""
    if not cost:
        return []
    added = cost["added"]
    return ["", f"- TinyTL adapters ({cost['adapters']}): +{added['params']:,} params, "
            f"+{added['macs']:,} MACs, +{added['weight_bytes_int8']:,} B int8 weights, peak "
            f"activation {cost['peak_activation_bytes_base']:,} → "
            f"{cost['peak_activation_bytes_adapted']:,} B ({cost['convention']})"]


def _check_lines(doc: dict) -> list[str]:
    c = doc["checks"]
    lines = ["", "## Checks"]
    fuse, onnx, tfl, int8 = (c.get(k, {}) for k in ("Conv+BN fusion", "ONNX export",
                                                    "onnx2tf float TFLite", "int8 checks"))
    if fuse:
        lines.append(f"- fusion: {fuse.get('pairs')} Conv+BN pairs, max |diff| "
                     f"{fuse.get('max_abs_diff', 0):.3g} (tol {fuse.get('tolerance', 0):.3g})")
    for label, rec in (("ONNX Runtime vs torch", onnx), ("float TFLite vs ONNX Runtime", tfl)):
        if rec:
            lines.append(f"- {label}: max |diff| {rec.get('max_abs_diff', 0):.3g} "
                         f"(tol {rec.get('tolerance', 0):.3g})")
    if int8:
        lines.append(f"- int8: TFLM ops only, no TRANSPOSE / float compute, int8 I/O: "
                     f"{'pass' if int8['static']['passed'] else 'FAIL'}; vs fp32 on {int8['images']} "
                     f"images: top-1 agreement {int8['top1_agreement']:.1%}, SQNR "
                     f"{db_text(int8['sqnr_db'])} dB; LiteRT reference kernels ran "
                     f"(max {int8['max_lsb_diff_ref_vs_default']} LSB vs default kernels)")
    if doc.get("evaluation"):
        top1 = doc["evaluation"]["top1"]
        lines.append("- top-1 on " + doc["evaluation"]["data"]["spec"] + ": "
                     + ", ".join(f"{k} {v:.2%}" for k, v in top1.items()))
    gate = doc.get("gate")
    if gate:
        lines.append(f"- int8 gate ({gate['basis']}): "
                     f"{'pass' if gate['passed'] else 'FAILED'} — {gate['reason']}")
    if doc.get("quant_report"):
        lines += ["", "## Per-layer int8 error (worst first)", "",
                  render_layer_table(layer_rows(doc))]
    lines += _firmware_lines(doc.get("firmware") or {})
    return lines

"""One renderer for a model compaction (``evaluate.compact_verified``): the lines that
``tinyexport``, ``report.md`` and ``tinyreport --optimize`` print."""

from __future__ import annotations

from pathlib import Path

from tinyexport.firmware_eval.verified_rewrites import Compaction, CompactionLevel

__all__ = ["compaction_lines"]


def compaction_lines(compaction: Compaction | None, indent: str = "") -> list[str]:
    """Bytes before and after each level, whether each was verified, and the bytes per step
    (export.json's record: read it back with ``Compaction.from_record``)."""
    if compaction is None:
        return []
    portable, tflm = compaction.portable, compaction.tflm
    lines = [f"{indent}model compaction: {compaction.bytes_before:,} B -> portable "
             f"{portable.bytes_after:,} B ({_verdict(portable, 'LiteRT and TFLM')}) -> "
             f"TFLM-only {tflm.bytes_after:,} B ({_verdict(tflm, 'TFLM and LiteRT')}); the "
             f"firmware links {Path(compaction.firmware_model).name} "
             f"({compaction.firmware_model_bytes:,} B)"]
    # a failed portable level is redone inside the TFLM-only one: its steps are listed there
    steps = [*portable.applied_steps(), *tflm.steps]
    if steps:
        lines.append(f"{indent}  saved: " + ", ".join(f"{s.name} -{s.saved_bytes:,} B"
                                                      for s in steps))
    kept = (tflm if tflm.applied else portable).kept
    lines += [f"{indent}  kept: {k.name}" + (f" on {k.tensors} tensors" if k.tensors else "")
              + f" ({k.why})" for k in kept]
    return lines


def _verdict(level: CompactionLevel, runtimes: str) -> str:
    if level.applied:
        return f"{runtimes} outputs identical on {level.verification.inputs} inputs"
    return "NOT applied: outputs differed or the check failed; the larger file is kept"

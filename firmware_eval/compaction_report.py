"""One renderer for a model-compaction record (``evaluate.compact_verified``): the lines that
``tinyexport``, ``report.md`` and ``tinyreport --optimize`` print."""

from __future__ import annotations

from pathlib import Path

__all__ = ["compaction_lines"]


def compaction_lines(record: dict | None, indent: str = "") -> list[str]:
    """Bytes before and after each level, whether each was verified, and the bytes per step."""
    if not record:
        return []
    portable, tflm = record["portable"], record["tflm"]
    lines = [f"{indent}model compaction: {record['bytes_before']:,} B -> portable "
             f"{portable['bytes_after']:,} B ({_verdict(portable, 'LiteRT and TFLM')}) -> "
             f"TFLM-only {tflm['bytes_after']:,} B ({_verdict(tflm, 'TFLM and LiteRT')}); the "
             f"firmware "
             f"links {Path(record['firmware_model']).name} ({record['firmware_model_bytes']:,} B)"]
    # a failed portable level is redone inside the TFLM-only one: its steps are listed there
    steps = [*(portable["steps"] if portable.get("applied") else []), *tflm["steps"]]
    if steps:
        lines.append(f"{indent}  saved: " + ", ".join(f"{s['name']} -{s['saved_bytes']:,} B"
                                                      for s in steps))
    kept = (tflm if tflm.get("applied") else portable).get("kept") or []
    lines += [f"{indent}  kept: {k['name']}" + (f" on {k['tensors']} tensors" if k["tensors"] else "")
              + f" ({k['why']})" for k in kept]
    return lines


def _verdict(level: dict, runtimes: str) -> str:
    check = level.get("verification") or {}
    if level.get("applied"):
        return f"{runtimes} outputs identical on {check.get('inputs', 0)} inputs"
    return "NOT applied: outputs differed or the check failed; the larger file is kept"

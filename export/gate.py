"""The int8 accuracy gate: a reported verdict, not an exception.

Judged on labelled data when ``--eval-data`` is given: int8 top-1 may fall at most
``--max-top1-drop`` points below fp32 top-1 on the same images. Without labels, on the top-1
agreement of int8 with fp32 over the check images (``--min-agreement``). Agreement alone is a poor
gate for a weak model, whose logits are near ties (a one-epoch model disagrees on 10-20 % of
images while its accuracy hardly moves). With random weights the gate is not applied: their
accuracy means nothing. A failed gate still writes every artifact and the per-layer report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    basis: str  # "labelled top-1", "top-1 agreement", "not applied"
    measured: float | None
    threshold: float | None
    reason: str


def judge_int8(trained: bool, agreement: float, check_images: int, min_agreement: float,
               top1: dict | None, max_top1_drop: float) -> GateVerdict:
    """The verdict on the int8 model (``top1``: the evaluation's top-1 per runtime, or None)."""
    if not trained:
        return GateVerdict(True, "not applied", None, None,
                           "random weights: accuracy is meaningless, so is its loss")
    if top1 is not None:
        drop = 100.0 * (top1["torch_fp32"] - top1["litert_int8"])
        passed = drop <= max_top1_drop
        return GateVerdict(passed, "labelled top-1", round(drop, 3), max_top1_drop,
                           f"int8 top-1 {top1['litert_int8']:.2%} vs fp32 {top1['torch_fp32']:.2%}"
                           f": {drop:.2f} points lost ({'<=' if passed else '>'} "
                           f"--max-top1-drop {max_top1_drop:g})")
    passed = agreement >= min_agreement
    return GateVerdict(passed, "top-1 agreement", round(agreement, 4), min_agreement,
                       f"int8 top-1 agrees with fp32 on {agreement:.1%} of {check_images} "
                       f"calibration images ({'>=' if passed else '<'} --min-agreement "
                       f"{min_agreement:g}; pass --eval-data to judge on labelled data)")

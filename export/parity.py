"""Numerical equivalence checks between two models' outputs (STYLE habit 6: every model surgery
and every conversion is followed by one): :class:`Parity` and the two comparers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# fp32 reassociation between two runtimes; relative to the output's range (docs/style.md §6: ≈1e-4).
PARITY_RTOL = 1e-4


@dataclass(frozen=True)
class Parity:
    """Max |candidate − reference| over a batch, and whether it is within tolerance."""

    name: str
    max_abs_diff: float
    output_scale: float
    tolerance: float
    top1_agreement: float
    passed: bool


def compare_outputs(name: str, reference: np.ndarray, candidate: np.ndarray,
                    rtol: float = PARITY_RTOL) -> Parity:
    """Parity of two (N, classes) float outputs: max abs diff vs ``rtol`` × max |reference|."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    diff = float(np.abs(reference - candidate).max())
    scale = max(float(np.abs(reference).max()), 1e-12)
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return Parity(name, diff, scale, rtol * scale, agree, diff <= rtol * scale)


@torch.no_grad()
def compare_modules(name: str, reference: nn.Module, candidate: nn.Module, images: torch.Tensor,
                    rtol: float = PARITY_RTOL) -> Parity:
    """``compare_outputs`` of two torch models (eval mode) on the same ``images``: the
    equivalence check after each model surgery (fusion, the 1×1-conv head)."""
    return compare_outputs(name, reference.eval()(images).numpy(),
                           candidate.eval()(images).numpy(), rtol)

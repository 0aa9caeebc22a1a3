"""What the lite residuals cost at inference: params, MACs, int8 weight bytes, peak activation.

The adapters stay in the deployed net (docs/tinytl.md §2: ``out = M(x) + Up(R(x))``), so the
microcontroller pays for them. ``adapter_inference_cost`` profiles the adapted model and the same
model with the adapters removed (``remove_lite_residual``, pure, checked: with every adapter's
final norm scale at 0 the two nets compute the same function) with the project's MCUNet-convention
profiler (``tinyexport.train.models.profile``: per conv/linear in + out, + held shortcut input).

That convention counts conv/linear layers only; the adapter's own lifetimes (the block input kept
until the branch's pool reads it, the main output kept while the branch runs, the resize output
and the ADD) are only seen by the real TFLite Micro arena, which the export's firmware stage
measures (docs/guide/transfer.md has both for the same model).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from tinyexport.json_record import to_record
from tinyexport.train.models.profile import profile_model
from tinyexport.train.tinytl.modules import LiteResidualBlock, has_lite_residual


@dataclass(frozen=True)
class AdapterCost:
    """Inference cost with and without the adapters (int8: 1 byte per element / weight)."""

    resolution: int
    adapters: int
    params_base: int
    params_adapted: int
    macs_base: int
    macs_adapted: int
    weight_bytes_int8_base: int
    weight_bytes_int8_adapted: int
    peak_activation_bytes_base: int
    peak_activation_bytes_adapted: int
    bottleneck_adapted: str


# Said in every record: this profiler does not see the adapter's own adds and resizes.
CONVENTION = ("MCUNet profiler: per conv/linear in + out (+ held shortcut input), int8; adapter "
              "adds/resizes not counted — see the TFLM arena")
ADDED = ("params", "macs", "weight_bytes_int8", "peak_activation_bytes")


def adapter_cost_record(cost: AdapterCost) -> dict:
    """``cost`` as export metadata: its fields, what the adapters add to each figure
    (adapted - base) and the counting convention."""
    added = {name: getattr(cost, f"{name}_adapted") - getattr(cost, f"{name}_base") for name in ADDED}
    return {**to_record(cost), "added": added, "convention": CONVENTION}


def remove_lite_residual(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``LiteResidualBlock`` replaced by its wrapped block (pure)."""
    new = copy.deepcopy(model)
    for parent in list(new.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LiteResidualBlock):
                setattr(parent, name, child.block)
    return new


def adapter_inference_cost(adapted: nn.Module, resolution: int) -> AdapterCost:
    """Profile ``adapted`` and its adapter-free copy at ``resolution`` (batch 1, eval mode)."""
    if not has_lite_residual(adapted):
        raise ValueError("adapter_inference_cost needs a model with lite residuals")
    base = remove_lite_residual(adapted)
    a = profile_model(adapted, resolution, "adapted")
    b = profile_model(base, resolution, "base")
    count = sum(isinstance(m, LiteResidualBlock) for m in adapted.modules())
    return AdapterCost(resolution, count, b.params, a.params, b.macs, a.macs,
                       b.weight_bytes_int8, a.weight_bytes_int8, b.peak_activation_bytes,
                       a.peak_activation_bytes, a.bottleneck)

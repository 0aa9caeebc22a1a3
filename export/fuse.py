"""Conv+BN fusion for export: a pure function plus a numerical equivalence check.

Pairs are found generically on the traced graph (``torch.fx``): a ``BatchNorm2d`` whose only input
is a ``Conv2d`` output that nothing else reads. This covers the zoo (``ConvBNAct``), the
torchvision-layout ``mobilenetv2`` and TinyTL lite-residual branches (grouped conv → norm). If a
model cannot be traced, a module walk pairs a ``Conv2d`` with the ``BatchNorm2d`` registered right
after it in the same parent (how ``nn.Sequential`` runs them); the equivalence check then guards
that assumption. ReLU6 stays as it is: the converter folds the clamp into the conv (docs/toolchain.md §5.6).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from tinyexport.errors import StageError
from tinyexport.export.parity import compare_modules

_log = logging.getLogger(__name__)

# Folding reorders float32 sums: ~1e-6..1e-5 relative per layer (docs/toolchain.md §4 measured 2e-8
# absolute on a 10-layer net); over 50+ layers of a random-weight zoo net it reaches ~1e-5 of the
# output's range. 1e-4 of the range stays 40x below one int8 step (1/255 of the range).
FUSE_RTOL = 1e-4


@dataclass(frozen=True)
class FuseCheck:
    pairs: int
    max_abs_diff: float
    output_scale: float
    tolerance: float
    passed: bool


def _pairs_fx(model: nn.Module) -> list[tuple[str, str]]:
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), nn.Conv2d) and len(source.users) == 1):
            pairs.append((source.target, node.target))
    return pairs


def _pairs_walk(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:], strict=False):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Qualified names of (Conv2d, BatchNorm2d) pairs where the BN reads only that conv's output."""
    try:
        return _pairs_fx(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        _log.debug("fx trace failed (%s); pairing by module order", exc)
        return _pairs_walk(model)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv+BN pair folded into one biased conv and the
    BN replaced by ``Identity``. The input model is not modified."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    pairs = find_conv_bn_pairs(fused)
    for conv_name, bn_name in pairs:
        conv = fused.get_submodule(conv_name)
        bn = fused.get_submodule(bn_name)
        fused.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        fused.set_submodule(bn_name, nn.Identity())
    fused.fused_pairs = len(pairs)
    return fused


def check_fusion(original: nn.Module, fused: nn.Module, images: torch.Tensor,
                 rtol: float = FUSE_RTOL) -> FuseCheck:
    """Max |fused − original| on ``images``, relative to max |original| (tolerance ``rtol``)."""
    parity = compare_modules("fused vs unfused", original, fused, images, rtol)
    return FuseCheck(getattr(fused, "fused_pairs", 0), parity.max_abs_diff, parity.output_scale,
                     parity.tolerance, parity.passed)


def fuse_and_check(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module, FuseCheck]:
    """``fuse_conv_bn`` followed by ``check_fusion``; raises StageError when they disagree."""
    fused = fuse_conv_bn(model)
    check = check_fusion(model, fused, images)
    if not check.passed:
        raise StageError(f"Conv+BN fusion changed the outputs: max |diff| {check.max_abs_diff:.3g}"
                         f" > {check.tolerance:.3g} ({check.pairs} pairs fused)")
    return fused, check

"""The classifier as a 1×1 convolution: a pure graph surgery plus a numerical equivalence check.

Why: a ``Linear`` that reads a globally pooled feature map becomes TFLite's FULLY_CONNECTED, and the
int8 FULLY_CONNECTED kernels of TFLite Micro and of LiteRT's reference kernels requantize with
different rounding (TFLM: ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT``, two
roundings; LiteRT's per-channel FC: one). Logits that land on a rounding boundary then differ by
one LSB between the two runtimes (docs/guide/firmware.md, results: 3 of 4,000 mcunet logits). Their
CONV_2D kernels round the same way and agree bit for bit, and MCUNet's own TFLite files carry the
classifier as a 1×1 CONV_2D too. ``pool → flatten → Linear`` equals ``pool → Conv2d(1×1) → flatten``
when the pooled map is N×C×1×1: the same dot products, summed in another order (float32
reassociation only).

The pattern is found on the traced graph (``torch.fx``) with shapes from one example input, so it
covers the zoo, torchvision's MobileNetV2 and TinyTL models alike; dropout (a no-op in eval mode)
between the flatten and the Linear is skipped. A model that cannot be traced is returned unchanged.
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

# A 1×1 conv and a matmul sum the same C products in another order: float32 reassociation,
# ~1e-7 of the output's range on zoo heads. 1e-5 leaves a wide margin and stays 400x below one
# int8 step (1/255 of the range).
HEAD_RTOL = 1e-5
_PASS_THROUGH = (nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class HeadCheck:
    converted: tuple[str, ...]
    max_abs_diff: float
    output_scale: float
    tolerance: float
    passed: bool


def _is_flatten_from_1(node, modules: dict) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)`` or ``nn.Flatten()`` (start_dim 1, end_dim -1):
    the pooled-features flatten of every zoo net."""
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    is_flatten = ((node.op == "call_function" and node.target is torch.flatten)
                  or (node.op == "call_method" and node.target == "flatten"))
    if not is_flatten:
        return False
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _pooled_source(node, modules: dict):
    """The N×C×1×1 node a Linear's input was flattened from, else None."""
    import torch.fx

    while (node.op == "call_module" and isinstance(modules.get(node.target), _PASS_THROUGH)
           and len(node.args) == 1 and isinstance(node.args[0], torch.fx.Node)):
        node = node.args[0]
    if not _is_flatten_from_1(node, modules) or not isinstance(node.args[0], torch.fx.Node):
        return None
    source = node.args[0]
    meta = source.meta.get("tensor_meta")
    shape = tuple(getattr(meta, "shape", ()))
    return source if len(shape) == 4 and shape[2:] == (1, 1) else None


def _as_conv(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device, linear.weight.dtype)


def linear_head_as_conv(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` (eval mode) where every ``Linear`` applied to flattened N×C×1×1 features
    is a 1×1 ``Conv2d`` (same name, same weights) followed by the flatten. ``example``: one input
    batch, for the shapes. Untraceable models come back as an unchanged copy. The copy's
    ``head_convs`` lists the converted module names."""
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    copied = copy.deepcopy(model).eval()
    try:
        graph_module = torch.fx.symbolic_trace(copied)
        with torch.no_grad():
            ShapeProp(graph_module).propagate(example)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        reason = f"model not traceable by torch.fx ({str(exc).splitlines()[0][:200]})"
        _log.info("classifier kept as Linear: %s", reason)
        copied.head_convs = ()
        copied.head_reason = reason
        return copied
    converted = _rewrite_heads(graph_module)
    if not converted:
        copied.head_convs = ()
        return copied
    graph_module.head_convs = tuple(converted)
    return graph_module


def _rewrite_heads(graph_module) -> list[str]:
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    converted = []
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Linear):
            continue
        source = _pooled_source(node.args[0], modules)
        if source is None:
            continue
        graph_module.set_submodule(node.target, _as_conv(modules[node.target]))
        with graph.inserting_before(node):
            conv = graph.call_module(node.target, (source,))
            flat = graph.call_function(torch.flatten, (conv, 1))
        node.replace_all_uses_with(flat)
        graph.erase_node(node)
        converted.append(node.target)
    graph.eliminate_dead_code()
    graph.lint()
    graph_module.recompile()
    return converted


def check_head(original: nn.Module, converted: nn.Module, images: torch.Tensor,
               rtol: float = HEAD_RTOL) -> HeadCheck:
    """Max |converted − original| on ``images``, relative to max |original| (tolerance ``rtol``)."""
    parity = compare_modules("1x1-conv head vs Linear head", original, converted, images, rtol)
    return HeadCheck(tuple(getattr(converted, "head_convs", ())), parity.max_abs_diff,
                     parity.output_scale, parity.tolerance, parity.passed)


def head_as_conv_and_check(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module, HeadCheck]:
    """``linear_head_as_conv`` followed by ``check_head``; raises StageError when they disagree."""
    converted = linear_head_as_conv(model, images[:1])
    check = check_head(model, converted, images)
    if not check.passed:
        raise StageError(f"the 1x1-conv classifier changed the outputs: max |diff| "
                         f"{check.max_abs_diff:.3g} > {check.tolerance:.3g}")
    return converted, check

"""Params, MACs and peak activation of a PyTorch model, per layer — the MCUNet counting conventions.

Conventions (``docs/mcunet.md`` §2.3, ``docs/netaug.md`` §3):

* **params**: every parameter, BatchNorm γ/β included.
* **MACs**: conv = out_elems × (C_in/groups) × k², linear = in × out; BatchNorm counts 0 (it is
  folded into the conv for deployment), pooling and adds count 0, the classifier is included.
  These equal torchprofile on the BN-folded model minus its pooling term (test_profile checks it).
* **peak activation** ("Act"): per conv/linear layer, input + output elements, the network input
  image included at the first conv; in a block with an identity shortcut the block input is added
  at the depthwise conv (it must stay alive until the add). int8 = 1 byte per element.
* **weight_bytes_int8**: conv/linear weights at 1 byte each plus one int32 bias per output channel
  (the folded BN shift) — the constant data of a full-int8 TFLite model, without metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinyexport.json_record import to_record
from tinyexport.train.models.zoo import build_model


@dataclass(frozen=True)
class LayerProfile:
    name: str
    op: str  # conv, dwconv, pwconv, gconv, linear
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    activation_elements: int  # in + out (+ held block input)
    held_elements: int  # the residual block input kept alive during this layer


@dataclass(frozen=True)
class ModelProfile:
    model: str
    resolution: int
    num_classes: int
    params: int
    macs: int
    peak_activation_elements: int
    bottleneck: str
    weight_bytes_int8: int
    layers: tuple[LayerProfile, ...]
    bytes_per_element: float = 1.0

    @property
    def peak_activation_bytes(self) -> int:
        return int(self.peak_activation_elements * self.bytes_per_element)


def profile_record(profile: ModelProfile) -> dict:
    """The ``tinyreport MODEL --json`` figures: activations in bytes at the profile's element size
    (the element counts it holds are not repeated)."""
    bytes_per_element = profile.bytes_per_element
    return {"model": profile.model, "resolution": profile.resolution,
            "num_classes": profile.num_classes, "params": profile.params, "macs": profile.macs,
            "peak_activation_bytes": profile.peak_activation_bytes,
            "peak_activation_kib": round(profile.peak_activation_bytes / 1024, 2),
            "bottleneck": profile.bottleneck, "weight_bytes_int8": profile.weight_bytes_int8,
            "layers": [layer_record(layer, bytes_per_element) for layer in profile.layers]}


def layer_record(layer: LayerProfile, bytes_per_element: float = 1.0) -> dict:
    """One layer's fields and its activation bytes at ``bytes_per_element``."""
    return {**to_record(layer), "activation_bytes": int(layer.activation_elements * bytes_per_element)}


def _op_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == module.in_channels == module.out_channels and module.groups > 1:
        return "dwconv"
    if module.groups > 1:
        return "gconv"
    return "pwconv" if module.kernel_size == (1, 1) else "conv"


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (out.numel() // out.shape[-1])
    kh, kw = module.kernel_size
    return out.numel() * (module.in_channels // module.groups) * kh * kw


def _residual_depthwise(model: nn.Module) -> dict[int, nn.Module]:
    """Map id(depthwise conv) → its block, for blocks with an identity shortcut."""
    found = {}
    for module in model.modules():
        if getattr(module, "residual", False) and hasattr(module, "depthwise_conv"):
            found[id(module.depthwise_conv)] = module
    return found


@torch.no_grad()
def profile_model(model: nn.Module, resolution: int, name: str = "model",
                  in_channels: int = 3, bytes_per_element: float = 1.0) -> ModelProfile:
    """Run one 1×C×R×R forward pass with hooks and count params, MACs and activations per layer."""
    held_by_block: dict[int, int] = {}
    dw_to_block = _residual_depthwise(model)
    names = {id(m): n for n, m in model.named_modules()}
    layers: list[LayerProfile] = []
    handles = []

    def block_pre_hook(block, args):
        held_by_block[id(block)] = args[0][0].numel()

    def layer_hook(module, args, out):
        x = args[0]
        block = dw_to_block.get(id(module))
        held = held_by_block.get(id(block), 0) if block is not None else 0
        weight_params = sum(p.numel() for p in module.parameters(recurse=False))
        layers.append(LayerProfile(
            names[id(module)], _op_kind(module), tuple(x.shape[1:]), tuple(out.shape[1:]),
            _macs(module, out), weight_params, x[0].numel() + out[0].numel() + held, held))

    for block in {id(b): b for b in dw_to_block.values()}.values():
        handles.append(block.register_forward_pre_hook(block_pre_hook))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(layer_hook))
    forward_once(model, resolution, in_channels, handles)
    peak_layer = max(layers, key=lambda layer: layer.activation_elements)
    num_classes = layers[-1].output_shape[-1] if layers else 0
    return ModelProfile(
        model=name, resolution=resolution, num_classes=num_classes,
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(layer.macs for layer in layers),
        peak_activation_elements=peak_layer.activation_elements, bottleneck=peak_layer.name,
        weight_bytes_int8=_int8_weight_bytes(model), layers=tuple(layers),
        bytes_per_element=bytes_per_element)


@torch.no_grad()
def forward_once(model: nn.Module, resolution: int, in_channels: int, handles: list) -> None:
    """One eval-mode forward pass of a 1×C×R×R zero image for hook-based counters; the hooks in
    ``handles`` are removed and the model's train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _int8_weight_bytes(model: nn.Module) -> int:
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            outputs = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            total += module.weight.numel() + 4 * outputs
    return total


def profile_zoo_model(name: str, resolution: int | None = None, num_classes: int = 1000
                      ) -> ModelProfile:
    """Build a registered model and profile it at its native (or the given) resolution."""
    model = build_model(name, num_classes=num_classes, resolution=resolution)
    return profile_model(model, model.resolution, name=model.spec.name)

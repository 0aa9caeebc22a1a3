"""Training memory: the analytic model of the TinyTL paper and a measured column.

Analytic (docs/tinytl.md §6, S1 ``memory_cost_profiler.py``): one batch-1 forward pass over the leaf
modules, in call order. Per leaf, "stored" bytes are kept for backward and "temp" bytes are its
inference working memory (rules in §6.2, depthwise ``//groups`` quirk included). The peak is
``max(temp + Σ earlier stored + held residual input)``; the total is
``batch × peak + Σ trainable params × 4 B + Σ frozen params × 1 B``, in MB = 1e6 B.
No gradient or optimizer state is counted (§6.1).

Measured (``measure_train_memory``): CUDA — ``torch.cuda.max_memory_allocated`` over one
forward+backward+step; CPU — the bytes of every distinct tensor autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``) plus parameters, gradients and Adam state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinyexport.train.models.profile import forward_once
from tinyexport.train.tinytl.methods import REQUIRES_BACKWARD, canonical_method, set_train_mode_

MB = 1e6
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)
_RELU = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
_SMOOTH = (nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Analytic training memory of one prepared model (bytes unless named ``*_mb``)."""

    method: str
    batch_size: int
    param_bytes: float
    peak_activation_bytes: float  # per sample
    stored_activation_bytes: float  # per sample, kept for backward
    trainable_params: int

    @property
    def total_bytes(self) -> float:
        return self.batch_size * self.peak_activation_bytes + self.param_bytes

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MB


def breakdown_record(row: MemoryBreakdown) -> dict:
    """``row`` in MB, rounded for reading (``tinyreport --train-memory --json``)."""
    return {"method": row.method, "batch_size": row.batch_size,
            "total_mb": round(row.total_mb, 3), "param_mb": round(row.param_bytes / MB, 3),
            "peak_activation_mb_per_sample": round(row.peak_activation_bytes / MB, 4),
            "stored_activation_mb_per_sample": round(row.stored_activation_bytes / MB, 4),
            "trainable_params": row.trainable_params}


def param_bytes(model: nn.Module, trainable_bits: int = 32, frozen_bits: int | None = 8) -> float:
    """Σ trainable × bits/8 + Σ frozen × bits/8 (frozen None = 32 bit; §6.1)."""
    frozen_bits = 32 if frozen_bits is None else frozen_bits
    return sum(p.numel() * (trainable_bits if p.requires_grad else frozen_bits) / 8
               for p in model.parameters())


def _weight_trained(m: nn.Module) -> bool:
    return getattr(m, "weight", None) is not None and m.weight.requires_grad


def leaf_cost(m: nn.Module, x: torch.Tensor, y: torch.Tensor, require_backward: bool,
              act_byte: float = 4.0) -> tuple[float, float]:
    """(stored, temp) bytes of one leaf call at batch 1 (docs/tinytl.md §6.2 table)."""
    xin, out = x.numel() * act_byte, y.numel() * act_byte
    if isinstance(m, _CONV):
        return (xin if _weight_trained(m) else 0.0), xin + out // m.groups
    if isinstance(m, nn.Linear):
        return (xin if _weight_trained(m) else 0.0), xin + out
    if isinstance(m, _NORM):
        return (xin if _weight_trained(m) else 0.0), xin
    if isinstance(m, _RELU):
        return (x.numel() / 8 if require_backward else 0.0), xin
    if isinstance(m, _SMOOTH):
        return (xin if require_backward else 0.0), xin
    return 0.0, 0.0


def _holds_input(m: nn.Module) -> bool:
    """A block that keeps its input for an identity add (§6.2 "Residual")."""
    return getattr(m, "residual", False) is True and len(list(m.children())) > 0


@torch.no_grad()
def activation_profile(model: nn.Module, resolution: int, require_backward: bool,
                       in_channels: int = 3, act_byte: float = 4.0) -> tuple[float, float]:
    """(peak, stored) activation bytes per sample of one batch-1 forward pass (§6.2)."""
    held: list[float] = []
    peak, stored = 0.0, 0.0
    handles = []

    def leaf_hook(m, args, out):
        nonlocal peak, stored
        s, t = leaf_cost(m, args[0], out, require_backward, act_byte)
        peak = max(peak, t + stored + (held[-1] if held else 0.0))
        stored += s

    def block_pre(m, args):
        held.append(args[0].numel() * act_byte)

    def block_post(m, args, out):
        held.pop()

    for m in model.modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(leaf_hook))
        elif _holds_input(m):
            handles.append(m.register_forward_pre_hook(block_pre))
            handles.append(m.register_forward_hook(block_post))
    forward_once(model, resolution, in_channels, handles)
    return peak, stored


def analytic_train_memory(model: nn.Module, resolution: int, method: str, batch_size: int = 8,
                          frozen_bits: int | None = 8) -> MemoryBreakdown:
    """The paper's training memory of a model whose ``requires_grad`` is already set (§6)."""
    method = canonical_method(method)
    peak, stored = activation_profile(model, resolution, REQUIRES_BACKWARD[method])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return MemoryBreakdown(method, batch_size, param_bytes(model, 32, frozen_bits), peak, stored,
                           trainable)


@dataclass(frozen=True)
class MeasuredMemory:
    method: str
    how: str  # "cuda-allocator" or "cpu-saved-tensors"
    bytes: float

    @property
    def mb(self) -> float:
        return self.bytes / MB


def _saved_tensor_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta" and t.numel():
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device.type)] = storage.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return float(sum(n for (ptr, _), n in seen.items() if ptr not in params))


def measure_train_memory(model: nn.Module, resolution: int, method: str, batch_size: int = 8,
                         num_classes: int | None = None, device: str = "cpu") -> MeasuredMemory:
    """Measured memory of one training step at fp32 (see module docstring for what is counted)."""
    classes = num_classes or model.spec.num_classes
    x = torch.randn(batch_size, 3, resolution, resolution, device=device)
    y = torch.randint(0, classes, (batch_size,), device=device)
    model = model.to(device)
    set_train_mode_(model, True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-9)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        torch.cuda.synchronize()
        return MeasuredMemory(method, "cuda-allocator", float(torch.cuda.max_memory_allocated()))
    saved = _saved_tensor_bytes(model, x, y)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                for t in s.values() if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    return MeasuredMemory(method, "cpu-saved-tensors", float(saved + params + grads + state))

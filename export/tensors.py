"""Checks and layout changes of the tensors the export hands between PyTorch and TFLite."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinyexport.errors import UserError

__all__ = ["check_finite", "nchw_to_nhwc"]


def check_finite(model: nn.Module) -> None:
    """Raise UserError naming the first parameter/buffer holding NaN or Inf."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"checkpoint weight {name!r} holds NaN/Inf values; the checkpoint is "
                            "corrupt or training diverged — export a good checkpoint")


def nchw_to_nhwc(images: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy(), dtype=np.float32)

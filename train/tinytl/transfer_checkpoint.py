"""TinyTL checkpoints: kind ``"tinytl"`` payloads (``tinyexport.train.checkpoint_format``) that record how
the adapted net was built, so it can be rebuilt and exported.

Export decision (see docs/guide/transfer.md): weight standardisation is folded into the conv weights
(exact up to float rounding, checked); GroupNorm cannot be folded into a conv and has no int8
TFLite Micro kernel, so ``model_from_payload`` — the path ``tinyexport --checkpoint`` takes —
refuses a GN checkpoint with a clear error. ``build_from_payload`` rebuilds any of them (fp32 use).
The export metadata carries ``adapter_inference``: what the adapters add at inference
(``tinyexport.train.tinytl.inference``), shown in the export's report.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tinyexport.errors import UserError
from tinyexport.json_record import to_record
from tinyexport.train.checkpoint_format import load_state_dict_into, make_payload
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.inference import adapter_cost_record, adapter_inference_cost
from tinyexport.train.tinytl.modules import LiteResidualConfig, insert_lite_residual
from tinyexport.train.tinytl.surgery import (
    WSConv2d,
    apply_weight_standardization,
    fold_weight_standardization,
    has_group_norm,
    replace_bn_with_gn,
)

KIND = "tinytl"
# WS folding: the same arithmetic done once ahead of time; 1e-5 covers float reassociation.
FOLD_ATOL = 1e-5


def tinytl_payload(model: nn.Module, method: str, norm: str, ws: bool, **meta: Any) -> dict:
    """A ``kind="tinytl"`` payload of an adapted model (plain types, weights_only-loadable)."""
    info = {"lite_residual": to_record(model.lite_residual_config), "method": method,
            "norm": norm, "ws": bool(ws)}
    return make_payload(model, KIND, tinytl=info, **meta)


def build_from_payload(payload: dict, resolution: int | None = None) -> nn.Module:
    """Rebuild base net → adapters → GN/WS as recorded, then load the weights strictly."""
    info = payload.get("tinytl")
    if not isinstance(info, dict) or "lite_residual" not in info:
        raise UserError("tinytl checkpoint has no 'tinytl' section (lite residual config); "
                        "was it written by tinytrain transfer?")
    model = build_model(payload["model"], num_classes=int(payload["num_classes"]),
                        resolution=resolution or int(payload["resolution"]))
    model = insert_lite_residual(model, LiteResidualConfig.from_dict(info["lite_residual"]))
    if info.get("norm") == "gn":
        model = replace_bn_with_gn(model)
    if info.get("ws"):
        model = apply_weight_standardization(model)
    load_state_dict_into(model, payload["state_dict"])
    return model


def model_from_payload(payload: dict, resolution: int | None = None) -> tuple[nn.Module, dict]:
    """The handler of kind ``"tinytl"`` for ``model_from_checkpoint``: an exportable model.

    Raises:
        UserError: for a GroupNorm checkpoint (cannot be exported to int8 / TFLite Micro).
    """
    model = build_from_payload(payload, resolution)
    info = payload["tinytl"]
    if has_group_norm(model):
        raise UserError("this TinyTL checkpoint uses GroupNorm (--norm gn): GroupNorm cannot be "
                        "folded into the convs and has no int8 TFLite Micro kernel, so it cannot "
                        "be exported; retrain with --norm bn (the supported export path)")
    model.eval()
    if any(isinstance(m, WSConv2d) for m in model.modules()):
        model = _fold_checked(model)
    meta = {"kind": KIND, "model": payload["model"], "method": info.get("method"),
            "lite_residual": info["lite_residual"], "norm": info.get("norm"),
            "ws_folded": bool(info.get("ws")),
            "adapter_inference": adapter_cost_record(
                adapter_inference_cost(model, model.spec.resolution))}
    return model.eval(), meta


def _fold_checked(model: nn.Module) -> nn.Module:
    folded = fold_weight_standardization(model).eval()
    x = torch.randn(2, 3, model.spec.resolution, model.spec.resolution,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=FOLD_ATOL, rtol=1e-4)
    return folded

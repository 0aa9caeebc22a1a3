"""NetAug supernet checkpoints (kind ``netaug-supernet``) and extraction of the base on load.

``best.pt`` of a NetAug run holds the whole supernet (with the base slice's BN statistics
re-estimated, docs/netaug.md §1.7) plus its width / expand lists; ``base_model_from_payload`` rebuilds
the supernet and returns the extracted base ``MBNet`` — the handler
``tinyexport.train.model_from_checkpoint.model_from_checkpoint`` dispatches to.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tinyexport.errors import UserError
from tinyexport.train.checkpoint_format import load_state_dict_into, make_payload
from tinyexport.train.models import model_spec
from tinyexport.train.models.mbnet import MBNet
from tinyexport.train.netaug.supernet import NetAugSupernet
from tinyexport.train.netaug.surgery import extract_base_subnet

KIND = "netaug-supernet"


def supernet_payload(supernet: NetAugSupernet, **meta: Any) -> dict[str, Any]:
    return make_payload(supernet, KIND, width_mult_list=list(supernet.width_mults),
                        expand_list=list(supernet.expand_mults), **meta)


def supernet_from_payload(payload: dict) -> NetAugSupernet:
    try:
        spec = model_spec(str(payload["model"]), int(payload["num_classes"]),
                          int(payload["resolution"]), float(payload.get("dropout", 0.0)))
        width = tuple(float(v) for v in payload["width_mult_list"])
        expand = tuple(float(v) for v in payload["expand_list"])
    except KeyError as exc:
        raise UserError(f"NetAug checkpoint lacks {exc.args[0]!r}; it was not written by "
                        "tinytrain") from None
    supernet = NetAugSupernet(spec, width, expand)
    load_state_dict_into(supernet, payload["state_dict"])
    return supernet


def base_model_from_payload(payload: dict, resolution: int | None = None, **_: Any
                            ) -> tuple[nn.Module, dict]:
    """The base ``MBNet`` (eval mode) of a supernet payload, and metadata.

    ``resolution`` overrides the recorded input size (weights do not depend on it)."""
    base = extract_base_subnet(supernet_from_payload(payload))
    if resolution is not None and resolution != base.spec.resolution:
        resized = MBNet(base.spec.with_(resolution=int(resolution)))
        resized.load_state_dict(base.state_dict())
        base = resized
    meta = {"kind": KIND, "model": base.spec.name, "extracted": "base subnet",
            "epoch": payload.get("epoch"), "top1": payload.get("top1")}
    return base.eval(), meta

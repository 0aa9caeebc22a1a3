"""Rebuild the model any checkpoint holds: our payloads by their ``kind`` (``base``,
``netaug-supernet``, ``tinytl``), each handled by the code that knows it (the NetAug supernet's base
subnet extraction, the TinyTL adapters); released plain state_dicts (NetAug, MCUNet zoo,
torchvision) through the key maps of :mod:`tinyexport.train.checkpoint_format`.

This module sits above the training methods and imports them directly (no dispatch by string).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tinyexport.errors import UserError
from tinyexport.train.checkpoint_format import FORMAT, load_state_dict_into, read_payload
from tinyexport.train.models import MODELS, build_model
from tinyexport.train.netaug.supernet_checkpoint import base_model_from_payload
from tinyexport.train.tinytl.transfer_checkpoint import model_from_payload as tinytl_model_from_payload


def _base_from_payload(payload: dict, **_: Any) -> tuple[nn.Module, dict]:
    model = build_model(payload["model"], num_classes=int(payload["num_classes"]),
                        resolution=int(payload["resolution"]))
    load_state_dict_into(model, payload["state_dict"])
    return model, {"kind": "base", "model": payload["model"]}


def _classes_in(sd: dict[str, torch.Tensor]) -> int | None:
    for key in ("classifier.weight", "classifier.linear.weight", "classifier.1.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    linear = [k for k in sd if k.startswith("head.op_list.") and k.endswith("linear.weight")]
    return int(sd[linear[0]].shape[0]) if linear else None


# kind -> handler(payload, resolution=None) -> (model, meta)
KIND_HANDLERS: dict[str, Callable[..., tuple[nn.Module, dict]]] = {
    "base": _base_from_payload,
    "netaug-supernet": base_model_from_payload,
    "tinytl": tinytl_model_from_payload,
}


def model_from_checkpoint(path: str | os.PathLike, model_name: str | None = None,
                          resolution: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint holds. Our payloads describe themselves; released files
    (a plain NetAug / MCUNet-zoo / torchvision state_dict) need ``model_name``.

    Returns the model (eval mode) and a metadata dict (``kind``, ``model``, ``source_format`` ...).
    """
    payload = read_payload(path)
    if payload.get("format") == FORMAT:
        kind = payload.get("kind", "base")
        if kind not in KIND_HANDLERS:
            raise UserError(f"checkpoint {str(path)!r} has unknown kind {kind!r} "
                            f"(known: {', '.join(sorted(KIND_HANDLERS))})")
        if model_name and model_name.lower() != str(payload.get("model")).lower():
            if MODELS.canonical(model_name) != MODELS.canonical(str(payload.get("model"))):
                raise UserError(f"--model {model_name} does not match the checkpoint's model "
                                f"{payload.get('model')!r}; drop --model or pass the right one")
        model, meta = KIND_HANDLERS[kind](payload, resolution=resolution)
        meta = {"source_format": FORMAT, **meta}
    else:
        if not model_name:
            raise UserError(f"checkpoint {str(path)!r} is a plain state_dict; pass --model NAME "
                            "so its architecture is known")
        classes = _classes_in(payload["state_dict"]) or 1000
        model = build_model(model_name, num_classes=classes, resolution=resolution)
        report = load_state_dict_into(model, payload["state_dict"])
        meta = {"kind": "base", "model": model.spec.name, "source_format": report.source_format}
    model.eval()
    return model, meta

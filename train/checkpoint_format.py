"""Checkpoints: our own format, and the released NetAug / MCUNet-zoo / torchvision files.

* ``load_checkpoint(model, path)`` loads a plain state_dict or ``{"state_dict": ...}`` (our own
  payloads too) with ``weights_only=True``, maps foreign key names onto ours, and on mismatch
  names the missing / unexpected keys and the shape mismatches.
* Key mappings (``netaug_key_map``, ``mcunet_key_map``) are pure functions of the model: our key →
  their key. NetAug's base models (mit-han-lab/tinyml ``netaug/models/base``) name layers
  ``backbone.input_stem.op_list.*``, ``backbone.stages.<s>.op_list.<j>.conv.*``, ``head.op_list.*``
  with ``norm`` for BN; the MCUNet zoo (``ProxylessNASNets``) names them ``first_conv``,
  ``blocks.<i>.mobile_inverted_conv.{inverted_bottleneck,depth_conv,point_linear}``,
  ``feature_mix_layer``, ``classifier.linear`` (ZeroLayer blocks keep their index there).
* ``make_payload`` / ``save_checkpoint`` / ``describe_checkpoint``: our own payload (plain types and
  tensors; its ``kind`` says which method wrote it).

Rebuilding a model from any checkpoint (dispatch on the kind to the NetAug / TinyTL code) is
``tinyexport.train.model_from_checkpoint.model_from_checkpoint``, one floor up.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyexport.atomic import torch_save
from tinyexport.errors import UserError
from tinyexport.safe_io import GiB, check_regular, human_bytes, short_repr
from tinyexport.train.models import MODELS
from tinyexport.train.models.spec import num_classes_problem, resolution_problem

FORMAT = "tinyexport"
FORMAT_VERSION = 1
KINDS = ("base", "netaug-supernet", "tinytl")  # the kinds model_from_checkpoint rebuilds

# Limits checked before a checkpoint is unpacked: a zoo net's checkpoint.pt (weights, optimizer)
# is a few MB; ImageNet-size ones stay far below these.
MAX_CHECKPOINT_BYTES = 2 * GiB  # the file, and everything its archive unpacks to
MAX_ARCHIVE_ENTRIES = 20_000  # one per tensor storage plus a few
MAX_WEIGHT_MAGNITUDE = 1e6  # |w| of any trained weight or statistic is far below
FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64, torch.bfloat16)
INTEGER_BUFFERS = ("num_batches_tracked",)  # BatchNorm's step counter: the one integer tensor

@dataclass(frozen=True)
class LoadReport:
    source_format: str  # tinyexport | netaug | mcunet-zoo | torchvision
    loaded: int
    skipped: tuple[str, ...] = field(default_factory=tuple)


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; a bare state_dict becomes ``{"state_dict": sd}``.

    Everything is checked here, before any model is built: a regular file under the size limit,
    an intact archive within the entry limits, then the payload's schema (:func:`payload_problem`)
    and every tensor's dtype, finiteness and magnitude (:func:`weights_problem`).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {str(path)!r} is a folder; pass the checkpoint file in it "
                        "(e.g. best.pt, target.pt or transfer.pt)")
    check_regular(path, "checkpoint", MAX_CHECKPOINT_BYTES)
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {str(path)!r} is empty (0 bytes): an interrupted copy or "
                        "write; use the original file")
    check_archive(path)
    obj = _load(path)
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, "
                        "expected a state_dict or {'state_dict': ...}")
    if not ("state_dict" in obj and isinstance(obj["state_dict"], dict)):
        if not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"checkpoint {str(path)!r} has no 'state_dict' (keys: "
                            f"{short_repr(sorted(map(str, obj))[:8])})")
        obj = {"state_dict": obj}
    problem = payload_problem(obj) or weights_problem(obj["state_dict"])
    if problem:
        raise UserError(f"checkpoint {str(path)!r}: {problem}; it is damaged or was not written "
                        "by tinytrain / torch.save(model.state_dict()) - use the original file")
    return obj


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if not found:  # not a pickle of allowed values at all: corrupt or not a checkpoint
            raise UserError(f"checkpoint {str(path)!r} is not a readable PyTorch file (truncated, "
                            f"corrupt or not written by torch.save): {short_reason(exc)}") from None
        raise UserError(f"checkpoint {str(path)!r} holds a Python object ({found.group(1)}), "
                        "not only tensors and plain values, which tinyexport never loads (it reads checkpoints with "
                        "weights_only=True, so a file cannot run code); save the weights alone "
                        "with torch.save(model.state_dict(), PATH) and pass that file") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise UserError(f"checkpoint {str(path)!r} is not a readable PyTorch file (truncated, "
                        f"corrupt or not written by torch.save): {short_reason(exc)}") from None


def payload_problem(payload: dict) -> str | None:
    """Why a payload of our format (``format: tinyexport``) does not hold what rebuilding its
    model needs, or None (a released plain state_dict has no schema beyond its tensors)."""
    if payload.get("format") != FORMAT:
        return None
    missing = [k for k in ("model", "num_classes", "resolution", "kind") if k not in payload]
    if missing:
        return f"it lacks {missing}, which every tinyexport checkpoint records"
    model, kind = payload["model"], payload["kind"]
    if not isinstance(model, str) or model not in MODELS:
        return (f"its 'model' is {short_repr(model)}, not a zoo model name (known: "
                f"{', '.join(MODELS.names())})")
    if not isinstance(kind, str) or kind not in KINDS:
        return f"its 'kind' is {short_repr(kind)}, not one of {', '.join(KINDS)}"
    for key, check in (("num_classes", num_classes_problem), ("resolution", resolution_problem)):
        reason = check(payload[key])
        if reason:
            return f"it records {key} {short_repr(payload[key])} ({_clip(reason)})"
    dropout = payload.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        return f"its 'dropout' is {short_repr(dropout)}, not a number in [0, 1)"
    return _kind_problem(payload)


def _kind_problem(payload: dict) -> str | None:
    """What a kind records beyond the base fields: the supernet's multiplier lists, TinyTL's
    adapter section."""
    if payload["kind"] == "netaug-supernet":
        for key in ("width_mult_list", "expand_list"):
            values = payload.get(key)
            if not isinstance(values, (list, tuple)) or not values or not all(
                    _is_positive_number(v) for v in values):
                return f"its {key!r} is {short_repr(values)}, not a list of numbers > 0"
    if payload["kind"] == "tinytl":
        info = payload.get("tinytl")
        if not isinstance(info, dict) or not isinstance(info.get("lite_residual"), dict):
            return (f"its 'tinytl' section is {short_repr(info)}, not a dict with the "
                    "'lite_residual' config")
    return None


def _is_positive_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value < float("inf"))


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def weights_problem(tensors: Any) -> str | None:
    """Why ``tensors`` is not a state_dict of trained weights, or None: every value a floating
    tensor (float16/32/64, bfloat16; only BatchNorm's ``num_batches_tracked`` is an integer), all
    finite, and none above :data:`MAX_WEIGHT_MAGNITUDE` in magnitude."""
    if not isinstance(tensors, dict):
        return f"its state_dict is a {type(tensors).__name__}, not a dict of tensors"
    for name, value in tensors.items():
        problem = _tensor_problem(str(name), value)
        if problem:
            return problem
    return None


def _tensor_problem(name: str, value: Any) -> str | None:
    shown = short_repr(name)
    if not isinstance(value, torch.Tensor):
        return f"its entry {shown} is of type {type(value).__name__}, not a tensor"
    if name.rsplit(".", 1)[-1] in INTEGER_BUFFERS:
        return None if value.dtype in (torch.int64, torch.int32) else (
            f"tensor {shown} holds {value.dtype} values, not an integer count")
    if value.dtype not in FLOAT_DTYPES:
        return (f"tensor {shown} holds {str(value.dtype).replace('torch.', '')} values; weights "
                "must be floating point (float16, float32, float64 or bfloat16)")
    if value.numel() == 0:
        return None
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        return (f"tensor {shown} has {bad} NaN/Inf value{'s' if bad > 1 else ''} (of "
                f"{value.numel()}): the weights come from a diverged run")
    peak = float(value.detach().abs().max())
    if peak > MAX_WEIGHT_MAGNITUDE:
        return (f"tensor {shown} has values up to {peak:.3g} in magnitude, above the limit of "
                f"{MAX_WEIGHT_MAGNITUDE:.0e} for trained weights")
    return None


def check_archive(path: Path) -> None:
    """A ``torch.save`` file is a zip archive whose members carry CRC-32s, which ``torch.load``
    never checks: a flipped bit in the weights would load silently as other weights. Check them
    (one read of the file; legacy non-zip files pass through), after checking from the archive's
    directory alone that it unpacks to a bounded size (entries, total, no member stored twice)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            problem = archive_problem(archive.infolist())
            damaged = None if problem else archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise UserError(f"checkpoint {str(path)!r} is a damaged archive ({exc}); use an intact "
                        "copy of the file") from None
    if problem:
        raise UserError(f"checkpoint {str(path)!r} {problem}; a torch.save file never does: it "
                        "is damaged or crafted - use the original file")
    if damaged is not None:
        raise UserError(f"checkpoint {str(path)!r} is damaged: the checksum of its part "
                        f"{damaged!r} does not match its contents (a corrupted copy); use an "
                        "intact copy of the file")


def archive_problem(entries: list[zipfile.ZipInfo]) -> str | None:
    """Why a checkpoint archive's directory is out of bounds, or None."""
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        return f"has {len(entries)} archive entries, above the limit of {MAX_ARCHIVE_ENTRIES}"
    if len({e.filename for e in entries}) < len(entries) or len(
            {e.header_offset for e in entries}) < len(entries):
        return "names one archive member more than once"
    total = sum(e.file_size for e in entries)
    if total > MAX_CHECKPOINT_BYTES:
        return (f"unpacks to {human_bytes(total)}, above the limit of "
                f"{human_bytes(MAX_CHECKPOINT_BYTES)}")
    return None


def short_reason(exc: BaseException) -> str:
    """The first line of a loader error, without torch's advice to load unsafely."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines or "weights_only" in lines[0]:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0].split('. ')[0][:160]}"


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _layer_suffix(rest: str, norm_name: str) -> str:
    return rest.replace("bn.", f"{norm_name}.", 1) if rest.startswith("bn.") else rest


def netaug_key_map(model: nn.Module) -> dict[str, str]:
    """Our key → NetAug base-model key (mit-han-lab/tinyml netaug/models/base), for ``MBNet``."""
    spec = model.spec
    groups = spec.stages()
    position: dict[int, str] = {groups[0][0]: "backbone.input_stem.op_list.1.conv"}
    for s, group in enumerate(groups[1:-1]):
        for j, block in enumerate(group):
            position[block] = f"backbone.stages.{s}.op_list.{j}.conv"
    position[groups[-1][0]] = "head.op_list.0.conv"
    sub = {"expand": "inverted_conv", "depthwise": "depth_conv", "project": "point_conv"}
    classifier = "head.op_list.3.linear" if spec.final_conv else "head.op_list.2.linear"
    mapping = {}
    for key in model.state_dict():
        head, _, rest = key.partition(".")
        if head == "first_conv":
            mapping[key] = "backbone.input_stem.op_list.0." + _layer_suffix(rest, "norm")
        elif head == "blocks":
            index, layer, tail = rest.split(".", 2)
            mapping[key] = f"{position[int(index)]}.{sub[layer]}.{_layer_suffix(tail, 'norm')}"
        elif head == "final_conv":
            mapping[key] = "head.op_list.1." + _layer_suffix(rest, "norm")
        elif head == "classifier":
            mapping[key] = f"{classifier}.{rest}"
    return mapping


def mcunet_key_map(model: nn.Module) -> dict[str, str]:
    """Our key → MCUNet-zoo (ProxylessNASNets) key, for ``MBNet``."""
    sub = {"expand": "inverted_bottleneck", "depthwise": "depth_conv", "project": "point_linear"}
    mapping = {}
    for key in model.state_dict():
        head, _, rest = key.partition(".")
        if head == "first_conv":
            mapping[key] = key
        elif head == "blocks":
            index, layer, tail = rest.split(".", 2)
            source = model.spec.blocks[int(index)].source_index
            mapping[key] = f"blocks.{source}.mobile_inverted_conv.{sub[layer]}.{tail}"
        elif head == "final_conv":
            mapping[key] = "feature_mix_layer." + rest
        elif head == "classifier":
            mapping[key] = "classifier.linear." + rest
    return mapping


def _detect_format(keys: set[str]) -> str:
    if any(k.startswith("backbone.input_stem.") for k in keys):
        return "netaug"
    if any(".mobile_inverted_conv." in k for k in keys):
        return "mcunet-zoo"
    if any(k.startswith("features.0.0.") for k in keys):
        return "torchvision"
    return FORMAT


def to_our_keys(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[dict, str]:
    """Rename a foreign state_dict's keys to this model's names (pure)."""
    sd = _strip_prefix(dict(sd))
    fmt = _detect_format(set(sd))
    if fmt in (FORMAT, "torchvision") or not hasattr(model, "spec"):
        return sd, fmt
    mapping = netaug_key_map(model) if fmt == "netaug" else mcunet_key_map(model)
    reverse = {theirs: ours for ours, theirs in mapping.items()}
    return {reverse.get(k, k): v for k, v in sd.items()}, fmt


def _mismatch_message(model: nn.Module, sd: dict[str, torch.Tensor], fmt: str) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    parts = [f"checkpoint ({fmt} keys) does not match model {name!r}"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    parts.append("check --model, --num-classes and --resolution against the checkpoint")
    return "; ".join(parts)


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    sd, fmt = to_our_keys(model, state_dict)
    message = _mismatch_message(model, sd, fmt)
    if message:
        raise UserError(message)
    model.load_state_dict(sd, strict=True)
    if fmt == "mcunet-zoo" and getattr(getattr(model, "spec", None), "name", "") == "mbv2-tiny":
        # the zoo's mbv2-w0.35-r144 baseline was trained with BN eps 1e-3 (docs/mcunet.md §2.1);
        # NetAug's MobileNetV2-Tiny (our default) uses 1e-5
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
    return LoadReport(fmt, len(sd))


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a checkpoint file strictly into ``model`` (key mapping for released files)."""
    return load_state_dict_into(model, read_payload(path)["state_dict"])


def make_payload(model: nn.Module, kind: str = "base", **meta: Any) -> dict[str, Any]:
    """Our checkpoint payload: plain types and tensors only (loadable with weights_only=True)."""
    spec = model.spec
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "model": spec.name,
               "num_classes": spec.num_classes, "resolution": spec.resolution,
               "dropout": spec.dropout,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    payload.update(meta)
    return payload


def save_checkpoint(model: nn.Module, path: str | os.PathLike, kind: str = "base", **meta) -> None:
    torch_save(make_payload(model, kind, **meta), path)


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Model name, resolution, class count, kind and training data SPEC (``data``, when recorded)
    of one of our checkpoints ({} for a released plain state_dict, whose architecture the user
    must name)."""
    payload = read_payload(path)
    if payload.get("format") != FORMAT:
        return {}
    described = {k: payload[k] for k in ("model", "resolution", "num_classes", "kind")
                 if k in payload}
    recipe = payload.get("recipe") if isinstance(payload.get("recipe"), dict) else {}
    data = payload.get("data") or recipe.get("data")
    if isinstance(data, str):
        described["data"] = data
    return described

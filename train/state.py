"""Resumable state: seeding, every RNG's state, and what ``checkpoint.pt`` holds.

``checkpoint.pt`` has everything needed to continue a run exactly: model, optimizer, scheduler,
scaler, the next epoch, the global step, the best top-1 so far, the torch/numpy/python (and CUDA)
RNG states and the task's own state (e.g. NetAug's sampler generator). Everything in it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyexport.errors import UserError
from tinyexport.safe_io import file_kind, human_bytes
from tinyexport.train.checkpoint_format import (
    MAX_CHECKPOINT_BYTES,
    check_archive,
    short_reason,
    weights_problem,
)
from tinyexport.train.task import TrainTask


@dataclass
class Progress:
    """Where a run stands: the next epoch, the global step, the best top-1 and its epoch."""

    epoch: int = 0
    step: int = 0
    best_top1: float | None = None
    best_epoch: int | None = None

    def improves(self, top1: float | None) -> bool:
        return top1 is not None and (self.best_top1 is None or top1 > self.best_top1)


def seed_everything(seed: int) -> None:
    """Same seed on every rank (docs/netaug.md §4 "seed"): identical init and sampling everywhere."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The torch, numpy, python (and initialised CUDA) RNG states as weights_only-loadable types."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: Any, task: TrainTask, progress: Progress, loader: Any = None) -> dict:
    """The ``checkpoint.pt`` payload (``progress.epoch`` is the epoch to run next). A ``loader``
    with ``state_dict`` (the on-device pipeline's augmentation generator) adds a ``loader`` entry
    (optional on resume: a DataLoader keeps its randomness in the global RNGs saved here)."""
    extra = {"loader": loader.state_dict()} if hasattr(loader, "state_dict") else {}
    return {**extra, "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": progress.epoch, "step": progress.step, "best_top1": progress.best_top1,
            "best_epoch": progress.best_epoch, "rng": rng_state(), "task": task.state_dict()}


RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "best_top1",
               "best_epoch", "rng", "task")


class _NotResumable(Exception):
    """Why a ``checkpoint.pt`` cannot continue this run (turned into a UserError naming it)."""


def load_resume_state(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: Any, scaler: Any, task: TrainTask, loader: Any = None
                      ) -> Progress:
    """Load ``checkpoint.pt`` into the given objects and the global RNGs.

    Returns:
        The run's :class:`Progress` at the time of the checkpoint.

    Raises:
        UserError: when ``path`` does not exist, or is not a readable training state that fits
            ``module`` / ``optimizer`` / ``task`` (empty, truncated, another model's, ...).
    """
    state = read_resume_state(path)
    try:
        problem = model_problem(module, state["model"])
        if problem:
            raise _NotResumable(problem)
        module.load_state_dict(state["model"])
        for name, target in (("optimizer", optimizer), ("scheduler", scheduler),
                             ("scaler", scaler), ("task", task)):
            _load_part(name, target, state[name])
        if hasattr(loader, "load_state_dict"):
            _load_part("loader", loader, state.get("loader"))
        _load_part("rng", None, state["rng"])
        return _progress(state)
    except _NotResumable as exc:
        raise _not_resumable(path, exc) from None


def read_resume_state(path: Path) -> dict:
    """The ``checkpoint.pt`` dict at ``path``, checked to be a readable training state (the CLI
    calls this before building anything; :func:`load_resume_state` also checks that it fits).

    Raises:
        UserError: no file, or not a readable training state (empty, truncated, not a dict...).
    """
    if not path.exists():
        raise UserError(f"--resume: no checkpoint at {str(path)!r}; run without --resume first")
    try:
        return _read_resume_file(path)
    except _NotResumable as exc:
        raise _not_resumable(path, exc) from None


def _not_resumable(path: Path, reason: _NotResumable) -> UserError:
    return UserError(f"{str(path)!r} is not a resumable checkpoint of this run: {reason}; delete "
                     "it or start without --resume")


def _read_resume_file(path: Path) -> dict:
    """The ``checkpoint.pt`` dict, loaded with ``weights_only=True`` (never unsafely).

    Raises:
        _NotResumable: empty, unreadable, holding a Python object, or missing a resume key.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block torch.load, /dev/zero never ends
        raise _NotResumable(f"it is {file_kind(info.st_mode)}, not a regular file")
    if info.st_size > MAX_CHECKPOINT_BYTES:
        raise _NotResumable(f"it is {human_bytes(info.st_size)}, above the limit of "
                            f"{human_bytes(MAX_CHECKPOINT_BYTES)} for checkpoints")
    if info.st_size == 0:
        raise _NotResumable("it is empty (0 bytes: a write or copy was cut off)")
    try:
        check_archive(path)
    except UserError:
        raise _NotResumable("it is damaged (a checksum of the archive does not match: a "
                            "corrupted copy)") from None
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of junk files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise _NotResumable(f"it holds a Python object ({found.group(1)}), not only tensors "
                                "and plain values; tinytrain never loads such a file") from None
        raise _NotResumable(f"it is not a readable PyTorch file (truncated or corrupt; "
                            f"{short_reason(exc)})") from None
    if not isinstance(state, dict):
        raise _NotResumable(f"it holds a {type(state).__name__}, not tinytrain's training state")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise _NotResumable(f"it lacks {missing} (it has {sorted(map(str, state))[:8]}); it was "
                            "not written by tinytrain")
    return state


def model_problem(module: nn.Module, weights: Any) -> str | None:
    """Why ``weights`` cannot be loaded into ``module`` (keys, shapes, NaN/Inf), or None."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        return "its 'model' entry is not a state_dict of tensors"
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        first = (shapes or missing or unexpected)[0]
        return (f"its weights belong to another model ({len(shapes)} of another shape, "
                f"{len(missing)} missing, {len(unexpected)} unexpected; first: {first}); the "
                "model, --netaug and the data's class count must be those of the run that wrote it")
    return weights_problem(weights)


def _load_part(name: str, target: Any, value: Any) -> None:
    """``target.load_state_dict(value)`` (``set_rng_state`` when ``name`` is rng), skipping an
    absent part; any failure becomes a reason naming the part."""
    if value is None or (target is None and name != "rng"):
        return
    try:
        if name == "rng":
            set_rng_state(value)
        else:
            target.load_state_dict(value)
    except Exception as exc:  # noqa: BLE001 - torch raises ValueError/KeyError/RuntimeError/...
        raise _NotResumable(f"its {name} state does not fit this run ({short_reason(exc)})"
                            ) from None


def _progress(state: dict) -> Progress:
    for key in ("epoch", "step"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise _NotResumable(f"its {key!r} is {state[key]!r}, not a count")
    return Progress(state["epoch"], state["step"], state["best_top1"], state["best_epoch"])

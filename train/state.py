"""Resumable state: seeding, every RNG's state, and what ``checkpoint.pt`` holds.

``checkpoint.pt`` has everything needed to continue a run exactly: model, optimizer, scheduler,
scaler, the next epoch, the global step, the best top-1 so far, the torch/numpy/python (and CUDA)
RNG states and the task's own state (e.g. NetAug's sampler generator). Everything in it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyexport.errors import UserError
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
                     scaler: Any, task: TrainTask, progress: Progress) -> dict:
    """The ``checkpoint.pt`` payload (``progress.epoch`` is the epoch to run next)."""
    return {"model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": progress.epoch, "step": progress.step, "best_top1": progress.best_top1,
            "best_epoch": progress.best_epoch, "rng": rng_state(), "task": task.state_dict()}


def load_resume_state(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: Any, scaler: Any, task: TrainTask) -> Progress:
    """Load ``checkpoint.pt`` into the given objects and the global RNGs.

    Returns:
        The run's :class:`Progress` at the time of the checkpoint.

    Raises:
        UserError: when ``path`` does not exist.
    """
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {str(path)!r}; run without --resume first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    task.load_state_dict(state["task"])
    set_rng_state(state["rng"])
    return Progress(state["epoch"], state["step"], state["best_top1"], state["best_epoch"])

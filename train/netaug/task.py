"""The NetAug training step and phase schedule, plugged into the ``Trainer`` (``tinyexport.train.trainer``).

Per step (docs/netaug.md §1.3, reference ``train.py::train_one_epoch``): base pass (``min``), backward
under DDP ``no_sync``; one sampled augmented model (``random`` or ``min_w``) on the same batch,
backward (DDP now all-reduces ∇L_base + ∇L_aug); the trainer takes one optimizer step. Losses are
summed with weight 1. Only the base loss / logits are logged.

Phases (§1.4): with ``remaining = epochs − epoch``, mode ``off`` (the base alone, no augmented
pass) when ``remaining ≤ stop_netaug_epoch`` (reference default 0: never), else ``min_w`` when
``remaining ≤ stop_aug_w_epoch``, else ``random``; channel sorting at the start of every
``sort_every``-th ``random`` epoch (§1.5; reference: every one).
The sampler generator is seeded identically on every rank and saved in ``checkpoint.pt``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.netaug.supernet import NetAugSupernet
from tinyexport.train.netaug.supernet_checkpoint import supernet_payload
from tinyexport.train.netaug.surgery import extract_base_subnet, sort_channels_
from tinyexport.train.task import StepContext, StepResult, TrainTask

_log = logging.getLogger(__name__)


def phase_mode(epoch: int, epochs: int, stop_aug_w_epoch: int, stop_netaug_epoch: int = 0) -> str:
    """``off`` for the last ``stop_netaug_epoch`` epochs, ``min_w`` for the last
    ``stop_aug_w_epoch``, ``random`` before (docs/netaug.md §1.4, reference ``train.py``)."""
    remaining = epochs - epoch
    if remaining <= stop_netaug_epoch:
        return "off"
    return "min_w" if remaining <= stop_aug_w_epoch else "random"


@dataclass(frozen=True)
class NetAugSchedule:
    """When NetAug augments what (docs/netaug.md §1.4-1.5): the recipe's phase and sort fields."""

    epochs: int
    stop_aug_w_epoch: int
    stop_netaug_epoch: int = 0
    sort_channels: bool = True
    sort_channels_every: int = 1

    def mode(self, epoch: int) -> str:
        return phase_mode(epoch, self.epochs, self.stop_aug_w_epoch, self.stop_netaug_epoch)

    def sorts_at(self, epoch: int) -> bool:
        """Sort at the start of every ``sort_channels_every``-th width-phase (``random``) epoch;
        the width phase starts at epoch 0, so epoch 0 sorts before any training (§1.5)."""
        return (self.sort_channels and self.mode(epoch) == "random"
                and epoch % self.sort_channels_every == 0)


class NetAugTask(TrainTask):
    """Base + one augmented pass per step; BN re-estimation before evaluation."""

    compile_refusal = (
        "torch.compile cannot pay off for NetAug: every step runs a sub-network drawn at random "
        "(up to ~1,800 distinct conv shapes in the width phase), and a compiled module recompiles "
        "for each new set of widths (then falls back to eager once torch's recompile limit is "
        "hit). Train NetAug without --compile; --compile works for --no-netaug and transfer")

    def __init__(self, criterion: nn.Module, schedule: NetAugSchedule, seed: int = 0,
                 evaluate_fn: Callable[[nn.Module, int], dict] | None = None,
                 meta: dict | None = None):
        super().__init__(criterion, evaluate_fn)
        self.schedule = schedule
        self.generator = torch.Generator().manual_seed(seed)
        self.mode = schedule.mode(0)
        self.meta = meta or {}
        self.last_config = None

    def on_epoch_start(self, module: NetAugSupernet, epoch: int) -> None:
        self.mode = self.schedule.mode(epoch)
        if self.schedule.sorts_at(epoch):
            sort_channels_(module)
        _log.debug("epoch %d: NetAug mode %s", epoch, self.mode)

    def cudnn_benchmark(self, epoch: int) -> bool:
        """cuDNN autotuning only where the conv shapes form a small set.

        Autotuning runs once per new input/weight shape. In the ``min_w`` phase the widths are the
        base's and only the expand ratio varies (4 mid widths per MB block): a bounded set, tuned
        in the first steps and reused. In the ``random`` phase every conv's input and output width
        vary together (stage widths × expand ratios: hundreds of shapes per conv, ~1,800 in all for
        mbv2-tiny), so most steps would pay a fresh search; the heuristic choice is used there.
        """
        return self.schedule.mode(epoch) != "random"

    def train_step(self, ctx: StepContext) -> StepResult:
        module: NetAugSupernet = ctx.module
        module.set_mode("min")
        with ctx.no_sync() if self.mode != "off" else nullcontext():
            with ctx.autocast():
                logits = ctx.model(ctx.images)
                base_loss = self.criterion(logits.float(), ctx.labels)
            ctx.backward(base_loss)
        if self.mode == "off":  # NetAug stopped (stop_netaug_epoch): the base alone
            return StepResult(base_loss.detach(), logits.detach())
        self.last_config = module.set_mode(self.mode, self.generator)
        with ctx.autocast():
            aug_loss = self.criterion(ctx.model(ctx.images).float(), ctx.labels)
        ctx.backward(aug_loss)
        module.set_mode("min")
        if not torch.isfinite(aug_loss):
            return StepResult(aug_loss.detach(), None)  # the trainer's NaN guard stops the run
        return StepResult(base_loss.detach(), logits.detach())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "mode": self.mode}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.mode = state["mode"]

    def export_payload(self, module: nn.Module, meta: dict) -> dict:
        return supernet_payload(module, **meta)


@torch.no_grad()
def reestimate_base_bn_(supernet: NetAugSupernet, batches: list[torch.Tensor],
                        sync: bool = True) -> nn.Module:
    """Re-estimate the base sub-network's BN statistics (docs/netaug.md §1.7) and write them into the
    active (base) slice of the supernet's running stats only. Returns the re-estimated base."""
    base = reestimate_bn(extract_base_subnet(supernet), batches, sync=sync)
    own = dict(supernet.named_buffers())
    for name, buffer in base.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            own[name][: buffer.shape[0]].copy_(buffer)
    return base

"""``tinytrain`` recipes: a frozen dataclass, filled from YAML then CLI overrides.

Defaults are the reference ImageNet recipe (docs/netaug.md §4): 150 + 5 warmup epochs, per-GPU batch
128, SGD Nesterov 0.9, wd 4e-5 (not on BN / biases), label smoothing 0.1, NetAug with
``stop_aug_w_epoch`` 75, channel sorting every width-phase epoch, BN re-estimation on 16,000 train
images (seed 937162211).

The learning rate is written **per 256 images of the global batch** (``lr``): the peak LR of a run
is ``lr × batch_size × world_size / 256`` and the warmup ramps from ``warmup_start_factor × peak``.
The reference's 0.025 × 16 GPUs = 0.4 at global batch 2048 is ``lr`` 0.05 with a 1/16 ramp start;
written this way a recipe means the same on one CPU process as on 16 GPUs (docs/netaug.md §4: on
one process the reference's ``base_lr × world_size`` rule has no ramp at all). Recipe files live
in ``train/configs/``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from tinyexport.config import from_mapping, load_yaml
from tinyexport.errors import UserError
from tinyexport.train.data import parse_data_spec
from tinyexport.train.device_data import PIPELINES
from tinyexport.train.validation import (
    check_fraction,
    check_int,
    check_lr,
    check_lr_factor,
    check_multipliers,
    check_non_negative,
    check_resolution,
    check_seed,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Recipe:
    model: str = "mbv2-tiny"
    data: str = "fashion-mnist"
    resolution: int | None = None
    epochs: int = 155  # total, warmup included (reference: n_epochs 150 + warmup 5)
    warmup_epochs: int = 5
    batch_size: int = 128  # per process
    lr: float = 0.05  # peak LR per 256 images of the global batch (reference: 0.4 at 2048)
    baseline_lr: float | None = None  # ``lr`` for --no-netaug runs (None: ``lr``)
    warmup_start_factor: float = 1 / 16  # warmup starts at this × peak (reference: 0.025 / 0.4)
    weight_decay: float = 4e-5
    momentum: float = 0.9
    nesterov: bool = True
    label_smoothing: float = 0.1
    dropout: float = 0.0
    netaug: bool = True
    width_mult_list: tuple[float, ...] | None = None  # None: the model's list
    expand_list: tuple[float, ...] = (1.0, 1.6, 2.2, 2.8)
    stop_aug_w_epoch: int = 75
    stop_netaug_epoch: int = 0  # the last N epochs train the base alone (reference: 0, never)
    sort_channels: bool = True
    sort_channels_every: int = 1  # sort at every Nth width-phase epoch (reference: every one)
    bn_images: int = 16000
    bn_seed: int = 937162211
    seed: int = 0
    workers: int | None = None  # None: chosen for the device and data (train/resources.py)
    limit_train: int | None = None
    limit_val: int | None = None
    max_steps_per_epoch: int | None = None
    data_pipeline: str = "auto"  # auto: on-device augmentation on CUDA, PIL workers elsewhere
    reestimate_bn: bool | None = None  # None: NetAug only (as the reference); see docs/guide

    def __post_init__(self) -> None:
        for name, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"),
                           ("bn_images", "")):
            check_int(f"{name} ({flag})" if flag else name, getattr(self, name), 1)
        for name, flag in (("warmup_epochs", "--warmup-epochs"),
                           ("stop_aug_w_epoch", "--stop-aug-w-epoch"),
                           ("stop_netaug_epoch", "--stop-netaug-epoch")):
            check_int(f"{name} ({flag})", getattr(self, name), 0)
        check_int("sort_channels_every (--sort-channels-every)", self.sort_channels_every, 1)
        check_int("workers (--workers)", self.workers, 0, optional=True)
        for name, flag in (("limit_train", "--limit-train"), ("limit_val", "--limit-val"),
                           ("max_steps_per_epoch", "--max-steps")):
            check_int(f"{name} ({flag})", getattr(self, name), 1, optional=True)
        check_lr("lr (--lr)", self.lr)
        check_lr("baseline_lr (--baseline-lr)", self.baseline_lr, optional=True)
        check_lr_factor("warmup_start_factor (--warmup-start-factor)", self.warmup_start_factor)
        check_non_negative("weight_decay", self.weight_decay)
        check_fraction("momentum", self.momentum)
        check_fraction("label_smoothing", self.label_smoothing)
        check_fraction("dropout", self.dropout)
        check_seed("seed (--seed)", self.seed)
        check_seed("bn_seed", self.bn_seed)
        check_resolution("resolution (--resolution)", self.resolution)
        if self.data_pipeline not in PIPELINES:
            raise ValueError(f"data_pipeline (--data-pipeline) must be one of {PIPELINES}, got "
                             f"{self.data_pipeline!r}")
        if self.netaug and self.stop_netaug_epoch >= self.epochs:
            raise ValueError(f"stop_netaug_epoch (--stop-netaug-epoch) {self.stop_netaug_epoch} "
                             f"would switch NetAug off for all {self.epochs} epochs; use "
                             "--no-netaug for the plain baseline")
        check_multipliers("width_mult_list", self.width_mult_list)
        check_multipliers("expand_list", self.expand_list)
        if self.width_mult_list is not None:
            object.__setattr__(self, "width_mult_list", tuple(float(v) for v in
                                                              self.width_mult_list))
        object.__setattr__(self, "expand_list", tuple(float(v) for v in self.expand_list))

    def effective_stop_aug_w(self) -> int:
        """``stop_aug_w_epoch``, halved to ``epochs // 2`` when it would cover the whole run
        (a short override of a long recipe would otherwise never augment width)."""
        return self.stop_aug_w_epoch if self.stop_aug_w_epoch < self.epochs else self.epochs // 2

    def lr_per_256(self) -> float:
        """The recipe's LR per 256 images for this run: ``baseline_lr`` for --no-netaug (when
        set), else ``lr``. The baseline keeps its own best LR (docs/guide/training.md)."""
        return self.baseline_lr if (not self.netaug and self.baseline_lr is not None) else self.lr

    def peak_lr(self, world_size: int) -> float:
        """Peak LR of a run on ``world_size`` processes: per-256 LR × global batch / 256."""
        return self.lr_per_256() * self.batch_size * world_size / 256

    def effective_reestimate_bn(self) -> bool:
        """Re-estimate BN before each evaluation: always for NetAug, for the baseline if asked."""
        return self.netaug or bool(self.reestimate_bn)

    def effective_warmup(self) -> int:
        return min(self.warmup_epochs, self.epochs - 1)


def default_config_path(model: str, data: str) -> Path | None:
    """``configs/<model>-<data kind>.yaml``, else ``configs/<data kind>.yaml`` (or None)."""
    kind = parse_data_spec(data).kind
    for name in (f"{model}-{kind}.yaml", f"{kind}.yaml"):
        if (CONFIG_DIR / name).is_file():
            return CONFIG_DIR / name
    return None


def resolve_recipe(config_file: str | None, overrides: dict) -> Recipe:
    """YAML file (or the default recipe for model + data) → CLI overrides (non-None values)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = Path(config_file) if config_file else default_config_path(
        overrides.get("model", Recipe.model), overrides.get("data", Recipe.data))
    values = load_yaml(path) if path else {}
    known = {f.name for f in fields(Recipe)}
    if "base_lr" in values:
        raise UserError(
            f"{path}: 'base_lr' (per process, peak = base_lr x world size) was replaced by 'lr', "
            "the peak LR per 256 images of the global batch, with a warmup from "
            "warmup_start_factor x peak on any world size. Write lr: base_lr x world size x 256 "
            "/ global batch (the reference's 0.025 on 16 GPUs x 128 is lr: 0.05)")
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown key(s) {unknown} in {path}; known: {sorted(known)}")
    try:
        return replace(from_mapping(Recipe, values, str(path or "defaults")), **overrides)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid recipe: {exc}") from None

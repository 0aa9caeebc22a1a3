"""``tinytrain transfer``: adapt a pretrained net with one of the six methods (docs/tinytl.md §1, §4, §5).

Pipeline (each surgery pure, each followed by its check): source checkpoint → base model →
``insert_lite_residual`` (outputs unchanged, checked) → optional GN / WS → new classifier and the
method's ``requires_grad`` → optional 8-bit k-means of frozen weights → the shared training loop
(``tinyexport.train.trainer``) → frozen tensors compared bit for bit → ``transfer.pt``
(kind ``tinytl``) + ``result.json``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tinyexport.atomic import torch_save, write_json
from tinyexport.errors import StageError, UserError
from tinyexport.json_record import to_record
from tinyexport.safe_io import short_repr
from tinyexport.train.checkpoint_format import read_payload
from tinyexport.train.data import Preprocessing, build_dataset, subset
from tinyexport.train.evaluate import evaluate_top1
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model
from tinyexport.train.state import seed_everything
from tinyexport.train.task import StepContext, StepResult, TrainTask
from tinyexport.train.tinytl.methods import canonical_method, prepare_method, set_train_mode_
from tinyexport.train.tinytl.modules import LiteResidualConfig, default_config, insert_lite_residual
from tinyexport.train.tinytl.surgery import (
    apply_weight_standardization,
    kmeans_quantize_frozen,
    replace_bn_with_gn,
)
from tinyexport.train.tinytl.transfer_checkpoint import build_from_payload, tinytl_payload
from tinyexport.train.trainer import TrainConfig, train
from tinyexport.train.validation import (
    check_fraction,
    check_int,
    check_lr,
    check_resolution,
    check_seed,
)

_log = logging.getLogger(__name__)
RECIPES = ("paper", "seed")
# Adapters start with final-norm scale 0: the branch adds exact zeros (atol covers nothing else).
INSERT_ATOL = 1e-6


@dataclass(frozen=True)
class TransferConfig:
    """One transfer run. ``epochs``/``lr``/``batch_size`` None = the recipe's value (§5).

    ``limit_train`` / ``limit_val`` keep a fixed random subset of N images (after ``classes``);
    ``max_steps_per_epoch`` truncates epochs (smoke runs) — the names ``tinytrain`` uses too.
    """

    data: str
    out_dir: str
    method: str = "tinytl-lb"
    source: str | None = None
    model: str | None = None
    recipe: str = "paper"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    label_smoothing: float = 0.1
    resolution: int | None = None
    norm: str = "bn"
    ws: bool = False
    frozen_bits: int | None = None
    lite_kernel: int | None = None
    lite_groups: int = 2
    classes: tuple[int, ...] | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    val_data: str | None = None
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    max_steps_per_epoch: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", canonical_method(self.method))
        self._check_numbers()
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.norm not in ("bn", "gn"):
            raise ValueError(f"norm must be 'bn' or 'gn', got {self.norm!r}")
        if self.frozen_bits not in (None, 8):
            raise ValueError(f"frozen_bits must be 8 or None, got {self.frozen_bits!r}")
        if self.source is None and self.model is None:
            raise UserError("pass --from CKPT (a checkpoint) or --model NAME (random init)")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.classes is not None and (not self.classes or len(set(self.classes)) <
                                         len(self.classes) or min(self.classes) < 0):
            raise ValueError(f"classes (--classes) must be distinct labels >= 0, got "
                             f"{self.classes!r}")

    def _check_numbers(self) -> None:
        for name, flag, minimum in (("epochs", "--epochs", 1), ("batch_size", "--batch-size", 1),
                                    ("limit_train", "--limit-train", 1),
                                    ("limit_val", "--limit-val", 1),
                                    ("max_steps_per_epoch", "--max-steps", 1),
                                    ("lite_kernel", "--lite-kernel", 1)):
            check_int(f"{name} ({flag})", getattr(self, name), minimum, optional=True)
        check_int("lite_groups (--lite-groups)", self.lite_groups, 1)
        check_int("workers (--workers)", self.workers, 0)
        check_lr("lr (--lr)", self.lr, optional=True)
        check_fraction("label_smoothing (--label-smoothing)", self.label_smoothing)
        check_seed("seed (--seed)", self.seed)
        check_resolution("resolution (--resolution)", self.resolution)

    def resolved(self) -> dict:
        """epochs, lr, batch_size, optimizer and schedule after the recipe defaults (§5)."""
        paper = self.recipe == "paper"
        return {"epochs": self.epochs or (50 if paper else 40),
                "lr": self.lr or (2e-4 if paper else 4e-4),
                "batch_size": self.batch_size or 8,
                "optimizer": "adam" if paper else "adamw",
                "schedule": "cosine-per-iteration" if paper else "exponential-0.9-per-epoch"}


@dataclass(frozen=True)
class TransferResult:
    method: str
    top1: float
    trainable_params: int
    frozen_unchanged: bool
    checkpoint: str
    epochs: int


# ---------------------------------------------------------------- model

def read_source(path: str) -> dict:
    """The ``--from`` payload, checked by ``read_payload`` (schema, dtypes, finiteness and
    magnitudes of the weights) before anything is allocated.

    Raises:
        UserError: unreadable, empty, out of bounds or not finite.
    """
    return read_payload(path)


def load_source(config: TransferConfig) -> nn.Module:
    """The source net with lite residuals (inserted here unless the checkpoint has them), built
    for ``config.resolution`` when given (weights do not depend on the input size), else for the
    checkpoint's (or the model's) resolution."""
    if config.source is None:
        base = build_model(config.model, resolution=config.resolution)
    else:
        payload = read_source(config.source)
        if payload.get("kind") == "tinytl":
            return build_from_payload(payload, config.resolution)
        base, _ = model_from_checkpoint(config.source, config.model, config.resolution)
        base = at_resolution(base, config.resolution)
    lite = default_config(base.spec.name)
    if config.lite_kernel is not None:
        lite = LiteResidualConfig(**{**lite.__dict__, "kernel_size": config.lite_kernel})
    lite = LiteResidualConfig(**{**lite.__dict__, "groups": config.lite_groups})
    return insert_checked(base, lite)


def at_resolution(model: nn.Module, resolution: int | None) -> nn.Module:
    """``model`` rebuilt for ``resolution`` inputs with the same weights and BN eps (a zoo net is
    built from its spec alone, and none of its weights depends on the input size)."""
    if resolution is None or resolution == model.spec.resolution:
        return model
    with torch.random.fork_rng(devices=[]):  # the throwaway init leaves the global RNG alone
        resized = type(model)(model.spec.with_(resolution=int(resolution)))
    resized.load_state_dict(model.state_dict())
    for old, new in zip(model.modules(), resized.modules(), strict=True):
        if isinstance(old, nn.BatchNorm2d):
            new.eps = old.eps
    return resized.train(model.training)


def insert_checked(base: nn.Module, lite: LiteResidualConfig) -> nn.Module:
    """``insert_lite_residual`` followed by its equivalence check (outputs unchanged)."""
    adapted = insert_lite_residual(base, lite)
    r = base.spec.resolution
    x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(x), base.eval()(x), atol=INSERT_ATOL, rtol=0)
    return adapted


def build_adapted(config: TransferConfig, num_classes: int,
                  source: nn.Module | None = None) -> nn.Module:
    """The source net (``source``, else :func:`load_source`) → GN (``norm="gn"``) → the method's
    head and trainable set → 8-bit frozen weights (``frozen_bits=8``) → weight standardisation
    (``ws``)."""
    model = source if source is not None else load_source(config)
    if config.norm == "gn":
        model = replace_bn_with_gn(model)
    model = prepare_method(model, config.method, num_classes)
    if config.frozen_bits == 8:
        model = kmeans_quantize_frozen(model, 8, seed=config.seed)
    if config.ws:
        model = apply_weight_standardization(model)
    return model


def frozen_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Frozen parameters and the running statistics of frozen BNs (they must not move)."""
    snap = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
            for b, t in m.named_buffers():
                snap[f"{name}.{b}"] = t.detach().clone()
    return snap


def frozen_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensor differs from the snapshot (empty = bit-identical)."""
    current = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return [n for n, t in snapshot.items() if not torch.equal(current[n].detach().cpu(), t)]


# ---------------------------------------------------------------- data

def _labels(ds: Dataset) -> list[int]:
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return [int(v) for v in labels]
    return [int(ds[i][1]) for i in range(len(ds))]


def select(ds: Dataset, classes: tuple[int, ...] | None, count: int | None, seed: int
           ) -> tuple[Dataset, int]:
    """(subset, number of classes): keep ``classes`` (remapped), then ``count`` random images."""
    labels = _labels(ds)
    known = sorted(set(labels))
    if classes:
        missing = [c for c in classes if c not in known]
        if missing:
            raise UserError(f"--classes {missing} not in the data set (labels {known})")
        keep = [i for i, y in enumerate(labels) if y in classes]
        remap = {c: j for j, c in enumerate(classes)}
    else:
        keep, remap = None, None
    total = len(getattr(ds, "classes", None) or known)
    return subset(ds, count, seed, keep, remap), (len(classes) if classes else max(total, max(known) + 1))


def _check_same_classes(config: TransferConfig, train: Dataset, val: Dataset) -> None:
    """``--val-data`` must name ``--data``'s classes in the same order (labels are positions)."""
    ours, theirs = getattr(train, "classes", None), getattr(val, "classes", None)
    if config.val_data and ours is not None and theirs is not None and ours != theirs:
        raise UserError(f"--val-data {config.val_data!r} has classes {short_repr(theirs)} but "
                        f"--data {config.data!r} has {short_repr(ours)}; labels are the classes' "
                        "positions, so pass evaluation data of the same classes")


def build_loaders(config: TransferConfig, resolution: int, batch_size: int):
    """Train loader (shuffled, seeded), val loader (batch 100) and the number of classes."""
    pre = Preprocessing(resolution)
    train_full = build_dataset(config.data, "train", pre, True)
    val_full = build_dataset(config.val_data or config.data, "val", pre, False)
    _check_same_classes(config, train_full, val_full)
    train_ds, classes = select(train_full, config.classes, config.limit_train, config.seed)
    val_ds, _ = select(val_full, config.classes, config.limit_val, config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(train_ds, batch_size, shuffle=True, drop_last=len(train_ds) > batch_size,
                       num_workers=config.workers, generator=generator)
    val = DataLoader(val_ds, 100, shuffle=False, num_workers=config.workers)
    return train, val, classes


# ---------------------------------------------------------------- training

def _optimizer_and_schedule(model: nn.Module, config: TransferConfig, steps_per_epoch: int):
    r = config.resolved()
    params = [p for p in model.parameters() if p.requires_grad]
    if r["optimizer"] == "adam":
        optimizer = torch.optim.Adam(params, lr=r["lr"])
        total = r["epochs"] * steps_per_epoch

        def factor(step: int) -> float:  # §5: per-iteration cosine, no warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
    else:
        optimizer = torch.optim.AdamW(params, lr=r["lr"])

        def factor(step: int) -> float:  # seed recipe: γ 0.9 per epoch
            return 0.9 ** (step // steps_per_epoch)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TransferTask(TrainTask):
    """Plain step, but frozen BNs keep their running statistics (set before every step);
    ``best.pt`` is a ``tinytl`` checkpoint."""

    def __init__(self, config: TransferConfig, val_loader):
        super().__init__(nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                         lambda m, e: evaluate_top1(m, val_loader, config.device))
        self.config = config

    def train_step(self, ctx: StepContext) -> StepResult:
        set_train_mode_(ctx.module, True)
        return super().train_step(ctx)

    def export_payload(self, module: nn.Module, meta: dict) -> dict:
        c = self.config
        return tinytl_payload(module, c.method, c.norm, c.ws, **meta)


def run_transfer(config: TransferConfig) -> TransferResult:
    """Run one transfer; writes ``transfer.pt`` (final weights, §5) and ``result.json``."""
    seed_everything(config.seed)
    r = config.resolved()
    source = load_source(config)
    config = replace(config, resolution=source.spec.resolution)  # recorded in result.json
    train_loader, val_loader, classes = build_loaders(config, config.resolution, r["batch_size"])
    model = build_adapted(config, classes, source)
    snapshot = frozen_snapshot(model)
    steps = config.max_steps_per_epoch
    per_epoch = max(min(len(train_loader), steps or len(train_loader)), 1)
    optimizer, scheduler = _optimizer_and_schedule(model, config, per_epoch)
    loop = TrainConfig(epochs=r["epochs"], out_dir=config.out_dir, device=config.device,
                       seed=config.seed, max_steps_per_epoch=steps, progress=config.progress)
    meta = {"recipe": config.recipe, "resolved": r, "data": config.data}
    result = train(model, TransferTask(config, val_loader), train_loader, optimizer, scheduler,
                   loop, meta)
    changed = frozen_unchanged(model, snapshot)
    if changed:
        raise StageError(f"{len(changed)} frozen tensors changed during training "
                         f"(first: {changed[:3]}); this is a bug")
    out = Path(config.out_dir)
    model.cpu()
    torch_save(tinytl_payload(model, config.method, config.norm, config.ws, **meta),
               out / "transfer.pt")
    top1 = float(result.last_metrics.get("val_top1", float("nan")))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    res = TransferResult(config.method, top1, trainable, True, str(out / "transfer.pt"),
                         r["epochs"])
    write_json(out / "result.json", {**to_record(res), "config": asdict(config)})
    return res

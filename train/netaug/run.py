"""One ``tinytrain`` run: data → supernet (or baseline) → Trainer → best.pt / target.pt.

``run_training(recipe, train_config)`` is what ``tinytrain`` calls on every rank (under torchrun or
as one process). Outputs in ``out_dir``: ``checkpoint.pt``, ``best.pt``, ``target.pt`` (the base
model as a plain ``base`` checkpoint), ``config.yaml`` (resolved), ``metrics.jsonl``, and with
``TrainConfig.tensorboard`` TensorBoard events (``tensorboard/``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from tinyexport.atomic import torch_save, write_text
from tinyexport.config import git_sha, package_versions
from tinyexport.errors import UserError
from tinyexport.json_record import to_record
from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.checkpoint_format import describe_checkpoint, make_payload
from tinyexport.train.data import (
    Preprocessing,
    build_dataset,
    parse_data_spec,
    subset,
    subset_indices,
)
from tinyexport.train.device_data import BatchAugment, DeviceSource, device_source, resolve_pipeline
from tinyexport.train.evaluate import evaluate_top1
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model, model_spec
from tinyexport.train.models.spec import num_classes_problem
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask, reestimate_base_bn_
from tinyexport.train.optim import param_groups, warmup_cosine
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, train

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    out_dir: str
    best_top1: float | None
    best_epoch: int | None
    target: str
    skipped_images: int


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_loaders(recipe: Recipe, resolution: int, device: str | torch.device = "cpu"):
    """Train / val loaders (DistributedSampler order on every path) and the training set.

    ``recipe.data_pipeline`` (``auto``: ``device`` on CUDA) picks the on-device pipeline
    (``tinyexport.train.device_data``: the training set returned is then a ``DeviceSource``) or
    PIL transforms in DataLoader workers."""
    if resolve_pipeline(recipe.data_pipeline, torch.device(device).type) == "device":
        return _device_loaders(recipe, resolution, torch.device(device))
    pre = Preprocessing(resolution)
    train_set = subset(build_dataset(recipe.data, "train", pre, True), recipe.limit_train, 0)
    val_set = subset(build_dataset(recipe.data, "val", pre, False), recipe.limit_val, 1)
    rank, world = _world()
    if len(train_set) < recipe.batch_size * world:
        raise UserError(f"{len(train_set)} training images are fewer than one global batch "
                        f"({recipe.batch_size} x {world}); lower --batch-size")
    train_sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=recipe.seed,
                                       drop_last=True)
    kw = {"num_workers": recipe.workers or 0, "persistent_workers": False,
          "pin_memory": torch.cuda.is_available()}
    train_loader = DataLoader(train_set, recipe.batch_size, sampler=train_sampler, drop_last=True,
                              **kw)
    val_loader = DataLoader(val_set, recipe.batch_size,
                            sampler=DistributedSampler(val_set, world, rank, shuffle=False), **kw)
    return train_loader, val_loader, train_set


def _device_loaders(recipe: Recipe, resolution: int, device: torch.device):
    """``build_loaders`` for the on-device pipeline: the same images, index order and batches."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    pre, spec = Preprocessing(resolution), parse_data_spec(recipe.data)
    rank, world = _world()
    train_src = device_source(spec, "train")
    val_src = device_source(spec, "val")
    train_idx = subset_indices(list(range(len(train_src))), recipe.limit_train, 0)
    val_idx = subset_indices(list(range(len(val_src))), recipe.limit_val, 1)
    if len(train_idx) < recipe.batch_size * world:
        raise UserError(f"{len(train_idx)} training images are fewer than one global batch "
                        f"({recipe.batch_size} x {world}); lower --batch-size")
    workers = recipe.workers or 0
    augment = BatchAugment(pre, True, seed=recipe.seed * 65536 + rank)
    train_loader = train_src.loader(train_idx, recipe.batch_size, augment, device, True, workers,
                                    num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed)
    val_loader = val_src.loader(val_idx, recipe.batch_size, BatchAugment(pre, False), device,
                                False, workers, num_replicas=world, rank=rank, shuffle=False)
    return train_loader, val_loader, _DeviceTrainSet(train_src, train_idx, pre, device)


@dataclass(frozen=True)
class _DeviceTrainSet:
    """What ``run_training`` needs of the training set on the on-device pipeline."""

    source: DeviceSource
    indices: list[int]
    pre: Preprocessing
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    def __len__(self) -> int:
        return len(self.indices)


def bn_batches(train_set, recipe: Recipe) -> list[torch.Tensor]:
    """The BN re-estimation subset (docs/netaug.md §1.7): up to ``bn_images`` train images (train
    transforms) chosen with seed ``bn_seed``, split across ranks (drop_last), materialised once."""
    rank, world = _world()
    if isinstance(train_set, _DeviceTrainSet):
        chosen = subset_indices(train_set.indices, recipe.bn_images, recipe.bn_seed)
        loader = train_set.source.loader(
            chosen, min(recipe.batch_size, max(len(chosen) // world, 1)),
            BatchAugment(train_set.pre, True, seed=recipe.bn_seed), train_set.device, True,
            num_replicas=world, rank=rank, shuffle=True, seed=0)
        return [images for images, _ in loader]
    chosen = subset(train_set, recipe.bn_images, recipe.bn_seed)
    sampler = DistributedSampler(chosen, world, rank, shuffle=True, seed=0, drop_last=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.bn_seed)
        loader = DataLoader(chosen, min(recipe.batch_size, max(len(chosen) // world, 1)),
                            sampler=sampler, drop_last=True)
        return [images for images, _ in loader]


def build_model_for(recipe: Recipe, num_classes: int) -> nn.Module:
    torch.manual_seed(recipe.seed)  # identical init on every rank (docs/netaug.md §1.6)
    if not recipe.netaug:
        return build_model(recipe.model, num_classes, recipe.resolution, recipe.dropout)
    spec = model_spec(recipe.model, num_classes, recipe.resolution, recipe.dropout)
    if spec.name == "mobilenetv2":
        raise UserError("--netaug supports the MBNet zoo models (mbv2-tiny, mbv2-w0.35, "
                        "proxylessnas-w0.35, mcunet*, proxyless*), not the torchvision-layout "
                        "'mobilenetv2'; use --no-netaug for it")
    return build_supernet(spec, recipe.width_mult_list, recipe.expand_list)


def _evaluate_fn(recipe, val_loader, calib, config: TrainConfig):
    def evaluate(module: nn.Module, epoch: int) -> dict:
        device = next(module.parameters()).device
        extra = {}
        if recipe.netaug:
            model = reestimate_base_bn_(module, [b.to(device) for b in calib], sync=True)
        elif recipe.effective_reestimate_bn():
            extra["top1_running_stats"] = evaluate_top1(module, val_loader, device, config.amp,
                                                        config.channels_last)["top1"]
            model = reestimate_bn_(module, [b.to(device) for b in calib])
        else:
            model = module
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return {**evaluate_top1(model, val_loader, device, config.amp, config.channels_last),
                **extra}

    return evaluate


@torch.no_grad()
def reestimate_bn_(module: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Re-estimate ``module``'s BN statistics (docs/netaug.md §1.7) and write them into it, so
    ``best.pt`` / ``target.pt`` carry the statistics that were evaluated. Returns ``module``."""
    fresh = reestimate_bn(module, batches, sync=True)
    own = dict(module.named_buffers())
    for name, buffer in fresh.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            own[name].copy_(buffer)
    return module


def build_optimizer(model: nn.Module, recipe: Recipe, steps_per_epoch: int):
    """SGD with the per-iteration warmup-cosine schedule at this run's peak LR (docs/netaug.md §4):
    ``recipe.peak_lr(world)`` (per-256 LR × global batch), warming up from
    ``warmup_start_factor × peak`` on every world size: on one process too."""
    _, world = _world()
    peak = recipe.peak_lr(world)
    optimizer = torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=peak,
                                momentum=recipe.momentum, nesterov=recipe.nesterov)
    scheduler = warmup_cosine(optimizer, peak, recipe.warmup_start_factor,
                              recipe.effective_warmup() * steps_per_epoch,
                              recipe.epochs * steps_per_epoch)
    return optimizer, scheduler


def _write_config(out_dir: Path, recipe: Recipe, config: TrainConfig, extra: dict) -> None:
    doc = {"recipe": to_record(recipe), "run": asdict(config), **extra,
           "versions": package_versions(("torch", "numpy")), "git_sha": git_sha()}
    write_text(out_dir / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def netaug_schedule(recipe: Recipe) -> NetAugSchedule:
    return NetAugSchedule(recipe.epochs, recipe.effective_stop_aug_w(), recipe.stop_netaug_epoch,
                          recipe.sort_channels, recipe.sort_channels_every)


def write_target(out_dir: Path) -> Path:
    """``target.pt``: the base model of ``best.pt`` as a plain ``base`` checkpoint (§1.8)."""
    base, meta = model_from_checkpoint(out_dir / "best.pt")
    data = describe_checkpoint(out_dir / "best.pt").get("data")  # tinyexport calibrates on it
    target = out_dir / "target.pt"
    torch_save(make_payload(base, "base", source="best.pt", epoch=meta.get("epoch"),
                            top1=meta.get("top1"), data=data), target)
    return target


def run_training(recipe: Recipe, config: TrainConfig) -> RunResult:
    """Train per ``recipe`` with loop settings ``config`` (call on every rank)."""
    resolution = recipe.resolution or model_spec(recipe.model).resolution
    train_loader, val_loader, train_set = build_loaders(recipe, resolution, config.device)
    num_classes = len(train_set.classes)
    problem = num_classes_problem(num_classes)
    if problem:
        raise UserError(f"data {recipe.data!r}: {problem}; a classifier needs at least two "
                        "class folders / labels")
    model = build_model_for(recipe, num_classes)
    steps = len(train_loader) if recipe.max_steps_per_epoch is None else min(
        len(train_loader), recipe.max_steps_per_epoch)
    optimizer, scheduler = build_optimizer(model, recipe, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    calib = bn_batches(train_set, recipe) if recipe.effective_reestimate_bn() else []
    evaluate = _evaluate_fn(recipe, val_loader, calib, config)
    meta = {"recipe": to_record(recipe), "netaug": recipe.netaug}
    if recipe.netaug:
        task = NetAugTask(criterion, netaug_schedule(recipe), recipe.seed, evaluate)
    else:
        task = TrainTask(criterion, evaluate)
    out_dir = Path(config.out_dir)
    rank, world = _world()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_config(out_dir, recipe, config, {"world_size": world, "num_classes": num_classes,
                                                "resolution": resolution,
                                                "stop_aug_w_epoch": recipe.effective_stop_aug_w(),
                                                "peak_lr": recipe.peak_lr(world),
                                                "warmup_start_lr": recipe.peak_lr(world)
                                                * recipe.warmup_start_factor})
        _log.info("LR: peak %.4g (%.4g per 256 images x global batch %d), warmup from %.4g over "
                  "%d epoch(s)", recipe.peak_lr(world), recipe.lr_per_256(),
                  recipe.batch_size * world, recipe.peak_lr(world) * recipe.warmup_start_factor,
                  recipe.effective_warmup())
    result = train(model, task, train_loader, optimizer, scheduler, config, meta)
    target = write_target(out_dir) if rank == 0 else out_dir / "target.pt"
    source = getattr(train_set, "dataset", train_set)  # a Subset when --limit-train is used
    skipped = getattr(getattr(source, "skipped", None), "count", 0) or int(
        getattr(train_loader, "skipped", 0))
    if skipped:
        _log.warning("%d unreadable training images were skipped", skipped)
    return RunResult(str(out_dir), result.best_top1, result.best_epoch, str(target), skipped)

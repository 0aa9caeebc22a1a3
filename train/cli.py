"""``tinytrain``: train a zoo model with NetAug (or the plain baseline); ``tinytrain transfer`` is
TinyTL transfer learning (options in ``tinyexport.train.tinytl.cli``).

Runs as one process, or under ``torchrun --nproc_per_node N`` (NCCL on CUDA, gloo on CPU)::

    tinytrain --model mbv2-tiny --data fashion-mnist --netaug --epochs 2 --out runs/fm
    tinytrain transfer --from runs/fm/target.pt --data digits --out runs/tl
    torchrun --nproc_per_node 2 -m tinyexport.train --model mbv2-tiny --data fashion-mnist ...

One parser: the training options sit on ``tinytrain`` itself and ``transfer`` is its subcommand, so
``tinytrain --help`` lists the training options and ``tinytrain transfer --help`` the transfer ones.
Both share ``--out`` (required), ``--limit-train``, ``--limit-val`` and ``--max-steps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from tinyexport.distributed import cleanup, init_distributed, leave
from tinyexport.errors import UserError, run_cli
from tinyexport.log import setup_logging
from tinyexport.train.cli_options import OUT_HELP, add_limits, add_resources, apply_cpu_plan, warn_renamed
from tinyexport.train.data import parse_data_spec
from tinyexport.train.netaug.recipe import resolve_recipe
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.task import NetAugTask
from tinyexport.train.state import read_resume_state
from tinyexport.train.tinytl import cli as transfer_cli
from tinyexport.train.trainer import TrainConfig, claim_out_dir

_log = logging.getLogger(__name__)

USAGE = ("tinytrain --out DIR [--model NAME] [--data SPEC] [options]\n"
         "       tinytrain transfer --data SPEC --out DIR [--from CKPT] [options]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinytrain", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="zoo model name (default mbv2-tiny)")
    p.add_argument("--data", help="data SPEC: ImageFolder DIR, fashion-mnist[:DIR], cifar10:DIR, "
                                  "digits, synthetic[:N]")
    p.add_argument("--config", help="recipe YAML (default: train/configs/<model>-<data>.yaml or "
                                    "<data>.yaml when present)")
    p.add_argument("--netaug", action=argparse.BooleanOptionalAction, default=None,
                   help="NetAug supernet training (default from the recipe: on)")
    p.add_argument("--epochs", type=int, help="total epochs, warmup included")
    p.add_argument("--batch-size", type=int, help="per-process batch size")
    p.add_argument("--lr", type=float,
                   help="peak LR per 256 images of the global batch: the run's peak is LR x "
                        "batch size x world size / 256 (reference NetAug: 0.05)")
    p.add_argument("--baseline-lr", type=float,
                   help="LR per 256 images for --no-netaug runs (default: the recipe's, else --lr)")
    p.add_argument("--warmup-epochs", type=int, help="linear LR warmup epochs")
    p.add_argument("--warmup-start-factor", type=float,
                   help="the warmup starts at this fraction of the peak LR, on any world size "
                        "(reference: 1/16 = 0.0625)")
    p.add_argument("--stop-aug-w-epoch", type=int,
                   help="NetAug: the last N epochs augment the expand ratio only (reference: "
                        "half the run)")
    p.add_argument("--stop-netaug-epoch", type=int,
                   help="NetAug: the last N epochs train the base model alone (reference: 0)")
    p.add_argument("--sort-channels-every", type=int,
                   help="NetAug: sort channels at every Nth width-phase epoch (reference: 1)")
    p.add_argument("--resolution", type=int, help="input size (default: the recipe / model's)")
    p.add_argument("--seed", type=int)
    add_resources(p, "0 for in-memory data on CPU, else min(4, cores // 2); 4 on CUDA")
    add_limits(p)
    # Not argparse-required: the parent's check would also fire for `tinytrain transfer` (whose
    # own --out is required); main() checks it for training.
    p.add_argument("--out", metavar="DIR", help=OUT_HELP)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp16: CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (baseline and transfer; refused for NetAug, "
                        "whose shapes change every step)")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-reproducible runs and resumes on CUDA (deterministic cuDNN/cuBLAS "
                        "kernels, no autotuning; slower). CPU runs are reproducible without it")
    p.add_argument("--data-pipeline", choices=("auto", "cpu", "device"),
                   help="augment on the device in batches (default on CUDA: 'auto') or per image "
                        "with PIL in DataLoader workers ('cpu', the default elsewhere)")
    p.add_argument("--reestimate-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="re-estimate BN statistics before each evaluation (always on with NetAug; "
                        "for the baseline too when given: short high-LR runs evaluate far better "
                        "with it, and the statistics go into best.pt)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines (otherwise)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to OUT/tensorboard (needs tensorboard)")
    p.add_argument("-v", "--verbose", action="store_true")
    commands = p.add_subparsers(dest="command", title="subcommands", metavar="{transfer}")
    transfer = commands.add_parser("transfer", prog="tinytrain transfer",
                                   description=transfer_cli.DESCRIPTION,
                                   help="TinyTL transfer learning (tinytrain transfer --help)")
    transfer_cli.add_arguments(transfer)
    return p


def _overrides(args: argparse.Namespace) -> dict:
    keys = ("model", "data", "netaug", "epochs", "batch_size", "lr", "baseline_lr", "warmup_epochs",
            "warmup_start_factor", "stop_aug_w_epoch", "stop_netaug_epoch",
            "sort_channels_every", "resolution", "seed",
            "workers", "limit_train", "limit_val", "max_steps_per_epoch", "data_pipeline",
            "reestimate_bn")
    return {k: getattr(args, k) for k in keys}


def _train(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    recipe = resolve_recipe(args.config, _overrides(args))
    if args.compile and recipe.netaug:  # refused before any data is read (the Trainer checks too)
        raise UserError(f"--compile: {NetAugTask.compile_refusal}")
    config = TrainConfig(epochs=recipe.epochs, out_dir=args.out, device=device, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile,
                         deterministic=args.deterministic, resume=args.resume, seed=recipe.seed,
                         max_steps_per_epoch=recipe.max_steps_per_epoch,
                         progress=not args.no_progress, tensorboard=args.tensorboard)
    if args.resume:
        read_resume_state(Path(args.out) / "checkpoint.pt")
    workers = apply_cpu_plan(recipe.data, device, recipe.workers, args.threads)
    recipe = dataclasses.replace(recipe, workers=workers)
    sources = {"--data": parse_data_spec(recipe.data).path, "--config": args.config}
    with claim_out_dir(args.out, args.resume, sources):
        info = init_distributed(device)
        result = run_training(recipe, config)  # a failure leaves the group as it is: see leave()
        cleanup()
    if info.is_primary:
        print(f"best top-1 {result.best_top1:.2f}% (epoch {result.best_epoch}); "
              f"outputs in {result.out_dir} (target: {result.target})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "transfer" and argv[0] != "transfer":
        parser.error("the subcommand comes first: tinytrain transfer [options]")
    if args.command is None and args.out is None:
        parser.error("the following arguments are required: --out")
    setup_logging(args.verbose)
    warn_renamed(args)
    run = transfer_cli.run if args.command == "transfer" else _train
    keeps = transfer_cli.what_a_stop_keeps if args.command == "transfer" else what_a_stop_keeps
    return leave(run_cli(lambda: run(args), kept=keeps(args.out)))


def what_a_stop_keeps(out: str) -> str:
    """The end of the line printed when a training run is stopped (Ctrl-C, SIGTERM): its folder
    keeps every epoch it finished (checkpoint.pt is written after each, atomically)."""
    return (f"the epochs it finished stay in {out!r} (checkpoint.pt after each): rerun the same "
            "command with --resume to continue")


if __name__ == "__main__":
    raise SystemExit(main())

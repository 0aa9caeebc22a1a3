"""``tinytrain``: train a zoo model with NetAug (or the plain baseline); ``tinytrain transfer ...``
is TinyTL transfer learning (``tinyexport.train.tinytl.cli``).

Runs as one process, or under ``torchrun --nproc_per_node N`` (NCCL on CUDA, gloo on CPU)::

    tinytrain --model mbv2-tiny --data fashion-mnist --netaug --epochs 2 --out runs/fm
    torchrun --nproc_per_node 2 -m tinyexport.train --model mbv2-tiny --data fashion-mnist ...
"""

from __future__ import annotations

import argparse
import logging
import sys

from tinyexport.errors import UserError, run_cli

_log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinytrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="zoo model name (default mbv2-tiny)")
    p.add_argument("--data", help="data SPEC: ImageFolder DIR, fashion-mnist[:DIR], cifar10:DIR, "
                                  "digits, synthetic[:N]")
    p.add_argument("--config", help="recipe YAML (default: train/configs/<model>-<data>.yaml or "
                                    "<data>.yaml when present)")
    p.add_argument("--netaug", action=argparse.BooleanOptionalAction, default=None,
                   help="NetAug supernet training (default from the recipe: on)")
    p.add_argument("--epochs", type=int, help="total epochs, warmup included")
    p.add_argument("--batch-size", type=int, help="per-process batch size")
    p.add_argument("--lr", type=float, dest="base_lr", help="base LR (peak = LR x world size)")
    p.add_argument("--resolution", type=int, help="input size (default: the recipe / model's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers per process")
    p.add_argument("--limit-train", type=int, help="use a fixed subset of N training images")
    p.add_argument("--limit-val", type=int, help="use a fixed subset of N validation images")
    p.add_argument("--max-steps", type=int, dest="max_steps_per_epoch",
                   help="stop each epoch after N steps (smoke runs)")
    p.add_argument("--out", default="runs/tinytrain", help="output folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp16: CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    keys = ("model", "data", "netaug", "epochs", "batch_size", "base_lr", "resolution", "seed",
            "workers", "limit_train", "limit_val", "max_steps_per_epoch")
    return {k: getattr(args, k) for k in keys}


def _train(args: argparse.Namespace) -> int:
    import torch

    from tinyexport.distributed import cleanup, init_distributed
    from tinyexport.train.engine import TrainConfig
    from tinyexport.train.netaug.recipe import resolve_recipe
    from tinyexport.train.netaug.run import run_training

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    recipe = resolve_recipe(args.config, _overrides(args))
    info = init_distributed(device)
    try:
        config = TrainConfig(epochs=recipe.epochs, out_dir=args.out, device=device, amp=args.amp,
                             channels_last=args.channels_last, compile=args.compile,
                             resume=args.resume, seed=recipe.seed,
                             max_steps_per_epoch=recipe.max_steps_per_epoch,
                             progress=not args.no_progress and sys.stderr.isatty())
        result = run_training(recipe, config)
    finally:
        cleanup()
    if info.is_primary:
        print(f"best top-1 {result.best_top1:.2f}% (epoch {result.best_epoch}); "
              f"outputs in {result.out_dir} (target: {result.target})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "transfer":
        from importlib import import_module

        return import_module("tinyexport.train.tinytl.cli").main(argv[1:])
    args = build_parser().parse_args(argv)
    from tinyexport.log import setup_logging

    setup_logging(args.verbose)

    def body() -> int:
        try:
            return _train(args)
        except ValueError as exc:  # frozen-config validation
            raise UserError(str(exc)) from None

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())

"""``tinytrain transfer``: TinyTL transfer learning (thin CLI over ``transfer.run_transfer``).

The options are added to the ``transfer`` subcommand of ``tinytrain`` (``tinyexport.train.cli``) by
:func:`add_arguments`; :func:`main` runs the same options as a standalone parser (tests, ``python -m
tinyexport.train.tinytl.cli``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from tinyexport.errors import UserError, run_cli
from tinyexport.json_record import to_record
from tinyexport.log import setup_logging
from tinyexport.train.cli_options import (
    add_limits,
    add_out,
    add_renamed,
    add_resources,
    apply_cpu_plan,
    warn_renamed,
)
from tinyexport.train.data import parse_data_spec
from tinyexport.train.pretrained import fetch, release_for
from tinyexport.train.tinytl.methods import METHODS
from tinyexport.train.tinytl.transfer import RECIPES, TransferConfig, run_transfer
from tinyexport.train.trainer import claim_out_dir

TRANSFER_OUT_HELP = ("output folder (required; best.pt, checkpoint.pt, transfer.pt, result.json "
                     "and metrics.jsonl are written here; it must not hold a previous run)")
DESCRIPTION = ("Transfer a pretrained net with TinyTL or a fine-tuning baseline "
               "(docs/guide/transfer.md).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``transfer`` options (``--max-steps``/``--limit-*``/``--out`` as in ``tinytrain``)."""
    p.add_argument("--from", dest="source", help="source checkpoint: NetAug target.pt, one of "
                   "ours, or a released state_dict (with --model)")
    p.add_argument("--pretrained", nargs="?", const="default",
                   choices=("default", "mcunet-zoo", "netaug"),
                   help="start from the authors' released ImageNet weights of --model instead of "
                        "--from (downloaded once into ~/.cache/tinyexport)")
    p.add_argument("--model", help="zoo model name (needed for a plain state_dict)")
    p.add_argument("--method", default="tinytl-lb",
                   help=f"one of {', '.join(METHODS)} (TinyTL-L+B style spellings accepted)")
    p.add_argument("--data", required=True, help="target data SPEC (see tinytrain --help)")
    p.add_argument("--val-data", help="evaluation data SPEC (default: the val split of --data)")
    p.add_argument("--classes", help="keep only these labels, e.g. 5,6,7,8,9 (remapped to 0..K-1)")
    add_limits(p)
    add_out(p, help=TRANSFER_OUT_HELP)
    p.add_argument("--recipe", choices=RECIPES, default="paper",
                   help="paper: Adam, cosine per iteration, 50 epochs; seed: AdamW 4e-4, "
                        "γ 0.9 per epoch, 40 epochs")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--resolution", type=int)
    p.add_argument("--norm", choices=("bn", "gn"), default="bn",
                   help="gn = GroupNorm, 8 channels per group (official run; not exportable)")
    p.add_argument("--ws", action="store_true", help="weight standardisation (folded on export)")
    p.add_argument("--frozen-bits", type=int, choices=(8,), help="8-bit k-means of frozen weights")
    p.add_argument("--lite-kernel", type=int, help="max lite residual kernel (default per model)")
    p.add_argument("--lite-groups", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_resources(p, "0 for in-memory data on CPU, else min(4, cores // 2); 4 on CUDA")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines (otherwise)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_renamed(p, "--train-count", "--limit-train", "limit_train", int)
    add_renamed(p, "--val-count", "--limit-val", "limit_val", int)
    add_renamed(p, "--max-steps-per-epoch", "--max-steps", "max_steps_per_epoch", int)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinytrain transfer", description=DESCRIPTION)
    add_arguments(p)
    return p


def _classes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise UserError(f"--classes must be comma-separated integers, got {text!r}") from None


def _source(args: argparse.Namespace) -> str | None:
    """``--from``, or the cached released file of ``--model`` with ``--pretrained``."""
    if not args.pretrained:
        return args.source
    if args.source:
        raise UserError("give either --from or --pretrained, not both")
    if not args.model:
        raise UserError("--pretrained needs --model NAME (e.g. --model mcunet --pretrained)")
    source = None if args.pretrained == "default" else args.pretrained
    return str(fetch(release_for(args.model, source)))


def run(args: argparse.Namespace) -> int:
    """Run one transfer from parsed options and print its result as JSON."""
    config = TransferConfig(
        data=args.data, out_dir=args.out, method=args.method, source=_source(args),
        model=args.model, recipe=args.recipe, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, label_smoothing=args.label_smoothing,
        resolution=args.resolution, norm=args.norm, ws=args.ws,
        frozen_bits=args.frozen_bits, lite_kernel=args.lite_kernel,
        lite_groups=args.lite_groups, classes=_classes(args.classes),
        limit_train=args.limit_train, limit_val=args.limit_val, val_data=args.val_data,
        seed=args.seed, device=args.device, workers=args.workers or 0,
        max_steps_per_epoch=args.max_steps_per_epoch, progress=not args.no_progress)
    workers = apply_cpu_plan(config.data, config.device, args.workers, args.threads)
    sources = {"--from": config.source, "--data": parse_data_spec(config.data).path,
               "--val-data": parse_data_spec(config.val_data).path if config.val_data else None}
    with claim_out_dir(config.out_dir, resume=False, sources=sources):
        result = run_transfer(dataclasses.replace(config, workers=workers))
    print(json.dumps(to_record(result), indent=2))
    return 0


def what_a_stop_keeps(out: str) -> str:
    """The end of the line printed when a transfer is stopped (Ctrl-C, SIGTERM): its folder keeps
    the epochs it finished, and a transfer has no --resume."""
    return (f"the epochs it finished stay in {out!r} (checkpoint.pt, best.pt); a transfer does "
            "not resume: rerun it with another --out")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    warn_renamed(args)
    return run_cli(lambda: run(args), kept=what_a_stop_keeps(args.out))


if __name__ == "__main__":
    raise SystemExit(main())

"""Options shared by ``tinytrain`` and ``tinytrain transfer``: one name and one help text each.

Old spellings stay accepted for one release as hidden aliases (not in ``--help``); using one logs a
warning naming the new spelling (:func:`warn_renamed`, called after logging is set up).
"""

from __future__ import annotations

import argparse
import logging
import os

import torch

from tinyexport.train.resources import plan_cpu, usable_cores

_log = logging.getLogger(__name__)

OUT_HELP = ("output folder (required; checkpoint.pt, best.pt, metrics.jsonl... are written here "
            "and --resume continues from it; a folder holding a previous run is refused without "
            "--resume)")


class _RenamedOption(argparse.Action):
    """A hidden old spelling: stores into the new option's ``dest`` and records the rename."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        renamed = getattr(namespace, "renamed_options", [])
        namespace.renamed_options = [*renamed, (option_string, self.new)]


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, dest: str, type=None) -> None:
    """Accept ``old`` as a hidden alias of ``new`` (same ``dest``) for one release."""
    parser.add_argument(old, dest=dest, type=type, action=_RenamedOption, new=new)


def add_limits(parser: argparse.ArgumentParser) -> None:
    """``--limit-train``, ``--limit-val``, ``--max-steps`` (smoke runs, small subsets)."""
    parser.add_argument("--limit-train", type=int, metavar="N",
                        help="use a fixed random subset of N training images (the same on every run)")
    parser.add_argument("--limit-val", type=int, metavar="N",
                        help="use a fixed random subset of N validation images")
    parser.add_argument("--max-steps", type=int, dest="max_steps_per_epoch", metavar="N",
                        help="stop each epoch after N steps (smoke runs)")


def add_resources(parser: argparse.ArgumentParser, workers_default: str) -> None:
    """``--workers`` and ``--threads`` (default: chosen by :func:`apply_cpu_plan`)."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"DataLoader worker processes per process (default: {workers_default})")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads on CPU (default: cores - workers - 1, at least 1; "
                             "OMP_NUM_THREADS is respected)")


def apply_cpu_plan(data: str, device: str, workers: int | None, threads: int | None) -> int:
    """Choose DataLoader workers and torch threads (``tinyexport.train.resources``), set the
    threads, log one line saying what was picked, and return the number of workers."""
    cores = usable_cores()
    plan = plan_cpu(data, device, workers, threads, os.environ, cores)
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    _log.info("%s: %d torch thread(s), %d DataLoader worker(s) of %d usable cores (%s; "
              "--threads / --workers change them)", device.upper(), torch.get_num_threads(),
              plan.workers, cores, plan.reason)
    return plan.workers


def add_out(parser: argparse.ArgumentParser, required: bool = True, help: str = OUT_HELP) -> None:
    parser.add_argument("--out", required=required, metavar="DIR", help=help)


def warn_renamed(args: argparse.Namespace) -> None:
    """Log one warning per old option spelling used on the command line."""
    for old, new in getattr(args, "renamed_options", []):
        _log.warning("%s is renamed %s; the old spelling will be removed in the next release",
                     old, new)

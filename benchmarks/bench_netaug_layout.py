"""Where NetAug's channels_last step time goes on CUDA (issue 14's cliff): one model, one phase,
several layout strategies side by side, each in a fresh process (cuDNN caches its per-shape setup
process-wide, so variants run one after another in one process would share it).

Variants (fixed tensors, ``--warmup`` untimed then ``--steps`` timed steps):

* ``nchw``: contiguous activations and weights (the reference point);
* ``cl``: the trainer's channels_last: activations and sliced pointwise weights channels_last,
  depthwise convs computed NCHW (``tinyexport.train.netaug.layers.depthwise_conv``);
* ``cl_bench``: as ``cl`` with cuDNN autotuning on;
* ``cl_dw_cudnn``: channels_last everywhere, depthwise convs too (cuDNN's NHWC grouped kernels;
  the code before 2026-11-27);
* ``cl_nchw_weight``: channels_last activations with NCHW weights (cuDNN converts per call).

Run (GPU): ``python -m tinyexport.benchmarks.bench_netaug_layout --phase random --profile cl``;
prints one JSON line per variant and, with ``--profile``, the top CUDA kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

from tinyexport.benchmarks.bench_netaug import _sync, step_trainer
from tinyexport.train.netaug import layers
from tinyexport.train.trainer import Trainer

VARIANTS = ("nchw", "cl", "cl_bench", "cl_dw_cudnn", "cl_nchw_weight")


def _depthwise_channels_last(x, weight, stride, padding):
    """Depthwise conv in the input's layout (cuDNN's NHWC grouped kernels for channels_last)."""
    return F.conv2d(x, layers.sliced_weight(weight, x), None, stride, padding, 1, x.shape[1])


@contextlib.contextmanager
def _variant(name: str):
    saved = (layers.sliced_weight, layers.depthwise_conv, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = name == "cl_bench"
    if name == "cl_nchw_weight":
        layers.sliced_weight = lambda weight, x: weight.contiguous()
    if name in ("cl_dw_cudnn", "cl_nchw_weight"):
        layers.depthwise_conv = _depthwise_channels_last
    try:
        yield
    finally:
        layers.sliced_weight, layers.depthwise_conv, torch.backends.cudnn.benchmark = saved


def _trainer(args, channels_last: bool, steps: int, tmp: str) -> Trainer:
    return step_trainer(f"netaug_{args.phase}", args, steps, tmp, args.amp, channels_last)


def time_variant(name: str, args, tmp: str) -> dict:
    """s/step of ``name`` after ``args.warmup`` untimed steps."""
    with _variant(name):
        trainer = _trainer(args, name != "nchw", args.warmup, tmp)
        trainer.train_one_epoch(0)
        trainer.loader = trainer.loader[:1] * args.steps
        _sync(args.device)
        start = time.perf_counter()
        trainer.train_one_epoch(0)
        _sync(args.device)
        sec = (time.perf_counter() - start) / args.steps
    return {"variant": name, "phase": args.phase, "amp": args.amp or "fp32",
            "s_per_step": round(sec, 4), "images_per_s": round(args.batch_size / sec, 1)}


def profile_variant(name: str, args, tmp: str, top: int = 12) -> str:
    """The top kernels (CUDA) or ops (CPU) of 3 steps of ``name`` after its timed steps."""
    from torch.profiler import ProfilerActivity, profile

    with _variant(name):
        trainer = _trainer(args, name != "nchw", 3, tmp)
        kinds = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        with profile(activities=kinds) as prof:
            trainer.train_one_epoch(0)
            _sync(args.device)
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu only checks the plumbing")
    p.add_argument("--model", default="mbv2-tiny")
    p.add_argument("--phase", choices=("random", "min_w"), default="random")
    p.add_argument("--amp", choices=("bf16",), default=None)
    p.add_argument("--resolution", type=int, default=144)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--profile", nargs="*", choices=VARIANTS, default=[],
                   help="variants whose top CUDA kernels are printed (after their timing)")
    p.add_argument("--timeout-s", type=float, default=120, help="per variant")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def _run_child(name: str, argv: list[str], timeout: float) -> str:
    cmd = [sys.executable, "-m", "tinyexport.benchmarks.bench_netaug_layout", *argv,
           "--variants", name, "--child"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return json.dumps({"variant": name, "error": f"over {timeout:.0f} s"})
    if done.returncode != 0:
        return json.dumps({"variant": name, "error": done.stderr.strip()[-500:]})
    return done.stdout.rstrip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if not args.child:
        passed = [a for a in argv if a != "--child"]
        if "--variants" in passed:  # the child gets its one variant
            cut = passed.index("--variants")
            rest = passed[cut + 1:]
            keep = next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))
            passed = passed[:cut] + rest[keep:]
        for name in args.variants:
            print(_run_child(name, passed, args.timeout_s), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        name = args.variants[0]
        print(json.dumps(time_variant(name, args, tmp)), flush=True)
        if name in args.profile:
            print(f"## top kernels, {name}, {args.phase}, {args.amp or 'fp32'}", flush=True)
            print(profile_variant(name, args, tmp), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NetAug vs baseline benchmark (``tinytrain`` + ``tinyexport``), and the NetAug step-time ratio.

1. Accuracy: ``mbv2-tiny`` on Fashion-MNIST at a small resolution, equal epochs, several seeds,
   NetAug and ``--no-netaug`` with the same recipe. Each run's ``target.pt`` is exported with
   ``tinyexport --int8`` (real onnx2tf + TFLiteConverter) and evaluated with LiteRT int8 on the
   Fashion-MNIST test images; fp32 top-1 is the torch model's on the same images.
2. Step time: seconds per training step of the NetAug step (base + one augmented pass, each phase)
   over the plain step, on fixed tensors (no data loading), same batch and threads.

Writes ``benchmarks/results/netaug_results.json`` and ``netaug_results.md``. Run::

    OMP_NUM_THREADS=1 .venv/bin/python -m tinyexport.benchmarks.bench_netaug --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinyexport.atomic import write_json, write_text
from tinyexport.train.models import build_model, model_spec
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.task import NetAugTask
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, train

_log = logging.getLogger("bench_netaug")
RESULTS = Path(__file__).resolve().parent / "results"


def _train(seed: int, netaug: bool, args, out: Path) -> dict:
    recipe = Recipe(model="mbv2-tiny", data="fashion-mnist", resolution=args.resolution,
                    epochs=args.epochs, warmup_epochs=1, batch_size=args.batch_size,
                    base_lr=args.lr, stop_aug_w_epoch=max(args.epochs // 3, 1),
                    bn_images=2000, seed=seed, workers=0, limit_train=args.train_images,
                    limit_val=args.eval_images, netaug=netaug)
    start = time.perf_counter()
    result = run_training(recipe, TrainConfig(epochs=args.epochs, out_dir=str(out), seed=seed,
                                              progress=False))
    train_s = time.perf_counter() - start
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "netaug": netaug, "best_top1_fp32_train_eval": result.best_top1,
            "train_seconds": round(train_s, 1),
            "images_per_s": [round(r["images_per_s"], 1) for r in records]}


def _export(run_dir: Path, args) -> dict:
    out = run_dir / "export"
    cmd = [sys.executable, "-m", "tinyexport.export", "--model", "mbv2-tiny", "--checkpoint",
           str(run_dir / "target.pt"), "--int8", "--resolution", str(args.resolution),
           "--calib-data", "fashion-mnist", "--calib-images", "200", "--check-images", "32",
           "--eval-data", "fashion-mnist", "--eval-images", str(args.eval_images),
           "--no-bn-recalibrate", "--no-firmware", "--out", str(out), "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tinyexport failed: {done.stderr[-2000:]}")
    evaluation = json.loads((out / "export.json").read_text())["evaluation"]
    top1 = evaluation["top1"]
    return {"top1_fp32": 100 * top1["torch_fp32"], "top1_int8": 100 * top1["litert_int8"],
            "eval_images": evaluation["data"]["images"]}


def accuracy_runs(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_netaug_") as tmp:
        for seed in args.seeds:
            for netaug in (True, False):
                run_dir = Path(tmp) / f"{'netaug' if netaug else 'baseline'}-{seed}"
                row = _train(seed, netaug, args, run_dir)
                row.update(_export(run_dir, args))
                _log.info("%s", row)
                rows.append(row)
    return rows


def step_time(args, steps: int = 10) -> dict:
    """Seconds per step: plain step vs NetAug step in each phase, fixed tensors."""
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    y = torch.randint(0, 10, (args.batch_size,))
    loader = [(x, y)] * steps
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"baseline": (build_model("mbv2-tiny", 10, args.resolution), None),
                 "netaug_random": (build_supernet(model_spec("mbv2-tiny", 10, args.resolution)),
                                   0),  # stop_aug_w 0: epoch 0 is a `random` epoch
                 "netaug_min_w": (build_supernet(model_spec("mbv2-tiny", 10, args.resolution)),
                                  10)}  # every epoch is `min_w`
        for name, (model, stop) in cases.items():
            task = TrainTask(crit) if stop is None else NetAugTask(crit, 2, stop)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            cfg = TrainConfig(epochs=1, out_dir=tmp, progress=False, tensorboard=False)
            start = time.perf_counter()
            train(model, task, loader, opt, None, cfg)
            results[name] = (time.perf_counter() - start) / steps
    base = results["baseline"]
    return {"seconds_per_step": {k: round(v, 4) for k, v in results.items()},
            "ratio_random": round(results["netaug_random"] / base, 2),
            "ratio_min_w": round(results["netaug_min_w"] / base, 2),
            "batch": args.batch_size, "resolution": args.resolution,
            "threads": torch.get_num_threads(), "device": "cpu"}


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(report: dict) -> str:
    rows = report["runs"]
    lines = ["# NetAug vs baseline — mbv2-tiny on Fashion-MNIST", "",
             f"Setup: {report['setup']}", "",
             "| method | seeds | fp32 top-1 (%) | int8 top-1 (%) | train s / run |",
             "|---|---|---|---|---|"]
    for netaug in (True, False):
        sel = [r for r in rows if r["netaug"] == netaug]
        if not sel:
            continue
        lines.append(f"| {'NetAug' if netaug else 'baseline'} | {len(sel)} | "
                     f"{_mean_std([r['top1_fp32'] for r in sel])} | "
                     f"{_mean_std([r['top1_int8'] for r in sel])} | "
                     f"{statistics.mean(r['train_seconds'] for r in sel):.0f} |")
    st = report["step_time"]
    lines += ["", "Step time on CPU (fixed tensors, no data loading; "
              f"batch {st['batch']}, {st['resolution']} px, {st['threads']} thread(s)):", "",
              "| step | s / step | ratio to baseline |", "|---|---|---|"]
    for name, sec in st["seconds_per_step"].items():
        lines.append(f"| {name} | {sec:.4f} | {sec / st['seconds_per_step']['baseline']:.2f} |")
    lines += ["", "GPU timings: not measured (no GPU was lent to this task)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--skip-accuracy", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = {"setup": (f"{args.train_images} train images, {args.epochs} epochs (1 warmup), "
                        f"{args.resolution} px, batch {args.batch_size}, base LR {args.lr}, "
                        f"label smoothing 0.1; evaluation on {args.eval_images} test images; "
                        f"int8 = tinyexport (onnx2tf + TFLiteConverter, per-channel, "
                        f"200 calibration images) run with LiteRT"),
              "step_time": step_time(args)}
    report["runs"] = [] if args.skip_accuracy else accuracy_runs(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "netaug_results.json", report)
    write_text(RESULTS / "netaug_results.md", render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NetAug vs baseline benchmark (``tinytrain`` + ``tinyexport``), and the NetAug step-time ratio.

1. Accuracy: ``mbv2-tiny`` on Fashion-MNIST at a small resolution, equal epochs, several seeds,
   NetAug and ``--no-netaug`` with the same recipe. Each run's ``target.pt`` is exported with
   ``tinyexport --int8`` (real onnx2tf + TFLiteConverter) and evaluated with LiteRT int8 on the
   Fashion-MNIST test images; fp32 top-1 is the torch model's on the same images.
2. Step time: seconds per training step of the NetAug step (base + one augmented pass, each phase)
   over the plain step, on fixed tensors (no data loading), same batch and threads.

Writes ``benchmarks/results/netaug_results.json`` and ``netaug_results.md`` (other profiles and
devices: ``netaug_<profile>_<device>_results.*``). Run::

    OMP_NUM_THREADS=1 .venv/bin/python -m tinyexport.benchmarks.bench_netaug --seeds 0 1 2
    python -m tinyexport.benchmarks.bench_netaug --device cuda --profile speed --cli-steps 100
    python -m tinyexport.benchmarks.bench_netaug --device cuda --profile accuracy   # ~5 min, H100

The step table covers every phase (baseline, NetAug width + expand ``random``, expand-only
``min_w``) × fp32 / bf16 × contiguous / channels_last on CUDA (fp32 contiguous on CPU). The
accuracy profile evaluates the baseline after BN re-estimation too (and reports its running-stats
top-1), so both methods are compared under the same protocol; its int8 column needs TensorFlow
and is skipped without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinyexport.benchmarks.publish import write_results
from tinyexport.train.models import build_model, model_spec
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, Trainer

_log = logging.getLogger("bench_netaug")
RESULTS = Path(__file__).resolve().parent / "results"


def _train(seed: int, netaug: bool, args, out: Path) -> dict:
    recipe = Recipe(model="mbv2-tiny", data="fashion-mnist", resolution=args.resolution,
                    epochs=args.epochs, warmup_epochs=1, batch_size=args.batch_size,
                    base_lr=args.lr, stop_aug_w_epoch=max(args.epochs // 3, 1),
                    bn_images=2000, seed=seed, workers=0, limit_train=args.train_images,
                    limit_val=args.eval_images, netaug=netaug,
                    reestimate_bn=args.profile == "accuracy" or None)
    start = time.perf_counter()
    result = run_training(recipe, TrainConfig(epochs=args.epochs, out_dir=str(out), seed=seed,
                                              device=args.device, progress=False))
    train_s = time.perf_counter() - start
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "netaug": netaug, "best_top1_fp32_train_eval": result.best_top1,
            "top1_fp32": records[-1]["val_top1"],
            "top1_running_stats": records[-1].get("val_top1_running_stats"),
            "train_seconds": round(train_s, 1),
            "images_per_s": [round(r["images_per_s"], 1) for r in records]}


def _export(run_dir: Path, args) -> dict:
    out = run_dir / "export"
    cmd = [sys.executable, "-m", "tinyexport.export", "--model", "mbv2-tiny", "--checkpoint",
           str(run_dir / "target.pt"), "--int8", "--resolution", str(args.resolution),
           "--calib-data", "fashion-mnist", "--calib-images", "200", "--check-images", "32",
           "--eval-data", "fashion-mnist", "--eval-images", str(args.eval_images or 10000),
           "--no-bn-recalibrate", "--no-firmware", "--out", str(out), "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tinyexport failed: {done.stderr[-2000:]}")
    evaluation = json.loads((out / "export.json").read_text())["evaluation"]
    top1 = evaluation["top1"]
    return {"top1_fp32": 100 * top1["torch_fp32"], "top1_int8": 100 * top1["litert_int8"],
            "eval_images": evaluation["data"]["images"]}


def int8_available() -> bool:
    """The int8 column needs TensorFlow (onnx2tf + TFLiteConverter, run by tinyexport)."""
    return importlib.util.find_spec("tensorflow") is not None


def accuracy_runs(args) -> list[dict]:
    int8 = not args.no_int8 and int8_available()
    if not int8:
        _log.info("int8 top-1 skipped (%s)", "--no-int8" if args.no_int8 else
                  "tensorflow is not installed: tinyexport's converter needs it")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_netaug_") as tmp:
        for seed in args.seeds:
            for netaug in (True, False):
                run_dir = Path(tmp) / f"{'netaug' if netaug else 'baseline'}-{seed}"
                row = _train(seed, netaug, args, run_dir)
                if int8:
                    row.update(_export(run_dir, args))
                _log.info("%s", row)
                rows.append(row)
    return rows


PHASES = {"baseline": None, "netaug_random": 0, "netaug_min_w": 10}  # stop_aug_w_epoch per phase
# (0: epoch 0 of 2 is a `random` epoch; 10: every epoch is `min_w`)


def _step_model(name: str, model: str, resolution: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "baseline":
        return build_model(model, 10, resolution)
    return build_supernet(model_spec(model, 10, resolution))


def step_trainer(name: str, args, steps: int, tmp: str, amp: str | None,
                 channels_last: bool) -> Trainer:
    """A Trainer of the ``name`` phase (:data:`PHASES`) on ``steps`` copies of one fixed batch
    (``args``: model, resolution, batch_size, device), its task's epoch 0 started."""
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    y = torch.randint(0, 10, (args.batch_size,))
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model = _step_model(name, args.model, args.resolution)
    stop = PHASES[name]
    task = TrainTask(crit) if stop is None else NetAugTask(crit, NetAugSchedule(2, stop))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = TrainConfig(epochs=1, out_dir=tmp, device=args.device, amp=amp,
                      channels_last=channels_last, progress=False)
    trainer = Trainer(model, task, [(x, y)] * steps, opt, None, cfg)
    task.on_epoch_start(model, 0)
    return trainer


def _time_case(name: str, amp: str | None, channels_last: bool, args, tmp: str) -> float:
    """Seconds per step of one case: a warm-up epoch, then a timed one (fixed tensors)."""
    trainer = step_trainer(name, args, args.steps, tmp, amp, channels_last)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = trainer.task.cudnn_benchmark(0)
    trainer.train_one_epoch(0)  # warm-up: allocator, cuDNN heuristics / autotuning
    _sync(args.device)
    start = time.perf_counter()
    trainer.train_one_epoch(0)
    _sync(args.device)
    return (time.perf_counter() - start) / args.steps


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_table(args) -> dict:
    """s/step and images/s of every phase × precision × layout, and the ratio to the baseline
    of the same precision and layout."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            for channels_last in args.layouts:
                amp = None if precision == "fp32" else precision
                base = None
                for name in PHASES:
                    sec = _time_case(name, amp, channels_last, args, tmp)
                    base = sec if name == "baseline" else base
                    rows.append({"phase": name, "precision": precision,
                                 "channels_last": channels_last, "s_per_step": round(sec, 4),
                                 "images_per_s": round(args.batch_size / sec, 1),
                                 "ratio_to_baseline": round(sec / base, 2)})
                    _log.info("%s", rows[-1])
    return {"rows": rows, "model": args.model, "batch": args.batch_size,
            "resolution": args.resolution, "steps": args.steps, "device": device_name(args.device),
            "threads": torch.get_num_threads()}


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} thread(s) (torch {torch.__version__})"


def cli_throughput(args) -> list[dict]:
    """images/s of the whole loop (data pipeline included) for ``--cli-steps`` steps."""
    rows = []
    pipelines = ("device", "cpu") if args.device == "cuda" else ("device",)
    with tempfile.TemporaryDirectory() as tmp:
        for netaug in (False, True):
            for pipeline in pipelines:
                recipe = Recipe(model=args.model, data=args.cli_data, resolution=args.resolution,
                                epochs=2, warmup_epochs=0, batch_size=args.batch_size,
                                stop_aug_w_epoch=1, bn_images=args.batch_size, netaug=netaug,
                                workers=args.workers, limit_val=args.batch_size,
                                max_steps_per_epoch=args.cli_steps, data_pipeline=pipeline)
                out = Path(tmp) / f"{netaug}-{pipeline}"
                run_training(recipe, TrainConfig(epochs=1, out_dir=str(out), device=args.device,
                                                 max_steps_per_epoch=args.cli_steps,
                                                 progress=False))
                record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
                rows.append({"netaug": netaug, "pipeline": pipeline,
                             "images_per_s": round(record["images_per_s"], 1)})
                _log.info("%s", rows[-1])
    return rows


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(report: dict) -> str:
    lines = ["# NetAug vs baseline — mbv2-tiny on Fashion-MNIST", ""]
    rows = report.get("runs") or []
    if rows:
        lines += [f"Setup: {report['setup']}", "",
                  "| method | seeds | fp32 top-1 (%) | int8 top-1 (%) | train s / run |",
                  "|---|---|---|---|---|"]
        for netaug in (True, False):
            sel = [r for r in rows if r["netaug"] == netaug]
            if sel:
                int8 = (_mean_std([r["top1_int8"] for r in sel]) if "top1_int8" in sel[0]
                        else "skipped (no tensorflow)")
                lines.append(f"| {'NetAug' if netaug else 'baseline'} | {len(sel)} | "
                             f"{_mean_std([r['top1_fp32'] for r in sel])} | {int8} | "
                             f"{statistics.mean(r['train_seconds'] for r in sel):.0f} |")
        lines.append("")
    st = report.get("step_time")
    if st:
        lines += [f"Step time on {st['device']} ({st['model']}, fixed tensors, no data loading; "
                  f"batch {st['batch']}, {st['resolution']} px, {st['steps']} timed steps after "
                  "a warm-up epoch):", "",
                  "| phase | precision | channels_last | s / step | images / s | × baseline |",
                  "|---|---|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['phase']} | {r['precision']} | {r['channels_last']} | "
                         f"{r['s_per_step']:.4f} | {r['images_per_s']:.0f} | "
                         f"{r['ratio_to_baseline']:.2f} |")
        lines.append("")
    if report.get("cli"):
        lines += ["Whole loop (tinytrain, data pipeline included, first step included):", "",
                  "| method | data pipeline | images / s |", "|---|---|---|"]
        for r in report["cli"]:
            lines.append(f"| {'NetAug' if r['netaug'] else 'baseline'} | {r['pipeline']} | "
                         f"{r['images_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=("default", "accuracy", "speed"), default="default",
                   help="default: the CPU accuracy runs + step table; accuracy: full 60k "
                        "Fashion-MNIST, 15 epochs, 2 seeds (GPU, ~5 min on one H100); speed: "
                        "the step table and whole-loop images/s only")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", default="mbv2-tiny", help="model of the step table")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-images", type=int)
    p.add_argument("--eval-images", type=int)
    p.add_argument("--resolution", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=int, default=10, help="timed steps per step-table case")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"))
    p.add_argument("--layouts", nargs="+", type=lambda v: v == "channels_last",
                   help="contiguous and/or channels_last (default: both on CUDA, contiguous "
                        "on CPU)")
    p.add_argument("--cli-steps", type=int, default=0, help="whole-loop images/s over N steps "
                                                            "(0: skip)")
    p.add_argument("--cli-data", default="fashion-mnist")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers, cpu pipeline")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 export (needs TF)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


PROFILES = {  # defaults per profile; explicit flags win
    "default": dict(seeds=[0, 1, 2], epochs=3, train_images=3000, eval_images=2000,
                    resolution=32, batch_size=64, lr=0.05),
    "accuracy": dict(seeds=[0, 1], epochs=15, train_images=None, eval_images=None,
                     resolution=32, batch_size=512, lr=0.2),
    "speed": dict(seeds=[], epochs=1, train_images=None, eval_images=None, resolution=144,
                  batch_size=256, lr=0.05),
}


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.precisions is None:
        args.precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    if args.layouts is None:
        args.layouts = [False, True] if args.device == "cuda" else [False]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _resolve(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = {"setup": (f"{args.train_images or 'all 60,000'} train images, {args.epochs} epochs "
                        f"(1 warmup), {args.resolution} px, batch {args.batch_size}, base LR "
                        f"{args.lr}, label smoothing 0.1; evaluation on "
                        f"{args.eval_images or 'all 10,000'} test images after BN "
                        f"re-estimation{' (baseline too)' if args.profile == 'accuracy' else ''};"
                        f" {device_name(args.device)}"), "profile": args.profile}
    if args.profile != "accuracy":
        report["step_time"] = step_table(args)
    if args.cli_steps:
        report["cli"] = cli_throughput(args)
    run_accuracy = args.profile == "accuracy" or (args.profile == "default"
                                                  and not args.skip_accuracy)
    report["runs"] = accuracy_runs(args) if run_accuracy else []
    stem = "netaug_results" if args.device == "cpu" and args.profile == "default" else \
        f"netaug_{args.profile}_{args.device}_results"
    write_results(args.results_dir, stem, report, render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

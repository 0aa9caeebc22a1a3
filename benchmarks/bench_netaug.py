"""NetAug vs baseline benchmark (``tinytrain`` + ``tinyexport``), and the NetAug step-time ratio.

1. Accuracy: ``mbv2-tiny`` on Fashion-MNIST at a small resolution, equal epochs, several seeds,
   NetAug and ``--no-netaug`` **each at its own best LR**: a sweep of LRs per method (per 256
   images of the global batch, warmup from peak / 16 as the reference), every seed at every LR;
   the best LR of a method is the one with the highest mean validation top-1 over the seeds (the
   same rule for both). The runs at each method's best LR are exported with ``tinyexport --int8``
   (real onnx2tf + TFLiteConverter) and evaluated with LiteRT int8 on the Fashion-MNIST test
   images; fp32 top-1 is the torch model's on the same images. ``--jobs N`` trains N runs at
   once, one thread each; results are written after every run, so an interrupted sweep keeps
   what it measured.
2. Step time: seconds per training step of the NetAug step (base + one augmented pass, each phase)
   over the plain step, on fixed tensors (no data loading), same batch and threads.

Writes ``benchmarks/results/netaug_results.json`` and ``netaug_results.md`` (other profiles and
devices: ``netaug_<profile>_<device>_results.*``). Run::

    OMP_NUM_THREADS=1 .venv/bin/python -m tinyexport.benchmarks.bench_netaug --jobs 2  # ~40 min
    python -m tinyexport.benchmarks.bench_netaug --device cuda --profile speed --cli-steps 100
    python -m tinyexport.benchmarks.bench_netaug --device cuda --profile accuracy --budget-s 720

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


def _train(seed: int, netaug: bool, lr: float, args, out: Path) -> dict:
    recipe = Recipe(model="mbv2-tiny", data="fashion-mnist", resolution=args.resolution,
                    epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                    batch_size=args.batch_size, lr=lr, stop_aug_w_epoch=max(args.epochs // 3, 1),
                    bn_images=2000, seed=seed, workers=0, limit_train=args.train_images,
                    limit_val=args.eval_images, netaug=netaug,
                    reestimate_bn=args.profile == "accuracy" or None)
    start = time.perf_counter()
    result = run_training(recipe, TrainConfig(epochs=args.epochs, out_dir=str(out), seed=seed,
                                              device=args.device, progress=False))
    train_s = time.perf_counter() - start
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "netaug": netaug, "lr_per_256": lr,
            "peak_lr": recipe.peak_lr(1), "best_top1_fp32_train_eval": result.best_top1,
            "top1_fp32": records[-1]["val_top1"],  # validation images, after the last epoch
            "top1_running_stats": records[-1].get("val_top1_running_stats"),
            "train_seconds": round(train_s, 1),
            "images_per_s": [round(r["images_per_s"], 1) for r in records]}


def _run_dir(root: Path, netaug: bool, lr: float, seed: int) -> Path:
    return root / f"{'netaug' if netaug else 'baseline'}-lr{lr:g}-seed{seed}"


def _train_job(seed: int, netaug: bool, lr: float, args, root: Path) -> dict:
    """One sweep run in a worker process (one thread: ``--jobs`` processes share the cores)."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    return _train(seed, netaug, lr, args, _run_dir(root, netaug, lr, seed))
def _export(run_dir: Path, args) -> dict:
    out = run_dir / "export"
    cmd = [sys.executable, "-m", "tinyexport.export", "--model", "mbv2-tiny", "--checkpoint",
           str(run_dir / "target.pt"), "--int8", "--resolution", str(args.resolution),
           "--calib-data", "fashion-mnist", "--calib-images", "200", "--check-images", "32",
           "--eval-data", "fashion-mnist", "--eval-images", str(args.eval_images or 10000),
           "--no-bn-recalibrate", "--no-firmware", "--max-top1-drop", "100",  # measure, not gate
           "--out", str(out), "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tinyexport failed: {done.stderr[-2000:]}")
    evaluation = json.loads((out / "export.json").read_text())["evaluation"]
    top1 = evaluation["top1"]
    return {"test_top1_fp32": 100 * top1["torch_fp32"],
            "test_top1_int8": 100 * top1["litert_int8"], "eval_images": evaluation["data"]["images"]}


def int8_available() -> bool:
    """The int8 column needs TensorFlow (onnx2tf + TFLiteConverter, run by tinyexport)."""
    return importlib.util.find_spec("tensorflow") is not None


def sweep(args, done: list[dict] = ()) -> list[tuple[int, bool, float]]:
    """(seed, netaug, lr) of every run not in ``done``, seed-major: an interrupted or time-boxed
    sweep has every LR of both methods for the first seeds."""
    have = {(r["seed"], r["netaug"], r["lr_per_256"]) for r in done}
    return [(seed, netaug, lr) for seed in args.seeds
            for netaug, lrs in ((True, args.netaug_lrs), (False, args.baseline_lrs))
            for lr in lrs if (seed, netaug, lr) not in have]


def best_lrs(rows: list[dict]) -> dict[bool, float]:
    """Per method, the LR with the highest mean validation top-1 over its seeds (ties: lower LR)."""
    best = {}
    for netaug in (True, False):
        by_lr: dict[float, list[float]] = {}
        for r in rows:
            if r["netaug"] == netaug:
                by_lr.setdefault(r["lr_per_256"], []).append(r["top1_fp32"])
        if by_lr:
            best[netaug] = max(sorted(by_lr), key=lambda lr: statistics.mean(by_lr[lr]))
    return best


def accuracy_runs(args, publish, previous: list[dict] = ()) -> list[dict]:
    """Train the sweep (``--jobs`` at once), then export each method's best-LR runs to int8.
    ``previous``: runs of an earlier invocation (``--extend``), not repeated. ``publish(rows)`` is
    called after every finished run."""
    int8 = not args.no_int8 and int8_available()
    if not int8:
        _log.info("int8 top-1 skipped (%s)", "--no-int8" if args.no_int8 else
                  "tensorflow is not installed: tinyexport's converter needs it")
    rows: list[dict] = list(previous)
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    with tempfile.TemporaryDirectory(prefix="bench_netaug_") as tmp:
        root = Path(tmp)
        if args.jobs > 1:
            _parallel(root, args, rows, publish, deadline)
        else:
            for seed, netaug, lr in sweep(args, rows):
                if deadline is not None and time.monotonic() > deadline:
                    _log.warning("--budget-s reached: %d of %d runs done", len(rows),
                                 len(sweep(args)))
                    break
                rows.append(_train(seed, netaug, lr, args, _run_dir(root, netaug, lr, seed)))
                _log.info("%s", rows[-1])
                publish(rows)
        if int8:
            _export_best(root, args, rows, publish)
    return rows


def _parallel(root: Path, args, rows: list[dict], publish, deadline) -> None:
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(_train_job, seed, netaug, lr, args, root)
                   for seed, netaug, lr in sweep(args, rows)]
        for future in concurrent.futures.as_completed(futures):
            rows.append(future.result())
            _log.info("%s", rows[-1])
            publish(rows)
            if deadline is not None and time.monotonic() > deadline:
                _log.warning("--budget-s reached: %d of %d runs done", len(rows), len(futures))
                for other in futures:
                    other.cancel()
                break


def _export_best(root: Path, args, rows: list[dict], publish) -> None:
    best = best_lrs(rows)
    chosen = [r for r in rows if best.get(r["netaug"]) == r["lr_per_256"]
              and "test_top1_int8" not in r]  # --extend: earlier best runs are exported already
    for row in chosen:
        row.update(_export(_run_dir(root, row["netaug"], row["lr_per_256"], row["seed"]), args))
        _log.info("%s", row)
        publish(rows)


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
        lines += [f"Setup: {report['setup']}", ""] + _sweep_table(rows) + [""] + \
            _best_table(rows) + [""]
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


def _sweep_table(rows: list[dict]) -> list[str]:
    """Every (method, LR): seeds, mean ± std validation top-1 (fp32, BN re-estimated)."""
    lines = ["LR sweep (LR per 256 images; peak = LR x batch / 256; fp32 top-1 on the validation "
             "images after BN re-estimation, mean ± std over seeds):", "",
             "| method | LR / 256 | peak LR | seeds | fp32 top-1 (%) | train s / run |",
             "|---|---|---|---|---|---|"]
    for netaug in (True, False):
        for lr in sorted({r["lr_per_256"] for r in rows if r["netaug"] == netaug}):
            sel = [r for r in rows if r["netaug"] == netaug and r["lr_per_256"] == lr]
            lines.append(f"| {'NetAug' if netaug else 'baseline'} | {lr:g} | "
                         f"{sel[0]['peak_lr']:.4g} | {len(sel)} | "
                         f"{_mean_std([r['top1_fp32'] for r in sel])} | "
                         f"{statistics.mean(r['train_seconds'] for r in sel):.0f} |")
    return lines


def _best_table(rows: list[dict]) -> list[str]:
    """Each method at its best LR: validation fp32 top-1 (the selection), then fp32 and int8 top-1
    of the exported model on the test images, mean ± std over seeds."""
    best = best_lrs(rows)
    lines = ["Each method at its best LR (highest mean validation top-1 of the sweep); test = the "
             "exported model (tinyexport) on the first test images:", "",
             "| method | best LR / 256 | seeds | val fp32 top-1 (%) | test fp32 top-1 (%) | "
             "test int8 top-1 (%) |", "|---|---|---|---|---|---|"]
    for netaug, lr in best.items():
        sel = [r for r in rows if r["netaug"] == netaug and r["lr_per_256"] == lr]
        cells = [_mean_std([r[key] for r in sel]) if all(key in r for r in sel) else
                 "not measured" for key in ("top1_fp32", "test_top1_fp32", "test_top1_int8")]
        lines.append(f"| {'NetAug' if netaug else 'baseline'} | {lr:g} | {len(sel)} | "
                     + " | ".join(cells) + " |")
    if len(best) == 2:
        netaug = [r["top1_fp32"] for r in rows if r["netaug"] and r["lr_per_256"] == best[True]]
        base = [r["top1_fp32"] for r in rows if not r["netaug"] and r["lr_per_256"] == best[False]]
        lines += ["", f"NetAug − baseline (validation fp32, best LRs): "
                      f"{statistics.mean(netaug) - statistics.mean(base):+.2f} points"]
    return lines


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
    p.add_argument("--netaug-lrs", type=float, nargs="+", help="NetAug LRs per 256 images")
    p.add_argument("--baseline-lrs", type=float, nargs="+", help="baseline LRs per 256 images")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="training runs at once (CPU: one thread "
                                                       "each; one per core)")
    p.add_argument("--extend", action="store_true",
                   help="add to the results file's runs (new LRs or seeds) instead of starting "
                        "over; its step table is kept")
    p.add_argument("--budget-s", type=float, default=0,
                   help="stop starting runs after this many seconds (0: no limit); runs are "
                        "ordered seed-major, so the first seeds have every LR")
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
    # CPU: 4,800 Fashion-MNIST images x 3 epochs (the #20 check's regime), 3 seeds, 3 LRs each
    "default": dict(seeds=[0, 1, 2], epochs=3, train_images=4800, eval_images=2000,
                    resolution=32, batch_size=64, netaug_lrs=[0.025, 0.05, 0.1],
                    baseline_lrs=[0.1, 0.2, 0.4]),
    # GPU protocol (scripts/gpu_check.sh --netaug-accuracy): all 60k images, 25 epochs, batch
    # 512; baseline peak LR {0.1, 0.2} and NetAug {0.05, 0.1} at batch 512 (per 256: half).
    "accuracy": dict(seeds=[0, 1], epochs=25, train_images=None, eval_images=None,
                     resolution=32, batch_size=512, netaug_lrs=[0.025, 0.05],
                     baseline_lrs=[0.05, 0.1]),
    "speed": dict(seeds=[], epochs=1, train_images=None, eval_images=None, resolution=144,
                  batch_size=256, netaug_lrs=[0.05], baseline_lrs=[0.05]),
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


def _previous_report(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"--extend: {path} does not exist; run without --extend first")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = _resolve(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = {"setup": (f"{args.train_images or 'all 60,000'} train images, {args.epochs} epochs "
                        f"({args.warmup_epochs} warmup from peak / 16), {args.resolution} px, "
                        f"batch {args.batch_size}, label smoothing 0.1; evaluation on "
                        f"{args.eval_images or 'all 10,000'} test images after BN "
                        f"re-estimation{' (baseline too)' if args.profile == 'accuracy' else ''};"
                        f" {device_name(args.device)}"), "profile": args.profile}
    stem = "netaug_results" if args.device == "cpu" and args.profile == "default" else \
        f"netaug_{args.profile}_{args.device}_results"

    def publish(rows: list[dict]) -> None:
        report["runs"] = rows
        write_results(args.results_dir, stem, report, render(report))

    previous = _previous_report(args.results_dir / f"{stem}.json") if args.extend else {}
    if previous.get("step_time"):
        report["step_time"] = previous["step_time"]
    elif args.profile != "accuracy":
        report["step_time"] = step_table(args)
    if args.cli_steps:
        report["cli"] = cli_throughput(args)
    run_accuracy = args.profile == "accuracy" or (args.profile == "default"
                                                  and not args.skip_accuracy)
    publish(accuracy_runs(args, publish, previous.get("runs", [])) if run_accuracy else [])
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

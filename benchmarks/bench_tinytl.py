"""TinyTL benchmark: the shape of the paper's Table 2 (docs/tinytl.md §7) on data that exists here.

1. Pretrain ``mbv2-tiny`` with lite residuals in place (as the official setup, whose adapters are
   pretrained with the backbone, docs/tinytl.md §2) on Fashion-MNIST classes 0–4, all weights trained.
2. Transfer to Fashion-MNIST classes 5–9 (remapped 0–4) with each of the six methods and every
   seed: same data subset, recipe (Adam, per-iteration cosine, batch 8) and LR for all methods.
3. fp32 top-1 = final-epoch weights on the held-out subset of the test split (§5).
4. int8 top-1: ``tinyexport --checkpoint transfer.pt --int8`` (the real export pipeline: fusion,
   ONNX, onnx2tf, full-int8 PTQ, TFLM op check and the firmware run), then the exported
   ``model_int8.tflite`` is evaluated with the LiteRT interpreter on the same images — for the
   first ``--int8-seeds`` seeds of each method (each export costs one onnx2tf + TF run).
5. Training memory per method: analytic (docs/tinytl.md §6, batch 8) and measured
   (``measure_train_memory``: CPU = autograd-saved tensors + params + grads + Adam state).

Writes ``benchmarks/results/tinytl_results.json`` and ``tinytl_results.md``.

    .venv/bin/python -m tinyexport.benchmarks.bench_tinytl [--resolution 32] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks.publish import write_results
from tinyexport.export.config import ExportConfig
from tinyexport.export.pipeline import export
from tinyexport.log import setup_logging
from tinyexport.quantize.int8_checks import run_tflite
from tinyexport.train.checkpoint_format import read_payload
from tinyexport.train.data import Preprocessing, build_dataset
from tinyexport.train.tinytl.memory import analytic_train_memory, measure_train_memory
from tinyexport.train.tinytl.methods import METHODS, prepare_method
from tinyexport.train.tinytl.transfer import TransferConfig, run_transfer, select
from tinyexport.train.tinytl.transfer_checkpoint import build_from_payload

RESULTS = Path(__file__).parent / "results"
SOURCE_CLASSES = (0, 1, 2, 3, 4)  # T-shirt/top, Trouser, Pullover, Dress, Coat
TARGET_CLASSES = (5, 6, 7, 8, 9)  # Sandal, Shirt, Sneaker, Bag, Ankle boot
MODEL = "mbv2-tiny"
_log = logging.getLogger("bench_tinytl")


def pretrain(args, work: Path) -> dict:
    start = time.perf_counter()
    res = run_transfer(TransferConfig(
        data="fashion-mnist", out_dir=str(work / "pretrain"), method="ft-full", model=MODEL,
        epochs=args.pretrain_epochs, lr=args.pretrain_lr, batch_size=32, label_smoothing=0.1,
        resolution=args.resolution, classes=SOURCE_CLASSES, limit_train=args.pretrain_count,
        limit_val=args.val_count, seed=0))
    return {"top1": res.top1, "checkpoint": res.checkpoint, "epochs": res.epochs,
            "seconds": round(time.perf_counter() - start, 1)}


def transfer(args, source: str, method: str, seed: int, work: Path) -> dict:
    start = time.perf_counter()
    res = run_transfer(TransferConfig(
        data="fashion-mnist", out_dir=str(work / f"{method}-s{seed}"), method=method,
        source=source, epochs=args.epochs, lr=args.lr, batch_size=8, label_smoothing=0.1,
        resolution=args.resolution, classes=TARGET_CLASSES, limit_train=args.train_count,
        limit_val=args.val_count, seed=seed))
    return {"method": method, "seed": seed, "top1_fp32": res.top1,
            "trainable_params": res.trainable_params, "frozen_unchanged": res.frozen_unchanged,
            "checkpoint": res.checkpoint, "train_seconds": round(time.perf_counter() - start, 1)}


def val_images(args) -> tuple[np.ndarray, np.ndarray]:
    """The transfer runs' evaluation subset (same selection: seed + 1), NHWC, normalised."""
    ds, _ = select(build_dataset("fashion-mnist", "val", Preprocessing(args.resolution), False),
                   TARGET_CLASSES, args.val_count, 0 + 1)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs).permute(0, 2, 3, 1).numpy(), np.array(ys)


def int8_top1(row: dict, images: np.ndarray, labels: np.ndarray, work: Path) -> dict:
    """Export through the real pipeline, then top-1 of the int8 model on ``images``."""
    out = work / f"export-{row['method']}-s{row['seed']}"
    start = time.perf_counter()
    try:
        result = export(ExportConfig(model=MODEL, out=out, checkpoint=Path(row["checkpoint"]),
                                     calib_data="fashion-mnist", calib_images=200,
                                     check_images=64))
    except Exception as exc:  # noqa: BLE001 - a failed export is a benchmark result
        return {"int8_error": str(exc)[:300], "export_seconds": round(time.perf_counter()
                                                                      - start, 1)}
    logits, _ = run_tflite((out / "model_int8.tflite").read_bytes(), images)
    doc = result.provenance
    fw = doc.get("firmware") or {}
    return {"top1_int8": round(100.0 * float((logits.argmax(1) == labels).mean()), 2),
            "int8_bytes": doc["artifacts"]["model_int8.tflite"]["bytes"],
            "op_histogram": doc["op_histogram"],
            "firmware": {k: v for k, v in fw.items() if not isinstance(v, (dict, list))},
            "tflm_errors": fw.get("errors"), "tflm_arena_measured": fw.get("measured"),
            "export_seconds": round(time.perf_counter() - start, 1)}


def memory_rows(args, source: str) -> dict:
    rows = {}
    for method in METHODS:
        model = prepare_method(build_from_payload(read_payload(source)), method,
                               len(TARGET_CLASSES))
        analytic = analytic_train_memory(model, args.resolution, method, batch_size=8)
        measured = measure_train_memory(model, args.resolution, method, batch_size=8)
        rows[method] = {"analytic_mb": round(analytic.total_mb, 4),
                        "analytic_params_mb": round(analytic.param_bytes / 1e6, 4),
                        "analytic_peak_act_per_sample_mb":
                            round(analytic.peak_activation_bytes / 1e6, 4),
                        "measured_mb": round(measured.mb, 4), "measured_how": measured.how}
    return rows


def summarise(runs: list[dict], memory: dict) -> list[dict]:
    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    out = []
    for method, mem in memory.items():
        rows = [r for r in runs if r["method"] == method]
        fp, fp_sd = stats([r["top1_fp32"] for r in rows])
        i8, i8_sd = stats([r.get("top1_int8") for r in rows])
        out.append({"method": method, "seeds": len(rows), "top1_fp32_mean": fp,
                    "top1_fp32_std": fp_sd, "top1_int8_mean": i8, "top1_int8_std": i8_sd,
                    "int8_runs": sum("top1_int8" in r for r in rows),
                    "trainable_params": rows[0]["trainable_params"] if rows else None,
                    "train_seconds_mean": stats([r["train_seconds"] for r in rows])[0], **mem})
    return out


def _pct(v, sd=None) -> str:  # values are already percent
    if v is None:
        return "—"
    return f"{v:.1f}" + (f" ± {sd:.1f}" if sd else "")


def render(doc: dict) -> str:
    s = doc["setup"]
    lines = [f"# TinyTL transfer — {MODEL} @ {s['resolution']} px, Fashion-MNIST classes 0–4 → 5–9",
             "", f"Pretrain (all weights, adapters in place): {s['pretrain_count']} images, "
             f"{s['pretrain_epochs']} epochs → source top-1 {_pct(doc['pretrain']['top1'])} %. "
             f"Transfer: {s['train_count']} images, {s['epochs']} epochs, Adam lr {s['lr']}, "
             f"cosine per iteration, batch 8, label smoothing 0.1, seeds {s['seeds']}; "
             f"top-1 on {s['val_count']} held-out test images (final-epoch weights). "
             f"int8 = real `tinyexport --int8` export then LiteRT on the same images, "
             f"{s['int8_seeds']} seed(s) per method. Memory at batch 8 (MB = 1e6 B).", "",
             "| method | trainable | top-1 fp32 % | top-1 int8 % (runs) | train mem analytic MB "
             "| measured MB | train s/run |", "|---|---|---|---|---|---|---|"]
    for r in doc["summary"]:
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | "
                     f"{_pct(r['top1_fp32_mean'], r['top1_fp32_std'])} | "
                     f"{_pct(r['top1_int8_mean'], r['top1_int8_std'])} ({r['int8_runs']}) | "
                     f"{r['analytic_mb']:.3f} | {r['measured_mb']:.3f} | "
                     f"{r['train_seconds_mean']:.0f} |")
    lines += ["", f"Measured = {doc['summary'][0]['measured_how']} (fp32, one Adam step).",
              f"Host: {doc['host']}; total {doc['total_seconds']:.0f} s."]
    errors = [r for r in doc["runs"] if "int8_error" in r]
    lines += [f"- export failed for {r['method']} seed {r['seed']}: {r['int8_error']}"
              for r in errors]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--pretrain-count", type=int, default=8000)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--train-count", type=int, default=600)
    p.add_argument("--val-count", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--int8-seeds", type=int, default=1, help="seeds per method exported to int8")
    p.add_argument("--methods", nargs="+", help="subset of the six (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    torch.set_num_threads(1)  # 2 shared cores: a second OpenMP thread spin-waits (10-100× slower)
    start = time.perf_counter()
    methods = args.methods or list(METHODS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = pretrain(args, work)
        _log.info("pretrain: %s", source)
        memory = {m: v for m, v in memory_rows(args, source["checkpoint"]).items()
                  if m in methods}
        images, labels = val_images(args)
        runs = []
        for method in methods:
            for i, seed in enumerate(args.seeds):
                row = transfer(args, source["checkpoint"], method, seed, work)
                if i < args.int8_seeds:
                    row.update(int8_top1(row, images, labels, work))
                _log.info("%s", {k: v for k, v in row.items() if k != "op_histogram"})
                runs.append(row)
    for r in runs:
        r.pop("checkpoint")
    source.pop("checkpoint")
    setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    doc = {"model": MODEL, "source_classes": SOURCE_CLASSES, "target_classes": TARGET_CLASSES,
           "setup": setup, "pretrain": source, "memory": memory, "runs": runs,
           "summary": summarise(runs, memory), "torch": torch.__version__,
           "host": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch threads 1",
           "total_seconds": round(time.perf_counter() - start, 1)}
    write_results(args.out, "tinytl_results", doc, render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Robustness cases on hostile files: seeded ``.tflite`` mutants through ``tinyreport FILE --json``
(group 1, with a ``--measure`` sample) and checkpoint mutants through the export's load path, the
real ``tinyexport`` and ``tinytrain --resume`` (group 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks.robustness_harness import (
    CHECKPOINT_KINDS,
    DATA,
    INT32_LIMIT,
    TFLITE_KINDS,
    TRAIN_ARGS,
    Bench,
    Case,
    Tally,
    WorkerRun,
    classify,
    last_error,
    shell,
)
from tinyexport.benchmarks.robustness_mutants import Mutant, make_mutants, zip_structure
from tinyexport.train.checkpoint_format import save_checkpoint
from tinyexport.train.models import build_model

# ---------------------------------------------------------------------------------------------
# Group 1: .tflite mutants through tinyreport


KERAS_BUILDER = "tinyexport.benchmarks.robustness_files"  # started with --build-keras, below


def keras_conv_model(path: Path) -> None:
    """A small full-int8 conv net (Keras + TFLiteConverter), built in this process."""
    import tensorflow as tf

    tf.random.set_seed(0)
    inputs = tf.keras.Input((16, 16, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = tf.keras.layers.AveragePooling2D(8)(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(4)(x)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.standard_normal((1, 16, 16, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())


def tflite_sources(bench: Bench, export_model: Path | None) -> dict[str, bytes]:
    sources = {"hello_world": (DATA / "hello_world_int8.tflite").read_bytes(),
               "lstm": (DATA / "trained_lstm_int8.tflite").read_bytes()}
    keras = bench.work / "keras_conv_int8.tflite"
    proc = subprocess.run([sys.executable, "-m", KERAS_BUILDER, "--build-keras", str(keras)],
                          env=bench.env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 0:
        sources["keras_conv"] = keras.read_bytes()
    else:
        print(f"keras model not built: {last_error(proc.stderr)}", file=sys.stderr)
    if export_model is not None and export_model.is_file():
        sources["mcunet_in0_r48"] = export_model.read_bytes()
    return sources


def report_of(stdout: str) -> dict | None:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "model"}


def insane_figures(report: dict) -> str | None:
    """Why a report's figures are impossible (negative, >= 2^31, total != head + tail), or None."""
    try:
        arena = report["arena"]
        values = {"arena." + k: arena[k] for k in ("head", "tail", "total")}
        values.update({k: report[k] for k in ("min_arena", "lower_bound", "linear_planner",
                                              "model_bytes")})
        for op in report["ops"]:
            values.update({f"op{op['index']}.{k}": op[k] for k in ("macs", "live_bytes",
                                                                    "scratch_bytes")})
    except (KeyError, TypeError) as exc:
        return f"report lacks {exc}"
    bad = [f"{k}={v!r}" for k, v in values.items()
           if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < INT32_LIMIT]
    if bad:
        return "impossible figures: " + ", ".join(bad[:4])
    if arena["head"] + arena["tail"] != arena["total"]:
        return f"arena head {arena['head']} + tail {arena['tail']} != total {arena['total']}"
    return None


def run_group_tflite(bench: Bench, tally: Tally, count: int, measure_sample: int,
                     export_model: Path | None) -> None:
    group = "1. .tflite mutants -> tinyreport --json"
    sources = tflite_sources(bench, export_model)
    folder = bench.work / "tflite"
    folder.mkdir(exist_ok=True)
    originals = {}
    for name, data in sources.items():
        (folder / f"{name}.tflite").write_bytes(data)
    base = bench.run_worker("tinyreport", [(n, [str(folder / f"{n}.tflite"), "--json"])
                                           for n in sources], 120)
    for name, run in base.items():
        report = report_of(run.stdout)
        assert run.rc == 0 and report, f"{name}: the unmutated model fails: {run.stderr[-500:]}"
        originals[name] = comparable(report)
    mutants = make_mutants(sources, count, bench.seed, TFLITE_KINDS)
    paths = {}
    for m in mutants:
        paths[m.name] = folder / f"{m.name}.tflite"
        paths[m.name].write_bytes(m.data)
    runs = bench.run_workers("tinyreport", [(m.name, [str(paths[m.name]), "--json"])
                                            for m in mutants], 120)
    changed = [m.name for m in mutants if runs[m.name].rc == 0 and report_of(runs[m.name].stdout)
               and comparable(report_of(runs[m.name].stdout)) != originals[m.source]]
    litert = bench.run_workers("litert", [(n, [str(paths[n])]) for n in changed], 120)
    accepted_ok = []
    for m in mutants:
        case = judge_tflite(group, m, runs[m.name], originals[m.source], litert.get(m.name),
                            paths[m.name])
        tally.add(case)
        if case.outcome == "correct":
            accepted_ok.append(m)
    run_measure_sample(bench, tally, accepted_ok, paths, measure_sample)


def judge_tflite(group: str, m: Mutant, run: WorkerRun, original: dict, litert: WorkerRun | None,
                 path: Path) -> Case:
    repro = f"tinyreport {path} --json   # {m.kind}: {m.detail}"
    outcome = classify(run.rc, run.stderr, run.timed_out)
    base = dict(group=group, name=m.name, repro=repro, seconds=run.seconds)
    if outcome is not None:
        if outcome == "unclean exit" and run.rc == 1 and (report_of(run.stdout) or {}).get("errors"):
            outcome = "clean error"  # the documented exit 1: a report whose "errors" say why
            return Case(outcome=outcome, detail="report errors: "
                        + "; ".join(report_of(run.stdout)["errors"])[:200], **base)
        return Case(outcome=outcome, detail=last_error(run.stderr or run.stdout), **base)
    report = report_of(run.stdout)
    if report is None:
        return Case(outcome="wrong success", detail="exit 0 without a JSON report", **base)
    if comparable(report) == original:
        return Case(outcome="correct", detail="report equals the original's", **base)
    insane = insane_figures(report)
    if insane:
        return Case(outcome="wrong success", detail=insane, **base)
    if litert is None or litert.rc != 0:
        why = "timed out" if litert and litert.timed_out else last_error(litert.stderr if litert else "")
        return Case(outcome="wrong success", detail=f"reported, but LiteRT refuses it: {why}", **base)
    return Case(outcome="correct", detail="report differs; LiteRT runs it, figures sane", **base)


def run_measure_sample(bench: Bench, tally: Tally, accepted: list[Mutant], paths: dict[str, Path],
                       sample: int) -> None:
    """``tinyreport --measure`` on a seeded sample of accepted mutants: TFLM's measured arena must
    equal the predicted one."""
    group = "1b. accepted .tflite mutants -> tinyreport --measure"
    rng = np.random.default_rng([bench.seed, 1])
    picked = [accepted[i] for i in sorted(rng.choice(len(accepted), min(sample, len(accepted)),
                                                     replace=False))] if accepted else []
    runs = bench.run_workers("tinyreport", [(m.name, [str(paths[m.name]), "--json", "--measure"])
                                            for m in picked], 600)
    for m in picked:
        run = runs[m.name]
        base = dict(group=group, name=m.name, seconds=run.seconds,
                    repro=f"tinyreport {paths[m.name]} --json --measure   # {m.kind}: {m.detail}")
        outcome = classify(run.rc, run.stderr, run.timed_out)
        if outcome is not None:
            report = report_of(run.stdout) or {}
            if outcome == "unclean exit" and run.rc == 1 and report.get("errors"):
                tally.add(Case(outcome="clean error", detail="; ".join(report["errors"])[:200],
                               **base))
            else:
                tally.add(Case(outcome=outcome, detail=last_error(run.stderr), **base))
            continue
        tally.add(Case(**base, **judge_measured(report_of(run.stdout))))


def judge_measured(report: dict | None) -> dict:
    if not report or "measured" not in report:
        return {"outcome": "wrong success", "detail": "exit 0 without a measured arena"}
    m, a = report["measured"], report["arena"]
    if m.get("total") != a["total"] or m.get("min_arena") != report["min_arena"]:
        return {"outcome": "wrong success", "detail": f"measured total {m.get('total')} / min "
                f"{m.get('min_arena')} != predicted {a['total']} / {report['min_arena']}"}
    return {"outcome": "correct", "detail": f"measured = predicted = {a['total']} B"}


# ---------------------------------------------------------------------------------------------
# Group 2: checkpoint mutants


def run_group_checkpoints(bench: Bench, tally: Tally, count: int, resumes: int,
                          cli_sample: int) -> None:
    group = "2a. checkpoint mutants -> tinyexport load path"
    folder = bench.work / "ckpt"
    folder.mkdir(exist_ok=True)
    original = folder / "original.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model("mcunet-in0", num_classes=4, resolution=32), original)
    data = original.read_bytes()
    mutants = make_mutants({"mcunet_in0": data}, count, bench.seed + 2, CHECKPOINT_KINDS,
                           {"mcunet_in0": zip_structure(data)})
    cases = [("original", [str(original), str(folder / "out-original")])]
    for m in mutants:
        (folder / f"{m.name}.pt").write_bytes(m.data)
        cases.append((m.name, [str(folder / f"{m.name}.pt"), str(folder / f"out-{m.name}")]))
    runs = bench.run_workers("ckpt-load", cases, 300)
    want = report_of(runs["original"].stdout)
    assert runs["original"].rc == 0 and want, runs["original"].stderr[-800:]
    verdicts = {}
    for m in mutants:
        case = tally.add(judge_checkpoint(group, m, runs[m.name], want, folder / f"{m.name}.pt"))
        verdicts[m.name] = case.outcome
    run_checkpoint_cli_sample(bench, tally, mutants, verdicts, folder, cli_sample)
    run_resume_mutants(bench, tally, resumes)


def judge_checkpoint(group: str, m: Mutant, run: WorkerRun, want: dict, path: Path) -> Case:
    base = dict(group=group, name=m.name, seconds=run.seconds,
                repro=f"tinyexport --checkpoint {path} --out /tmp/x --no-firmware --calib-images 8 "
                      f"--check-images 8   # {m.kind}: {m.detail}")
    outcome = classify(run.rc, run.stderr, run.timed_out)
    if outcome is not None:
        return Case(outcome=outcome, detail=last_error(run.stderr), **base)
    got = report_of(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "")
    if got == want:
        return Case(outcome="correct", detail="loaded the original weights", **base)
    what = [k for k in ("model", "resolution", "state") if (got or {}).get(k) != want[k]]
    return Case(outcome="wrong success", detail=f"loaded without error, but {', '.join(what)} "
                "differ from the original (torch.load does not check the zip CRC-32)", **base)


def run_checkpoint_cli_sample(bench: Bench, tally: Tally, mutants: list[Mutant],
                              verdicts: dict[str, str], folder: Path, sample: int) -> None:
    """The real ``tinyexport --checkpoint`` on a few mutants (half refused by the load path, half
    loaded): its verdict must agree with the load path's."""
    group = "2b. checkpoint mutants -> real tinyexport CLI (sample)"
    refused = [m for m in mutants if verdicts[m.name] == "clean error"]
    loaded = [m for m in mutants if verdicts[m.name] != "clean error"]
    picked = refused[:(sample + 1) // 2] + loaded[:sample // 2]
    for m in picked:
        path, out = folder / f"{m.name}.pt", folder / f"cli-{m.name}"
        argv = ["tinyexport", "--checkpoint", str(path), "--out", str(out), "--no-firmware",
                "--calib-images", "8", "--check-images", "8"]
        run = bench.cli(argv, 600)
        outcome = classify(run.rc, run.stderr, run.timed_out)
        detail = last_error(run.stderr)
        if outcome is None:
            outcome = "correct" if verdicts[m.name] == "correct" else "wrong success"
            detail = f"exported; the load path said {verdicts[m.name]}"
        tally.add(Case(group, m.name, outcome, detail, shell(argv) + f"   # {m.detail}",
                       run.seconds))


def run_resume_mutants(bench: Bench, tally: Tally, count: int) -> None:
    """``tinytrain --resume`` from a mutated ``checkpoint.pt`` (epoch 1 of 2 done): a clean error
    or a resumed run that finishes."""
    group = "2c. tinytrain checkpoint.pt mutants -> tinytrain --resume"
    base_out = bench.work / "train-base"
    first = bench.cli(["tinytrain", *TRAIN_ARGS, "--epochs", "1", "--out", str(base_out)], 600)
    assert first.rc == 0, first.stderr[-800:]
    data = (base_out / "checkpoint.pt").read_bytes()
    mutants = make_mutants({"checkpoint": data}, count, bench.seed + 3, CHECKPOINT_KINDS,
                           {"checkpoint": zip_structure(data)})
    for m in mutants:
        out = bench.work / f"resume-{m.index:03d}"
        shutil.copytree(base_out, out)
        (out / "checkpoint.pt").write_bytes(m.data)
        argv = ["tinytrain", *TRAIN_ARGS, "--epochs", "2", "--out", str(out), "--resume"]
        run = bench.cli(argv, 300)
        outcome = classify(run.rc, run.stderr, run.timed_out)
        detail = last_error(run.stderr)
        if outcome is None:
            finished = "best top-1" in run.stdout and (out / "checkpoint.pt").is_file()
            outcome = "correct" if finished else "wrong success"
            detail = "resumed and finished" if finished else "exit 0 without a finished run"
        tally.add(Case(group, m.name, outcome, detail, shell(argv) + f"   # {m.kind}: {m.detail}",
                       run.seconds))


def keras_builder_cli(argv: list[str] | None = None) -> int:
    """``--build-keras PATH``: build the Keras int8 model in a child (TensorFlow stays out of the
    benchmark's own process)."""
    parser = argparse.ArgumentParser(description="robustness benchmark: Keras model (internal)")
    parser.add_argument("--build-keras", type=Path, required=True)
    keras_conv_model(parser.parse_args(argv).build_keras)
    return 0


if __name__ == "__main__":
    raise SystemExit(keras_builder_cli())

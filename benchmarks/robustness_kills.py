"""Robustness cases on interruption: ``tinyexport`` and ``tinytrain`` SIGKILLed at seeded random
points, then rerun or resumed, the folder and the training state checked (group 4).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks.robustness_harness import (
    BIN,
    KILL_EXPORT,
    TRAIN_ARGS,
    Bench,
    Case,
    Tally,
    classify,
    last_error,
    shell,
)

# ---------------------------------------------------------------------------------------------
# Group 4: SIGKILL at random points


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``pid``."""
    import psutil

    try:
        return {c.pid: " ".join(c.cmdline()) for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def survivors(snapshot: dict[int, str], needle: str) -> list[str]:
    """Processes of ``snapshot`` still alive with the same command line, plus any process whose
    command line mentions ``needle`` (the output path)."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if (snapshot.get(proc.info["pid"]) == cmd and cmd) or (needle in cmd and
                                                               proc.info["pid"] != os.getpid()):
            alive.append(f"{proc.info['pid']}: {cmd[:160]}")
    return alive


def wait_for_line(proc: subprocess.Popen, log: Path, marker: str, timeout_s: float) -> None:
    """Block until ``marker`` is in ``log`` (or the process ended, or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while (proc.poll() is None and time.monotonic() < deadline
           and marker not in log.read_text(errors="replace")):
        time.sleep(0.05)


def kill_after(argv: list[str], delay: float, env: dict, cwd: Path, log: Path,
               after: str | None = None) -> tuple[int | None, dict[int, str]]:
    """Start ``argv``, SIGKILL it ``delay`` s after its start (or after it printed ``after``) if
    still running. Returns its exit status (None: killed) and its descendants at the kill."""
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        if after:
            wait_for_line(proc, log, after, 600)
        try:
            return proc.wait(delay), {}
        except subprocess.TimeoutExpired:
            kids = descendants(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None, kids


def export_complete(folder: Path) -> str | None:
    """Why ``folder`` is not a complete export, or None."""
    need = ["export.json", "report.md", "model.onnx", "model_fp32.tflite", "model_int8.tflite"]
    missing = [n for n in need if not (folder / n).is_file()]
    if missing:
        return f"{folder} lacks {missing}"
    try:
        json.loads((folder / "export.json").read_text())
    except ValueError:
        return f"{folder}/export.json is not JSON"
    return None


def litter(out: Path, tmp: Path, since: float) -> list[str]:
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    left += [str(p) for p in tmp.glob("tinyexport-*") if p.stat().st_mtime >= since]
    return left


def run_group_kill_export(bench: Bench, tally: Tally, kills: int) -> Path | None:
    """Returns the int8 model of the last good export (group 1 reuses it)."""
    group = "4a. tinyexport SIGKILLed at random points, then rerun"
    out = bench.work / "kill" / "D"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(BIN / "tinyexport"), *KILL_EXPORT, "--out", str(out)]
    start = time.monotonic()
    first = bench.cli(["tinyexport", *argv[1:]], 900)
    runtime = time.monotonic() - start
    if first.rc != 0:
        tally.add(Case(group, "first complete export", classify(first.rc, first.stderr,
                       first.timed_out) or "wrong success", last_error(first.stderr), shell(argv)))
        return None
    keep = bench.work / "mcunet_in0_r48_int8.tflite"
    shutil.copy(out / "model_int8.tflite", keep)
    rng = np.random.default_rng([bench.seed, 4])
    for k in range(kills):
        delay = float(rng.uniform(0.05, 0.95) * runtime)
        tally.add(one_export_kill(bench, group, argv, out, delay, k))
    since = bench.started
    final = bench.cli(["tinyexport", *argv[1:]], 900)
    outcome = classify(final.rc, final.stderr, final.timed_out) or "correct"
    problem = export_complete(out) or (f"litter: {litter(out, bench.tmp, since)}"
                                       if litter(out, bench.tmp, since) else None)
    if outcome == "correct" and problem:
        outcome = "data loss"
    tally.add(Case(group, "rerun after the kills completes, no litter", outcome,
                   problem or last_error(final.stderr) or "complete, no litter", shell(argv),
                   final.seconds))
    return keep


def one_export_kill(bench: Bench, group: str, argv: list[str], out: Path, delay: float, k: int
                    ) -> Case:
    rc, kids = kill_after(argv, delay, bench.env, out.parent, out.parent / f"kill-{k}.log")
    name = f"kill {k} after {delay:.1f} s"
    repro = f"{shell(argv)} & sleep {delay:.1f}; kill -9 $!"
    if rc is not None:
        return Case(group, name, "correct" if rc == 0 else "unclean exit",
                    f"finished before the kill (exit {rc})", repro)
    time.sleep(5)
    orphans = survivors(kids, str(out))
    if orphans:
        return Case(group, name, "crash", f"orphans 5 s after the kill: {orphans[:3]}", repro)
    problem = export_complete(out)
    old = out.with_name(f".{out.name}.old")
    if problem and not export_complete(old):
        return Case(group, name, "data loss", f"{problem}; no complete {old.name} either", repro)
    return Case(group, name, "correct", "no orphans; last good export present"
                + (" (as .old, restored by the next run)" if problem else ""), repro)


def state_equal(a, b, path: str = "") -> str | None:
    """Where two nested training states differ (tensors bit for bit), or None."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return None if same else path or "<root>"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path} keys {sorted(map(str, set(a) ^ set(b)))[:4]}"
        return next((d for k in a if (d := state_equal(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path} length"
        return next((d for i, (x, y) in enumerate(zip(a, b, strict=True)) if (d := state_equal(x, y, f"{path}[{i}]"))),
                    None)
    return None if a == b else path


TRAIN_MARK = "CPU: "  # tinytrain's first line, printed once it is about to build and train


def training_span(argv: list[str], env: dict, cwd: Path, log: Path) -> tuple[int | None, float]:
    """Run ``argv`` to the end; its exit status and the seconds from TRAIN_MARK to the exit."""
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        wait_for_line(proc, log, TRAIN_MARK, 600)
        start = time.monotonic()
        rc = proc.wait(600)
    return rc, time.monotonic() - start


def run_group_kill_train(bench: Bench, tally: Tally, kills: int) -> None:
    """Kill points are drawn within the span from TRAIN_MARK to the end of an uninterrupted run
    (so they land in training, epoch ends and checkpoint writes, not in the imports)."""
    group = "4b. tinytrain SIGKILLed at random points, resumed"
    root = bench.work / "kill-train"
    root.mkdir(exist_ok=True)
    ref_argv = [str(BIN / "tinytrain"), *TRAIN_ARGS, "--epochs", "3"]
    rc, span = training_span(ref_argv + ["--out", str(root / "ref")], bench.env, root,
                             root / "ref.log")
    assert rc == 0, (root / "ref.log").read_text()[-800:]
    out = root / "killed"
    rng = np.random.default_rng([bench.seed, 5])
    log = []
    for k in range(kills):
        delay = float(rng.uniform(0.4, 1.0) * span)  # before ~0.4: model and data still being built
        resume = ["--resume"] if (out / "checkpoint.pt").is_file() else []
        rc, _ = kill_after(ref_argv + ["--out", str(out)] + resume, delay, bench.env, root,
                           root / f"kill-{k}.log", after=TRAIN_MARK)
        log.append(f"{'--resume run' if resume else 'fresh run'} " + (
            f"killed {delay:.1f} s into training" if rc is None else f"finished (exit {rc})"))
    argv = ref_argv + ["--out", str(out)] + (["--resume"] if (out / "checkpoint.pt").is_file() else [])
    final = bench.cli(["tinytrain", *argv[1:]], 600)
    log.append(f"final {'--resume ' if '--resume' in argv else 'fresh '}run exit {final.rc}")
    outcome = classify(final.rc, final.stderr, final.timed_out)
    detail = last_error(final.stderr)
    if outcome is None:
        want = torch.load(root / "ref" / "checkpoint.pt", map_location="cpu", weights_only=True)
        got = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        diff = next((d for key in ("model", "optimizer") if (d := state_equal(
            want[key], got[key], key))), None)
        outcome = "data loss" if diff else "correct"
        detail = (f"differs at {diff}" if diff else "model + optimizer equal the uninterrupted "
                  "run's bit for bit") + f" (training span {span:.1f} s); " + ", ".join(log)
    tally.add(Case(group, f"{kills} kills then resume to the end", outcome, detail,
                   f"{shell(ref_argv)} --out R & (kill -9 at random, rerun with --resume)",
                   final.seconds))

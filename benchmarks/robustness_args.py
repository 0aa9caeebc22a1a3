"""Robustness cases on bad arguments and hostile files given to the real CLIs, full or read-only
mounts and concurrent exports into one folder (group 3).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyexport.benchmarks.robustness_harness import (
    BIN,
    SMALL_EXPORT,
    Bench,
    Case,
    Tally,
    WorkerRun,
    classify,
    last_error,
    shell,
)
from tinyexport.procs import die_with_parent
from tinyexport.train.checkpoint_format import make_payload, save_checkpoint
from tinyexport.train.models import build_model

# ---------------------------------------------------------------------------------------------
# Group 3: bad arguments and hostile files


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[str | None]:
    """A tmpfs mounted at ``path`` (yields None), or the reason it cannot be (not root...)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        yield (proc.stderr.strip() or "mount failed")
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class EvilBatch:
    """Unpickling this runs ``touch MARKER`` (what a malicious CIFAR batch would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil_cifar(folder: Path, marker: Path) -> None:
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": EvilBatch(marker), b"labels": [0]}))


@dataclass
class ArgCase:
    name: str
    argv: list[str]
    timeout_s: float = 300.0
    # judge(run) -> (outcome, detail) overriding the generic verdict (None: generic)
    judge: Callable[[WorkerRun], tuple[str, str] | None] | None = None
    cwd: Path | None = None  # where it runs, when not the group's folder
    memory_limit: bool = True  # groups 5 and 6: under ulimit -v (TensorFlow's converter: False)


def expect_error(run: WorkerRun) -> tuple[str, str] | None:
    """The generic rule for a bad argument: exit 0 is a wrong success."""
    if classify(run.rc, run.stderr, run.timed_out) is None:
        return "wrong success", "accepted: exit 0"
    return None


def files_intact(files: dict[Path, bytes]) -> Callable[[WorkerRun], tuple[str, str] | None]:
    def judge(run: WorkerRun) -> tuple[str, str] | None:
        lost = [str(p) for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
        if lost:
            return "data loss", f"deleted or changed: {', '.join(lost)}"
        return expect_error(run)
    return judge


def marker_absent(marker: Path) -> Callable[[WorkerRun], tuple[str, str] | None]:
    def judge(run: WorkerRun) -> tuple[str, str] | None:
        if marker.exists():
            return "wrong success", f"the pickle ran code: {marker} was created"
        return expect_error(run)
    return judge


def warns_class_mismatch(run: WorkerRun) -> tuple[str, str] | None:
    """Issue 11 asked for a warning; issue 23 refuses evaluation data with more classes than the
    model has outputs: either, naming both counts, is correct."""
    text = run.stdout + run.stderr
    warned = re.search(r"(warn\w*|error):.*\bclass", text, re.I) and re.search(r"\b3\b", text) \
        and re.search(r"\b10\b", text)
    outcome = classify(run.rc, run.stderr, run.timed_out)
    if outcome not in (None, "clean error"):
        return None
    if warned:
        return "correct", "said so: " + next(ln for ln in text.splitlines()
                                             if re.search(r"(warn\w*|error):.*\bclass", ln,
                                                          re.I))[:200]
    return "wrong success", "no warning that 3 classes != the 10 of digits"


def bad_argument_cases(bench: Bench, root: Path) -> list[ArgCase]:
    """Items 3 and 7 of issue 11 that need no mount or concurrency (see :func:`run_group_args`)."""
    ckpt = make_bad_checkpoints(root)
    (root / "notes.txt").write_text("not images\n")
    (root / "a_file").write_text("user data\n")
    corrupt = root / "corrupt_images"
    for cls in ("a", "b"):
        (corrupt / cls).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            (corrupt / cls / f"{i}.jpg").write_bytes(os.urandom(300))
    forced = root / "user_dir"
    (forced / "sub").mkdir(parents=True, exist_ok=True)
    (forced / "notes.txt").write_text("my notes\n")
    (forced / "sub" / "data.csv").write_text("a,b\n1,2\n")
    kept = {p: p.read_bytes() for p in (forced / "notes.txt", forced / "sub" / "data.csv",
                                        root / "a_file")}
    evil, marker = root / "evil_cifar", root / "PWNED"
    write_evil_cifar(evil, marker)
    out = str(root / "out")
    tt_short = ["--epochs", "1", "--max-steps", "1", "--limit-train", "64", "--limit-val", "32",
                "--workers", "0", "--no-progress"]
    tl = ["tinytrain", "transfer", "--data", "digits", "--out", out + "-tl", *tt_short]
    return [
        ArgCase("tinyexport --out under /sys", ["tinyexport", *SMALL_EXPORT, "--out", "/sys/rb_out"]),
        ArgCase("tinyexport --out an existing file", ["tinyexport", *SMALL_EXPORT, "--out",
                                                      str(root / "a_file")],
                judge=files_intact({root / "a_file": kept[root / "a_file"]})),
        ArgCase("tinyexport --checkpoint EMPTY", ["tinyexport", "--checkpoint", ckpt["empty"],
                                                  "--out", out]),
        ArgCase("tinytrain transfer --from EMPTY", [*tl, "--from", ckpt["empty"]]),
        ArgCase("tinytrain transfer --from NAN-WEIGHTS", [*tl, "--from", ckpt["nan"]]),
        ArgCase("tinyreport --model mbv2-tiny --resolution 100000",
                ["tinyreport", "--model", "mbv2-tiny", "--resolution", "100000"]),
        ArgCase("tinytrain --resolution 100000", ["tinytrain", "--model", "mbv2-tiny", "--data",
                                                  "digits", "--resolution", "100000", "--out",
                                                  out + "-tt", *tt_short]),
        ArgCase("tinyexport --checkpoint storing resolution 100000",
                ["tinyexport", "--checkpoint", ckpt["huge_res"], "--out", out, "--no-firmware"]),
        ArgCase("tinyexport --force --out DIR holding notes.txt, sub/data.csv",
                ["tinyexport", *SMALL_EXPORT, "--force", "--out", str(forced)],
                judge=files_intact({p: d for p, d in kept.items() if forced in p.parents})),
        ArgCase("tinyexport --board nosuchboard (< 10 s)",
                ["tinyexport", "--model", "mcunet-in0", "--board", "nosuchboard", "--out", out], 10),
        ArgCase("tinyreport --board nosuchboard (< 10 s)",
                ["tinyreport", "--model", "mcunet-in0", "--board", "nosuchboard"], 10),
        ArgCase("tinyexport --eval-data DIR of corrupt images",
                ["tinyexport", *SMALL_EXPORT, "--eval-data", str(corrupt), "--out", out]),
        ArgCase("tinyexport --calib-data TEXT-FILE",
                ["tinyexport", *SMALL_EXPORT, "--calib-data", str(root / "notes.txt"), "--out", out]),
        ArgCase("tinyexport --calib-data imagenet:/x",
                ["tinyexport", *SMALL_EXPORT, "--calib-data", "imagenet:/x", "--out", out]),
        ArgCase("tinytrain --data TEXT-FILE", ["tinytrain", "--data", str(root / "notes.txt"),
                                               "--out", out + "-tt", *tt_short]),
        ArgCase("tinytrain --data imagenet:/x", ["tinytrain", "--data", "imagenet:/x", "--out",
                                                 out + "-tt", *tt_short]),
        ArgCase("tinyexport --checkpoint FOLDER", ["tinyexport", "--checkpoint", str(root),
                                                   "--out", out]),
        ArgCase("tinytrain transfer --from FOLDER", [*tl, "--from", str(root)]),
        ArgCase("tinytrain --lr nan", ["tinytrain", "--data", "digits", "--lr", "nan", "--out",
                                       out + "-tt", *tt_short]),
        ArgCase("tinytrain transfer --lr nan", [*tl, "--from", ckpt["good"], "--lr", "nan"]),
        ArgCase("tinyexport --num-classes 3 --eval-data digits (must warn or refuse)",
                ["tinyexport", "--model", "mcunet-in0", "--resolution", "32", "--num-classes", "3",
                 "--eval-data", "digits", "--eval-images", "16", "--no-firmware",
                 "--calib-images", "8", "--check-images", "8", "--out", out + "-nc"],
                judge=warns_class_mismatch),
        ArgCase("tinyexport --no-firmware --offline-plan --board B",
                ["tinyexport", "--model", "mcunet-in0", "--no-firmware", "--offline-plan",
                 "--board", "stm32f746", "--out", out]),
        ArgCase("tinyexport --check-images 100 --calib-images 10",
                ["tinyexport", "--model", "mcunet-in0", "--check-images", "100", "--calib-images",
                 "10", "--out", out]),
        ArgCase("tinyexport --calib-data cifar10:EVIL-PICKLES",
                ["tinyexport", *SMALL_EXPORT, "--calib-data", f"cifar10:{evil}", "--out", out],
                judge=marker_absent(marker)),
        ArgCase("tinytrain --data cifar10:EVIL-PICKLES",
                ["tinytrain", "--data", f"cifar10:{evil}", "--out", out + "-tt", *tt_short],
                judge=marker_absent(marker)),
    ]


def make_bad_checkpoints(root: Path) -> dict[str, str]:
    """An empty file, a NaN-weights checkpoint, one storing resolution 100000 and a good one."""
    paths = {k: root / f"{k}.pt" for k in ("empty", "nan", "huge_res", "good")}
    paths["empty"].write_bytes(b"")
    torch.manual_seed(0)
    model = build_model("mbv2-tiny", num_classes=10, resolution=32)
    save_checkpoint(model, paths["good"], data="digits")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(model, paths["nan"], data="digits")
    small = build_model("mcunet-in0", num_classes=10, resolution=32)
    payload = make_payload(small)
    payload["resolution"] = 100000
    torch.save(payload, paths["huge_res"])
    return {k: str(v) for k, v in paths.items()}


def judge_arg_case(case: ArgCase, run: WorkerRun) -> tuple[str, str]:
    special = case.judge(run) if case.judge else expect_error(run)
    if special is not None:
        return special
    return classify(run.rc, run.stderr, run.timed_out), last_error(run.stderr)


def run_group_args(bench: Bench, tally: Tally) -> None:
    group = "3. bad arguments and hostile files"
    root = bench.work / "args"
    root.mkdir(exist_ok=True)
    for case in bad_argument_cases(bench, root):
        run = bench.cli(case.argv, case.timeout_s, cwd=root)
        outcome, detail = judge_arg_case(case, run)
        tally.add(Case(group, case.name, outcome, detail, shell(case.argv), run.seconds))
    run_mount_cases(bench, tally, group, root)
    run_concurrent_exports(bench, tally, group, root)


def run_mount_cases(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    """--out on a read-only tmpfs and on a full (2 MiB) tmpfs: clean error, nothing left over."""
    for name, options in (("read-only tmpfs", "ro,size=1m"), ("full disk (2 MiB tmpfs)", "size=2m")):
        mnt = root / name.split()[0].replace("-", "")
        argv = ["tinyexport", *SMALL_EXPORT, "--out", str(mnt / "out")]
        with tmpfs(mnt, options) as refused:
            if refused:
                tally.add(Case(group, f"tinyexport --out on a {name}", "clean error",
                               f"SKIPPED: cannot mount ({refused})", shell(argv)))
                continue
            run = bench.cli(argv, 600, cwd=root)
            outcome, detail = judge_arg_case(ArgCase(name, argv), run)
            left = sorted(p.name for p in mnt.iterdir()) if mnt.is_dir() else []
            if left and outcome == "clean error":
                outcome, detail = "unclean exit", f"{detail}; left behind on the mount: {left}"
        tally.add(Case(group, f"tinyexport --out on a {name}", outcome, detail,
                       f"mount -t tmpfs -o {options} tmpfs {mnt}; {shell(argv)}", run.seconds))


def run_concurrent_exports(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    """Two exports into the same new folder at once: the second fails clearly, the first
    succeeds and leaves a complete export."""
    out = root / "same_out"
    lock = out.with_name(f".{out.name}.lock")
    argv = [str(BIN / "tinyexport"), *SMALL_EXPORT, "--out", str(out)]
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=bench.env,
                                 cwd=root, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 300
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        second = bench.cli(["tinyexport", *argv[1:]], 300, cwd=root)
        try:
            first_rc = first.wait(600)
        except subprocess.TimeoutExpired:
            first.kill()
            first_rc = None
    outcome, detail = classify(second.rc, second.stderr, second.timed_out), last_error(second.stderr)
    if outcome is None:
        outcome, detail = "wrong success", "the second export also exited 0"
    elif outcome == "clean error" and not (first_rc == 0 and (out / "export.json").is_file()):
        outcome = "wrong success" if first_rc == 0 else "unclean exit"
        detail = f"first export: exit {first_rc}, export.json present: {(out / 'export.json').is_file()}"
    tally.add(Case(group, "two tinyexport runs into the same new --out at once", outcome,
                   detail, f"{shell(argv)} & sleep 8; {shell(argv)}", second.seconds))

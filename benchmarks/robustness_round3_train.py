"""Robustness cases of issue 23 (hostile input, third round) on the training side: ``tinytrain``,
``tinytrain transfer`` and the checkpoints they write as ``tinyexport --checkpoint`` reads them,
one family per class that reaches them, each fixture generated here at run time (group 6).

6.1 unbounded resources (image, IDX, gzip and archive bombs), 6.2 special files, 6.3 checkpoint
metadata, 6.4 data that lies, 6.5 run folders never overwritten, 6.6 names from files, 6.8
signals during training, 6.9 unhelpful clean errors (classes 7, reports, is the export side's
alone: group 5). Every run that must refuse its input runs under the 3 GB address-space limit of
group 5 and a per-case timeout; the runs that must complete run under it too (training fits).
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks.robustness_args import ArgCase, files_intact, judge_arg_case
from tinyexport.benchmarks.robustness_harness import (
    BIN,
    Bench,
    Case,
    Tally,
    WorkerRun,
    classify,
    last_error,
    shell,
    signals_as_a_shell_gives_them,
)
from tinyexport.benchmarks.robustness_kills import descendants, survivors, wait_for_line
from tinyexport.benchmarks.robustness_round3 import (
    HOSTILE,
    Judge,
    declare_member_sizes,
    image_folder,
    limited,
    no_control_characters,
    run_arg_case,
    run_limited,
    succeeds_escaped,
)
from tinyexport.train.checkpoint_format import make_payload
from tinyexport.train.models import build_model

FAMILIES = {
    "6.1": "unbounded resources", "6.2": "special files", "6.3": "checkpoint metadata",
    "6.4": "data that lies", "6.5": "run folders never overwritten", "6.6": "names from files",
    "6.8": "signals during training", "6.9": "unhelpful clean errors",
}
SMALL = ["--resolution", "32", "--batch-size", "8", "--epochs", "1", "--max-steps", "2",
         "--workers", "0", "--threads", "1", "--no-progress", "--device", "cpu"]
TRAIN = ["tinytrain", "--model", "mbv2-tiny", "--no-netaug", "--limit-val", "16", *SMALL]
TRANSFER = ["tinytrain", "transfer", "--model", "mbv2-tiny", "--limit-val", "16", *SMALL]
SCRATCH_OUTS = ("o", "o2")  # the --out of every one-run case, under the group's folder
LONG = [*TRAIN, "--epochs", "3", "--max-steps", "12"]  # long enough to be stopped mid-run


# --- fixtures ---------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0"))
            + _chunk(b"IEND", b""))


def idx(dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    """An IDX (Fashion-MNIST) file of unsigned bytes: its header declares ``dims``."""
    header = bytes((0, 0, 8, len(dims))) + struct.pack(">" + "I" * len(dims), *dims)
    return header + (payload if payload is not None else bytes(int(np.prod(dims))))


def fashion_folder(folder: Path, images: bytes, labels: bytes, gz: bool = False) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / stem).write_bytes(data)
    return f"fashion-mnist:{folder}"


def archive_naming_one_member(path: Path, entries: int, member_bytes: int) -> None:
    """The issue's archive bomb: one deflated member of ``member_bytes`` zeros (a few MB on disk)
    and a central directory of ``entries`` records that all name it (each would unpack it)."""
    deflate, crc = zlib.compressobj(1, zlib.DEFLATED, -15), 0
    block, parts = bytes(64 * 2 ** 20), []
    for _ in range(member_bytes // len(block)):
        crc = zlib.crc32(block, crc)
        parts.append(deflate.compress(block))
    body = b"".join(parts) + deflate.flush()
    name = b"archive/data/0"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), member_bytes,
                        len(name), 0) + name
    record = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body),
                         member_bytes, len(name), 0, 0, 0, 0, 0, 0) + name
    directory = record * entries
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, len(directory),
                      len(local) + len(body), 0)
    path.write_bytes(local + body + directory + end)


def archive_declaring(path: Path, size: int) -> None:
    """A real checkpoint whose central directory declares every member ``size`` bytes."""
    torch.save(make_payload(build_model("mbv2-tiny", num_classes=10, resolution=32)), path)
    declare_member_sizes(path, size)


def _weight(transform):
    def change(payload):
        key = "first_conv.conv.weight"
        payload["state_dict"][key] = transform(payload["state_dict"][key])
    return change


def _set(key, value):
    def change(payload):
        payload[key] = value
    return change


def _without(key):
    def change(payload):
        del payload[key]
    return change


BAD_PAYLOADS = {
    "no num_classes": _without("num_classes"),
    "no model": _without("model"),
    "kind a list": _set("kind", ["base"]),
    "model an int": _set("model", 7),
    "model a list": _set("model", ["mbv2-tiny"]),
    "num_classes 10^12": _set("num_classes", 10 ** 12),
    "an int state_dict entry": lambda p: p["state_dict"].__setitem__("classifier.bias", 3),
    "int64 conv weights": _weight(lambda w: w.to(torch.int64)),
    "complex64 conv weights": _weight(lambda w: w.to(torch.complex64)),
    "conv weights x1e12": _weight(lambda w: w * 1e12),
    "an Inf weight": _weight(lambda w: w.index_fill(0, torch.tensor([0]), float("inf"))),
}


def bad_checkpoints(root: Path) -> dict[str, Path]:
    paths = {}
    for name, change in BAD_PAYLOADS.items():
        payload = make_payload(build_model("mbv2-tiny", num_classes=10, resolution=32))
        change(payload)
        paths[name] = root / f"{name.replace(' ', '_')}.pt"
        torch.save(payload, paths[name])
    return paths


def cifar_folder(folder: Path, bad_label: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [0, bad_label] if name == "data_batch_1" else [0, 1]
        (folder / name).write_bytes(pickle.dumps(
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}, protocol=2))
    return f"cifar10:{folder}"


# --- judges -----------------------------------------------------------------------------------


def runs_and_warns(*words: str) -> Judge:
    """Correct: exit 0 after a warning holding every word (a skipped bomb, a FIFO, a flat folder);
    exit 0 without it is a wrong success."""
    def judge(run: WorkerRun) -> tuple[str, str] | None:
        if classify(run.rc, run.stderr, run.timed_out) is not None:
            return None
        said = [ln for ln in run.stderr.splitlines() if all(w in ln for w in words)]
        if said:
            return "correct", "exit 0; said: " + said[0][:200]
        return "wrong success", f"exit 0 without a warning naming {words}"
    return judge


# --- families 6.1-6.4, 6.6, 6.9: one CLI run each -------------------------------------------------


def resource_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    cases = []
    for name, (w, h) in {"50000 x 50000": (50_000, 50_000), "80000000 x 1": (80_000_000, 1)}.items():
        folder = image_folder(root / f"bomb-{w}x{h}", ["cat", "dog"])
        (folder / "cat" / "bomb.png").write_bytes(png_declaring(w, h))
        cases.append(ArgCase(f"ImageFolder with a 100-byte PNG declaring {name} px",
                             [*TRAIN, "--data", str(folder), "--out", out], 120,
                             judge=runs_and_warns("skipping image", "limit")))
    idx_files = {
        "IDX of 0 x 0 images": (idx((2, 0, 0), b""), idx((2,)), False),
        "IDX of 1 x 1,000,000 px images": (idx((1, 1, 1_000_000)), idx((1,)), False),
        "IDX declaring 4e9 images": (idx((4_000_000_000, 28, 28), b""), idx((1,)), False),
        "gzip bomb (one image declared, 64 MB inflated)": (
            idx((1, 28, 28), bytes(28 * 28 + 64 * 2 ** 20)), idx((1,)), True),
    }
    for i, (name, (images, labels, gz)) in enumerate(idx_files.items()):
        spec = fashion_folder(root / f"idx{i}", images, labels, gz)
        cases.append(ArgCase(f"--data {name}", [*TRAIN, "--data", spec, "--out", out], 60))
    archive_naming_one_member(root / "one_member.pt", 60_000, 2 ** 30)
    archive_declaring(root / "declared.pt", 0xFA000000)
    for name, path in (("60,000 entries naming one 1 GiB member", "one_member.pt"),
                       ("an archive declaring 3.9 GiB members", "declared.pt")):
        cases.append(ArgCase(f"transfer --from {name}",
                             [*TRANSFER, "--from", str(root / path), "--data", "synthetic:24",
                              "--out", out], 60))
        cases.append(ArgCase(f"tinyexport --checkpoint {name}",
                             ["tinyexport", "--checkpoint", str(root / path), "--out", out,
                              "--no-firmware"], 60))
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
              for i in range(8)]
    (root / "bomb.yaml").write_text("\n".join(lines + ["epochs: *i"]) + "\n")
    cases += [
        ArgCase("--data synthetic:10^12", [*TRAIN, "--data", "synthetic:1000000000000",
                                           "--out", out], 60),
        ArgCase("transfer --data synthetic:10^12", [*TRANSFER, "--data", "synthetic:1000000000000",
                                                    "--out", out], 60),
        ArgCase("--config YAML alias bomb", [*TRAIN, "--data", "digits", "--config",
                                             str(root / "bomb.yaml"), "--out", out], 60),
    ]
    return [("6.1", c) for c in cases]


def special_file_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    folder = image_folder(root / "fifo-folder", ["cat", "dog"])
    os.mkfifo(folder / "cat" / "pipe.jpg")
    idx_dir = root / "fifo-idx"
    idx_dir.mkdir()
    for split in ("train", "t10k"):
        os.mkfifo(idx_dir / f"{split}-images-idx3-ubyte")
        (idx_dir / f"{split}-labels-idx1-ubyte").write_bytes(idx((1,)))
    os.mkfifo(root / "fifo.pt")
    os.mkfifo(root / "fifo.yaml")
    run = root / "fifo-run"
    run.mkdir()
    os.mkfifo(run / "checkpoint.pt")
    recorded = root / "recorded.pt"
    torch.save(make_payload(build_model("mbv2-tiny", num_classes=10, resolution=32),
                            data=f"fashion-mnist:{idx_dir}"), recorded)
    cases = [
        ArgCase("a FIFO named pipe.jpg inside an ImageFolder",
                [*TRAIN, "--data", str(folder), "--out", out], 120,
                judge=runs_and_warns("pipe.jpg", "FIFO")),
        ArgCase("--data fashion-mnist:DIR whose images file is a FIFO",
                [*TRAIN, "--data", f"fashion-mnist:{idx_dir}", "--out", out], 30),
        ArgCase("transfer --from FIFO", [*TRANSFER, "--from", str(root / "fifo.pt"), "--data",
                                         "synthetic:24", "--out", out], 30),
        ArgCase("transfer --from /dev/zero", [*TRANSFER, "--from", "/dev/zero", "--data",
                                              "synthetic:24", "--out", out], 30),
        ArgCase("--config FIFO", [*TRAIN, "--data", "digits", "--config", str(root / "fifo.yaml"),
                                  "--out", out], 30),
        ArgCase("--resume where checkpoint.pt is a FIFO",
                [*TRAIN, "--data", "digits", "--out", str(run), "--resume"], 30),
        # the export warns and calibrates on its defaults (random weights: no agreement gate);
        # TensorFlow's converter needs more than the 3 GB limit
        ArgCase("tinyexport --checkpoint whose recorded data is a FIFO",
                ["tinyexport", "--checkpoint", str(recorded), "--out", out, "--no-firmware",
                 "--min-agreement", "0"], 300, memory_limit=False,
                judge=runs_and_warns("not readable here", "FIFO")),
    ]
    return [("6.2", c) for c in cases]


def metadata_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    return [("6.3", ArgCase(f"transfer --from a checkpoint with {name}",
                            [*TRANSFER, "--from", str(path), "--data", "synthetic:24", "--out",
                             out], 60))
            for name, path in bad_checkpoints(root).items()]


def lying_data_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    flat = image_folder(root / "flat", ["cat", "dog"])
    for name, val in (("other", ["cow", "dog"]), ("extra", ["cat", "dog", "eel"])):
        image_folder(root / name / "train", ["cat", "dog"])
        image_folder(root / name / "val", val)
    shadow = root / "shadow"
    (shadow / "digits" / "a").mkdir(parents=True)
    cases = [
        ArgCase("a flat ImageFolder (no train/ val/)", [*TRAIN, "--data", str(flat), "--out", out],
                120, judge=runs_and_warns("validation uses the training images")),
        ArgCase("val/ {cow, dog} beside train/ {cat, dog}",
                [*TRAIN, "--data", str(root / "other"), "--out", out], 60),
        ArgCase("val/ with an extra class", [*TRAIN, "--data", str(root / "extra"), "--out", out],
                60),
        ArgCase("transfer --val-data of other classes",
                [*TRANSFER, "--data", str(flat), "--val-data", str(root / "other" / "val"),
                 "--out", out], 60),
        ArgCase("digits beside a ./digits folder", [*TRAIN, "--data", "digits", "--out", out], 60,
                cwd=shadow),
    ]
    cases += [ArgCase(f"cifar10 batch with label {label}",
                      [*TRAIN, "--data", cifar_folder(root / f"cifar{i}", label), "--out", out], 60)
              for i, label in enumerate((-5, 999, 2 ** 40))]
    return [("6.4", c) for c in cases]


def name_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    folder = image_folder(root / "names", ["cat", "dog", "x" + HOSTILE])
    (folder / "cat" / ("bomb" + HOSTILE + ".png")).write_bytes(png_declaring(50_000, 50_000))
    os.mkfifo(folder / "dog" / ("pipe" + HOSTILE + ".jpg"))
    judge = no_control_characters(succeeds_escaped)
    return [("6.6", ArgCase("tinytrain on an ImageFolder whose class, bomb and FIFO names hold "
                            "'\\n stm32f746 fits\\x1b]0;..'",
                            [*TRAIN, "--data", str(folder), "--out", out], 120, judge=judge)),
            ("6.6", ArgCase("transfer on the same folder",
                            [*TRANSFER, "--data", str(folder), "--out", out + "2"], 120,
                            judge=judge))]


def argument_cases(root: Path) -> list[tuple[str, ArgCase]]:
    out = str(root / "o")
    train = [*TRAIN, "--data", "digits"]
    transfer = [*TRANSFER, "--data", "synthetic:24"]
    extras = [[*train, "--out", ""], [*train, "--out", "/"]]
    extras += [[*train, "--out", out, flag, value] for flag, value in (
        ("--seed", str(2 ** 70)), ("--seed", "-1"), ("--lr", "1e308"), ("--lr", "nan"),
        ("--lr", "-0.1"), ("--baseline-lr", "1e20"), ("--epochs", "0"), ("--batch-size", "0"),
        ("--resolution", str(10 ** 9)), ("--resolution", "7"), ("--limit-train", "0"),
        ("--threads", str(10 ** 6)), ("--threads", "0"), ("--workers", "-1"),
        ("--workers", str(10 ** 6)),
        ("--warmup-epochs", "-1"), ("--max-steps", "0"), ("--sort-channels-every", "0"),
        ("--amp", "fp16"), ("--model", "mcunet-in9"), ("--data", "nosuchset:dir"))]
    extras += [[*transfer, "--out", out, flag, value] for flag, value in (
        ("--lr", "inf"), ("--epochs", "-1"), ("--label-smoothing", "2"), ("--classes", "3,3"),
        ("--frozen-bits", "4"), ("--recipe", "nosuch"), ("--from", str(root / "missing.pt")),
        ("--lite-kernel", "0"))]
    return [("6.9", ArgCase(" ".join(["tinytrain", *(a for a in extra if a in ("transfer",))]
                                     + [repr(a) for a in extra[-2:]]), extra, 60))
            for extra in extras]


# --- family 6.5: run folders ---------------------------------------------------------------------


def run_folder_cases(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    """A finished run, then: the same command again, a transfer into it from its own best.pt
    (directly and through a symlink), --out inside --data, and two runs at once."""
    run = root / "finished"
    first = run_limited(bench, [*TRAIN, "--data", "digits", "--out", str(run)], 120, root)
    if first.rc != 0:
        tally.add(Case(group, "a finished run, again", "unclean exit",
                       f"the first run failed: {last_error(first.stderr)}"))
        return
    kept = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    (root / "link").symlink_to(run)
    data = image_folder(root / "data", ["cat", "dog"])
    data_files = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    cases = [
        ArgCase("the same tinytrain into a finished run, without --resume",
                [*TRAIN, "--data", "digits", "--out", str(run)], 60, judge=files_intact(kept)),
        ArgCase("transfer --from RUN/best.pt --out RUN",
                [*TRANSFER, "--from", str(run / "best.pt"), "--data", "synthetic:24", "--out",
                 str(run)], 60, judge=files_intact(kept)),
        ArgCase("transfer --from RUN/best.pt --out LINK (a symlink to RUN)",
                [*TRANSFER, "--from", str(run / "best.pt"), "--data", "synthetic:24", "--out",
                 str(root / "link")], 60, judge=files_intact(kept)),
        ArgCase("--out inside --data", [*TRAIN, "--data", str(data), "--out", str(data / "run")],
                60, judge=files_intact(data_files)),
    ]
    for case in cases:
        result = run_limited(bench, case.argv, case.timeout_s, root)
        outcome, detail = judge_arg_case(case, result)
        tally.add(Case(group, case.name, outcome, detail, shell(case.argv), result.seconds))
    _two_runs_at_once(bench, tally, group, root)


def _two_runs_at_once(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    out = root / "shared"
    argv = [*LONG, "--data", "digits", "--out", str(out)]
    log = root / "first.log"
    with open(log, "w") as f:
        first = subprocess.Popen(limited(argv), stdout=subprocess.DEVNULL, stderr=f,
                                 env=bench.env, cwd=root)
        wait_for_line(first, log, "LR: peak", 120)
        second = run_limited(bench, argv, 60, root)
        rc = first.wait(300)
    outcome, detail = judge_arg_case(ArgCase("", argv), second)
    if rc != 0:
        outcome, detail = "data loss", f"the first run failed: {last_error(log.read_text())}"
    tally.add(Case(group, "two tinytrain runs into one folder at once: the second", outcome,
                   detail, f"{shell(argv)} & sleep 5; {shell(argv)}", second.seconds))


# --- family 6.8: SIGTERM / SIGHUP while training ----------------------------------------------


def signal_cases(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    """Stopped after its first epoch, a run says so in one line, leaves no lock or child, and
    ``--resume`` finishes it."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        out = root / f"sig-{sig.name}"
        argv = [*LONG, "--data", "digits", "--out", str(out)]
        log = root / f"{sig.name}.log"
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=subprocess.DEVNULL,
                                    stderr=f, env=bench.env, cwd=root,
                                    preexec_fn=signals_as_a_shell_gives_them)
            wait_for_line(proc, log, "epoch 0:", 120)
            kids = descendants(proc.pid)
            proc.send_signal(sig)
            try:
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = None
        stderr = log.read_text(errors="replace")
        outcome, detail = classify(rc, stderr, rc is None), last_error(stderr)
        litter = sorted(p.name for p in out.glob(".*.lock"))
        alive = survivors(kids, str(out))
        if outcome is None:
            outcome, detail = "wrong success", "exit 0 after the signal"
        elif outcome == "clean error" and (litter or alive or "--resume" not in detail):
            outcome, detail = "unclean exit", f"{detail}; left: {litter}, alive: {alive}"
        if outcome == "clean error":
            resumed = run_limited(bench, [*argv, "--resume"], 300, root)
            if resumed.rc != 0:
                outcome, detail = "data loss", f"--resume failed: {last_error(resumed.stderr)}"
            else:
                detail += "; --resume finished the run"
        tally.add(Case(group, f"{sig.name} to tinytrain after its first epoch, then --resume",
                       outcome, detail, f"{shell(argv)} & sleep 10; kill -{sig.name[3:]} $!",
                       time.perf_counter() - start))


def all_argument_cases(root: Path) -> list[tuple[str, ArgCase]]:
    """(family, case) of every family checked by one CLI run and its output."""
    root.mkdir(parents=True, exist_ok=True)
    return [*resource_cases(root), *special_file_cases(root), *metadata_cases(root),
            *lying_data_cases(root), *name_cases(root), *argument_cases(root)]


def run_group_round3_train(bench: Bench, tally: Tally) -> None:
    """Every family of issue 23's training side (group 6)."""
    root = bench.work / "round3-train"
    for family, case in all_argument_cases(root):
        for out in SCRATCH_OUTS:  # each case starts from a new --out
            shutil.rmtree(root / out, ignore_errors=True)
        tally.add(run_arg_case(bench, f"{family} {FAMILIES[family]}", case, root))
    run_folder_cases(bench, tally, f"6.5 {FAMILIES['6.5']}", root)
    signal_cases(bench, tally, f"6.8 {FAMILIES['6.8']}", root)

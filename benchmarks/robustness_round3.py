"""Robustness cases of issue 23 (hostile input, third round) on the export / report side: one
family per class, each case's fixture generated here at run time (group 5).

5.1 unbounded resources, 5.2 special files, 5.3 checkpoint metadata, 5.4 data that lies,
5.5 ``--force`` and symlinks, 5.6 names from a file, 5.7 reports that contradict themselves,
5.8 signals during onnx2tf, 5.9 unhelpful clean errors. Every CLI that must refuse its input runs
under a 3 GB address-space limit (``ulimit -v 3000000``) and a per-case timeout, so a bomb shows up
as a crash or a hang; the exports that must complete (5.5, 5.8) run without the limit (TensorFlow's
in-process converter needs more address space).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks.robustness_args import ArgCase, expect_error, judge_arg_case
from tinyexport.benchmarks.robustness_harness import (
    BIN,
    DATA,
    SMALL_EXPORT,
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
from tinyexport.tflite_graph import edit
from tinyexport.tflite_graph.reader import parse_graph
from tinyexport.tflite_graph.writer import with_offline_plan
from tinyexport.train.checkpoint_format import make_payload
from tinyexport.train.models import build_model

MEMORY_KIB = 3_000_000  # the issue's `ulimit -v 3000000`
MODEL = DATA / "keras_tiny_int8.tflite"  # 16x16x3 in, 10 classes out
HOSTILE = "\n stm32f746 fits\x1b]0;title\x07"
CONTROL = "\x1b\x07"
FAMILIES = {
    "5.1": "unbounded resources", "5.2": "special files", "5.3": "checkpoint metadata",
    "5.4": "data that lies", "5.5": "--force and symlinks", "5.6": "names from a file",
    "5.7": "reports that contradict themselves", "5.8": "signals during onnx2tf",
    "5.9": "unhelpful clean errors",
}

Judge = Callable[[WorkerRun], "tuple[str, str] | None"]


def limited(argv: list[str]) -> list[str]:
    """``argv`` run under ``ulimit -v`` (the venv's CLI named by ``argv[0]``)."""
    return ["bash", "-c", f'ulimit -v {MEMORY_KIB} && exec "$0" "$@"', str(BIN / argv[0]),
            *argv[1:]]


def run_limited(bench: Bench, argv: list[str], timeout_s: float, cwd: Path) -> WorkerRun:
    start = time.perf_counter()
    try:
        proc = subprocess.run(limited(argv), capture_output=True, text=True, timeout=timeout_s,
                              env=bench.env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        return WorkerRun(None, str(exc.stdout or ""), str(exc.stderr or ""), True, timeout_s)
    return WorkerRun(proc.returncode, proc.stdout, proc.stderr,
                     seconds=time.perf_counter() - start)


def run_arg_case(bench: Bench, group: str, case: ArgCase, root: Path) -> Case:
    """One case of groups 5 and 6: its CLI run (in ``case.cwd`` or ``root``; under the memory
    limit unless ``case.memory_limit`` is False) and judged."""
    cwd = case.cwd or root
    if case.memory_limit:
        run, limit = run_limited(bench, case.argv, case.timeout_s, cwd), f"ulimit -v {MEMORY_KIB}; "
    else:
        run, limit = bench.cli(case.argv, case.timeout_s, cwd), ""
    outcome, detail = judge_arg_case(case, run)
    return Case(group, case.name, outcome, detail, limit + shell(case.argv), run.seconds)


def no_control_characters(then: Judge | None = None) -> Judge:
    """A line the program did not write (a raw newline or terminal escape from a file's name) is a
    wrong success, whatever the exit."""
    def judge(run: WorkerRun) -> tuple[str, str] | None:
        text = run.stdout + run.stderr
        if any(c in text for c in CONTROL) or any(
                ln.startswith(" stm32f746 fits") for ln in text.splitlines()):
            return "wrong success", "a name from the file reached the output unescaped"
        return (then or expect_error)(run)
    return judge


def succeeds_escaped(run: WorkerRun) -> tuple[str, str] | None:
    if classify(run.rc, run.stderr, run.timed_out) is None:
        return "correct", "exit 0, every name escaped"
    return None


def does_not_fit_escaped(run: WorkerRun) -> tuple[str, str] | None:
    if run.rc == 3 and not run.timed_out and "Traceback" not in run.stderr:
        return "correct", "DOES NOT FIT (exit 3), the board's name escaped"
    return None


# --- fixtures ---------------------------------------------------------------------------------


def declare_member_sizes(path: Path, size: int) -> None:
    """Set every member's uncompressed size in zip file ``path``'s central directory to ``size``
    (a small archive that claims to unpack to ``size`` bytes a member)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def _npz_declaring(path: Path, size: int) -> None:
    np.savez(path, images=np.zeros((1, 16, 16, 3), np.float32))
    declare_member_sizes(path, size)


def _npy_declaring(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": shape})
        f.write(b"\0" * 64)


def _sparse(path: Path, head: bytes, size: int = 20 * 2 ** 30) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def _alias_bomb(path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}]" for i in range(9)]
    path.write_text("\n".join(lines) + "\nname: evil\nsram: 1\nflash: 1\n")


def _checkpoints(root: Path) -> dict[str, str]:
    model = build_model("mcunet-in0", num_classes=10, resolution=32)
    changes = {
        "int64": lambda v: v.to(torch.int64),
        "complex": lambda v: v.to(torch.complex64),
        "x1e12": lambda v: v * 1e12 + 1e12,
        "float-as-int-counter": None,
    }
    paths = {}
    for name, change in changes.items():
        payload = make_payload(model)
        if change is None:
            payload["state_dict"] = {k: (v.float() if not v.is_floating_point() else v)
                                     for k, v in payload["state_dict"].items()}
        else:
            payload["state_dict"] = {k: (change(v) if v.is_floating_point() else v)
                                     for k, v in payload["state_dict"].items()}
        paths[name] = root / f"{name}.pt"
        torch.save(payload, paths[name])
    lying = make_payload(model)
    lying.update(model="nosuchnet", num_classes=2 ** 40)
    paths["lying-schema"] = root / "lying.pt"
    torch.save(lying, paths["lying-schema"])
    return {k: str(v) for k, v in paths.items()}


def hostile_tflite(path: Path, custom: bool) -> None:
    model = edit.unpack(MODEL.read_bytes())
    model.subgraphs[0].tensors[0].name = ("in" + HOSTILE).encode()
    if custom:
        code = model.operatorCodes[0]
        code.builtinCode = code.deprecatedBuiltinCode = edit.builtin_code("CUSTOM")
        code.customCode = ("MyOp" + HOSTILE).encode()
    path.write_bytes(edit.pack(model))


def zero_plan(path: Path) -> None:
    data = MODEL.read_bytes()
    zeros = [-1 if t.is_const else 0 for t in parse_graph(data).tensors]
    path.write_bytes(with_offline_plan(data, zeros))


def image_folder(root: Path, classes: list[str]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(
                root / name / f"{i}.png")
    return root


# --- families 5.1-5.4, 5.6, 5.7, 5.9: one CLI run each ------------------------------------------


def argument_cases(root: Path) -> list[tuple[str, ArgCase]]:
    """(family, case) of every class checked by one CLI run and its output."""
    f = {name: root / name for name in (
        "declared.npz", "entries.npz", "shape.npy", "sparse.npz", "sparse.tflite", "bomb.yaml",
        "fifo.tflite", "fifo.npz", "fifo.pt", "fifo.yaml", "zero.tflite", "zero.pt", "dir.tflite",
        "custom.tflite", "names.tflite", "zeros.tflite")}
    _npz_declaring(f["declared.npz"], 0xFA000000)
    np.savez(f["entries.npz"], **{f"a{i}": np.zeros(1) for i in range(40)})
    _npy_declaring(f["shape.npy"], (10 ** 6, 10 ** 6))
    _sparse(f["sparse.npz"], b"PK\x03\x04")
    _sparse(f["sparse.tflite"], b"\0\0\0\0TFL3")
    _alias_bomb(f["bomb.yaml"])
    for name in ("fifo.tflite", "fifo.npz", "fifo.pt", "fifo.yaml"):
        os.mkfifo(f[name])
    f["zero.tflite"].symlink_to("/dev/zero")
    f["zero.pt"].symlink_to("/dev/zero")
    f["dir.tflite"].mkdir()
    hostile_tflite(f["custom.tflite"], custom=True)
    hostile_tflite(f["names.tflite"], custom=False)
    zero_plan(f["zeros.tflite"])
    (root / "evil_board.yaml").write_text('name: "evil\\n stm32f746 fits\\e]0;t\\a"\n'
                                          "sram: 1\nflash: 1\n")
    ckpt = _checkpoints(root)
    images = {
        "NaN images": (np.full((2, 16, 16, 3), np.nan, np.float32), None),
        "Inf images": (np.full((2, 16, 16, 3), -np.inf, np.float32), None),
        "label -5": (np.zeros((2, 16, 16, 3), np.float32), np.array([0, -5])),
        "label 999": (np.zeros((2, 16, 16, 3), np.float32), np.array([999, 0])),
        "label 2^40": (np.zeros((2, 16, 16, 3), np.float32), np.array([2 ** 40, 0])),
        "label 10 = num_classes": (np.zeros((2, 16, 16, 3), np.float32), np.array([10, 0])),
    }
    for name, (x, y) in images.items():
        np.savez(root / f"{name}.npz", images=x, **({} if y is None else {"labels": y}))
    out = str(root / "o")
    report = ["tinyreport", str(MODEL), "--measure", "--images"]
    export = ["tinyexport", *SMALL_EXPORT, "--out", out]
    cases = [
        ("5.1", ArgCase("tinyreport --images NPZ declaring 3.9 GiB", [*report, str(f["declared.npz"])], 60)),
        ("5.1", ArgCase("tinyreport --images NPZ of 40 arrays", [*report, str(f["entries.npz"])], 60)),
        ("5.1", ArgCase("tinyreport --images NPY declaring 10^6 x 10^6", [*report, str(f["shape.npy"])], 60)),
        ("5.1", ArgCase("tinyreport --images 20 GB sparse NPZ", [*report, str(f["sparse.npz"])], 60)),
        ("5.1", ArgCase("tinyreport 20 GB sparse FILE.tflite starting with TFL3",
                        ["tinyreport", str(f["sparse.tflite"])], 60)),
        ("5.1", ArgCase("tinyreport --board YAML alias bomb",
                        ["tinyreport", "--model", "mcunet-in0", "--board", str(f["bomb.yaml"])], 60)),
        ("5.1", ArgCase("tinyexport --board YAML alias bomb", [*export, "--board", str(f["bomb.yaml"])], 60)),
        ("5.1", ArgCase("tinyexport --calib-data synthetic:10^12",
                        [*export, "--calib-data", "synthetic:1000000000000"], 60)),
        ("5.1", ArgCase("tinyexport --eval-data synthetic:10^12",
                        [*export, "--eval-data", "synthetic:1000000000000"], 60)),
        ("5.1", ArgCase("tinyexport --calib-images 10^12", [*export, "--calib-images", str(10 ** 12)], 60)),
        ("5.1", ArgCase("tinyexport with valid arguments under the 3 GB limit", export, 120)),
        ("5.2", ArgCase("tinyreport FIFO.tflite", ["tinyreport", str(f["fifo.tflite"])], 30)),
        ("5.2", ArgCase("tinyreport /dev/zero as .tflite", ["tinyreport", str(f["zero.tflite"])], 30)),
        ("5.2", ArgCase("tinyreport FOLDER.tflite", ["tinyreport", str(f["dir.tflite"])], 30)),
        ("5.2", ArgCase("tinyreport --images FIFO", [*report, str(f["fifo.npz"])], 30)),
        ("5.2", ArgCase("tinyexport --checkpoint FIFO", [*export, "--checkpoint", str(f["fifo.pt"])], 30)),
        ("5.2", ArgCase("tinyexport --checkpoint /dev/zero", [*export, "--checkpoint", str(f["zero.pt"])], 30)),
        ("5.2", ArgCase("tinyreport --board FIFO.yaml",
                        ["tinyreport", "--model", "mcunet-in0", "--board", str(f["fifo.yaml"])], 30)),
        ("5.2", ArgCase("tinyexport --board FIFO.yaml", [*export, "--board", str(f["fifo.yaml"])], 30)),
    ]
    cases += [("5.3", ArgCase(f"tinyexport --checkpoint {name} weights",
                              ["tinyexport", "--checkpoint", path, "--out", out], 60))
              for name, path in ckpt.items()]
    cases += [("5.4", ArgCase(f"tinyreport --measure --images {name}",
                              [*report, str(root / f"{name}.npz")], 120)) for name in images]
    (root / "digits" / "a").mkdir(parents=True, exist_ok=True)  # the cases run in root
    cases += [("5.4", ArgCase(f"tinyexport {flag} digits beside a ./digits folder",
                              [*export, flag, "digits"], 60))
              for flag in ("--calib-data", "--eval-data")]
    cases += [
        ("5.6", ArgCase("tinyreport FILE with a custom op named '\\n stm32f746 fits\\x1b]0;..'",
                        ["tinyreport", str(f["custom.tflite"])], 60,
                        judge=no_control_characters())),
        ("5.6", ArgCase("tinyreport FILE --board with hostile tensor names",
                        ["tinyreport", str(f["names.tflite"]), "--board", "stm32f746"], 60,
                        judge=no_control_characters(succeeds_escaped))),
        ("5.6", ArgCase("tinyreport --model --board FILE.yaml whose board name holds ESC / BEL",
                        ["tinyreport", "--model", "mcunet-in0", "--board",
                         str(root / "evil_board.yaml")], 60,
                        judge=no_control_characters(does_not_fit_escaped))),
        ("5.6", ArgCase("tinyreport FILE --json with hostile names",
                        ["tinyreport", str(f["custom.tflite"]), "--json"], 60,
                        judge=no_control_characters())),
        ("5.7", ArgCase("tinyreport all-zeros offline plan --board",
                        ["tinyreport", str(f["zeros.tflite"]), "--board", "stm32f746"], 60)),
        ("5.7", ArgCase("tinyreport all-zeros offline plan --measure",
                        ["tinyreport", str(f["zeros.tflite"]), "--measure"], 120)),
    ]
    cases += [("5.9", ArgCase("tinyexport " + " ".join(repr(a if len(a) < 40 else a[:12] + "...")
                                                       for a in extra),
                              ["tinyexport", *SMALL_EXPORT, *extra], 60)) for extra in (
        ["--out", "."], ["--out", ""], ["--out", "/"], ["--out", ".."],
        ["--out", out, "--seed", str(2 ** 70)], ["--out", out, "--seed", "-1"],
        ["--out", out, "--min-agreement", "nan"], ["--out", out, "--max-top1-drop", "inf"],
        ["--out", out, "--patch-max-mac-overhead", "1e30"], ["--out", out, "--resolution", str(10 ** 9)],
        ["--out", out, "--num-classes", "0"], ["--out", out, "--check-images", "-3"],
        ["--out", out, "--sram", "9" * 400], ["--out", out, "--flash", "0"])]
    return cases


# --- family 5.5: --force onto a previous export --------------------------------------------------


def force_cases(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    """A previous export with a user's file and a hand-edited one, replaced with --force; the
    same through a symlink; a checkpoint inside --out. These exports run TensorFlow's converter
    in-process, which does not start under the 3 GB address-space limit: no limit here."""
    out = root / "prev"
    argv = ["tinyexport", *SMALL_EXPORT, "--out", str(out)]
    first = bench.cli(argv, 600, cwd=root)
    if first.rc != 0:
        tally.add(Case(group, "tinyexport --force over a previous export", "unclean exit",
                       f"the first export failed: {last_error(first.stderr)}", shell(argv)))
        return
    (out / "my_notes.md").write_text("mine\n")
    (out / "report.md").write_text("edited by hand\n")
    run = bench.cli([*argv, "--force"], 600, cwd=root)
    backups = sorted(root.glob("prev.backup-*"))
    kept = bool(backups) and (backups[0] / "my_notes.md").is_file() and (
        backups[0] / "report.md").read_text() == "edited by hand\n"
    outcome = classify(run.rc, run.stderr, run.timed_out)
    if outcome is None:
        outcome, detail = ("correct", f"moved aside to {backups[0].name}") if kept else (
            "data loss", "my_notes.md or the edited report.md is gone")
    else:
        detail = last_error(run.stderr)
        if not ((out / "my_notes.md").is_file() or kept):
            outcome = "data loss"
    tally.add(Case(group, "tinyexport --force over an export holding my_notes.md and an edited "
                   "report.md", outcome, detail, shell([*argv, "--force"]), run.seconds))

    link = root / "link"
    link.symlink_to(out)
    run = bench.cli(["tinyexport", *SMALL_EXPORT, "--force", "--out", str(link)], 600, cwd=root)
    outcome = classify(run.rc, run.stderr, run.timed_out)
    litter = sorted(p.name for p in root.iterdir() if p.name.startswith(".link"))
    if outcome is None:
        good = link.is_symlink() and (out / "export.json").is_file() and not litter
        outcome, detail = ("correct", "wrote into the link's target; the link stays") if good else (
            "wrong success", f"link replaced or litter left: symlink={link.is_symlink()}, {litter}")
    else:
        detail = last_error(run.stderr)
    tally.add(Case(group, "tinyexport --force --out LINK (a symlink to a folder)", outcome, detail,
                   "ln -s prev link; tinyexport ... --force --out link", run.seconds))

    inside = out / "ckpt.pt"
    torch.save(make_payload(build_model("mcunet-in0", num_classes=10, resolution=32)), inside)
    data = inside.read_bytes()
    argv = ["tinyexport", "--checkpoint", str(inside), "--force", "--out", str(out),
            "--no-firmware", "--calib-images", "8", "--check-images", "8"]
    run = bench.cli(argv, 600, cwd=root)
    outcome, detail = judge_arg_case(ArgCase("", argv), run)
    if not inside.is_file() or inside.read_bytes() != data:
        outcome, detail = "data loss", "the checkpoint inside --out is gone"
    tally.add(Case(group, "tinyexport --checkpoint OUT/ckpt.pt --force --out OUT", outcome, detail,
                   shell(argv), run.seconds))


# --- family 5.8: SIGTERM / SIGHUP while onnx2tf runs ------------------------------------------------


def signal_cases(bench: Bench, tally: Tally, group: str, root: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        out = root / f"sig-{sig.name}"
        tmp = root / f"tmp-{sig.name}"
        tmp.mkdir()
        argv = [str(BIN / "tinyexport"), *SMALL_EXPORT, "--out", str(out)]
        log = root / f"{sig.name}.log"
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=f,
                                    env=dict(bench.env, TMPDIR=str(tmp)), cwd=root,
                                    preexec_fn=signals_as_a_shell_gives_them)
            wait_for_line(proc, log, "onnx2tf float TFLite ...", 300)
            time.sleep(2.0)  # onnx2tf (and TensorFlow in it) has started
            kids = descendants(proc.pid)
            proc.send_signal(sig)
            try:
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = None
        time.sleep(1.0)
        stderr = log.read_text(errors="replace")
        outcome = classify(rc, stderr, rc is None)
        litter = sorted(p.name for p in root.iterdir() if p.name.startswith(f".{out.name}."))
        autograph = sorted(p.name for p in tmp.rglob("__autograph_generated_file*"))
        alive = survivors(kids, str(out))
        detail = last_error(stderr)
        if outcome is None:
            outcome, detail = "wrong success", "exit 0 after the signal"
        elif litter or autograph or alive or out.exists():
            outcome = "unclean exit"
            detail += f"; left: {litter + autograph}, children alive: {alive}"
        tally.add(Case(group, f"{sig.name} to tinyexport while onnx2tf runs", outcome, detail,
                       f"{shell(argv)} & sleep 20; kill -{sig.name[3:]} $!",
                       time.perf_counter() - start))


def run_group_round3(bench: Bench, tally: Tally) -> None:
    """Every family of issue 23's export / report side (group 5)."""
    root = bench.work / "round3"
    root.mkdir(exist_ok=True)
    for family, case in argument_cases(root):
        tally.add(run_arg_case(bench, f"{family} {FAMILIES[family]}", case, root))
    force_cases(bench, tally, f"5.5 {FAMILIES['5.5']}", root)
    signal_cases(bench, tally, f"5.8 {FAMILIES['5.8']}", root)

"""Robustness benchmark: the three CLIs attacked as a hostile but realistic user (issue 11).

    .venv/bin/python -m tinyexport.benchmarks.bench_robustness [--tflite-mutants 1000]
        [--checkpoint-mutants 100] [--kills 8] [--quick]

Four groups of cases, each case ending in exactly one outcome column (see :data:`COLUMNS`):

1. seeded ``.tflite`` mutants (byte flips, int32 field flips, truncation, opcode-index swaps) of
   small int8 models through ``tinyreport FILE --json`` (and a ``--measure`` sample);
2. seeded checkpoint mutants through the export's load path (and a sample through the real
   ``tinyexport``), and mutated ``tinytrain`` ``checkpoint.pt`` files resumed;
3. bad arguments and hostile files given to the real CLIs;
4. ``tinyexport`` and ``tinytrain`` SIGKILLed at seeded random points, then rerun / resumed.

The mutants run in worker processes (``--worker KIND JOBS RESULTS``: one process runs many cases
and writes one JSON line per case), restarted after a native crash and killed after a per-case
timeout, so a crash or a hang is observed rather than fatal. Every child process gets a private
``TMPDIR``, so litter in the temp dir is ours to see. Writes
``benchmarks/results/robustness_results.json`` and ``robustness_results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks import report_cli
from tinyexport.benchmarks.publish import write_results
from tinyexport.config import package_versions
from tinyexport.errors import run_cli
from tinyexport.export.config import ExportConfig
from tinyexport.export.pipeline import check_user_paths
from tinyexport.export.stages import load_model
from tinyexport.log import setup_logging
from tinyexport.procs import die_with_parent
from tinyexport.tflite_graph import edit
from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.train.checkpoint import describe_checkpoint, make_payload, save_checkpoint
from tinyexport.train.models import MODELS, build_model

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
MODULE = "tinyexport.benchmarks.bench_robustness"
BIN = Path(sys.executable).parent
DATA = REPO / "tests" / "firmware_eval" / "data"

COLUMNS = ("clean error", "correct", "traceback", "crash", "hang", "wrong success", "data loss",
           "unclean exit")
BAD = COLUMNS[2:]  # every column that should stay 0
TRACEBACK = "Traceback (most recent call last)"
# "error: ..." as run_cli prints it, or "PROG: error: ..." as argparse prints it.
ERROR_LINE = re.compile(r"^(?:[\w.-]+: )?error: \S")
TFLITE_KINDS = ("byte_flip", "int32_field", "truncate", "opcode_swap")
CHECKPOINT_KINDS = ("byte_flip", "struct_flip", "int32_field", "truncate")
INT32_LIMIT = 2 ** 31

TRAIN_ARGS = ["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32",
              "--batch-size", "32", "--limit-train", "256", "--limit-val", "64", "--max-steps", "4",
              "--no-netaug", "--workers", "0", "--threads", "1", "--no-progress", "--seed", "0"]
SMALL_EXPORT = ["--model", "mcunet-in0", "--resolution", "32", "--num-classes", "10",
                "--no-firmware", "--calib-images", "8", "--check-images", "8"]
KILL_EXPORT = ["--model", "mcunet-in0", "--resolution", "48", "--num-classes", "10", "--force"]


# ---------------------------------------------------------------------------------------------
# Outcomes


def classify(rc: int | None, stderr: str, timed_out: bool = False) -> str | None:
    """The outcome column of a finished CLI run, or None for exit 0 (the group judges those).

    ``rc`` None means the process was gone without a status (a worker killed mid-case).
    """
    if timed_out:
        return "hang"
    if TRACEBACK in stderr:
        return "traceback"
    clean = sum(bool(ERROR_LINE.match(line)) for line in stderr.splitlines()) == 1
    if rc is None or rc < 0 or (rc > 128 and not clean):
        return "crash"
    if rc == 0:
        return None
    return "clean error" if clean else "unclean exit"


@dataclass
class Case:
    """One attack and its verdict (``repro``: how to see it again by hand)."""

    group: str
    name: str
    outcome: str
    detail: str = ""
    repro: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    cases: list[Case] = field(default_factory=list)

    def add(self, case: Case) -> Case:
        assert case.outcome in COLUMNS, case.outcome
        self.cases.append(case)
        return case

    def table(self, groups: list[str]) -> list[dict]:
        rows = []
        for group in groups:
            mine = [c for c in self.cases if c.group == group]
            row = {"group": group, "tried": len(mine)}
            row.update({col: sum(c.outcome == col for c in mine) for col in COLUMNS})
            rows.append(row)
        return rows

    def problems(self) -> list[Case]:
        return [c for c in self.cases if c.outcome in BAD]


# ---------------------------------------------------------------------------------------------
# Mutations (seeded, deterministic)


@dataclass(frozen=True)
class Mutant:
    source: str
    index: int
    kind: str
    detail: str
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:04d}-{self.kind}"


def _offset(rng: np.random.Generator, size: int, regions: tuple[tuple[int, int], ...]) -> int:
    """A random offset, inside one of ``regions`` (start, end) when given."""
    if regions:
        start, end = regions[int(rng.integers(len(regions)))]
        return int(rng.integers(start, max(start + 1, min(end, size))))
    return int(rng.integers(size))


def byte_flips(data: bytes, rng: np.random.Generator,
               regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """1-8 bytes XORed with a random non-zero mask."""
    out = bytearray(data)
    flips = []
    for _ in range(int(rng.integers(1, 9))):
        at, mask = _offset(rng, len(out), regions), int(rng.integers(1, 256))
        out[at] ^= mask
        flips.append(f"{at}^{mask:#04x}")
    return bytes(out), "xor " + ",".join(flips)


def int32_field(data: bytes, rng: np.random.Generator,
                regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """One 4-aligned little-endian int32 replaced by a boundary or random value."""
    out = bytearray(data)
    at = min(_offset(rng, len(out), regions) // 4 * 4, max(0, len(out) - 4))
    (old,) = struct.unpack_from("<i", out, at)
    choices = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, old + 1, old - 1, old + 4096, old * 7919,
               int(rng.integers(-2 ** 31, 2 ** 31))]
    new = int(choices[int(rng.integers(len(choices)))])
    new = (new + 2 ** 31) % 2 ** 32 - 2 ** 31
    struct.pack_into("<i", out, at, new)
    return bytes(out), f"int32 @{at}: {old} -> {new}"


def truncate(data: bytes, rng: np.random.Generator,
             regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    keep = int(rng.integers(0, len(data)))
    return data[:keep], f"truncated to {keep} of {len(data)} bytes"


def opcode_swap(data: bytes, rng: np.random.Generator,
                regions: tuple[tuple[int, int], ...] = ()) -> tuple[bytes, str]:
    """Two ops of different opcodes swap their opcode index; with one opcode only, one op gets
    another (possibly out-of-range) index. Re-packed with the project's flatbuffer writer."""
    model = edit.unpack(data)
    ops = model.subgraphs[0].operators
    a = int(rng.integers(len(ops)))
    others = [i for i, op in enumerate(ops) if op.opcodeIndex != ops[a].opcodeIndex]
    if others:
        b = others[int(rng.integers(len(others)))]
        ops[a].opcodeIndex, ops[b].opcodeIndex = ops[b].opcodeIndex, ops[a].opcodeIndex
        detail = f"opcode index of op {a} <-> op {b}"
    else:
        new = int(rng.integers(len(model.operatorCodes) + 2))
        detail = f"op {a} opcode index {ops[a].opcodeIndex} -> {new}"
        ops[a].opcodeIndex = new
    return edit.pack(model), detail


MUTATORS: dict[str, Callable[..., tuple[bytes, str]]] = {
    "byte_flip": byte_flips, "struct_flip": byte_flips, "int32_field": int32_field,
    "truncate": truncate, "opcode_swap": opcode_swap}


def make_mutants(sources: dict[str, bytes], count: int, seed: int, kinds: tuple[str, ...],
                 regions: dict[str, tuple[tuple[int, int], ...]] | None = None) -> list[Mutant]:
    """``count`` mutants, round robin over ``sources`` and ``kinds``; mutant ``i`` depends only on
    (``seed``, ``i``) and its source bytes. ``struct_flip`` and half of the ``int32_field``
    mutants stay inside ``regions[source]`` (a file's structure rather than its tensor data)."""
    names, mutants = sorted(sources), []
    for i in range(count):
        source, kind = names[i % len(names)], kinds[(i // len(names)) % len(kinds)]
        rng = np.random.default_rng([seed, i])
        where = (regions or {}).get(source, ())
        if kind == "byte_flip" or (kind == "int32_field" and rng.integers(2)):
            where = ()
        try:
            data, detail = MUTATORS[kind](sources[source], rng, where)
        except Exception as exc:  # noqa: BLE001 - an unpackable model: fall back to a byte flip
            data, detail = byte_flips(sources[source], rng)
            detail += f" (opcode swap impossible: {type(exc).__name__})"
        mutants.append(Mutant(source, i, kind, detail, data))
    return mutants


def zip_structure(data: bytes) -> tuple[tuple[int, int], ...]:
    """Byte ranges of a torch zip file that are not tensor data: local headers, the pickle, the
    small records and the central directory."""
    import io

    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        for info in infos:
            start = info.header_offset
            body = start + 30 + len(info.filename.encode()) + len(info.extra)
            tensor = "/data/" in info.filename and not info.filename.endswith(".pkl")
            regions.append((start, body if tensor else body + info.compress_size))
        last = infos[-1]
        regions.append((last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
                        + last.compress_size, len(data)))
    return tuple(regions)


# ---------------------------------------------------------------------------------------------
# Worker processes: many cases in one process, one JSON line per case


@contextlib.contextmanager
def captured_fds() -> Iterator[dict[str, str]]:
    """Redirect file descriptors 1 and 2 (Python and native writes alike) into temp files; the
    yielded dict gets ``stdout`` / ``stderr`` when the block ends."""
    got: dict[str, str] = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        try:
            yield got
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
            for name, f in (("stdout", out), ("stderr", err)):
                f.seek(0)
                got[name] = f.read().decode(errors="replace")


def call_like_cli(body: Callable[[], int | None]) -> int:
    """Run a CLI entry point as ``python -m`` would: SystemExit -> its code, any other exception
    -> a printed traceback and 1."""
    try:
        return int(body() or 0)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - the point: report it as the CLI would
        traceback.print_exc()
        return 1


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every state_dict tensor (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def load_like_export(argv: list[str]) -> int:
    """What ``tinyexport --checkpoint M ...`` does up to a loaded model (its ``_config``:
    describe_checkpoint and ExportConfig; then check_user_paths and load_model, which calls
    model_from_checkpoint and the NaN check), under ``run_cli``; prints the loaded state's digest.
    ``argv``: [CHECKPOINT, OUT]."""
    checkpoint, out = Path(argv[0]), Path(argv[1])

    def body() -> int:
        described = describe_checkpoint(checkpoint)
        name = MODELS.canonical(described.get("model") or "mcunet-in0")
        config = ExportConfig(model=name, out=out, checkpoint=checkpoint, calib_images=8,
                              check_images=8, firmware=False)
        check_user_paths(config)
        loaded = load_model(config)
        print(json.dumps({"model": loaded.meta.get("model"), "resolution": loaded.resolution,
                          "state": state_digest(loaded.model)}))
        return 0

    return run_cli(body)


def litert_accepts(argv: list[str]) -> int:
    """LiteRT (reference kernels): allocate_tensors + invoke on zero inputs; 0 when it runs."""
    interp = make_interpreter(Path(argv[0]).read_bytes(), reference_kernels=True)
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    for detail in interp.get_output_details():
        interp.get_tensor(detail["index"])
    return 0


WORKER_HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "tinyreport": report_cli.main,
    "ckpt-load": load_like_export,
    "litert": litert_accepts,
}


def worker_main(kind: str, jobs: Path, results: Path) -> int:
    """Run each job's argv through ``WORKER_HANDLERS[kind]``; a ``started`` line before each case
    and a result line after it (a crash leaves the started line alone)."""
    handler = WORKER_HANDLERS[kind]
    with open(results, "a") as out:
        for job in json.loads(jobs.read_text()):
            out.write(json.dumps({"id": job["id"], "started": True}) + "\n")
            out.flush()
            start = time.perf_counter()
            with captured_fds() as got:
                rc = call_like_cli(lambda job=job: handler(job["argv"]))
            out.write(json.dumps({"id": job["id"], "rc": rc, "seconds": time.perf_counter() - start,
                                  **got}) + "\n")
            out.flush()
    return 0


@dataclass
class WorkerRun:
    """Result of one case run in a worker (``rc`` None + ``timed_out``: killed as a hang)."""

    rc: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    seconds: float = 0.0


class Bench:
    """Shared plumbing: the private temp dir, child environment and the worker pool."""

    def __init__(self, work: Path, seed: int):
        self.work, self.seed = work, seed
        self.tmp = work / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, TMPDIR=str(self.tmp), TF_CPP_MIN_LOG_LEVEL="2",
                        PYTHONUNBUFFERED="1")
        self.started = time.time()
        self._jobs = 0
        self._lock = threading.Lock()

    def _job_files(self, kind: str) -> tuple[Path, Path]:
        with self._lock:
            self._jobs += 1
            n = self._jobs
        return self.work / f"jobs-{kind}-{n}.json", self.work / f"results-{kind}-{n}.jsonl"

    def run_worker(self, kind: str, cases: list[tuple[str, list[str]]], timeout_s: float
                   ) -> dict[str, WorkerRun]:
        """Every case through one worker process after another (a new one after a crash or a
        hang). Returns the result of each case id."""
        done: dict[str, WorkerRun] = {}
        while len(done) < len(cases):
            todo = [{"id": i, "argv": a} for i, a in cases if i not in done]
            before = len(done)
            done.update(self._one_worker(kind, todo, timeout_s))
            if len(done) == before:  # the worker died before its first case: a bench bug
                raise RuntimeError(f"worker {kind} made no progress on {todo[0]}")
        return done

    def _one_worker(self, kind: str, todo: list[dict], timeout_s: float) -> dict[str, WorkerRun]:
        jobs, results = self._job_files(kind)
        jobs.write_text(json.dumps(todo))
        results.write_text("")
        errlog = results.with_suffix(".stderr")
        with open(errlog, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", MODULE, "--worker", kind, str(jobs),
                                     str(results)], stdout=subprocess.DEVNULL, stderr=err,
                                    env=self.env, cwd=self.work, start_new_session=True,
                                    preexec_fn=die_with_parent)
            got, current = self._watch(proc, results, timeout_s)
        if current is not None and current not in got:  # died or was killed mid-case
            if proc.returncode is not None and proc.returncode != -signal.SIGKILL:
                got[current] = WorkerRun(proc.returncode, "", errlog.read_text()[-4000:])
            else:
                got[current] = WorkerRun(None, "", "", timed_out=True, seconds=timeout_s)
        return got

    def _watch(self, proc: subprocess.Popen, results: Path, timeout_s: float
               ) -> tuple[dict[str, WorkerRun], str | None]:
        got: dict[str, WorkerRun] = {}
        current, since, offset, buffer = None, 0.0, 0, ""
        while True:
            exited = proc.poll() is not None
            with open(results) as f:
                f.seek(offset)
                buffer += f.read()
                offset = f.tell()
            *lines, buffer = buffer.split("\n")
            for line in lines:
                rec = json.loads(line)
                if rec.get("started"):
                    current, since = rec["id"], time.monotonic()
                else:
                    got[rec["id"]] = WorkerRun(rec["rc"], rec["stdout"], rec["stderr"],
                                               seconds=rec["seconds"])
                    current = None
            if exited:
                return got, current
            if current is not None and time.monotonic() - since > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return got, current
            time.sleep(0.05)

    def run_workers(self, kind: str, cases: list[tuple[str, list[str]]], timeout_s: float,
                    parallel: int = 2) -> dict[str, WorkerRun]:
        """:meth:`run_worker` over ``parallel`` interleaved shares of ``cases`` at once."""
        shares = [cases[k::parallel] for k in range(parallel) if cases[k::parallel]]
        merged: dict[str, WorkerRun] = {}
        threads = [threading.Thread(target=lambda s=s: merged.update(
            self.run_worker(kind, s, timeout_s))) for s in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return merged

    def cli(self, argv: list[str], timeout_s: float, cwd: Path | None = None) -> WorkerRun:
        """One real CLI run (``argv[0]``: tinyexport / tinytrain / tinyreport from the venv)."""
        start = time.perf_counter()
        try:
            proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                                  timeout=timeout_s, env=self.env, cwd=cwd or self.work,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired as exc:
            return WorkerRun(None, _text(exc.stdout), _text(exc.stderr), True, timeout_s)
        return WorkerRun(proc.returncode, proc.stdout, proc.stderr,
                         seconds=time.perf_counter() - start)


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def last_error(stderr: str) -> str:
    """The line that says what went wrong (the error line, else the last line)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ERROR_LINE.match(ln) or ln.startswith(("Traceback",))]
    tail = [ln for ln in lines if re.match(r"^\w+(Error|Exception)\b", ln)]
    return ((tail or errors or lines or [""])[-1])[:300]


def shell(argv: list[str]) -> str:
    return " ".join(a if re.fullmatch(r"[\w./:=,+-]+", a) else repr(a) for a in argv)


# ---------------------------------------------------------------------------------------------
# Group 1: .tflite mutants through tinyreport


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
    proc = subprocess.run([sys.executable, "-m", MODULE, "--build-keras", str(keras)],
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
    text = run.stdout + run.stderr
    warned = re.search(r"warn\w*:.*\bclass", text, re.I) and re.search(r"\b3\b", text) \
        and re.search(r"\b10\b", text)
    outcome = classify(run.rc, run.stderr, run.timed_out)
    if outcome not in (None, "clean error"):
        return None
    if warned:
        return "correct", "warned: " + next(ln for ln in text.splitlines()
                                            if re.search(r"warn\w*:.*\bclass", ln, re.I))[:200]
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
        ArgCase("tinyexport --num-classes 3 --eval-data digits (must warn)",
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


# ---------------------------------------------------------------------------------------------
# Report

DESCRIPTIONS = {
    "1": "Seeded mutants (byte flips, int32 field flips, truncation, opcode-index swaps) of "
         "hello_world_int8, trained_lstm_int8, a Keras full-int8 conv net and the mcunet-in0 48 px "
         "export, fed to `tinyreport FILE --json` in worker processes. correct: exit 0 with the "
         "original's report (unused bytes hit), or a report with sane figures (0..2^31, head + "
         "tail = total) of a model LiteRT allocates and invokes. A report whose `errors` say why "
         "it exits 1 counts as a clean error.",
    "1b": "`tinyreport --measure` (the real TFLite Micro interpreter) on a seeded sample of the "
          "accepted mutants. correct: measured arena total and min arena equal the predicted.",
    "2a": "Seeded mutants (byte flips anywhere, byte flips in the zip's non-tensor records, int32 "
          "flips, truncation) of save_checkpoint(mcunet-in0, 4 classes, 32 px), through the code "
          "`tinyexport --checkpoint` runs to load (describe_checkpoint, ExportConfig, "
          "check_user_paths, load_model under run_cli). correct: the loaded weights, model and "
          "resolution equal the original's. A load that succeeds with other weights is a wrong "
          "success (silent corruption: torch.load does not check the zip's CRC-32).",
    "2b": "The real `tinyexport --checkpoint M --no-firmware --calib-images 8 --check-images 8` on "
          "a few of the 2a mutants. correct: exit 0 where 2a loaded the original weights.",
    "2c": "A tinytrain run's `checkpoint.pt` (1 of 2 epochs done) mutated, then `tinytrain ... "
          "--epochs 2 --resume`. correct: the resumed run finishes.",
    "3": "Bad arguments and hostile files (issue 11 items 3 and 7) through the real CLIs. Most "
         "must fail with one `error:` line (exit 0 is a wrong success); --force into a folder "
         "with user files and --out naming a file must keep those files (else data loss); "
         "--num-classes 3 with digits is correct when it warns; the evil CIFAR pickle must never "
         "create its marker; two exports into one new folder: the second fails clearly, the "
         "first completes; --board nosuchboard must fail within 10 s (else a hang).",
    "4a": "`tinyexport --model mcunet-in0 --resolution 48 --num-classes 10 --force --out D` run "
          "once, then started again and SIGKILLed after a seeded delay within its runtime. "
          "correct: 5 s after the kill no child of the killed process (or process naming D) "
          "lives, and D (or .D.old) holds a complete export; the final rerun completes and "
          "leaves no .D.* litter and no tinyexport-* folder in the private TMPDIR.",
    "4b": "A tiny tinytrain run (digits, 32 px, 3 epochs x 4 steps, 1 thread) SIGKILLed at seeded "
          "points (drawn in 40-100 % of the span from its first `CPU:` line to the end of an "
          "uninterrupted run) and restarted (with --resume once checkpoint.pt exists) until it "
          "finishes. "
          "correct: the final checkpoint's model and optimizer tensors equal an uninterrupted "
          "run's bit for bit.",
}


def render(doc: dict) -> str:
    lines = ["# Robustness benchmark (issue 11)", "",
             f"{doc['host']['date']} on {doc['host']['platform']}, {doc['host']['cpus']} CPUs "
             f"(shared: load average {doc['host']['load_average_at_end']}); seed {doc['seed']}; "
             f"{doc['runtime_s']:.0f} s in all.", "",
             "| group | tried | " + " | ".join(COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for row in doc["table"]:
        lines.append(f"| {row['group']} | {row['tried']} | "
                     + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    lines += ["", "Columns: clean error = exit != 0 with exactly one `error: ...` line and no "
              "traceback; traceback = a Python traceback; crash = killed by a signal / exit < 0 or "
              "> 128 without a clean line (or an orphaned child after a kill); hang = past the "
              "per-case timeout; wrong success = exit 0 with a wrong result; data loss = a user's "
              "file or the last good export lost; unclean exit = exit != 0 without exactly one "
              "`error:` line (not asked for by the issue; kept so no case goes uncounted).", "",
              "## Groups", ""]
    lines += [f"- **{k}**: {v}" for k, v in DESCRIPTIONS.items()]
    lines += ["", "## Every case outside clean error / correct", ""]
    problems = doc["problems"]
    lines += [f"- [{c['outcome']}] {c['group']} / {c['name']}: {c['detail']}  \n  repro: "
              f"`{c['repro']}`" for c in problems] or ["none"]
    args = [c for c in doc["cases"] if c["group"].startswith(("3.", "4"))]
    lines += ["", "## Groups 3 and 4, case by case", "", "| group | case | outcome | detail |",
              "|---|---|---|---|"]
    lines += [f"| {c['group'].split('.')[0]} | {c['name']} | {c['outcome']} | "
              f"{c['detail'][:160].replace('|', '/')} |" for c in args]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tflite-mutants", type=int, default=1000)
    p.add_argument("--checkpoint-mutants", type=int, default=100)
    p.add_argument("--resume-mutants", type=int, default=6,
                   help="mutated tinytrain checkpoint.pt files resumed (group 2c)")
    p.add_argument("--measure-sample", type=int, default=50)
    p.add_argument("--cli-sample", type=int, default=2,
                   help="checkpoint mutants through the real tinyexport (group 2b)")
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--train-kills", type=int, default=4)
    p.add_argument("--groups", default="1234", help="which groups to run (e.g. 13)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 40 .tflite and 12 checkpoint mutants, 1 kill each")
    p.add_argument("--work", type=Path, help="keep the scratch files here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "JOBS", "RESULTS"), help=argparse.SUPPRESS)
    p.add_argument("--build-keras", type=Path, help=argparse.SUPPRESS)
    return p


def run_all(args: argparse.Namespace, work: Path) -> dict:
    bench = Bench(work, args.seed)
    tally, start = Tally(), time.monotonic()
    export_model = None
    if "4" in args.groups:
        export_model = run_group_kill_export(bench, tally, args.kills)
    if "1" in args.groups:
        run_group_tflite(bench, tally, args.tflite_mutants, args.measure_sample, export_model)
    if "2" in args.groups:
        run_group_checkpoints(bench, tally, args.checkpoint_mutants, args.resume_mutants,
                              args.cli_sample)
    if "3" in args.groups:
        run_group_args(bench, tally)
    if "4" in args.groups:
        run_group_kill_train(bench, tally, args.train_kills)
    groups = sorted({c.group for c in tally.cases}, key=lambda g: (g.split(".")[0], g))
    return {"host": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                     "platform": platform.platform(), "cpus": os.cpu_count(),
                     "load_average_at_end": [round(x, 1) for x in os.getloadavg()]},
            "versions": package_versions(), "seed": args.seed,
            "counts": {k: getattr(args, k) for k in ("tflite_mutants", "checkpoint_mutants",
                                                     "resume_mutants", "measure_sample", "kills",
                                                     "train_kills")},
            "runtime_s": round(time.monotonic() - start, 1), "columns": list(COLUMNS),
            "table": tally.table(groups), "problems": [c.__dict__ for c in tally.problems()],
            "cases": [c.__dict__ for c in tally.cases]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        setup_logging(False)
        return worker_main(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
    if args.build_keras:
        keras_conv_model(args.build_keras)
        return 0
    if args.quick:
        args.tflite_mutants, args.checkpoint_mutants, args.resume_mutants = 40, 12, 2
        args.measure_sample, args.cli_sample, args.kills, args.train_kills = 4, 2, 1, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="bench-robustness-")))
        work.mkdir(parents=True, exist_ok=True)
        doc = run_all(args, work.resolve())
    write_results(args.out, "robustness_results", doc, render(doc))
    print(render(doc).split("## Groups")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The robustness benchmark's harness (:mod:`tinyexport.benchmarks.bench_robustness`): the
outcome of a case and the tally of outcomes, and the worker processes that run many cases each
(``python -m tinyexport.benchmarks.robustness_harness --worker KIND JOBS RESULTS``: one JSON line
per case, restarted after a native crash, killed after a per-case timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinyexport.benchmarks import report_cli
from tinyexport.errors import run_cli
from tinyexport.export.config import ExportConfig
from tinyexport.export.pipeline import check_user_paths
from tinyexport.export.stages import load_model
from tinyexport.log import setup_logging
from tinyexport.procs import die_with_parent
from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.train.checkpoint_format import describe_checkpoint
from tinyexport.train.models import MODELS

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
WORKER_MODULE = "tinyexport.benchmarks.robustness_harness"  # started with --worker, below
BIN = Path(sys.executable).parent
DATA = REPO / "tests" / "firmware_eval" / "data"

COLUMNS = ("clean error", "correct", "traceback", "crash", "hang", "wrong success", "data loss",
           "unclean exit")
BAD = COLUMNS[2:]  # every column that should stay 0
TRACEBACK = "Traceback (most recent call last)"
# "error: ..." as run_cli prints it, or "PROG: error: ..." as argparse prints it.
ERROR_LINE = re.compile(r"^(?:[\w.-]+(?: [\w.-]+)?: )?error: \S")  # argparse: "PROG [SUB]: error:"
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
            proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, "--worker", kind, str(jobs),
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


def signals_as_a_shell_gives_them() -> None:
    """``preexec_fn`` of a child the bench signals: SIGHUP and SIGINT at their defaults, as an
    interactive shell starts a command, even when the bench itself runs under ``nohup`` or in the
    background (an ignored signal stays ignored in the child: the tools keep it so)."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


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


def worker_cli(argv: list[str] | None = None) -> int:
    """``--worker KIND JOBS RESULTS``: the worker process's entry point (:meth:`Bench.run_worker`)."""
    parser = argparse.ArgumentParser(description="robustness benchmark worker (internal)")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "JOBS", "RESULTS"), required=True)
    args = parser.parse_args(argv)
    setup_logging(False)
    return worker_main(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))


if __name__ == "__main__":
    raise SystemExit(worker_cli())

"""Run a model in the real TFLite Micro interpreter and in LiteRT reference kernels, each in a
child process (docs/style.md §11; docs/tflm_memory.md §9).

The interpreter prints its allocation report from C on file descriptor 2 and can kill its process
(SIGABRT with no message, seen on int8 SOFTMAX models with a collapsed input scale; SIGSEGV on
corrupt files). The child's stderr is a pipe read here, so the report is captured at descriptor
level, and a signal or a timeout becomes a :class:`TflmFailure` with a clear message instead of a
crash or a hang of the caller. :func:`verify_models` runs LiteRT's flatbuffer verifier the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.tflite_graph.reader import read_graph

_log = logging.getLogger(__name__)

_REPORT = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_MISSING = re.compile(r"missing: (\d+)")
DEFAULT_TIMEOUT_S = 300.0


class TflmFailure(RuntimeError):
    """The interpreter rejected the model, ran out of arena, crashed or timed out."""


@dataclass(frozen=True)
class TflmRun:
    """Outputs (int8, one row per input) and the arena TFLM recorded."""

    outputs: np.ndarray
    head: int
    tail: int
    total: int
    arena_size: int | None


@dataclass(frozen=True)
class MinArena:
    """Smallest ``arena_size`` that builds and reproduces the output (bisection)."""

    min_arena: int | None  # None: nothing up to ``searched_up_to`` worked
    searched_up_to: int
    tries: int


def _child(request: dict, timeout_s: float) -> str:
    """Run the child with ``request``; return its stderr. Raise TflmFailure on any failure."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "tinyexport.firmware_eval._tflm_child", f.name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise TflmFailure(f"{request['mode']} run timed out after {timeout_s:.0f} s") from None
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        ops = _opcodes(request["model"]) if "model" in request else ()
        raise TflmFailure(_explain(request["mode"], proc.returncode, proc.stderr, ops))
    return proc.stderr


def _opcodes(model: str) -> tuple[str, ...]:
    """The model's ops, for the crash message; none when the file cannot be read."""
    try:
        return tuple(read_graph(model).opcodes)
    except UserError:
        return ()


_WHO = {"litert": "LiteRT (reference kernels)", "verify": "LiteRT's flatbuffer verifier"}


def _explain(mode: str, rc: int, stderr: str, opcodes=()) -> str:
    """One line for a failed child: the signal or exit status as it is, the interpreter's last
    messages, and the SOFTMAX hint only for a model that has a SOFTMAX."""
    who = _WHO.get(mode, "the TFLM interpreter")
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        text = f"{who} was killed by {name} (signal {-rc}, no message)"
        if "SOFTMAX" in opcodes and mode != "verify":
            text += ("; known for int8 SOFTMAX with a collapsed input scale (docs/tflm_memory.md "
                     "§9.2) - recalibrate or export without the softmax")
        return text
    # Python traceback scaffolding (indented frame/source/^^^ lines, "Traceback ...") is dropped;
    # the interpreter's own messages and the final "XxxError: ..." line are kept.
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()
             and not ln[:1].isspace() and not ln.startswith("Traceback (most recent call last)")]
    missing = _MISSING.findall(stderr)
    hint = f" (arena too small: {int(missing[-1])} more bytes needed)" if missing else ""
    detail = "; ".join(lines[-3:])[-400:] if lines else f"exit status {rc}, no message"
    return f"{who} failed{hint}: {detail}"


def parse_allocations(text: str) -> dict[str, int]:
    """``{'total','head','tail'}`` from ``print_allocations()`` text (the last report wins)."""
    found = {k: int(v) for k, v in _REPORT.findall(text)}
    if set(found) != {"total", "head", "tail"}:
        raise TflmFailure("TFLM printed no allocation report")
    return found


def run_tflm(model: Path, inputs: np.ndarray, arena_size: int | None = None,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> TflmRun:
    """Invoke TFLM on each int8 input row; return outputs and the recorded arena."""
    with tempfile.TemporaryDirectory() as tmp:
        req = {"mode": "tflm", "model": str(model), "arena_size": arena_size,
               "inputs": _save(tmp, "in.npy", inputs), "outputs": f"{tmp}/out.npy"}
        stderr = _child(req, timeout_s)
        rep = parse_allocations(stderr)
        return TflmRun(np.load(req["outputs"]), rep["head"], rep["tail"], rep["total"],
                       arena_size)


def run_litert_ref(model: Path, inputs: np.ndarray,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> np.ndarray:
    """Outputs of LiteRT with ``BUILTIN_REF`` kernels (the bit-exact golden for TFLM)."""
    with tempfile.TemporaryDirectory() as tmp:
        req = {"mode": "litert", "model": str(model), "inputs": _save(tmp, "in.npy", inputs),
               "outputs": f"{tmp}/out.npy"}
        _child(req, timeout_s)
        return np.load(req["outputs"])


def min_arena(model: Path, x: np.ndarray, expected: np.ndarray, start: int,
              timeout_s: float = DEFAULT_TIMEOUT_S, max_crashes: int = 40) -> MinArena:
    """Bisect the smallest working ``arena_size``: first check ``start`` (e.g. the recorded
    total), doubling up to 16x while it fails (tflite-micro#2738), then bisect below it. A try
    that kills the child (some models segfault on tiny arenas) counts as a failing size."""
    limit = max(start, 1024) * 16
    with tempfile.TemporaryDirectory() as tmp:
        req = {"mode": "bisect", "model": str(model), "inputs": _save(tmp, "x.npy", x[:1]),
               "expected": _save(tmp, "y.npy", expected[:1]), "start": max(start, 16),
               "max": limit, "progress": f"{tmp}/progress.json", "lo": 0, "hi": None,
               "tries": 0}
        for _ in range(max_crashes):
            try:
                _child(req, timeout_s)
            except TflmFailure as exc:
                if not Path(req["progress"]).exists():
                    raise
                _log.debug("bisection try crashed: %s", exc)
            prog = json.loads(Path(req["progress"]).read_text())
            if prog.get("done"):
                break
            crashed = prog["trying"]
            if prog["hi"] is None:  # crashed while doubling: that size fails, try the next
                req.update(start=crashed * 2, lo=crashed, tries=prog["tries"] + 1)
            else:
                req.update(lo=crashed, hi=prog["hi"], tries=prog["tries"] + 1)
        hi = prog["hi"]
        return MinArena(hi, limit if hi is None else hi, prog["tries"])


def first_difference(model: Path, x: np.ndarray, op_outputs: list[tuple[int, int]],
                     arena_size: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict | None:
    """First op (in execution order) whose output differs between TFLM and LiteRT reference
    kernels on ``x[:1]``: ``{op, tensor, mismatches, max_abs_diff, values}`` or None.

    Args:
        op_outputs: ``(op index, output tensor index)`` pairs in execution order.
        arena_size: for TFLM's keep-everything (linear) planner, e.g. the linear-planner size.
    """
    return _per_op_child("localize", model, x, op_outputs, arena_size, timeout_s)[
        "first_difference"]


def op_output_crcs(model: Path, x: np.ndarray, op_outputs: list[tuple[int, int]],
                   arena_size: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[list[int]]:
    """``[op, crc32, bytes]`` of each ``(op, tensor)`` output in TFLM (every tensor kept) after
    invoking the rows of ``x`` in order: the host side of the emulated firmware's op-by-op
    comparison."""
    return _per_op_child("op_crcs", model, x, op_outputs, arena_size, timeout_s,
                         rows=len(x))["op_crcs"]


def _per_op_child(mode: str, model: Path, x: np.ndarray, op_outputs: list[tuple[int, int]],
                  arena_size: int, timeout_s: float, rows: int = 1) -> dict:
    """One keep-every-tensor child run over ``op_outputs`` on ``x[:rows]``; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        req = {"mode": mode, "model": str(model), "inputs": _save(tmp, "x.npy", x[:rows]),
               "op_outputs": op_outputs, "arena_size": int(arena_size),
               "result": f"{tmp}/result.json"}
        _child(req, timeout_s)
        return json.loads(Path(req["result"]).read_text())


def verify_models(models: list[Path], timeout_s: float = DEFAULT_TIMEOUT_S
                  ) -> list[str | None]:
    """LiteRT's flatbuffer verifier and ``allocate_tensors`` on each model, in one child process
    (restarted after a model that kills it): one problem (or None) per model, in order. Where
    ``ai_edge_litert`` is missing, every result is None and a warning is logged."""
    results: dict[str, str | None] = {}
    todo = [str(m) for m in models]
    with tempfile.TemporaryDirectory() as tmp:
        while todo:
            req = {"mode": "verify", "models": todo, "results": f"{tmp}/results.jsonl"}
            Path(req["results"]).write_text("")
            try:
                _child(req, timeout_s)
                crash = None
            except TflmFailure as exc:
                crash = str(exc)
            done = [json.loads(ln) for ln in Path(req["results"]).read_text().splitlines()]
            if done and done[-1]["model"] is None:
                _log.warning("LiteRT verifier not run: %s", done[-1]["problem"])
                return [None] * len(models)
            results.update((d["model"], d["problem"]) for d in done)
            todo = todo[len(done):]
            if todo and crash is None:
                raise TflmFailure("the LiteRT verifier stopped without a result")
            if todo:
                results[todo.pop(0)] = crash
    return [results[str(m)] for m in models]


def _save(folder: str, name: str, array: np.ndarray) -> str:
    path = f"{folder}/{name}"
    np.save(path, np.ascontiguousarray(array))
    return path

"""ONNX → float TFLite (NHWC) with onnx2tf, in a subprocess, fully offline.

docs/toolchain.md §5.2–5.4: onnx2tf downloads a calibration sample unless a file of that name is in its
working directory, calls the ``onnxsim`` CLI through PATH, and changes process-global state — so it
runs as ``python -m onnx2tf`` in a scratch directory holding our own sample file, with the
interpreter's ``bin`` on PATH. Its saved_model is what ``tinyexport.quantize`` quantizes (§6).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexport.errors import StageError
from tinyexport.procs import run_child

_log = logging.getLogger(__name__)

SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"  # docs/toolchain.md §5.2
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Onnx2TfResult:
    saved_model_dir: Path
    float_tflite: Path
    log_tail: str


def onnx2tf_command(onnx_path: Path, out_dir: Path, calib_npy: Path | None = None,
                    onnxsim: bool = False) -> list[str]:
    """The onnx2tf CLI call: saved_model + float32 TFLite, signature defs, quiet (§5.6).

    ``onnxsim`` off by default: the dynamo exporter's graph is already folded, the result was
    identical for the test models (§5.3) and it halves the conversion time (§12: 5.4 s vs 11 s).
    """
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out_dir), "-osd", "-n"]
    if not onnxsim:
        cmd.append("-nuo")
    if calib_npy is not None:  # §5.2: always our own data, never the downloaded sample
        cmd += ["-cind", "input", str(calib_npy), "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"]
    return cmd


def prepare_scratch(scratch: Path, calib_nhwc: np.ndarray) -> Path:
    """Write the offline sample file (§5.2) and our calibration .npy into ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(scratch / SAMPLE_NAME, rng.random((20, 128, 128, 3), dtype=np.float32))
    calib = scratch / "calib_nhwc.npy"
    np.save(calib, np.ascontiguousarray(calib_nhwc, dtype=np.float32))
    return calib


def subprocess_env(tmpdir: Path | None = None) -> dict[str, str]:
    """PATH with this interpreter's ``bin`` first (onnxsim CLI, §5.3); TensorFlow's C++ logs
    quiet; ``tmpdir`` as the child's TMPDIR (TensorFlow leaves ``__autograph_generated_file*.py``
    there: a private folder we create and remove keeps them out of the user's temp dir)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if tmpdir is not None:
        for name in ("TMPDIR", "TEMP", "TMP"):
            env[name] = str(tmpdir)
    return env


def _failure_reason(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln or "error:" in ln]
    return (errors[-1] if errors else (lines[-1] if lines else "no output"))[:400]


def onnx_to_tflite(onnx_path: str | os.PathLike, work_dir: str | os.PathLike,
                   calib_nhwc: np.ndarray, onnxsim: bool = False) -> Onnx2TfResult:
    """Run onnx2tf on ``onnx_path``; outputs go to ``work_dir/onnx2tf``.

    Args:
        onnx_path: the opset-18 ONNX model (input named ``input``, NCHW).
        work_dir: a scratch folder (the subprocess's cwd).
        calib_nhwc: float32 NHWC images, already normalised (passed with mean 0 / std 1).
        onnxsim: let onnx2tf run onnxsim first (slower; see ``onnx2tf_command``).

    Raises:
        StageError: onnx2tf failed; the message carries onnx2tf's own last error line.
    """
    work_dir = Path(work_dir).resolve()  # onnx2tf runs with cwd=work_dir: no relative paths
    calib = prepare_scratch(work_dir, calib_nhwc)
    out_dir = work_dir / "onnx2tf"
    cmd = onnx2tf_command(Path(onnx_path).resolve(), out_dir, calib, onnxsim)
    _log.debug("running %s", " ".join(cmd))
    tmpdir = Path(tempfile.mkdtemp(prefix="onnx2tf-tmp.", dir=work_dir))
    try:
        proc = run_child(cmd, cwd=work_dir, env=subprocess_env(tmpdir), capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StageError(f"onnx2tf did not finish within {TIMEOUT_S} s") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    output = (proc.stdout or "") + (proc.stderr or "")
    floats = sorted(out_dir.glob("*_float32.tflite"))
    if proc.returncode != 0 or not floats or not (out_dir / "saved_model.pb").is_file():
        raise StageError(f"onnx2tf failed (exit {proc.returncode}): {_failure_reason(output)}")
    return Onnx2TfResult(out_dir, floats[0], output[-4000:])

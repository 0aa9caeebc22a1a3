"""``scripts/gpu_check.sh --device cpu`` runs from a bare checkout (its own ``tinyexport`` path
mapping, no install): the gpu tests skip, the step table and the one summary table print, and the
train path loads neither TensorFlow nor ONNX."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "| gpu tests (pytest -m gpu, rc 0) |" in out and "skipped" in out
    assert "| netaug_random | fp32 | False |" in out and "| netaug_min_w |" in out
    assert "heavy modules loaded by the train path: none" in out


@pytest.mark.slow
def test_netaug_accuracy_protocol_runs_alone_on_cpu(tmp_path):
    """``--netaug-accuracy`` (issue 20's GPU protocol) runs the LR sweep of both methods by
    itself and prints its tables; on CPU a tiny version of it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LOG_DIR"] = str(tmp_path)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu",
                           "--netaug-accuracy"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "LR sweep" in done.stdout and "| NetAug | 0.025 |" in done.stdout
    assert "| baseline | 0.05 |" in done.stdout and "gpu tests" not in done.stdout

"""The C bundle compiles against TFLM (x86-64 host, reference kernels) and its binary prints the
same top class as the tflite-micro Python interpreter on the same input.

Needs a tflite-micro source tree with its third-party headers in
tensorflow/lite/micro/tools/make/downloads (see scripts/build_bundle_host.sh) in $TFLM_SRC; the
first run compiles the TFLM library (a few minutes on 2 cores) into $TFLM_SRC/.host_build.
Run with ``TFLM_SRC=... .venv/bin/pytest -m slow tests/firmware_eval/test_bundle_build.py``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyexport.firmware_eval.bundle import add_method
from tinyexport.tflite_graph.ops import TFLM_OPS

ROOT = Path(__file__).resolve().parents[2]
TFLM_SRC = os.environ.get("TFLM_SRC")

needs_tflm = pytest.mark.skipif(
    not TFLM_SRC or not Path(TFLM_SRC, "tensorflow/lite/micro").is_dir(),
    reason="TFLM_SRC does not point at a tflite-micro source tree")


def test_irregular_resolver_names():
    assert add_method("CUMSUM") == "AddCumSum"
    assert add_method("UNIDIRECTIONAL_SEQUENCE_LSTM") == "AddUnidirectionalSequenceLSTM"
    assert add_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"


def _resolver_methods() -> set[str]:
    """The header of $TFLM_SRC when set, else the method list recorded from tflite-micro
    90b983c2 (tests/firmware_eval/data/tflm_resolver_methods.txt)."""
    if TFLM_SRC and Path(TFLM_SRC, "tensorflow/lite/micro").is_dir():
        header = Path(TFLM_SRC, "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
        return set(re.findall(r"TfLiteStatus (Add\w+)\(", header))
    lines = (Path(__file__).parent / "data" / "tflm_resolver_methods.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_every_supported_op_has_its_resolver_method():
    """op_resolver.h calls r.AddXxx() for each op: every op the analyser accepts must map to a
    method MicroMutableOpResolver really has, or the bundle does not compile."""
    methods = _resolver_methods()
    assert len(methods) > 100
    assert sorted(o for o in TFLM_OPS if add_method(o) not in methods) == []


@pytest.mark.slow
@needs_tflm
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler")
def test_bundle_builds_and_matches_python_tflm(models, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_bundle_host.py"),
                           str(models["int8"]), "--tflm-src", TFLM_SRC, "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.stdout, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert "error" not in out, out["error"]
    assert out["match"], out
    assert proc.returncode == 0
    # The host binary has the Python interpreter's struct sizes (both x86-64); it allocates no
    # recording structs, so it never uses more than the recorded total and fits the bundle's arena.
    assert out["arena_used_binary"] <= out["arena_measured_python_tflm"]
    assert out["arena_used_binary"] <= out["kTensorArenaSize"]

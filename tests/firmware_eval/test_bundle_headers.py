"""The C bundle carries what firmware needs next (issue 12 §9): the preprocessing as constants in
``preprocess.h`` and, in ``arena_size.h``, which kernels the arena figure is for. The headers
compile on their own (C++17, -Wall -Werror) with the host compiler."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyexport.boards import BOARDS
from tinyexport.firmware_eval.bundle import ARENA_MARGIN
from tinyexport.firmware_eval.evaluate import evaluate_firmware

DATA = Path(__file__).parent / "data"
PRE = {"resolution": 16, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "crop_ratio": 0.875, "resize_short_side": 19, "layout": "NCHW float, RGB"}


def _bundle(tmp_path, model, **kwargs) -> Path:
    out = tmp_path / "bundle"
    evaluate_firmware(model, out, run_tflm=False, **kwargs)
    return out


def test_preprocess_header_has_input_and_training_constants(models, tmp_path):
    text = (_bundle(tmp_path, models["int8"], preprocessing=PRE) / "preprocess.h").read_text()
    for const in ("kInputHeight = 16;", "kInputWidth = 16;", "kInputChannels = 3;",
                  "kResizeShortSide = 19;", "kCropSize = 16;",
                  "kMean[3] = {0.485f, 0.456f, 0.406f};", "kStd[3] = {0.229f, 0.224f, 0.225f};"):
        assert const in text, const
    assert re.search(r"kInputScale = [0-9.e-]+f;", text)
    assert re.search(r"kInputZeroPoint = -?\d+;", text)
    assert "NHWC" in text and "RGB" in text and "round(((p / 255 - mean) / std) / scale)" in text


def test_arena_header_says_which_kernels(tmp_path):
    """Without --board the arena covers CMSIS-NN on every Cortex-M and the 64-bit host's
    reference kernels (issue 19 §7: a bundle without --board did not allocate under CMSIS-NN)."""
    plain = (_bundle(tmp_path, DATA / "hello_world_int8.tflite") / "arena_size.h").read_text()
    figures = [int(n) for n in re.findall(r"^//   .*: (\d+) B$", plain, re.M)]
    assert len(figures) == 4 and "CMSIS-NN, dsp (Cortex-M4/M7/M33)" in plain
    assert "reference kernels, x86-64 host" in plain and "x86 struct sizes" not in plain
    assert f"kTensorArenaSize = {max(figures) + ARENA_MARGIN};" in plain
    board = _bundle(tmp_path, DATA / "hello_world_int8.tflite", board=BOARDS.get("stm32f746"))
    text = (board / "arena_size.h").read_text()
    assert "Sized for board stm32f746" in text and "CMSIS-NN scratch included" in text
    assert "--emulate" in text
    esp = _bundle(tmp_path, DATA / "hello_world_int8.tflite", board=BOARDS.get("esp32s3"))
    assert "ESP-NN's own scratch is not predicted" in (esp / "arena_size.h").read_text()
    assert "No training preprocessing" in (board / "preprocess.h").read_text()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_headers_compile(models, tmp_path):
    out = _bundle(tmp_path, models["int8"], preprocessing=PRE, board=BOARDS.get("stm32f746"))
    (out / "use.cc").write_text(
        '#include "arena_size.h"\n#include "model_data.h"\n#include "preprocess.h"\n'
        "int main() { return QuantizePixel(200, 1) + kInputHeight * kInputWidth * kInputChannels"
        " + static_cast<int>(kTensorArenaSize > 0) + kResizeShortSide + kCropSize; }\n")
    proc = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                           str(out / "use.cc")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

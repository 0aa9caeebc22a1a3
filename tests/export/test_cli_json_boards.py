"""``tinyexport --json`` with several boards that do not fit, as a CI job runs it: a subprocess
whose stdout is the JSON document alone, exit 3, the files written under a default folder named
after the boards, every board's verdict with its reason, and the shipped model's ops."""

import json
import os
import subprocess
import sys
from collections import Counter

from tinyexport.errors import EXIT_DOES_NOT_FIT
from tinyexport.tflite_graph.reader import read_graph


def test_json_alone_on_stdout_exit_3_and_board_folder(tmp_path):
    # 1 KiB of SRAM replaces both boards' regions: neither fits, for SRAM only
    argv = [sys.executable, "-m", "tinyexport.export", "--model", "mcunet-in0", "--resolution",
            "32", "--num-classes", "10", "--calib-images", "8", "--check-images", "4", "--board",
            "stm32f746", "--board", "rp2040", "--sram", "1KiB", "--patch", "off", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == EXIT_DOES_NOT_FIT, run.stderr[-2000:]
    doc = json.loads(run.stdout)  # nothing but the document on stdout
    out = tmp_path / "exports" / "mcunet-in0-r32-int8-stm32f746-rp2040"
    assert (out / "model_int8.tflite").is_file() and (out / "export.json").is_file()
    verdicts = doc["firmware"]["boards"]
    assert [v["board"] for v in verdicts] == ["stm32f746", "rp2040"]
    assert all(v["short_of"] == "SRAM" and v["sram_budget"] == 1024 for v in verdicts)
    assert "DOES NOT FIT (SRAM)" in run.stderr and "weights: RANDOM" in run.stderr
    shipped = Counter(op.opcode for op in read_graph(out / "model_int8.tflite").ops)
    assert doc["op_histogram"] == dict(shipped)
    assert "- board rp2040: DOES NOT FIT (SRAM)" in (out / "report.md").read_text()

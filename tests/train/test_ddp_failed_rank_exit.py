"""The real ``tinytrain`` under torchrun with 2 gloo ranks, rank 0's disk full: both ranks end with
their one ``error:`` line and exit 1 (``distributed.leave``); without it, gloo's teardown left a
rank to be killed by torchrun (exitcode -15) in 3 of 4 runs."""

import os
import re
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent('''
import os, sys
import torch


def full_disk(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 32")


if os.environ.get("RANK") == "0":
    torch.save = full_disk  # rank 0 is the one that writes
from tinyexport.train.cli import main

sys.exit(main(["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32", "--batch-size",
               "16", "--limit-train", "32", "--limit-val", "16", "--max-steps", "1", "--workers",
               "0", "--no-netaug", "--no-progress", "--epochs", "1", "--threads", "1", "--out",
               sys.argv[1]]))
''')


def test_a_failed_rank_exits_with_its_error_line_not_in_gloo_teardown(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--standalone", str(script), str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    codes = re.findall(r"exitcode\s*:\s*(-?\d+) \(pid", text)  # torchrun's table of ranks
    assert codes == ["1", "1"], text[-3000:]  # no rank killed (-15) or aborted (-6)
    errors = [ln for ln in text.splitlines() if re.match(r"^(\[rank\d\]:)?error: ", ln)]
    assert any("is the disk full?" in ln for ln in errors), text[-3000:]
    assert any("rank 0 could not write" in ln for ln in errors), text[-3000:]
    # torchrun raises its own ChildFailedError with a traceback; the ranks print none
    assert 'worker.py", line' not in text and "terminate called" not in text

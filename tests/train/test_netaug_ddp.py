"""2-process gloo DDP under torchrun: identical weights on both ranks after every step, and the
same sampled augmented model on both (the NetAug generator is seeded identically, docs/netaug.md
pitfall 11). Each worker is a script torchrun starts, kept beside these tests in ``ddp_workers/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKERS = Path(__file__).with_name("ddp_workers")


def _torchrun(worker: str, out_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    """``ddp_workers/<worker>`` on 2 local gloo ranks, writing into ``out_dir``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--standalone", str(WORKERS / worker), str(out_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_rank_gloo_keeps_ranks_identical(tmp_path):
    done = _torchrun("netaug_two_ranks.py", tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(result["records"]) == 6  # 3 steps x 2 epochs
        assert all(w and s for w, s in result["records"]), result["records"]
        assert result["final_equal"]
    assert (tmp_path / "checkpoint.pt").is_file()


def test_a_failed_write_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0 cannot write checkpoint.pt (disk full): it raises the OSError, the other rank a
    StageError, and neither waits forever for the other."""
    done = _torchrun("failed_write.py", tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((tmp_path / "rank0.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    assert first[0] == "OSError" and "disk full" in first[1], first
    assert other[0] == "StageError" and "rank 0 could not write" in other[1], other

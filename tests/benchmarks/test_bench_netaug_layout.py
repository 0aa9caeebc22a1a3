"""``bench_netaug_layout`` on the CPU: each layout variant runs in its own process and prints one
JSON line; the channels_last variants compute through the same trainer (plumbing only: the
timings that matter are CUDA's)."""

import json

from tinyexport.benchmarks import bench_netaug_layout


def test_variants_run_in_their_own_processes(capsys):
    assert bench_netaug_layout.main(["--device", "cpu", "--resolution", "32", "--batch-size", "2",
                                     "--warmup", "1", "--steps", "1", "--variants", "nchw",
                                     "cl_dw_cudnn", "--timeout-s", "300"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == ["nchw", "cl_dw_cudnn"]
    assert all(r["s_per_step"] > 0 and "error" not in r for r in rows)

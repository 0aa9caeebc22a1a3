"""Group 6 of the robustness benchmark (issue 23 on the training side): every family has generated
cases, the archive bomb is what the issue describes, and a few cases run for real through the
CLIs under the benchmark's memory limit."""

import struct
import zipfile
from pathlib import Path

from tinyexport.benchmarks.robustness_args import ArgCase, judge_arg_case
from tinyexport.benchmarks.robustness_harness import Bench, WorkerRun, classify
from tinyexport.benchmarks.robustness_round3 import run_arg_case, run_limited
from tinyexport.benchmarks.robustness_round3_train import (
    FAMILIES,
    all_argument_cases,
    archive_naming_one_member,
    runs_and_warns,
)


def test_every_family_has_cases_built_at_run_time(tmp_path):
    cases = all_argument_cases(tmp_path)
    # 6.5 (run folders) and 6.8 (signals) need a finished / a running run: run_folder_cases and
    # signal_cases, run by run_group_round3_train
    assert {family for family, _ in cases} | {"6.5", "6.8"} == set(FAMILIES)
    fixtures = [Path(a) for _, c in cases for a in c.argv if a.startswith(str(tmp_path))
                and Path(a).name not in ("o", "o2", "missing.pt")]
    assert fixtures and all(p.exists() or p.is_symlink() for p in fixtures)
    names = [c.name for _, c in cases]
    assert len(names) == len(set(names)) and len(names) >= 60


def test_the_archive_bomb_names_one_member_many_times(tmp_path):
    path = tmp_path / "bomb.pt"
    archive_naming_one_member(path, 1000, 2 ** 26)
    assert path.stat().st_size < 2 ** 20
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert len(infos) == 1000 and {i.filename for i in infos} == {"archive/data/0"}
    assert {i.file_size for i in infos} == {2 ** 26} and {i.header_offset for i in infos} == {0}
    assert struct.unpack("<I", path.read_bytes()[:4])[0] == 0x04034B50


def test_bombs_through_the_real_cli(tmp_path):
    bench = Bench(tmp_path, 0)
    cases = {c.name: c for _, c in all_argument_cases(tmp_path / "cases")}
    for name in ("transfer --from 60,000 entries naming one 1 GiB member",
                 "--data gzip bomb (one image declared, 64 MB inflated)"):
        run = run_limited(bench, cases[name].argv, 60, tmp_path)
        assert judge_arg_case(cases[name], run)[0] == "clean error", (name, run.stderr)


def test_argparse_errors_of_a_subcommand_are_one_clean_line():
    stderr = "usage: tinytrain transfer ...\ntinytrain transfer: error: argument --recipe: bad\n"
    assert classify(2, stderr) == "clean error"


def test_runs_and_warns_judge():
    said = WorkerRun(0, "", "skipping image 'a.png': outside the limits\n")
    assert runs_and_warns("skipping image", "limit")(said)[0] == "correct"
    silent = WorkerRun(0, "", "best top-1 50%\n")
    assert runs_and_warns("skipping image", "limit")(silent)[0] == "wrong success"
    assert runs_and_warns("x")(WorkerRun(2, "", "error: no\n")) is None


def test_one_runner_for_the_cases_of_groups_5_and_6(tmp_path):
    bench = Bench(tmp_path, 0)
    argv = ["tinytrain", "--data", "digits", "--out", str(tmp_path / "o"), "--seed", "-1"]
    limited = run_arg_case(bench, "6.9 x", ArgCase("seed -1", argv, 60), tmp_path)
    free = run_arg_case(bench, "6.9 x", ArgCase("seed -1", argv, 60, memory_limit=False), tmp_path)
    assert limited.outcome == free.outcome == "clean error", (limited, free)
    assert limited.repro.startswith("ulimit -v ") and free.repro.startswith("tinytrain ")

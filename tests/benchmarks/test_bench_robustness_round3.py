"""Group 5 of the robustness benchmark (issue 23): every family has generated cases, and a few of
them run for real through the CLIs under the benchmark's memory limit."""

from pathlib import Path

from tinyexport.benchmarks.robustness_args import judge_arg_case
from tinyexport.benchmarks.robustness_harness import Bench, WorkerRun
from tinyexport.benchmarks.robustness_round3 import (
    FAMILIES,
    argument_cases,
    no_control_characters,
    run_limited,
    succeeds_escaped,
)


def test_every_family_has_cases_built_at_run_time(tmp_path):
    cases = argument_cases(tmp_path)
    families = {family for family, _ in cases}
    # 5.5 (--force) and 5.8 (signals) need a previous export / a running one: force_cases and
    # signal_cases, run by run_group_round3
    assert families | {"5.5", "5.8"} == set(FAMILIES)
    fixtures = [Path(a) for _, c in cases for a in c.argv[2:] if a.startswith(str(tmp_path))
                and not a.endswith("/o")]
    assert fixtures and all(p.exists() or p.is_symlink() for p in fixtures)
    assert len(cases) >= 40
    names = [c.name for _, c in cases]
    assert len(names) == len(set(names))


def test_bombs_and_hostile_names_through_the_real_cli(tmp_path):
    bench = Bench(tmp_path, 0)
    cases = {c.name: c for _, c in argument_cases(tmp_path)}
    for name in ("tinyreport 20 GB sparse FILE.tflite starting with TFL3",
                 "tinyreport --board YAML alias bomb",
                 "tinyreport FILE with a custom op named '\\n stm32f746 fits\\x1b]0;..'"):
        case = cases[name]
        run = run_limited(bench, case.argv, 60, tmp_path)
        assert judge_arg_case(case, run)[0] == "clean error", (name, run.stderr)


def test_escaping_judges():
    leaked = WorkerRun(0, "ok\n stm32f746 fits\x1b]0;title\x07\n", "")
    assert no_control_characters(succeeds_escaped)(leaked)[0] == "wrong success"
    clean = WorkerRun(0, "CUSTOM:MyOp\\x0a stm32f746 fits\\x1b\n", "")
    assert no_control_characters(succeeds_escaped)(clean)[0] == "correct"
    assert no_control_characters()(WorkerRun(2, "", "error: bad\n")) is None

"""Robustness benchmark: the three CLIs attacked as a hostile but realistic user (issue 11).

    .venv/bin/python -m tinyexport.benchmarks.bench_robustness [--tflite-mutants 1000]
        [--checkpoint-mutants 100] [--kills 8] [--quick]

Four groups of cases, each case ending in exactly one outcome column (see :data:`COLUMNS`):

1. seeded ``.tflite`` mutants (byte flips, int32 field flips, truncation, opcode-index swaps) of
   small int8 models through ``tinyreport FILE --json`` (and a ``--measure`` sample);
2. seeded checkpoint mutants through the export's load path (and a sample through the real
   ``tinyexport``), and mutated ``tinytrain`` ``checkpoint.pt`` files resumed;
3. bad arguments and hostile files given to the real CLIs;
4. ``tinyexport`` and ``tinytrain`` SIGKILLed at seeded random points, then rerun / resumed;
5. issue 23's third round on the export / report side, a family per class (5.1-5.9: bombs,
   special files, checkpoint metadata, lying data, --force, names from files, contradictory
   reports, signals, unhelpful errors), each fixture generated at run time, every refusal under
   ``ulimit -v 3000000``;
6. the same third round on the training side (6.1-6.9 where the class reaches ``tinytrain``,
   ``tinytrain transfer`` or the checkpoints they write: image, IDX, gzip and archive bombs,
   FIFOs, checkpoint schemas, lying folders and labels, run folders, names from files, SIGTERM /
   SIGHUP mid-run then ``--resume``, out-of-range settings).

The mutants run in worker processes (:mod:`robustness_harness`: one process runs many cases
and writes one JSON line per case), restarted after a native crash and killed after a per-case
timeout, so a crash or a hang is observed rather than fatal. Every child process gets a private
``TMPDIR``, so litter in the temp dir is ours to see. Writes
``benchmarks/results/robustness_results.json`` and ``robustness_results.md``.

One module a case family: :mod:`robustness_files` (groups 1 and 2), :mod:`robustness_args`
(group 3), :mod:`robustness_kills` (group 4), :mod:`robustness_round3` (group 5),
:mod:`robustness_round3_train` (group 6); the mutants
are :mod:`robustness_mutants`. This module runs the groups and writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

from tinyexport.benchmarks.publish import write_results
from tinyexport.benchmarks.robustness_args import run_group_args
from tinyexport.benchmarks.robustness_files import run_group_checkpoints, run_group_tflite
from tinyexport.benchmarks.robustness_harness import COLUMNS, RESULTS, Bench, Tally
from tinyexport.benchmarks.robustness_kills import run_group_kill_export, run_group_kill_train
from tinyexport.benchmarks.robustness_round3 import FAMILIES, run_group_round3
from tinyexport.benchmarks.robustness_round3_train import FAMILIES as TRAIN_FAMILIES
from tinyexport.benchmarks.robustness_round3_train import run_group_round3_train
from tinyexport.config import package_versions

# ---------------------------------------------------------------------------------------------
# Report

DESCRIPTIONS = {
    "1": "Seeded mutants (byte flips, int32 field flips, truncation, opcode-index swaps) of "
         "hello_world_int8, trained_lstm_int8, a Keras full-int8 conv net and the mcunet-in0 48 px "
         "export, fed to `tinyreport FILE --json` in worker processes. correct: exit 0 with the "
         "original's report (unused bytes hit), or a report with sane figures (0..2^31, head + "
         "tail = total) of a model LiteRT allocates and invokes. A report whose `errors` say why "
         "it exits 1 counts as a clean error.",
    "1b": "`tinyreport --measure` (the real TFLite Micro interpreter) on a seeded sample of the "
          "accepted mutants. correct: measured arena total and min arena equal the predicted.",
    "2a": "Seeded mutants (byte flips anywhere, byte flips in the zip's non-tensor records, int32 "
          "flips, truncation) of save_checkpoint(mcunet-in0, 4 classes, 32 px), through the code "
          "`tinyexport --checkpoint` runs to load (describe_checkpoint, ExportConfig, "
          "check_user_paths, load_model under run_cli). correct: the loaded weights, model and "
          "resolution equal the original's. A load that succeeds with other weights is a wrong "
          "success (silent corruption: torch.load does not check the zip's CRC-32).",
    "2b": "The real `tinyexport --checkpoint M --no-firmware --calib-images 8 --check-images 8` on "
          "a few of the 2a mutants. correct: exit 0 where 2a loaded the original weights.",
    "2c": "A tinytrain run's `checkpoint.pt` (1 of 2 epochs done) mutated, then `tinytrain ... "
          "--epochs 2 --resume`. correct: the resumed run finishes.",
    "3": "Bad arguments and hostile files (issue 11 items 3 and 7) through the real CLIs. Most "
         "must fail with one `error:` line (exit 0 is a wrong success); --force into a folder "
         "with user files and --out naming a file must keep those files (else data loss); "
         "--num-classes 3 with digits is correct when it warns; the evil CIFAR pickle must never "
         "create its marker; two exports into one new folder: the second fails clearly, the "
         "first completes; --board nosuchboard must fail within 10 s (else a hang).",
    "4a": "`tinyexport --model mcunet-in0 --resolution 48 --num-classes 10 --force --out D` run "
          "once, then started again and SIGKILLed after a seeded delay within its runtime. "
          "correct: 5 s after the kill no child of the killed process (or process naming D) "
          "lives, and D (or .D.old) holds a complete export; the final rerun completes and "
          "leaves no .D.* litter and no tinyexport-* folder in the private TMPDIR.",
    "4b": "A tiny tinytrain run (digits, 32 px, 3 epochs x 4 steps, 1 thread) SIGKILLed at seeded "
          "points (drawn in 40-100 % of the span from its first `CPU:` line to the end of an "
          "uninterrupted run) and restarted (with --resume once checkpoint.pt exists) until it "
          "finishes. "
          "correct: the final checkpoint's model and optimizer tensors equal an uninterrupted "
          "run's bit for bit.",
    **{k: f"Issue 23, {v}: generated fixtures through the real CLIs, the refusals under `ulimit "
          "-v 3000000` (robustness_round3.py). correct: exit 0 where the input is fine and every name from "
          "the file printed escaped (5.6), a previous export's foreign files moved to "
          "OUT.backup-N and a symlinked --out written through (5.5); every other case must be "
          "one `error:` line" for k, v in FAMILIES.items()},
    **{k: f"Issue 23 on the training side, {v}: generated fixtures through the real `tinytrain`, "
          "`tinytrain transfer` (and `tinyexport --checkpoint` for checkpoint bombs), each under "
          "`ulimit -v 3000000` (robustness_round3_train.py). correct: exit 0 after a warning "
          "naming the skipped file and the limit (an image bomb, a FIFO in a folder) or saying "
          "validation uses the training images (a flat folder), every name from the data "
          "printed escaped (6.6); a stopped run must say so in one line, leave no lock or child, "
          "and finish with --resume (6.8); the user's run and data files must stay as they were "
          "(6.5); every other case must be one `error:` line" for k, v in TRAIN_FAMILIES.items()},
}


def render(doc: dict) -> str:
    lines = ["# Robustness benchmark (issues 11 and 23)", "",
             f"Groups run: {', '.join(sorted({c['group'].split('.')[0] for c in doc['cases']}))}.", "",
             f"{doc['host']['date']} on {doc['host']['platform']}, {doc['host']['cpus']} CPUs "
             f"(shared: load average {doc['host']['load_average_at_end']}); seed {doc['seed']}; "
             f"{doc['runtime_s']:.0f} s in all.", "",
             "| group | tried | " + " | ".join(COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for row in doc["table"]:
        lines.append(f"| {row['group']} | {row['tried']} | "
                     + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    lines += ["", "Columns: clean error = exit != 0 with exactly one `error: ...` line and no "
              "traceback; traceback = a Python traceback; crash = killed by a signal / exit < 0 or "
              "> 128 without a clean line (or an orphaned child after a kill); hang = past the "
              "per-case timeout; wrong success = exit 0 with a wrong result; data loss = a user's "
              "file or the last good export lost; unclean exit = exit != 0 without exactly one "
              "`error:` line (not asked for by the issue; kept so no case goes uncounted).", "",
              "## Groups", ""]
    lines += [f"- **{k}**: {v}" for k, v in DESCRIPTIONS.items()]
    lines += ["", "## Every case outside clean error / correct", ""]
    problems = doc["problems"]
    lines += [f"- [{c['outcome']}] {c['group']} / {c['name']}: {c['detail']}  \n  repro: "
              f"`{c['repro']}`" for c in problems] or ["none"]
    args = [c for c in doc["cases"] if c["group"].startswith(("3.", "4", "5.", "6."))]
    lines += ["", "## Groups 3 to 6, case by case", "", "| group | case | outcome | detail |",
              "|---|---|---|---|"]
    lines += [f"| {c['group'].split()[0].rstrip('.')} | {c['name'].replace('|', '/')} | "
              f"{c['outcome']} | "
              f"{c['detail'][:160].replace('|', '/')} |" for c in args]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tflite-mutants", type=int, default=1000)
    p.add_argument("--checkpoint-mutants", type=int, default=100)
    p.add_argument("--resume-mutants", type=int, default=6,
                   help="mutated tinytrain checkpoint.pt files resumed (group 2c)")
    p.add_argument("--measure-sample", type=int, default=50)
    p.add_argument("--cli-sample", type=int, default=2,
                   help="checkpoint mutants through the real tinyexport (group 2b)")
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--train-kills", type=int, default=4)
    p.add_argument("--groups", default="123456", help="which groups to run (e.g. 13); a run of "
                   "some groups writes robustness_results_<groups>.*, not the full results")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 40 .tflite and 12 checkpoint mutants, 1 kill each")
    p.add_argument("--work", type=Path, help="keep the scratch files here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    return p


def run_all(args: argparse.Namespace, work: Path) -> dict:
    bench = Bench(work, args.seed)
    tally, start = Tally(), time.monotonic()
    export_model = None
    if "4" in args.groups:
        export_model = run_group_kill_export(bench, tally, args.kills)
    if "1" in args.groups:
        run_group_tflite(bench, tally, args.tflite_mutants, args.measure_sample, export_model)
    if "2" in args.groups:
        run_group_checkpoints(bench, tally, args.checkpoint_mutants, args.resume_mutants,
                              args.cli_sample)
    if "3" in args.groups:
        run_group_args(bench, tally)
    if "4" in args.groups:
        run_group_kill_train(bench, tally, args.train_kills)
    if "5" in args.groups:
        run_group_round3(bench, tally)
    if "6" in args.groups:
        run_group_round3_train(bench, tally)
    groups = sorted({c.group for c in tally.cases}, key=lambda g: (g.split(".")[0], g))
    return {"host": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                     "platform": platform.platform(), "cpus": os.cpu_count(),
                     "load_average_at_end": [round(x, 1) for x in os.getloadavg()]},
            "versions": package_versions(), "seed": args.seed,
            "counts": {k: getattr(args, k) for k in ("tflite_mutants", "checkpoint_mutants",
                                                     "resume_mutants", "measure_sample", "kills",
                                                     "train_kills")},
            "runtime_s": round(time.monotonic() - start, 1), "columns": list(COLUMNS),
            "table": tally.table(groups), "problems": [c.__dict__ for c in tally.problems()],
            "cases": [c.__dict__ for c in tally.cases]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.tflite_mutants, args.checkpoint_mutants, args.resume_mutants = 40, 12, 2
        args.measure_sample, args.cli_sample, args.kills, args.train_kills = 4, 2, 1, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="bench-robustness-")))
        work.mkdir(parents=True, exist_ok=True)
        doc = run_all(args, work.resolve())
    full = sorted(args.groups) == sorted(build_parser().get_default("groups"))
    write_results(args.out, "robustness_results" if full else f"robustness_results_{args.groups}",
                  doc, render(doc))
    print(render(doc).split("## Groups")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

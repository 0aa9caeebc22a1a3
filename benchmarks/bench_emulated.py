"""Emulated Cortex-M benchmark: every MCU-sized zoo export and the Keras / TFLM test models built
with TFLM + CMSIS-NN for Cortex-M4 and Cortex-M7 and run in QEMU (:mod:`tinyexport.firmware_eval.
emulate`), side by side with what ``tinyreport`` predicts without emulation.

    TFLM_SRC=... THIRD_PARTY_SRC=... .venv/bin/python -m tinyexport.benchmarks.bench_emulated \
        [--models mbv2-tiny mcunet-in3 ...] [--tflite OTHER.tflite ...] [--cores cortex-m7] \
        [--work DIR] [--inputs 3] [--profiles product speed] [--stem emulated_results]

Per model and core: flash measured (the product image's linker map: newlib-nano, no
semihosting, a main that only initialises and invokes) and what the emulator's run image adds to
it (semihosting, full newlib with printf, the measuring driver, its test inputs), against the
estimate (model file + runtime estimate), the arena that CMSIS-NN needs (the smallest that allocates, by bisection in
QEMU) against the prediction with the board ISA's CMSIS-NN scratch and against the reference
kernels' arena (Python TFLM on x86-64), .data/.bss and the stack high-water mark, instructions per
inference (QEMU icount), and the outputs compared value by value with the Python TFLM (reference
kernels). Each model is compacted as the export does it (``evaluate.compact_verified``: each level
kept only when TFLM and LiteRT give the original outputs bit for bit) and the model the firmware
links is the one measured; with the product profile the model as given is measured too: flash
before / after compaction, and the two firmware's outputs in QEMU compared. The TFLM example
models of the pinned source tree (hello_world, micro_speech, person_detection) run beside ours
when the tree has them. Zoo exports have random weights (seeded; memory and instruction counts do not depend on
the weights). Writes ``benchmarks/results/emulated_results.{json,md}``.

Instruction counts are not cycles. The calibration section divides published latencies of the
same zoo models (TFLM + CMSIS-NN on an STM32H743 at 480 MHz, docs/mcunet.md §5.3) by our M7
instruction counts: the cycles per instruction that turn a count into a latency estimate, and
how far that estimate lands from each published figure with the others as the calibration.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyexport.benchmarks.bench_memory import MCU_ZOO, OTHER_MODELS, export_zoo
from tinyexport.benchmarks.publish import write_results
from tinyexport.errors import UserError
from tinyexport.firmware_eval import emulate
from tinyexport.firmware_eval.arena import predict
from tinyexport.firmware_eval.evaluate import COMPACTION_INPUTS, compact_verified, seeded_baseline
from tinyexport.firmware_eval.tflm_readiness import load
from tinyexport.firmware_eval.verdicts import runtime_estimate
from tinyexport.firmware_eval.verified_rewrites import CompactionLevel
from tinyexport.json_record import to_record

RESULTS = Path(__file__).resolve().parent / "results"

# Published TFLM + CMSIS-NN latency on an STM32H743 (Cortex-M7 @ 480 MHz, -Ofast), ms
# (docs/mcunet.md §5.3; TFLM @713b6ed, CMSIS-NN @011bf32, the zoo's own .tflite files).
PUBLISHED_H743_MS = {"mcunet-in0": 51.0, "mcunet-in1": 103.0, "mcunet-in2": 642.0,
                     "mcunet-in3": 770.0, "proxyless-w0.3": 380.0}
H743_HZ = 480e6

# TFLM's own example models in the pinned source tree (TFLM_SRC), run when present.
TFLM_EXAMPLES = {"tflm-hello_world": "tensorflow/lite/micro/examples/hello_world/models/"
                                     "hello_world_int8.tflite",
                 "tflm-micro_speech": "tensorflow/lite/micro/examples/micro_speech/models/"
                                      "micro_speech_quantized.tflite",
                 "tflm-person_detect": "tensorflow/lite/micro/models/person_detect.tflite"}

# Published figures for mcunet-in3 (MCUNet 320kB/1MB, ImageNet) from the mit-han-lab/tinyengine
# README's measured tables, as summarised in docs/mcunet.md §5.3 (STM32H743, TFLM @713b6ed,
# CMSIS-NN @011bf32, -Ofast) and §5.4 (STM32F746G-DISCO, first release); docs/flash_compaction.md.
PUBLISHED_MCUNET_IN3 = (
    ("TFLM (reference kernels)", "STM32H743", "1,091 kB", "493 kB", "7,821 ms"),
    ("TFLM + CMSIS-NN", "STM32H743", "1,106 kB", "493 kB", "770 ms"),
    ("TinyEngine", "STM32H743", "835 kB", "260 kB", "336 ms"),
    ("TFLM, TFLM + CMSIS-NN", "STM32F746", "OOM", "OOM", "OOM"),
    ("TinyEngine", "STM32F746", "835 kB", "242 kB", "819 ms"),
)


def tflm_example_models() -> list[tuple[str, Path]]:
    """(label, path) of the TFLM example models found in the pinned source tree."""
    root = emulate.source_dirs()[0]
    if not root:
        return []
    return [(label, Path(root, rel)) for label, rel in TFLM_EXAMPLES.items()
            if Path(root, rel).is_file()]


def compaction(label: str, path: Path, work: Path) -> tuple[Path, dict]:
    """The model the firmware links (the export's verified compaction of ``path``, in ``work``)
    and the record: bytes per level, steps, what was kept, each level's verification."""
    folder = work / f"{label}-compacted"
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.tflite"
    shutil.copy(path, model)
    x, outputs = seeded_baseline(model, COMPACTION_INPUTS)
    compacted = compact_verified(model, x, outputs)
    linked = Path(compacted.firmware_model)
    summary = {"bytes_before": compacted.bytes_before,
               "linked_bytes": compacted.firmware_model_bytes,
               "linked": "TFLM-only" if compacted.tflm.applied else
                         "portable" if compacted.portable.applied else "as given"}
    for level in ("portable", "tflm"):
        summary[level] = _level_summary(getattr(compacted, level))
    return linked, summary


def _level_summary(level: CompactionLevel) -> dict:
    """One compaction level as the results file lists it."""
    check = level.verification
    return {"bytes_after": level.bytes_after, "applied": level.applied,
            "steps": to_record(level.steps), "kept": to_record(level.kept),
            "tflm_equal": check.outputs_equal_to_original,
            "litert_equal": check.litert_reference_equal_to_original, "errors": check.errors}


def bench_model(label: str, path: Path, core: str, n_inputs: int, work: Path,
                timeout_s: float = 240.0, profile: str = "product",
                compacted: tuple[Path, dict] | None = None) -> dict:
    """One model on one core with one firmware profile: the model the firmware links (compacted,
    :func:`compaction`, or ``compacted`` when already done) measured in QEMU next to the
    predictions; with the product profile the model as given is measured too (flash before
    compaction, outputs compared)."""
    linked, compacted = compacted or compaction(label, path, work / "compaction")
    graph = load(path)
    pred = predict(graph, "dsp")  # Cortex-M4 and M7 both have the DSP extension
    start = time.monotonic()
    suffix = "" if profile == "product" else f"-{profile}"
    run = emulate.emulate(linked, core, work=work / f"{label}-{core}{suffix}", n_inputs=n_inputs,
                          timeout_s=timeout_s, profile=profile)
    estimate = compacted["linked_bytes"] + runtime_estimate(graph)
    row = {"model": label, "core": core, "profile": profile, "ops": len(graph.ops),
           "flash_measured": run.flash_bytes, "flash_estimated": estimate,
           "flash_split": run.flash_product, "flash_run_image": run.flash["total"],
           "flash_harness": run.harness["total"], "arena_measured": run.arena_min,
           "arena_predicted": max(pred.total, pred.min_arena),
           "head_measured": run.arena_sections["head"], "head_predicted": pred.head,
           "tail_measured": run.arena_sections["tail"], "tail_predicted": pred.tail,
           "tail_by_type": run.arena_sections["by_type"],
           "arena_reference_kernels": run.arena_python_tflm,
           "bundle_arena_allocates": run.bundle_arena_allocates,
           "ram_static": run.ram_static, "stack": run.stack_bytes, "sram_measured": run.sram_bytes,
           "instructions": round(statistics.mean(run.instructions_per_inference)),
           "instructions_by_op_type": run.by_op_type(),
           "bit_exact": run.bit_exact, "inputs": n_inputs, "compaction": compacted}
    if profile == "product" and compacted["linked"] != "as given":
        before = emulate.emulate(path, core, work=work / f"{label}-{core}-uncompacted",
                                 n_inputs=n_inputs, timeout_s=timeout_s, profile=profile)
        row["flash_before_compaction"] = before.flash_bytes
        row["model_split_before_compaction"] = before.flash_product["model"]
        row["qemu_outputs_equal_to_uncompacted"] = bool(np.array_equal(before.outputs,
                                                                       run.outputs))
        row["instructions_uncompacted"] = round(statistics.mean(before.instructions_per_inference))
    row["seconds"] = round(time.monotonic() - start, 1)
    return row


def calibration(rows: list[dict]) -> dict:
    """Cycles per instruction from the published H743 latencies, and the leave-one-out error of
    the latency each model would have been given from the others' mean CPI."""
    points = {r["model"]: PUBLISHED_H743_MS[r["model"]] * 1e-3 * H743_HZ / r["instructions"]
              for r in rows if r["core"] == "cortex-m7" and r["model"] in PUBLISHED_H743_MS
              and _product(r)}
    out = {"cpi": {k: round(v, 3) for k, v in points.items()}}
    if len(points) >= 2:
        errors = {}
        for name, cpi in points.items():
            others = statistics.mean(v for k, v in points.items() if k != name)
            errors[name] = round(100 * (others / cpi - 1), 1)
        out.update(mean_cpi=round(statistics.mean(points.values()), 3),
                   leave_one_out_error_pct=errors,
                   max_abs_error_pct=max(abs(e) for e in errors.values()))
    return out


def _kb(n: int) -> str:
    return f"{n:,}"


def _product(row: dict) -> bool:
    """A row of the default (product) profile; rows measured before profiles existed are."""
    return row.get("profile", "product") == "product"


def _core(row: dict) -> str:
    """The core, with the firmware profile where it is not the product one."""
    return row["core"] + ("" if _product(row) else f" ({row['profile']})")


def _flash_harness(row: dict) -> str:
    """What the run image adds to the product image (rows measured before the product image
    existed have none)."""
    return _kb(row["flash_harness"]) if "flash_harness" in row else "n/m"


def render(doc: dict) -> str:
    lines = ["# Emulated Cortex-M: TFLM + CMSIS-NN in QEMU", "", doc["setup"], "",
             "| model | core | flash measured | run image adds | flash estimated | "
             "arena CMSIS-NN (measured) | "
             "arena predicted | head measured / predicted | tail measured / predicted | "
             "arena ref. kernels | bundle arena allocates | .data+.bss | stack | "
             "instructions / inference | outputs vs host TFLM |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in doc["rows"]:
        if "error" in r:
            why = r["error"].splitlines()[0].replace("|", "/")
            lines.append(f"| {r['model']} | {_core(r)} | failed: {why} |")
            continue
        b = r["bit_exact"]
        same = "bit-exact" if b.get("equal") else f"{b.get('mismatches')} differ"
        if b.get("first_difference"):
            first = b["first_difference"]
            same += f", first at op #{first['op']} {first['opcode']}"
        lines.append(
            f"| {r['model']} | {_core(r)} | {_kb(r['flash_measured'])} | "
            f"{_flash_harness(r)} | {_kb(r['flash_estimated'])} | {_kb(r['arena_measured'])} | "
            f"{_kb(r['arena_predicted'])} | {_kb(r['head_measured'])} / "
            f"{_kb(r['head_predicted'])} | {_kb(r['tail_measured'])} / "
            f"{_kb(r['tail_predicted'])} | {_kb(r['arena_reference_kernels'])} | "
            f"{'yes' if r['bundle_arena_allocates'] else 'NO'} | "
            f"{_kb(r['ram_static']['data'] + r['ram_static']['bss'])} | {_kb(r['stack'])} | "
            f"{r['instructions']:,} | {same} ({r['inputs']} inputs) |")
    lines += ["", "Where the instructions go (Cortex-M7, one profiled inference; TFLM's profiler "
              "hooks around each op):", "", "| model | largest op types |", "|---|---|"]
    for r in doc["rows"]:
        types = r.get("instructions_by_op_type") or {}
        total = sum(types.values())
        if r["core"] == "cortex-m7" and _product(r) and total:
            top = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in list(types.items())[:4])
            lines.append(f"| {r['model']} | {top} |")
    lines += _profile_lines(doc["rows"])
    lines += _compaction_lines(doc["rows"])
    cal = doc.get("calibration") or {}
    if cal.get("cpi"):
        lines += ["", "Calibration against published latencies (TFLM + CMSIS-NN on an STM32H743 "
                  "at 480 MHz, docs/mcunet.md §5.3): cycles per emulated instruction", "",
                  "| model | published ms | M7 instructions | cycles / instruction | "
                  "leave-one-out latency error |", "|---|---:|---:|---:|---:|"]
        m7 = {r["model"]: r for r in doc["rows"]
              if r["core"] == "cortex-m7" and _product(r) and "error" not in r}
        for name, cpi in cal["cpi"].items():
            err = cal.get("leave_one_out_error_pct", {}).get(name)
            lines.append(f"| {name} | {PUBLISHED_H743_MS[name]:.0f} | "
                         f"{m7[name]['instructions']:,} | {cpi:.2f} | "
                         f"{'' if err is None else f'{err:+.1f} %'} |")
        if "mean_cpi" in cal:
            lines += ["", f"Mean {cal['mean_cpi']:.2f} cycles per instruction; a latency "
                      f"estimated from it lands within {cal['max_abs_error_pct']:.0f} % of each "
                      "published figure (leave-one-out)."]
    return "\n".join(lines) + "\n"


def _profile_lines(rows: list[dict]) -> list[str]:
    """Product-image flash and instructions of each firmware profile side by side (models measured
    with more than one)."""
    ok = [r for r in rows if "error" not in r]
    keys = sorted({(r["model"], r["core"]) for r in ok if not _product(r)})
    if not keys:
        return []
    lines = ["", "Firmware profiles (product image; the difference to the product profile):", "",
             "| model | core | profile | flash | flash Δ | instructions / inference | "
             "instructions Δ | outputs vs host TFLM |", "|---|---|---|---:|---:|---:|---:|---|"]
    for model, core in keys:
        same = [r for r in ok if (r["model"], r["core"]) == (model, core)]
        base = next((r for r in same if _product(r)), same[0])
        for r in same:
            lines.append(
                f"| {model} | {core} | {r['profile']} ({emulate.PROFILES[r['profile']]}) | "
                f"{_kb(r['flash_measured'])} | {r['flash_measured'] - base['flash_measured']:+,} | "
                f"{r['instructions']:,} | "
                f"{100 * (r['instructions'] / base['instructions'] - 1):+.1f} % | "
                f"{'bit-exact' if r['bit_exact'].get('equal') else 'DIFFER'} |")
    return lines


def _compaction_lines(rows: list[dict]) -> list[str]:
    """Flash before / after compaction per model (product profile), then MCUNet's published
    figures for mcunet-in3 beside ours."""
    done = [r for r in rows if "error" not in r and "compaction" in r and _product(r)]
    if not done:
        return []
    lines = ["", "Model compaction (the export's, verified: TFLM and LiteRT outputs identical on "
             f"{COMPACTION_INPUTS} inputs per level) and the flash of the product image before and "
             "after it:", "",
             "| model | core | model file | portable | TFLM-only | firmware links | flash before | "
             "flash after | saved | QEMU outputs identical | kept |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for r in done:
        c = r["compaction"]
        before = r.get("flash_before_compaction")
        kept = "; ".join(k["name"] for k in c["tflm"]["kept"]) or "-"
        if not c["portable"]["applied"]:
            kept += " (portable level not applied: " + (
                "LiteRT cannot run it" if not c["portable"]["litert_equal"] else "outputs differ") + ")"
        same = r.get("qemu_outputs_equal_to_uncompacted")
        lines.append(
            f"| {r['model']} | {r['core']} | {_kb(c['bytes_before'])} | "
            f"{_kb(c['portable']['bytes_after'])} | {_kb(c['tflm']['bytes_after'])} | "
            f"{c['linked']} ({_kb(c['linked_bytes'])}) | "
            f"{_kb(before) if before else 'n/m'} | {_kb(r['flash_measured'])} | "
            f"{_kb(before - r['flash_measured']) if before else 'n/m'} | "
            f"{'n/m' if same is None else 'yes' if same else 'NO'} | {kept} |")
    ours = next((r for r in done if r["model"] == "mcunet-in3" and r["core"] == "cortex-m7"), None)
    lines += ["", "mcunet-in3 beside the published TFLM and TinyEngine figures (the "
              "mit-han-lab/tinyengine README's tables, docs/mcunet.md §5.3-5.4; "
              "docs/flash_compaction.md); ours: measured here, random weights, unpatched:",
              "", "| runtime | board | flash | SRAM | latency |", "|---|---|---:|---:|---:|"]
    lines += [f"| {rt} (published) | {board} | {flash} | {sram} | {ms} |"
              for rt, board, flash, sram, ms in PUBLISHED_MCUNET_IN3]
    if ours:
        lines.append(f"| TFLM + CMSIS-NN, compacted, product image (ours) | QEMU Cortex-M7 | "
                     f"{_kb(ours['flash_measured'])} B | {_kb(ours['sram_measured'])} B | "
                     f"{ours['instructions']:,} instructions |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MCU_ZOO), help="zoo models to export")
    p.add_argument("--tflite", nargs="*", type=Path, default=list(OTHER_MODELS),
                   help="other int8 models (default: the test models in tests/firmware_eval/data)")
    p.add_argument("--cores", nargs="+", choices=emulate.CORES, default=list(emulate.CORES))
    p.add_argument("--work", type=Path, help="export cache and build folders (default: temporary)")
    p.add_argument("--inputs", type=int, default=3, help="seeded inputs compared per model")
    p.add_argument("--timeout", type=float, default=120.0, help="QEMU seconds per model")
    p.add_argument("--profiles", nargs="+", choices=list(emulate.PROFILES), default=["product"],
                   help="firmware profiles to measure (a TFLM library build each)")
    p.add_argument("--no-tflm-examples", dest="tflm_examples", action="store_false",
                   help="leave out TFLM's example models (hello_world, micro_speech, "
                        "person_detection) of the pinned source tree")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--stem", default="emulated_results",
                   help="results file names (<stem>.json / .md): a subset run can keep the full "
                        "table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = emulate.emulation_problem()
    if problem:
        raise SystemExit(f"bench_emulated: {problem}")
    with tempfile.TemporaryDirectory(prefix="bench_emulated_") as tmp:
        work = args.work or Path(tmp)
        models = [(name, export_zoo(name, work / "exports")) for name in args.models]
        models += [(path.stem, path) for path in args.tflite]
        models += tflm_example_models() if args.tflm_examples else []
        rows = []
        for label, path in models:
            try:
                compacted = compaction(label, path, work / "emulate" / "compaction")
            except UserError as exc:  # one model's failure is a row, not the end
                rows += [{"model": label, "core": core, "profile": profile, "error": str(exc)}
                         for core in args.cores for profile in args.profiles]
                continue
            for core in args.cores:
                for profile in args.profiles:
                    try:
                        rows.append(bench_model(label, path, core, args.inputs,
                                                work / "emulate", args.timeout, profile,
                                                compacted))
                    except UserError as exc:  # one model's failure is a row, not the end
                        rows.append({"model": label, "core": core, "profile": profile,
                                     "error": str(exc)})
                print(rows[-1], flush=True)
    doc = {"setup": (f"{time.strftime('%Y-%m-%d')} on {platform.machine()}; QEMU mps2-an386 "
                     f"(Cortex-M4) and mps2-an500 (Cortex-M7); TFLM {emulate.TFLM_COMMIT} + CMSIS-NN "
                     f"{emulate.CMSIS_NN_COMMIT}, arm-none-eabi-gcc -Os; {args.inputs} seeded int8 "
                     "inputs per model; models: " + ", ".join(label for label, _ in models)
                     + ". Flash measured = the product image, with the model the firmware links "
                     "(the export's verified compaction; newlib-nano, no "
                     "semihosting, initialise + invoke only; the emulator's run image adds the "
                     "next column). Flash estimated = model file + tinyreport's runtime "
                     "estimate (calibrated on these builds); arena predicted = tinyreport's "
                     "prediction for a Cortex-M board (the DSP ISA's CMSIS-NN scratch, 32-bit "
                     "structs, smallest arena that allocates); "
                     "arena ref. kernels = the Python TFLM (x86-64)."),
           "rows": rows, "calibration": calibration([r for r in rows if "error" not in r])}
    write_results(args.results_dir, args.stem, doc, render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

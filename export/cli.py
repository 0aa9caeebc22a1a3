"""``tinyexport``: PyTorch → recalibrated, fused → ONNX → full-int8 TFLite, verified at every step.

Thin CLI over :func:`tinyexport.export.pipeline.export`; see docs/guide/export.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from tinyexport.atomic import out_folder_problem
from tinyexport.boards import Verdict
from tinyexport.errors import EXIT_DOES_NOT_FIT, EXIT_FAILURE, UserError, printable, run_cli
from tinyexport.export.config import MAX_TOP1_DROP, MIN_TOP1_AGREEMENT, ExportConfig, default_out
from tinyexport.export.pipeline import export, recorded_data_readable
from tinyexport.export.provenance import layer_rows, verdict_records
from tinyexport.firmware_eval.compaction_report import compaction_lines
from tinyexport.firmware_eval.emulate import emulation_lines
from tinyexport.firmware_eval.emulation_summary import EmulationSummary
from tinyexport.firmware_eval.verdicts import (
    add_budget_flags,
    check_consistent,
    fit_exit_code,
    resolve_boards,
    verdict_lines,
)
from tinyexport.firmware_eval.verified_rewrites import Compaction, OptimizeResult
from tinyexport.log import setup_logging
from tinyexport.quantize.int8_checks import db_text
from tinyexport.quantize.layer_report import render_layer_table
from tinyexport.train.checkpoint_format import describe_checkpoint
from tinyexport.train.models import MODELS, model_spec
from tinyexport.train.pretrained import fetch, release_for

_log = logging.getLogger(__name__)

# Random weights give near-random logits, so int8 and fp32 disagree on the top class often and
# the SQNR is low: that is no sign of a broken export (README "Two commands").
RANDOM_WEIGHTS_LINE = ("RANDOM (no --checkpoint / --pretrained): the model is deployable as "
                       "profiled, but its top-1 agreement and SQNR figures are not meaningful; "
                       "pass --checkpoint FILE or --pretrained for a real model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyexport", description="Export a tiny CNN to a verified full-int8 TFLite model "
        "for TensorFlow Lite Micro (PyTorch → fused → ONNX → onnx2tf → TFLiteConverter).")
    p.add_argument("--model", help="zoo model name (e.g. mcunet, mbv2-tiny); optional with a "
                   "tinyexport checkpoint, which names its model")
    p.add_argument("--int8", action="store_true",
                   help="full-int8 export: int8 weights, activations, input and output (the "
                        "default and only target: TFLite Micro runs int8 models)")
    p.add_argument("--pretrained", nargs="?", const="default", choices=("default", "mcunet-zoo",
                                                                       "netaug"),
                   help="export the authors' released ImageNet weights of --model (downloaded "
                        "once into ~/.cache/tinyexport; default source: the MCUNet zoo for "
                        "mcunet-*, NetAug for mbv2-tiny and proxylessnas-w0.35)")
    p.add_argument("--checkpoint", type=Path, help="our checkpoint or a released NetAug/MCUNet "
                   ".pth; without it the weights are random (accuracy meaningless)")
    p.add_argument("--resolution", type=int, help="input size (default: the model's native one)")
    p.add_argument("--num-classes", type=int, help="classes of a random-weight model (1000)")
    p.add_argument("--calib-data", help="data SPEC for calibration: DIR, fashion-mnist[:DIR], "
                   "digits, synthetic[:N] (default: synthetic, with a warning)")
    p.add_argument("--calib-images", type=int, default=500, help="calibration images (500)")
    p.add_argument("--check-images", type=int, default=100,
                   help="images for the int8-vs-fp32 check (100, taken from calibration)")
    p.add_argument("--eval-data", help="data SPEC; reports top-1 of torch, ORT and int8 LiteRT")
    p.add_argument("--eval-images", type=int, default=1000, help="evaluation images (1000)")
    p.add_argument("--min-agreement", type=float, default=MIN_TOP1_AGREEMENT,
                   help="int8 gate without labelled data: least top-1 agreement of int8 with fp32 "
                        f"on the check images ({MIN_TOP1_AGREEMENT:g})")
    p.add_argument("--max-top1-drop", type=float, default=MAX_TOP1_DROP,
                   help="int8 gate with --eval-data: most top-1 points int8 may lose against fp32 "
                        f"({MAX_TOP1_DROP:g}); a failed gate still writes the export, exit 1")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight quantization")
    p.add_argument("--linear-head", dest="head_as_conv", action="store_false",
                   help="keep the classifier as FULLY_CONNECTED instead of a 1x1 CONV_2D (saves "
                        "8 B of TFLM arena per class with --per-tensor; TFLM then differs from "
                        "LiteRT's reference kernels by 1 LSB on rare logits)")
    recal = p.add_mutually_exclusive_group()
    recal.add_argument("--bn-recalibrate", dest="bn_recalibrate", action="store_true",
                       default=None, help="re-estimate BN statistics (default on for NetAug)")
    recal.add_argument("--no-bn-recalibrate", dest="bn_recalibrate", action="store_false")
    p.add_argument("--quant-report", action="store_true",
                   help="print the per-layer int8-vs-float SQNR report, worst layers first (it is "
                        "always written to export.json and report.md)")
    p.add_argument("--onnxsim", action="store_true", help="let onnx2tf run onnxsim (slower)")
    p.add_argument("--no-firmware", dest="firmware", action="store_false",
                   help="skip the firmware_eval stage (TFLM run, arena, C bundle)")
    p.add_argument("--no-reorder", dest="reorder", action="store_false",
                   help="keep the converter's operator order (default: the order with the lowest "
                        "arena, applied only if TFLM confirms identical outputs)")
    p.add_argument("--no-offline-plan", dest="offline_plan", action="store_false",
                   help="keep TFLM's greedy tensor placement (default: our offline plan where it "
                        "is smaller)")
    p.add_argument("--offline-plan", dest="offline_plan", action="store_true",
                   help=argparse.SUPPRESS)  # the default now; kept for one release
    p.add_argument("--no-compact", dest="compact", action="store_false",
                   help="keep the converter's file as it is (default: drop what no interpreter "
                        "reads from model_int8.tflite, and what TFLM does not read from the "
                        "firmware's copy model_int8_tflm.tflite, each verified bit for bit)")
    p.add_argument("--patch", choices=("auto", "on", "off"), default="auto",
                   help="patch-based inference (MCUNetV2) as a rewrite of the int8 model: auto "
                        "(default) = when --board is given and the model does not fit it; "
                        "the search takes a few minutes on a zoo model")
    p.add_argument("--patch-max-mac-overhead", type=float, default=30.0, metavar="PERCENT",
                   help="most extra MACs (halo recomputation) a patch plan may cost (30)")
    p.add_argument("--board", action="append", default=None,
                   help="board profile for the verdict (repeatable; 'all' for every built-in "
                        "board; or a board FILE.yaml with SRAM, flash and the application's "
                        "reserve). The first sets the CMSIS-NN scratch, the patch budget and the "
                        f"--emulate core. A DOES NOT FIT verdict exits {EXIT_DOES_NOT_FIT} (every "
                        "file still written)")
    add_budget_flags(p)
    p.add_argument("--emulate", action="store_true",
                   help="build the C bundle with TFLM + CMSIS-NN for the --board's core "
                        "(Cortex-M4 / M7) and run it in QEMU: measured flash, SRAM, "
                        "instructions and outputs vs the host; the verdict uses the measurement")
    p.add_argument("--out",
                   help="output folder (exports/<model>-r<res>-int8[-<board>...])")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random init (no checkpoint) and of the calibration crops: the "
                        "same command writes the same files (0)")
    p.add_argument("--json", action="store_true",
                   help="print export.json to stdout at the end, and nothing else there (the "
                        "progress and the summary go to stderr)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _pretrained_checkpoint(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """``--pretrained``: the cached released file of ``--model`` and where it came from."""
    if not args.pretrained:
        return args.checkpoint, None
    if args.checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    if not args.model:
        raise UserError("--pretrained needs --model NAME (e.g. --model mcunet --pretrained)")
    release = release_for(args.model, None if args.pretrained == "default" else args.pretrained)
    return fetch(release), f"{release.source} release ({release.url}; published top-1 {release.top1})"


def _out(text: str | None) -> Path | None:
    """``--out`` as given, refused when it is empty, the root or the current folder (one error
    naming the value as typed: ``--out ''`` is not ``--out .``)."""
    if text is None:
        return None
    problem = out_folder_problem(text)
    if problem:
        raise UserError(problem)
    return Path(text)


def _config(args: argparse.Namespace):
    checkpoint, weights_source = _pretrained_checkpoint(args)
    described = describe_checkpoint(checkpoint) if checkpoint else {}
    if not args.model and not described:
        raise UserError("pass --model NAME (or a --checkpoint written by tinyexport/tinytrain, "
                        "which names its model)")
    name = MODELS.canonical(args.model or described["model"])
    resolution = args.resolution or described.get("resolution") or model_spec(name).resolution
    calib_data, eval_data, source = args.calib_data, args.eval_data, "flags"
    recorded = described.get("data")
    if recorded and (calib_data is None or eval_data is None) and recorded_data_readable(recorded):
        _log.info("using the data the checkpoint was trained on, %s, for %s (pass --calib-data / "
                  "--eval-data to choose other data)", recorded,
                  " and ".join(w for w, v in (("calibration", calib_data), ("evaluation",
                                                                            eval_data)) if v is None))
        calib_data, eval_data, source = calib_data or recorded, eval_data or recorded, "checkpoint"
    boards = resolve_boards(args.board, args.sram, args.flash)
    return ExportConfig(model=name, out=_out(args.out) or default_out(name, resolution, boards),
                        checkpoint=checkpoint, resolution=args.resolution,
                        num_classes=args.num_classes, calib_data=calib_data,
                        calib_images=args.calib_images, check_images=args.check_images,
                        eval_data=eval_data, eval_images=args.eval_images, data_source=source,
                        weights_source=weights_source,
                        min_agreement=args.min_agreement, max_top1_drop=args.max_top1_drop,
                        per_channel=not args.per_tensor, head_as_conv=args.head_as_conv,
                        bn_recalibrate=args.bn_recalibrate,
                        onnxsim=args.onnxsim, force=args.force,
                        firmware=args.firmware, board=boards[0] if boards else None,
                        boards=tuple(boards), emulate=args.emulate,
                        reorder=args.reorder,
                        offline_plan=args.offline_plan, compact=args.compact, patch=args.patch,
                        patch_max_mac_overhead=args.patch_max_mac_overhead / 100.0,
                        seed=args.seed)


def _summary(result) -> str:
    doc = result.provenance
    int8_file = doc["artifacts"]["model_int8.tflite"]
    q = doc["quantization"]
    lines = [f"wrote {result.out}/ in {doc['total_seconds']:.1f} s",
             f"  model_int8.tflite  {int8_file['bytes']:,} B  input {q['input']['dtype']}"
             f"{q['input']['shape']} output {q['output']['dtype']}{q['output']['shape']}",
             "  ops: " + ", ".join(f"{k} {v}" for k, v in doc["op_histogram"].items())]
    if doc["weights"] == "random":
        lines.append(f"  weights: {RANDOM_WEIGHTS_LINE}")
    lines += _numerics_lines(doc)
    lines += _gate_lines(doc)
    lines += _firmware_lines(doc, result.out)
    if doc["warnings"]:  # each was printed once when it arose
        lines.append(f"  {len(doc['warnings'])} warning(s) above, also in export.json")
    return "\n".join(lines)


def _numerics_lines(doc: dict) -> list[str]:
    int8_checks = doc["checks"].get("int8 checks", {})
    lines = []
    if "top1_agreement" in int8_checks:
        lines.append(f"  int8 vs fp32 TFLite on {int8_checks['images']} calibration images: top-1 "
                     f"agreement {int8_checks['top1_agreement']:.1%}, output SQNR "
                     f"{db_text(int8_checks['sqnr_db'])} dB"
                     + (" (random weights: not meaningful, see above)"
                        if doc["weights"] == "random" else ""))
    if doc.get("evaluation"):
        lines.append("  top-1 on " + doc["evaluation"]["data"]["spec"] + ": " + ", ".join(
            f"{k} {v:.2%}" for k, v in doc["evaluation"]["top1"].items()))
        tflm = doc["evaluation"].get("tflm")
        if tflm:
            lines.append(f"  TFLite Micro int8 top-1 on the first {tflm['images']} of them: "
                         f"{tflm['top1_tflm_int8']:.2%} (LiteRT int8 with its default optimised "
                         f"kernels: {tflm['top1_litert_int8']:.2%}; TFLM's outputs equal LiteRT's "
                         "reference kernels "
                         + ("bit for bit)" if _bit_exact(doc) else "— see firmware.bit_exact)"))
    return lines


def _bit_exact(doc: dict) -> bool:
    return bool(((doc.get("firmware") or {}).get("bit_exact") or {}).get("equal"))


def _firmware_lines(doc: dict, out: Path) -> list[str]:
    """The answer most users came for: the TFLM arena, the bundle's kTensorArenaSize and the
    board verdict."""
    firmware = doc.get("firmware") or {}
    if "arena" not in firmware:
        return [f"  firmware: {firmware.get('status', 'not run')}"]
    arena, measured = firmware["arena"], firmware.get("measured") or {}
    lines = [f"  TFLite Micro arena: {arena['total']:,} B predicted (activations "
             f"{arena['head']:,} + persistent {arena['tail']:,})"
             + (f", {measured['total']:,} B measured in the real interpreter"
                if measured.get("total") else "")]
    lines += _optimization_lines(firmware.get("optimization"))
    lines += compaction_lines(_compaction(firmware), indent="  ")
    size = _arena_size_constant(out / "firmware" / "arena_size.h")
    if size:
        lines.append(f"  C bundle: {out}/firmware/ with kTensorArenaSize = {size}")
    for problem in firmware.get("errors") or []:
        lines.append(f"  TFLite Micro problem: {problem}")
    for run in (firmware.get("emulation") or {}).values():
        lines += emulation_lines(EmulationSummary.from_record(run), indent="  ")
    for record in verdict_records(firmware):
        lines += [f"  {line}" for line in verdict_lines(Verdict.from_record(record), "tinyexport")]
    return lines


def _compaction(firmware: dict) -> Compaction | None:
    """export.json's compaction record read back, to be rendered."""
    record = firmware.get("compaction")
    return Compaction.from_record(record) if record else None


def _optimization_lines(record: dict | None) -> list[str]:
    if not record:
        return []
    result = OptimizeResult.from_record(record)
    if result.steps is None:  # TFLM could not run the model: nothing was tried
        return [f"  memory optimiser: {result.reason}"]
    steps = "; ".join(f"{s.name} " + (f"-{s.saved:,} B" if s.applied else "not applied")
                      for s in result.steps)
    verdict = ("applied, TFLM confirms identical outputs on "
               f"{result.verification.inputs} inputs" if result.applied
               else result.reason or "not applied")
    return [f"  memory optimiser: {steps} — {verdict}"]


def _arena_size_constant(header: Path) -> int | None:
    match = re.search(r"kTensorArenaSize = (\d+)", header.read_text()) if header.is_file() else None
    return int(match.group(1)) if match else None


def _gate_lines(doc: dict) -> list[str]:
    gate = doc.get("gate") or {}
    if not gate:
        return []
    word = {True: "passed", False: "FAILED"}[gate["passed"]] if gate["basis"] != "not applied" \
        else "not applied"
    lines = [f"  int8 gate ({gate['basis']}): {word} — {gate['reason']}"]
    if gate["passed"] is False and doc.get("quant_report"):
        worst = doc["quant_report"][:3]
        lines.append("  layers losing most precision: " + ", ".join(
            f"{printable(r.get('module') or r['tensor'])} ({db_text(r['sqnr_db'])} dB)"
            for r in worst))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (C++ log noise)
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def body() -> int:
        # With --json, stdout holds the JSON document alone: progress and summary go to stderr.
        human = sys.stderr if args.json else sys.stdout
        result = export(_config(args), progress=lambda line: print(line, file=sys.stderr))
        print(_summary(result), file=human)
        if args.quant_report:
            print(render_layer_table(layer_rows(result.provenance)), file=human)
        if args.json:
            print(json.dumps(result.provenance, indent=2))
        gate = result.provenance.get("gate") or {}
        if gate.get("passed") is False:
            print(f"error: the int8 model failed the gate: {gate['reason']}; everything is "
                  f"written to {result.out}/ for inspection (report.md lists the layers that "
                  "lose precision)", file=sys.stderr)
            return EXIT_FAILURE
        firmware = result.provenance.get("firmware") or {}
        try:  # a board verdict is void when TFLM does not compute what LiteRT does
            check_consistent(bit_exact=firmware.get("bit_exact"))
        except UserError as exc:
            print(f"error: {printable(exc, 2000)}; everything is written to {result.out}/ for "
                  "inspection", file=sys.stderr)
            return EXIT_FAILURE
        return fit_exit_code(verdict_records(firmware))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())

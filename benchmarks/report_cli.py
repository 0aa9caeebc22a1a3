"""``tinyreport``: params, MACs, peak activation and flash of a model vs board budgets.

    tinyreport --model NAME [--resolution R] [--num-classes N] [--board B] [--json] [--plot F.png]
    tinyreport --model NAME --train-memory [--batch-size 8] [--resolution R] [--num-classes N]
    tinyreport FILE.tflite [--board B] [--measure [--images F.npz]] [--json] [--plot F.png]
    tinyreport FILE.tflite --optimize [--board B] [--out OPTIMISED.tflite] [--json]
    tinyreport --zoo --board B [--json]

The model report uses the analytic MCUNet conventions (``tinyexport.train.models.profile``); a
``.tflite`` file gets the TFLite Micro arena analysis of ``tinyexport.firmware_eval``; the training
memory of the six TinyTL methods comes from ``tinyexport.train.tinytl``.
"""

from __future__ import annotations

import argparse
import json
import sys

from tinyexport.benchmarks.zoo_fit import ZooTable, analytic_graph, zoo_table
from tinyexport.boards import BOARDS, Board, Verdict
from tinyexport.errors import EXIT_DOES_NOT_FIT, UserError, run_cli
from tinyexport.firmware_eval.emulate import CORES, emulation_problem
from tinyexport.firmware_eval.model_flash import predict_model_flash
from tinyexport.firmware_eval.optimize import OptimizeOptions
from tinyexport.firmware_eval.optimize_report import run_optimize_report
from tinyexport.firmware_eval.report import (
    PlotSummary,
    draw_board_lines,
    finish_plot,
    run_tflite_report,
)
from tinyexport.firmware_eval.verdicts import (
    RUNTIME_BASIS,
    add_budget_flags,
    board_core,
    board_verdicts,
    fit_exit_code,
    fits_word,
    resolve_boards,
    runtime_estimate,
    verdict_lines,
)
from tinyexport.json_record import to_record
from tinyexport.log import setup_logging
from tinyexport.train.models import MODELS, check_bounds
from tinyexport.train.models.profile import profile_record, profile_zoo_model
from tinyexport.train.pretrained import describe, release_for
from tinyexport.train.tinytl.report import render as render_train_memory
from tinyexport.train.tinytl.report import train_memory_record, train_memory_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyreport",
        description="MAC / memory report of a zoo model or an int8 .tflite file against MCU budgets.")
    parser.add_argument("target", nargs="?", help="a .tflite file to analyse (instead of --model)")
    parser.add_argument("--model", help="registered model name (e.g. mcunet, mbv2-tiny)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input resolution (default: the model's native one)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    parser.add_argument("--board", action="append", default=None,
                        help="board profile for a fits / does-not-fit verdict (repeatable; "
                             "'all' for every built-in board; or a board FILE.yaml with SRAM, "
                             "flash and the application's reserve). A DOES NOT FIT verdict "
                             f"exits {EXIT_DOES_NOT_FIT}")
    add_budget_flags(parser)
    parser.add_argument("--boards", action="store_true",
                        help="list the board profiles (SRAM, flash, core) and exit")
    parser.add_argument("--pretrained", nargs="?", const="default",
                        choices=("default", "mcunet-zoo", "netaug"),
                        help="(--model) also say which released ImageNet weights exist for it, "
                             "their published top-1 and whether they are in the cache")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--plot", metavar="FILE.png", help="write a per-layer memory plot")
    parser.add_argument("--measure", action="store_true",
                        help="(.tflite) also run the real TFLite Micro interpreter and measure; "
                             "(--train-memory) add the measured column (one real Adam step)")
    parser.add_argument("--images", metavar="FILE.npz",
                        help="(.tflite --measure) NHWC images TFLM runs, .npy or .npz with "
                             "'images' and optional 'labels' (then TFLM top-1 is reported); int8 "
                             "as they are, float quantized with the model's input scale")
    parser.add_argument("--optimize", action="store_true",
                        help="(.tflite) the memory optimiser: operator order, offline plan and, "
                             "with --board when the model does not fit it, patch-based inference; "
                             "verified bit for bit in TFLite Micro; --out writes the result")
    parser.add_argument("--patch", choices=("auto", "on", "off"),
                        help="(.tflite) patch-based inference: on = search and apply the best "
                             "plan; auto = only if the model does not fit --board (implies "
                             "--optimize)")
    parser.add_argument("--patch-max-mac-overhead", type=float, default=30.0, metavar="PERCENT",
                        help="(--patch) most extra MACs a plan may cost (30)")
    parser.add_argument("--out", metavar="OPTIMISED.tflite",
                        help="(--optimize / --patch) write the verified optimised model there")
    parser.add_argument("--emulate", action="append", nargs="?", const="board",
                        metavar="CORE",
                        help="build the model with TFLM + CMSIS-NN for cortex-m4 / cortex-m7 and "
                             "run it in QEMU: measured flash, SRAM, instructions, outputs vs the "
                             "host; without CORE, each --board's core (repeatable)")
    parser.add_argument("--zoo", action="store_true",
                        help="every MCU zoo model against each --board: arena after the "
                             "optimiser, flash after compaction, latency where calibrated, "
                             "published ImageNet top-1, fits or not (seconds, no export; "
                             "informational: exits 0 whatever the verdicts)")
    parser.add_argument("--train-memory", action="store_true",
                        help="training memory of the six TinyTL methods (analytic + measured)")
    parser.add_argument("--batch-size", type=int, default=8, help="(--train-memory) batch size")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


# What the analytic --model verdict leaves out (measured on the zoo exports: mcunet-in3's analytic
# peak is 340,736 B, its TFLM arena 484,352 B = head 397,920 incl. an explicit PAD buffer + tail
# 86,432; docs/guide/firmware.md, results).
ANALYTIC_VERDICT_NOTE = (
    "SRAM here is the analytic activation peak only; TFLite Micro's arena also holds "
    "the persistent per-op data (the tail, ~15-25 % more on the zoo models), the explicit PAD "
    "buffers the converter adds before stride-2 convs, and 16-byte alignment (mcunet-in3: 340,736 "
    "B analytic vs 484,352 B in TFLM). Flash is the predicted model the export's firmware links "
    "(TFLM-compacted: weights, biases, per-channel scales, flatbuffer overhead) + the TFLM runtime "
    "code estimate, as for the exported file. For the real figures export the model and run "
    "`tinyreport FILE.tflite --board B`")


def model_report(args: argparse.Namespace, boards: list[Board]) -> dict:
    """Profile the model and attach board verdicts (analytic peak activation; the predicted model
    file + runtime estimate)."""
    prof = profile_zoo_model(args.model, resolution=args.resolution, num_classes=args.num_classes)
    graph = analytic_graph(prof)
    report = profile_record(prof)
    report["model_file_bytes"] = to_record(predict_model_flash(graph))
    report["runtime_code_bytes"] = {"value": runtime_estimate(graph), "basis": RUNTIME_BASIS}
    report["boards"] = [to_record(v) for v in board_verdicts(graph, boards)]
    report["conventions"] = (
        "params include BN; MACs = conv+linear with BN folded (classifier included); peak "
        "activation = MCUNet 'Act' (layer in+out, block input held at residual depthwise, "
        "input image counted, int8); weight_bytes_int8 = int8 weights + int32 bias per channel; "
        "model_file_bytes = the predicted full-int8 .tflite of tinyexport (per-channel)")
    if report["boards"]:
        report["boards_note"] = ANALYTIC_VERDICT_NOTE
    if args.pretrained:
        source = None if args.pretrained == "default" else args.pretrained
        report["released_weights"] = describe(release_for(args.model, source))
    return report


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def render_model_report(report: dict) -> str:
    lines = [
        f"model {report['model']} @ {report['resolution']}px, {report['num_classes']} classes",
        f"  params               {report['params']:>14,}",
        f"  MACs                 {report['macs']:>14,}",
        f"  peak activation      {report['peak_activation_bytes']:>14,} B  "
        f"({_kib(report['peak_activation_bytes'])}, int8)  at {report['bottleneck']}",
        f"  int8 weight bytes    {report['weight_bytes_int8']:>14,} B  "
        f"({_kib(report['weight_bytes_int8'])})",
        _model_file_line(report["model_file_bytes"]),
        f"  runtime code (est.) {report['runtime_code_bytes']['value']:>14,} B  (TFLM + kernels + C library)",
        "",
        f"{'layer':<34} {'op':<7} {'input':>14} -> {'output':<14} {'MACs':>12} {'act B':>9}",
    ]
    for layer in report["layers"]:
        shape_in = "x".join(map(str, layer["input_shape"]))
        shape_out = "x".join(map(str, layer["output_shape"]))
        mark = " *" if layer["name"] == report["bottleneck"] else ""
        lines.append(f"{layer['name']:<34} {layer['op']:<7} {shape_in:>14} -> {shape_out:<14} "
                     f"{layer['macs']:>12,} {layer['activation_bytes']:>9,}{mark}")
    lines += render_verdicts(report.get("boards", []), "peak activation",
                             "predicted model file + runtime code")
    if report.get("boards"):
        lines.append(f"  note: {ANALYTIC_VERDICT_NOTE}")
    released = report.get("released_weights")
    if released:
        lines += ["", f"released weights: {released['source']}, published top-1 "
                      f"{released['published_top1']}, {released['url']}",
                  f"  cache: {released['cache_path']} "
                  f"({'present' if released['cached'] else 'not downloaded; tinyexport --pretrained fetches it'})"]
    return "\n".join(lines)


def _model_file_line(parts: dict) -> str:
    return (f"  model file (pred.)   {parts['total']:>14,} B  ({_kib(parts['total'])}: weights "
            f"{parts['weights']:,} + biases {parts['biases']:,} + quantization "
            f"{parts['quantization']:,} + overhead {parts['overhead']:,})")


def render_verdicts(verdicts: list[dict], sram_what: str, flash_what: str) -> list[str]:
    if not verdicts:
        return []
    lines = ["", f"board verdicts ({sram_what} vs SRAM, {flash_what} vs flash):"]
    for v in verdicts:
        lines += [f"  {line}" for line in verdict_lines(Verdict.from_record(v), "tinyreport-model")]
    return lines


def plot_model_report(report: dict, path: str) -> PlotSummary:
    """Per-layer activation bytes as bars (the bottleneck red and annotated), with each requested
    board's SRAM as a line named in the legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    values = [layer["activation_bytes"] / 1024 for layer in layers]
    fig, ax = plt.subplots(figsize=(max(8, len(values) * 0.18), 4.5))
    colors = ["tab:red" if layer["name"] == report["bottleneck"] else "tab:blue"
              for layer in layers]
    ax.bar(range(len(values)), values, color=colors, label="activation (layer in + out)")
    peak = next((k for k, layer in enumerate(layers) if layer["name"] == report["bottleneck"]), 0)
    peak_bytes = int(report["peak_activation_bytes"])
    ax.annotate(f"peak {report['bottleneck']}\n{peak_bytes:,} B", (peak, peak_bytes / 1024),
                xytext=(0, 12), textcoords="offset points", ha="center", fontsize=8,
                arrowprops={"arrowstyle": "->"})
    lines = draw_board_lines(ax, report.get("boards", []))
    ax.set_ylim(0, max([peak_bytes] + [b for _, b in lines]) / 1024 * 1.15)
    ax.set_xlabel("layer (conv / linear, in execution order)")
    ax.set_ylabel("activation memory (KiB, int8)")
    ax.set_title(f"{report['model']} @ {report['resolution']}px: peak "
                 f"{peak_bytes / 1024:.1f} KiB at {report['bottleneck']}")
    finish_plot(fig, ax, path)
    return PlotSummary(path, report["bottleneck"], peak_bytes, lines)


MAX_BATCH = 4096  # --train-memory --measure runs one real step at this batch


def _validate(args: argparse.Namespace) -> list[Board]:
    """Every request checked before any work; returns the --board profiles (the one place the
    board registry is asked)."""
    if args.zoo and (args.target or args.model):
        raise UserError("--zoo reports every zoo model: drop the FILE.tflite / --model")
    if args.zoo and not (args.board or args.sram or args.flash):
        raise UserError("--zoo needs --board B (or --sram / --flash budgets) to judge the models "
                        "against")
    if args.target and args.model:
        raise UserError("give either a .tflite file or --model, not both")
    if not args.target and not args.model and not args.zoo:
        raise UserError("nothing to report: pass --model NAME, a FILE.tflite or --zoo --board B")
    if (args.optimize or args.patch) and not args.target:
        raise UserError("--optimize / --patch rewrite an int8 FILE.tflite (for a zoo model, "
                        "export it first)")
    if args.out and not (args.optimize or args.patch):
        raise UserError("--out writes the optimised model: add --optimize or --patch")
    if args.out and not args.out.lower().endswith(".tflite"):
        raise UserError(f"--out must name a .tflite file, got {args.out!r}")
    if args.pretrained and not args.model:
        raise UserError("--pretrained is for --model NAME reports")
    if args.train_memory and not args.model:
        raise UserError("--train-memory needs --model NAME (it profiles a zoo model's training)")
    if args.model:
        MODELS.canonical(args.model)
    check_bounds(resolution=args.resolution, num_classes=args.num_classes)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be in 1..{MAX_BATCH}, got {args.batch_size}; "
                        "the TinyTL table compares methods at a microcontroller's batch (8)")
    if args.images and not args.target:
        raise UserError("--images is for a .tflite target with --measure (TFLM runs them); "
                        "drop it for --model reports")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot writes a PNG; give a FILE.png, got {args.plot!r}")
    boards = resolve_boards(args.board, args.sram, args.flash)
    if args.emulate:
        emulated_cores(args, boards)
    return boards


def emulated_cores(args: argparse.Namespace, boards: list[Board]) -> list[str]:
    """The cores ``--emulate`` asks for (each --board's core for a bare ``--emulate``).

    Raises:
        UserError: no .tflite target, an unknown core, a board without an emulated core, or the
            tools / sources missing (checked before any work).
    """
    if not args.emulate:
        return []
    if not args.target or args.optimize or args.patch:
        raise UserError("--emulate runs an int8 FILE.tflite (export a zoo model first; for an "
                        "optimised model, write it with --out and report that file)")
    cores: list[str] = []
    for request in args.emulate:
        if request == "board":
            if not args.board:
                raise UserError("--emulate without a CORE runs each --board's core: add --board "
                                f"or name a core ({', '.join(CORES)})")
            for board in boards:
                core = board_core(board)
                if core is None:
                    raise UserError(f"--emulate: {board.name} ({board.core}) has no "
                                    f"emulated core; emulation covers {', '.join(CORES)}")
                cores.append(core)
        elif request in CORES:
            cores.append(request)
        else:
            raise UserError(f"--emulate {request!r}: the emulated cores are {', '.join(CORES)}")
    problem = emulation_problem()
    if problem:
        raise UserError(f"--emulate: {problem}")
    return list(dict.fromkeys(cores))


def render_zoo_table(table: ZooTable) -> str:
    """The ``--zoo`` table of one board: one row per model, then what each column is based on."""
    rows = table.rows
    v0 = rows[0].verdict
    lines = [f"zoo on {table.board} ({table.core}): SRAM budget {v0.sram_budget:,} B, flash "
             f"budget {v0.flash_budget:,} B",
             f"{'model':<19} {'res':>4} {'MACs':>7} {'arena B':>9} {'flash B':>10} "
             f"{'latency':>9}  {'top-1 (published)':<26} {'verdict':<29} optimiser"]
    for r in rows:
        latency = f"{r.latency_ms:,} ms" if r.latency_ms is not None else "n/c"
        lines.append(f"{r.model:<19} {r.resolution:>4} {r.macs / 1e6:>6.1f}M "
                     f"{r.arena_bytes:>9,} {r.flash_bytes:>10,} {latency:>9}  "
                     f"{', '.join(r.top1) or '-':<26} {fits_word(r.verdict):<29} "
                     + (f"patched, +{r.mac_overhead_percent:.1f} % MACs"
                        if r.optimiser.startswith("patched") else r.optimiser))
    bases = dict.fromkeys(r.arena_basis for r in rows)
    lines += [f"  {r.model}: {r.optimiser}" for r in rows if r.optimiser.startswith("patched")]
    lines += ["", "arena: the TFLM arena after the optimiser, " + "; ".join(bases)
              + f" ({table.sources[0]}: native resolution, random weights; the Cortex-M arena is "
              "a few % smaller, the firmware's stack and statics add ~4 KB)",
              f"flash: {rows[0].flash_basis.replace('predicted: ', '')}, predicted, not measured "
              "(TFLM-compacted model as `tinyexport --board` links it; measure with --emulate)",
              "latency: " + ("estimate from QEMU Cortex-M7 instruction counts "
                             f"({table.sources[1]}) x extra MACs x 0.80 cycles per instruction; "
                             "n/c: core not calibrated" if any(r.latency_ms for r in rows)
                             else "n/c: this board's core is not calibrated (Cortex-M7 only)"),
              "top-1: published fp32 ImageNet top-1 of the released weights at the native "
              "resolution (zoo: the MCUNet model zoo's, netaug: NetAug's); an export has random "
              "weights unless --pretrained, and is int8",
              "verdicts are informational: --zoo exits 0 (--model M --board B exits 3 when M does "
              "not fit)"]
    return "\n".join(lines)


def board_table() -> list[dict]:
    """Every board profile as a plain row (``tinyreport --boards``)."""
    return [{"board": b.name, "aliases": list(BOARDS.aliases_of(b.name)), "mcu": b.mcu,
             "core": b.core, "sram_bytes": b.sram_bytes, "flash_bytes": b.flash_bytes,
             "source": b.source} for b in (BOARDS.get(name) for name in BOARDS.names())]


def render_board_table(rows: list[dict]) -> str:
    lines = [f"{'board':<14} {'SRAM':>9} {'flash':>9}  {'core':<26} aliases"]
    lines += [f"{r['board']:<14} {r['sram_bytes'] // 1024:>6} KB {r['flash_bytes'] // 1024:>6} KB  "
              f"{r['core']:<26} {', '.join(r['aliases'])}" for r in rows]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.boards:
        rows = board_table()
        print(json.dumps(rows, indent=2) if args.json else render_board_table(rows))
        return 0
    boards = _validate(args)
    if args.zoo:
        tables = [zoo_table(board, args.resolution, args.num_classes) for board in boards]
        print(json.dumps([to_record(t) for t in tables], indent=2) if args.json
              else "\n\n".join(render_zoo_table(t) for t in tables))
        return 0  # informational: a verdict per model, not a gate (docstring of zoo_fit)
    if args.target:
        if not args.target.lower().endswith(".tflite"):
            raise UserError(f"{args.target!r} is not a .tflite file; for a zoo model use --model")
        if args.optimize or args.patch:
            options = OptimizeOptions(patch=args.patch or "auto",
                                      max_mac_overhead=args.patch_max_mac_overhead / 100.0)
            return run_optimize_report(args.target, options, boards, args.out,
                                       args.plot, args.json)
        return run_tflite_report(args.target, boards=boards, run_tflm=args.measure,
                                 images_path=args.images, plot_path=args.plot,
                                 as_json=args.json, emulate=emulated_cores(args, boards))
    if args.train_memory:
        table = train_memory_table(args.model, args.resolution, args.num_classes, args.batch_size,
                                   args.measure)
        print(json.dumps(train_memory_record(table), indent=2) if args.json else render_train_memory(table))
        return 0
    report = model_report(args, boards)
    if args.plot:
        plot_model_report(report, args.plot)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_model_report(report))
    return fit_exit_code(report["boards"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a model fit a board? SRAM = the predicted TFLM arena with the board's CMSIS-NN scratch;
flash = the model file + an estimate of the runtime code (TFLM, kernels, C library; the one
place it is estimated).
Where the model ran in emulation on the board's core (:mod:`tinyexport.firmware_eval.emulate`),
the measured flash and SRAM replace both. Before export (``tinyreport --model``) the graph is an
:class:`AnalyticGraph`: SRAM = the analytic activation peak, flash = the predicted model file
(:mod:`tinyexport.firmware_eval.model_flash`) + the same runtime estimate. Budgets are the
board's regions minus its application reserve (a board file, ``--sram`` / ``--flash``:
:func:`resolve_boards`); a DOES NOT FIT verdict names its reason and makes the CLIs exit 3
(:func:`fit_exit_code`).

:func:`board_verdict` is the one place a verdict is built (predicted, or measured when the board's
core was emulated) and :func:`verdict_lines` the one place it is rendered, for ``tinyexport``,
``tinyreport`` and ``report.md``. Boards arrive resolved (:class:`tinyexport.boards.Board`): the
registry is asked once, where a name comes in (:func:`resolve_boards`, ``ExportConfig``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tinyexport.boards import (
    BOARDS,
    Board,
    Needs,
    Verdict,
    custom_board,
    is_board_file,
    parse_size,
    read_board_file,
    verdict,
    with_budgets,
)
from tinyexport.errors import EXIT_DOES_NOT_FIT, UserError
from tinyexport.firmware_eval.arena import predict
from tinyexport.firmware_eval.emulation_summary import EmulationSummary
from tinyexport.firmware_eval.model_flash import AnalyticGraph, predict_model_flash
from tinyexport.tflite_graph.compact import UNREADABLE_FLATBUFFER, compact_for_tflm
from tinyexport.tflite_graph.reader import Graph

__all__ = ["RUNTIME_FRAMEWORK_BYTES", "RUNTIME_LIBC_BYTES",
           "RUNTIME_HEAVY_OP_BYTES", "RUNTIME_PER_OP_BYTES", "HEAVY_OPS", "RUNTIME_BASIS",
           "runtime_estimate", "resolve_boards", "fit_exit_code", "add_budget_flags",
           "ANALYTIC_COMPACTION", "firmware_graph", "predicted_verdict", "board_verdict",
           "board_verdicts", "measured_verdict", "board_core", "board_clock_hz",
           "CYCLES_PER_INSTRUCTION", "LATENCY_BASIS", "latency_ms", "latency_text", "budget_line",
           "fits_word",
           "VERDICT_LAYOUTS", "verdict_lines", "check_consistent"]

# Runtime code estimate, calibrated on the product image measured in QEMU (what a board flashes:
# int8-only kernel registrations, newlib-nano, no semihosting, a minimal main; firmware_eval/
# emulate.py; benchmarks/results/emulated_compaction_results.md, 2026-12-07: TFLM 90b983c2 +
# CMSIS-NN 4ab83cc3, -Os, Cortex-M7; mcunet-in3 patched on the M7 and mbv2-tiny patched on the M4
# from the README's --emulate runs). Measured: TFLM framework 19.3-20.6 KB, C runtime + main
# 13.5-16.8 KB; everything but the model 43.6 KB (FULLY_CONNECTED alone), 62.4-68.6 KB (two heavy
# op types and two others: micro_speech, the LSTM test model), 66.7 KB (the zoo's conv / depthwise
# / add / pad / mean / reshape), 76.3 KB (patched: + strided slice, concatenation), 76.6 KB (keras
# test model, 9 op types). Each part is rounded up so that no measured product image is above the
# estimate (margins 1.4-17.4 KB). The run image the emulator measures adds ~305 KB of test harness
# (semihosting, full newlib, printf, test inputs), which a board never flashes.
RUNTIME_FRAMEWORK_BYTES = 21_000
RUNTIME_LIBC_BYTES = 16_000
RUNTIME_HEAVY_OP_BYTES = 14_000
RUNTIME_PER_OP_BYTES = 2_500
HEAVY_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                       "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "BATCH_MATMUL"})
RUNTIME_BASIS = ("estimate: 21,000 B TFLM framework + 16,000 B C runtime (newlib-nano) + 14,000 B "
                 "per conv / depthwise / FC / LSTM op type + 2,500 B per other op type, "
                 "calibrated on product images measured in QEMU (CMSIS-NN, int8 kernels, -Os); "
                 "--emulate measures it")


def runtime_estimate(graph: Graph | AnalyticGraph) -> int:
    """Estimated TFLM runtime code bytes of the product image (framework, C runtime and the
    kernels of the model's op types)."""
    kernels = sum(RUNTIME_HEAVY_OP_BYTES if op in HEAVY_OPS else RUNTIME_PER_OP_BYTES
                  for op in graph.opcodes)
    return RUNTIME_FRAMEWORK_BYTES + RUNTIME_LIBC_BYTES + kernels


def resolve_boards(requested: str | Sequence[str] | None, sram: str | int | None = None,
                   flash: str | int | None = None) -> list[Board]:
    """The board profiles of a request: none, names, ``all`` (every built-in board) or board
    files (``.yaml``, :func:`tinyexport.boards.read_board_file`), with the ``--sram`` /
    ``--flash`` budgets in place of their regions; bare budgets make one ``custom`` board.

    Raises:
        UserError: an unknown board (with the known names and close matches), a bad board file.
    """
    sram, flash = (_budget(value, flag) for value, flag in ((sram, "--sram"), (flash, "--flash")))
    names = [requested] if isinstance(requested, str) else list(requested or ())
    if any(n.lower() == "all" for n in names):
        names = [n for n in names if is_board_file(n)] + BOARDS.names()
    boards = [board for n in names
              for board in ([b for b, _ in read_board_file(n)] if is_board_file(n)
                            else [BOARDS.get(n)])]
    if not boards:
        return [custom_board(sram, flash)] if sram or flash else []
    return list({b.name: with_budgets(b, sram, flash) for b in boards}.values())


def add_budget_flags(parser) -> None:
    """``--sram`` / ``--flash``: the user's budgets, for every verdict (``tinyexport``,
    ``tinyreport``)."""
    for what, example in (("sram", "256KiB"), ("flash", "1MiB")):
        parser.add_argument(f"--{what}", metavar="SIZE",
                            help=f"{what} budget for the model (bytes or e.g. {example}): replaces "
                                 f"each --board's {what} region; without --board, the verdict is "
                                 "for a 'custom' board with these budgets")


def _budget(value: str | int | None, flag: str) -> int | None:
    size = None if value is None else parse_size(value, flag)
    if size is not None and size <= 0:
        raise UserError(f"{flag} must be a positive size, got {value!r}")
    return size


def fit_exit_code(verdicts: Sequence[Verdict | Mapping]) -> int:
    """The exit code of a run with board verdicts (objects or their records):
    :data:`tinyexport.errors.EXIT_DOES_NOT_FIT` when a requested board's verdict is DOES NOT
    FIT, else 0."""
    fits = [v["fits"] if isinstance(v, Mapping) else v.fits for v in verdicts]
    return EXIT_DOES_NOT_FIT if not all(fits) else 0


def predicted_verdict(graph: Graph | AnalyticGraph, board: Board) -> Verdict:
    """SRAM = predicted arena with the board's CMSIS-NN scratch, flash = model file + runtime
    estimate. For an :class:`AnalyticGraph` (a zoo model before export): SRAM = the analytic
    activation peak, flash = the predicted model file (:func:`predict_model_flash`) + the same
    runtime estimate."""
    if isinstance(graph, AnalyticGraph):
        model_bytes = predict_model_flash(graph, compaction=ANALYTIC_COMPACTION).total
        return verdict(board, graph.peak_activation_bytes, model_bytes + runtime_estimate(graph),
                       isa=board.isa)
    pred = predict(graph, board.isa)
    check_consistent(pred.head, pred.lower_bound)
    sram = max(pred.total, pred.min_arena)  # TFLM cannot allocate below either
    return verdict(board, sram, graph.model_bytes + runtime_estimate(graph), isa=board.isa)


def check_consistent(head: int = 0, lower_bound: int = 0, bit_exact: Mapping | None = None
                     ) -> None:
    """No verdict from figures that contradict each other: an arena head below the live-set lower
    bound (an offline plan in the file that stacks live tensors on each other) or TFLM outputs
    that differ from LiteRT's reference kernels (``bit_exact`` of a measurement) by more than the
    1 LSB of TFLM's known FULLY_CONNECTED rounding (``--linear-head``).

    Raises:
        UserError: what contradicts what, and what to do.
    """
    if head < lower_bound:
        raise UserError(f"the model's memory plan gives an arena head of {head:,} B, below the "
                        f"live-set lower bound of {lower_bound:,} B: its offline plan "
                        "(OfflineMemoryAllocation metadata) puts tensors that are live at the same "
                        "time on top of each other, so TFLM would compute garbage and no fit "
                        "verdict holds; re-export the model or rewrite its plan (tinyreport FILE "
                        "--optimize --out NEW.tflite)")
    if bit_exact and bit_exact.get("max_abs_diff", 0) > 1:
        first = bit_exact.get("first_difference") or {}
        where = f", first at op #{first['op']} {first['opcode']}" if first else ""
        raise UserError(f"TFLite Micro's outputs differ from LiteRT's reference kernels in "
                        f"{bit_exact['mismatches']}/{bit_exact['values']} values (by up to "
                        f"{bit_exact['max_abs_diff']} LSB){where}: the "
                        "model does not compute on TFLM what its file describes, so no figure "
                        "or fit verdict holds; re-export the model")


# The model the analytic verdict predicts: the one the export's firmware links, TFLM-compacted
# (model_int8_tflm.tflite, docs/tflm_memory.md §13), as the verdicts on files count it
# (report.firmware_graph).
ANALYTIC_COMPACTION: str | None = "tflm"


def firmware_graph(data: bytes, graph: Graph) -> Graph:
    """``graph`` with the flash of the model array tinyexport's firmware links: the TFLM-compacted
    model (docs/tflm_memory.md §13; the export verifies it bit for bit), so a verdict on any file
    agrees with the export's and with ``--model``'s."""
    try:
        compacted = len(compact_for_tflm(data).data)
    except UNREADABLE_FLATBUFFER:  # a damaged file the object API cannot unpack: as it is
        return graph
    return replace(graph, model_bytes=min(compacted, graph.model_bytes))


def board_verdict(graph: Graph | AnalyticGraph, board: Board,
                  emulated: Mapping[str, EmulationSummary] | None = None) -> Verdict:
    """The final verdict for ``board``: measured where its core ran in emulation (``emulated``:
    core -> its summary, :func:`tinyexport.firmware_eval.emulate.emulate_cores`), else predicted."""
    predicted = predicted_verdict(graph, board)
    run = (emulated or {}).get(board_core(board) or "")
    return predicted if run is None else measured_verdict(predicted, board, run)


def board_verdicts(graph: Graph | AnalyticGraph, boards: Sequence[Board],
                   emulated: Mapping[str, EmulationSummary] | None = None) -> list[Verdict]:
    """:func:`board_verdict` for each board."""
    return [board_verdict(graph, board, emulated) for board in boards]


def measured_verdict(predicted: Verdict, board: Board, run: EmulationSummary) -> Verdict:
    """``predicted`` with SRAM and flash replaced by an emulation ``run`` of the board's core; the
    analytic needs stay under ``predicted``, with a latency estimate where calibrated."""
    ms = latency_ms(board, run.core, run.instructions_mean)
    return replace(verdict(board, run.sram_bytes, run.flash_bytes, isa=predicted.isa),
                   basis=f"measured: {run.core} in QEMU {run.machine}",
                   predicted=Needs(predicted.sram_needed, predicted.flash_needed),
                   latency_ms=None if ms is None else round(ms, 1),
                   latency_basis=None if ms is None else LATENCY_BASIS)


def board_core(board: Board) -> str | None:
    """The emulated core of a board (``cortex-m4`` / ``cortex-m7``), None for other cores."""
    match = re.match(r"(?:\d+x )?Cortex-(M4|M7)", board.core)
    return f"cortex-{match.group(1).lower()}" if match else None


def board_clock_hz(board: Board) -> float | None:
    """The board's core clock from its profile (``... @ 216 MHz``), None where not given."""
    match = re.search(r"@ (\d+(?:\.\d+)?) MHz", board.core)
    return float(match.group(1)) * 1e6 if match else None


# Cycles per emulated instruction on a Cortex-M7: published TFLM + CMSIS-NN latencies of five zoo
# models on an STM32H743 at 480 MHz (docs/mcunet.md §5.3) over our QEMU Cortex-M7 instruction
# counts of the same models: 0.78-0.82, leave-one-out latency error at most 3.8 %
# (benchmarks/results/emulated_results.md). No published figure calibrates the Cortex-M4.
CYCLES_PER_INSTRUCTION = {"cortex-m7": 0.80}
LATENCY_BASIS = ("instructions x 0.80 cycles each, calibrated on published STM32H743 latencies "
                 "(within 4 %); other memory systems differ")


def latency_ms(board: Board, core: str, instructions: float) -> float | None:
    """Estimated latency of one inference on ``board`` from the ``instructions`` per inference
    emulated (or estimated) on its ``core`` (None where the core is not calibrated or the board's
    clock is not known)."""
    cpi, hz = CYCLES_PER_INSTRUCTION.get(core), board_clock_hz(board)
    if cpi is None or hz is None:
        return None
    return instructions * cpi / hz * 1e3


def latency_text(v: Verdict) -> str:
    """``≈1,875 ms per inference (basis)`` for a verdict with a latency estimate, else ""."""
    if v.latency_ms is None:
        return ""
    figure = f"{v.latency_ms:,.0f}" if v.latency_ms >= 10 else f"{v.latency_ms:.2f}"
    return f"≈{figure} ms per inference ({v.latency_basis})"


def budget_line(v: Verdict, width: int = 0) -> str:
    """``SRAM needed / budget B (margin), flash needed / budget B (margin)`` (``width``
    right-aligns the byte counts for tables)."""
    return (f"SRAM {v.sram_needed:>{width},} / {v.sram_budget:>{width},} B (margin "
            f"{v.sram_margin:+,})  flash {v.flash_needed:>{width},} / "
            f"{v.flash_budget:>{width},} B (margin {v.flash_margin:+,})")


def fits_word(v: Verdict) -> str:
    """``fits``, or ``DOES NOT FIT (SRAM)`` / ``(flash)`` / ``(SRAM and flash)``: the reason
    named, so a line with both figures does not leave the user to compare margins."""
    return "fits" if v.fits else f"DOES NOT FIT ({v.short_of})"


# A predicted SRAM need is the TFLM arena (with CMSIS-NN scratch) alone; the firmware's stack,
# .data and .bss come on top (the README's model: 88,140 B predicted, 92,520 B measured in QEMU).
PREDICTED_BASIS = "predicted; SRAM = the TFLM arena only, without the firmware's stack, .data " \
                  "and .bss (--emulate measures them)"


def _export_lines(v: Verdict) -> list[str]:
    lines = [f"{v.board}: {fits_word(v)} — {budget_line(v)} ({v.basis or PREDICTED_BASIS})"]
    if v.latency_ms is not None:
        lines.append(f"{v.board} latency: {latency_text(v)}")
    return lines


def _tflite_report_lines(v: Verdict) -> list[str]:
    return [f"{v.board:14s} {fits_word(v):20s} SRAM {v.sram_needed:,}/{v.sram_budget:,} (margin "
            f"{v.sram_margin:,}), flash {v.flash_needed:,}/{v.flash_budget:,} (margin "
            f"{v.flash_margin:,}) — {v.basis or PREDICTED_BASIS}"
            + (f"; {latency_text(v)}" if v.latency_ms is not None else "")]


def _model_report_lines(v: Verdict) -> list[str]:
    return [f"{v.board:<14} {fits_word(v):<20} {budget_line(v, 9)}"]


def _optimize_report_lines(v: Verdict) -> list[str]:
    return [f"{v.board:<14} {fits_word(v):<20} {budget_line(v)}"]


def _benchmark_table_cell(v: Verdict) -> list[str]:
    return [f"{v.board} {'fits' if v.fits else 'NO'} ({v.sram_margin / 1024:+,.0f} KiB)"]


def _markdown_lines(v: Verdict) -> list[str]:
    return [f"- board {v.board}: {fits_word(v)} (SRAM margin {v.sram_margin:+,} B, flash margin "
            f"{v.flash_margin:+,} B)"]


# Each place a verdict is shown keeps the layout its users know (README, guides): ``tinyexport``'s
# summary, ``tinyreport FILE.tflite``'s table (and its ``--optimize`` SRAM lines), ``tinyreport
# --model``'s table, report.md and the benchmark tables (benchmarks/results/).
VERDICT_LAYOUTS = {"tinyexport": _export_lines, "tinyreport-tflite": _tflite_report_lines,
                   "tinyreport-optimize": _optimize_report_lines,
                   "tinyreport-model": _model_report_lines, "report.md": _markdown_lines,
                   "benchmark-table": _benchmark_table_cell}


def verdict_lines(v: Verdict, layout: str) -> list[str]:
    """The verdict as the lines of one of :data:`VERDICT_LAYOUTS`."""
    return VERDICT_LAYOUTS[layout](v)

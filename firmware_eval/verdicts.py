"""Does a model fit a board? SRAM = the predicted TFLM arena with the board's CMSIS-NN scratch;
flash = the model file + an estimate of the runtime code (TFLM, kernels, C library; the one
place it is estimated).
Where the model ran in emulation on the board's core (:mod:`tinyexport.firmware_eval.emulate`),
:func:`measured_verdicts` replaces both with what the firmware measured."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tinyexport.boards import BOARDS, verdict
from tinyexport.errors import UserError
from tinyexport.firmware_eval.arena import predict
from tinyexport.tflite_graph.reader import Graph

# Runtime code estimate, calibrated on the firmware measured in QEMU (firmware_eval/emulate.py;
# benchmarks/results/emulated_results.md: TFLM 90b983c2 + CMSIS-NN 4ab83cc3, -Os, newlib, Cortex-M4
# and M7): TFLM framework 20.6-21.9 KB, C runtime 36.4-39.5 KB, kernels 14.3 KB (FULLY_CONNECTED
# alone) to 72.6 KB (9 op types; the zoo's conv/depthwise/add/pad/reshape: 56.8 KB, with MEAN
# 61.0 KB). Each part is rounded up, the CMSIS-NN-heavy kernels (conv, depthwise, fully connected,
# LSTM...) costed apart, so that no measured firmware is above the estimate (zoo exports: 125.5 KB
# estimated, 119.6 KB measured without the emulator's driver). The old 9,732 B + 6,000 B per op
# type (docs/tflm_memory.md §10) was ~76 KB low on every zoo export.
RUNTIME_FRAMEWORK_BYTES = 22_000
RUNTIME_LIBC_BYTES = 39_500
RUNTIME_SHARED_KERNEL_BYTES = 8_000
RUNTIME_HEAVY_OP_BYTES = 18_000
RUNTIME_PER_OP_BYTES = 5_000
HEAVY_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                       "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "BATCH_MATMUL"})
RUNTIME_BASIS = ("estimate: 22,000 B TFLM framework + 39,500 B C runtime + 8,000 B shared kernel "
                 "code + 18,000 B per conv / depthwise / FC / LSTM op type + 5,000 B per other "
                 "op type, calibrated on Cortex-M firmware measured in QEMU (CMSIS-NN, -Os); "
                 "--emulate measures it")


def runtime_estimate(graph: Graph) -> int:
    """Estimated TFLM runtime code bytes (framework + kernels of the model's op types)."""
    kernels = sum(RUNTIME_HEAVY_OP_BYTES if op in HEAVY_OPS else RUNTIME_PER_OP_BYTES
                  for op in graph.opcodes)
    return (RUNTIME_FRAMEWORK_BYTES + RUNTIME_LIBC_BYTES + RUNTIME_SHARED_KERNEL_BYTES
            + kernels)


def budget_line(v: dict, width: int = 0) -> str:
    """``SRAM needed / budget B (margin), flash needed / budget B (margin)`` of a verdict dict
    (``width`` right-aligns the byte counts for tables)."""
    return (f"SRAM {v['sram_needed']:>{width},} / {v['sram_budget']:>{width},} B (margin "
            f"{v['sram_margin']:+,})  flash {v['flash_needed']:>{width},} / "
            f"{v['flash_budget']:>{width},} B (margin {v['flash_margin']:+,})")


def board_names(requested: str | Sequence[str] | None) -> list[str]:
    """Canonical board names of a request: none, one name, several, or ``all`` (every board).

    Raises:
        UserError: an unknown board (with the known names and close matches).
    """
    if not requested:
        return []
    names = [requested] if isinstance(requested, str) else list(requested)
    if any(n.lower() == "all" for n in names):
        return BOARDS.names()
    return [BOARDS.canonical(n) for n in names]


def board_isa(board: str | None) -> str | None:
    """The CMSIS-NN ISA of a board (None for no board)."""
    if board is None:
        return None
    try:
        return BOARDS.get(board).isa
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc)) from None


def board_verdicts(graph: Graph, boards: Sequence[str]) -> list[dict]:
    """Fit verdict per board: SRAM = predicted arena with that board's CMSIS-NN scratch,
    flash = model file + runtime estimate."""
    out = []
    for name in boards:
        board = BOARDS.get(name)
        pred = predict(graph, board.isa)
        sram = max(pred.total, pred.min_arena)  # TFLM cannot allocate below either
        v = verdict(board.name, sram, graph.model_bytes + runtime_estimate(graph)).as_dict()
        v["isa"] = board.isa
        out.append(v)
    return out


def board_core(board: str) -> str | None:
    """The emulated core of a board (``cortex-m4`` / ``cortex-m7``), None for other cores."""
    match = re.match(r"(?:\d+x )?Cortex-(M4|M7)", BOARDS.get(board).core)
    return f"cortex-{match.group(1).lower()}" if match else None


def board_clock_hz(board: str) -> float | None:
    """The board's core clock from its profile (``... @ 216 MHz``), None where not given."""
    match = re.search(r"@ (\d+(?:\.\d+)?) MHz", BOARDS.get(board).core)
    return float(match.group(1)) * 1e6 if match else None


# Cycles per emulated instruction on a Cortex-M7: published TFLM + CMSIS-NN latencies of five zoo
# models on an STM32H743 at 480 MHz (docs/mcunet.md §5.3) over our QEMU Cortex-M7 instruction
# counts of the same models: 0.78-0.82, leave-one-out latency error at most 3.8 %
# (benchmarks/results/emulated_results.md). No published figure calibrates the Cortex-M4.
CYCLES_PER_INSTRUCTION = {"cortex-m7": 0.80}
LATENCY_BASIS = ("instructions x 0.80 cycles each, calibrated on published STM32H743 latencies "
                 "(within 4 %); other memory systems differ")


def latency_ms(board: str, run: dict) -> float | None:
    """Estimated latency of one inference on ``board`` from an emulation ``run`` of its core
    (None where the core is not calibrated or the board's clock is not known)."""
    cpi, hz = CYCLES_PER_INSTRUCTION.get(run["core"]), board_clock_hz(board)
    if cpi is None or hz is None:
        return None
    return run["instructions_mean"] * cpi / hz * 1e3


def latency_text(v: dict) -> str:
    """``≈1,875 ms per inference (basis)`` for a verdict with a latency estimate, else ""."""
    if "latency_ms" not in v:
        return ""
    ms = v["latency_ms"]
    figure = f"{ms:,.0f}" if ms >= 10 else f"{ms:.2f}"
    return f"≈{figure} ms per inference ({v['latency_basis']})"


def measured_verdicts(predicted: Sequence[dict], emulated: dict[str, dict]) -> list[dict]:
    """``predicted`` board verdicts with SRAM and flash replaced by the emulation of the board's
    core where one ran (``emulated``: core -> ``EmulationResult.summary()``); the analytic
    figures stay under ``predicted``."""
    out = []
    for v in predicted:
        run = emulated.get(board_core(v["board"]) or "")
        if run is None:
            out.append(v)
            continue
        m = verdict(v["board"], run["sram_bytes"], run["flash_bytes"]).as_dict()
        m.update(isa=v.get("isa"), basis=f"measured: {run['core']} in QEMU {run['machine']}",
                 predicted={"sram_needed": v["sram_needed"], "flash_needed": v["flash_needed"]})
        ms = latency_ms(v["board"], run)
        if ms is not None:
            m.update(latency_ms=round(ms, 1), latency_basis=LATENCY_BASIS)
        out.append(m)
    return out

"""``tinyreport --board B --zoo``: every MCU zoo model against one board, in seconds, no export.

Per model, at its native resolution (the released ImageNet weights are at the same one:
docs/mcunet.md §2.2, docs/netaug.md), what the board would get from ``tinyexport --model M
--board B``:

* **arena after the optimiser**: TFLM's arena measured on the host (x86-64, reference kernels) on
  the zoo's own exports by ``bench_memory`` (benchmarks/results/memory_results.json): the model as
  exported with the operator order and offline plan when that fits the board's SRAM, else with the
  patch plan the optimiser applies (its extra MACs said). A resolution the benchmark did not
  export gets the analytic activation peak (MCUNet's convention), said as such;
* **flash after compaction**: the TFLM-compacted model predicted by the pinned predictor
  (:func:`tinyexport.firmware_eval.model_flash.predict_model_flash`, within 1 % of real exports),
  + the patch plan's measured growth of the file when patched, + the runtime code estimate
  (:func:`tinyexport.firmware_eval.verdicts.runtime_estimate`, + the two kernels a patch plan adds);
* **latency**, where the board's core is calibrated (Cortex-M7): the model's QEMU instruction
  count (benchmarks/results/emulated_results.json) × its extra MACs × 0.80 cycles per
  instruction at the board's clock (:func:`tinyexport.firmware_eval.verdicts.latency_ms`);
* **published ImageNet top-1** of each released checkpoint (:mod:`tinyexport.train.pretrained`);
* **the verdict** (:func:`tinyexport.boards.verdict`).

A table is informational: ``--zoo`` exits 0 whatever the verdicts (``--model M --board B`` keeps
:data:`tinyexport.errors.EXIT_DOES_NOT_FIT` for one model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tinyexport.boards import Board, Verdict, verdict
from tinyexport.firmware_eval.model_flash import AnalyticGraph, ConstLayer, predict_model_flash
from tinyexport.firmware_eval.verdicts import (
    RUNTIME_PER_OP_BYTES,
    board_core,
    latency_ms,
    runtime_estimate,
)
from tinyexport.train.models import MODELS
from tinyexport.train.models.profile import ModelProfile, profile_zoo_model
from tinyexport.train.pretrained import RELEASES

__all__ = ["ZOO", "ZooRow", "ZooTable", "zoo_table", "analytic_graph"]

RESULTS = Path(__file__).resolve().parent / "results"
# The MCU-sized zoo (bench_memory.MCU_ZOO's models), largest MCUNet last within its family.
ZOO = ("mcunet-in0", "mcunet-in1", "mcunet-in2", "mcunet-in3", "mcunet-in4", "mbv2-tiny",
       "proxyless-w0.3", "proxylessnas-w0.35")
PATCH_KERNELS = ("STRIDED_SLICE", "CONCATENATION")  # the op types a patch plan adds
ARENA_SOURCE = "benchmarks/results/memory_results.json"
LATENCY_SOURCE = "benchmarks/results/emulated_results.json"


def analytic_graph(prof: ModelProfile) -> AnalyticGraph:
    """What the exported graph of a profiled zoo model will hold: a conv per conv / linear layer
    (bias: the folded BN, or the linear's own), an ADD per residual block (the depthwise that holds
    the block input), a PAD per stride-2 conv."""
    layers = [ConstLayer(layer.op, layer.params - (channels if layer.op == "linear" else 0),
                         channels)
              for layer in prof.layers
              for channels in [layer.output_shape[-1 if layer.op == "linear" else 0]]]
    stride2 = sum(1 for layer in prof.layers
                  if len(layer.input_shape) == 3 and layer.output_shape[1] * 2 == layer.input_shape[1])
    return AnalyticGraph(tuple(layers), sum(1 for layer in prof.layers if layer.held_elements),
                         stride2, prof.peak_activation_bytes)


@dataclass(frozen=True)
class ZooRow:
    """One model at one resolution against the board."""

    model: str
    resolution: int
    resolution_note: str
    macs: int
    arena_bytes: int
    arena_basis: str          # measured (host TFLM) or analytic
    optimiser: str            # what the optimiser applies for this board
    mac_overhead_percent: float
    model_flash_bytes: int    # the TFLM-compacted model (+ a patch plan's growth)
    flash_bytes: int          # + the runtime code estimate
    flash_basis: str
    latency_ms: float | None
    top1: tuple[str, ...]     # "62.2 % zoo" (the MCUNet zoo's release), "62.7 % netaug", ...
    verdict: Verdict


@dataclass(frozen=True)
class ZooTable:
    board: str
    core: str
    rows: tuple[ZooRow, ...]
    sources: tuple[str, ...]


@lru_cache(maxsize=1)
def _measured_arenas() -> dict[str, dict[str, dict]]:
    """model -> step -> row of the memory benchmark (native resolution)."""
    path = RESULTS / "memory_results.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {m["model"]: {r["step"]: r for r in m["rows"]} for m in doc["models"]}


@lru_cache(maxsize=1)
def _instructions() -> dict[str, int]:
    """model -> Cortex-M7 instructions per inference (product profile, unpatched export)."""
    path = RESULTS / "emulated_results.json"
    if not path.is_file():
        return {}
    return {r["model"]: r["instructions"] for r in json.loads(path.read_text())["rows"]
            if r.get("core") == "cortex-m7" and r.get("profile", "product") == "product"
            and "instructions" in r}


_SOURCE_SHORT = {"mcunet-zoo": "zoo", "netaug": "netaug"}


def _published(model: str) -> tuple[str, ...]:
    return tuple(f"{r.top1} {_SOURCE_SHORT[r.source]}" for r in (RELEASES.get(n) for n in RELEASES.names())
                 if r.model == model)


def _arena(model: str, resolution: int, native: int, prof: ModelProfile, board: Board):
    """(arena, basis, optimiser, MAC overhead %, file growth) for ``board``."""
    rows = _measured_arenas().get(model) if resolution == native else None
    if not rows:
        return (prof.peak_activation_bytes, "analytic activation peak (no measured export at "
                "this resolution)", "not predicted", 0.0, 0)
    plain = min(rows[s]["measured"]["total"]
                for s in ("as exported", "operator order", "offline plan") if s in rows)
    patched = rows.get("all (as tinyexport --board applies them)")
    if plain <= board.sram_budget or patched is None or patched["measured"]["total"] >= plain:
        return plain, "measured in TFLM on the host", "as exported", 0.0, 0
    return (patched["measured"]["total"], "measured in TFLM on the host",
            f"patched ({patched['plan']})", patched["mac_overhead_pct"], patched["flash_delta"])


def zoo_row(model: str, resolution: int | None, board: Board, num_classes: int = 1000) -> ZooRow:
    """``model`` at ``resolution`` (None: native) against ``board`` (module docstring)."""
    name = MODELS.canonical(model)
    native = MODELS.get(name)().resolution
    res = resolution or native
    prof = profile_zoo_model(name, resolution=res, num_classes=num_classes)
    graph = analytic_graph(prof)
    arena, arena_basis, optimiser, overhead, growth = _arena(name, res, native, prof, board)
    model_flash = predict_model_flash(graph, compaction="tflm").total + growth
    runtime = runtime_estimate(graph) + (len(PATCH_KERNELS) * RUNTIME_PER_OP_BYTES
                                         if growth else 0)
    insns = _instructions().get(name) if res == native else None
    ms = None
    if insns is not None and board_core(board):
        ms = latency_ms(board, board_core(board), insns * (1 + overhead / 100))
    return ZooRow(
        model=name, resolution=res,
        resolution_note="native = released" if res == native else f"native {native}",
        macs=prof.macs, arena_bytes=arena, arena_basis=arena_basis, optimiser=optimiser,
        mac_overhead_percent=overhead, model_flash_bytes=model_flash,
        flash_bytes=model_flash + runtime,
        flash_basis="predicted: compacted model (pinned predictor"
                    + (" + the patch plan's measured growth" if growth else "")
                    + ") + runtime estimate",
        latency_ms=None if ms is None else round(ms),
        top1=_published(name) if res == native else (),
        verdict=verdict(board, arena, model_flash + runtime, isa=board.isa))


def zoo_table(board: Board, resolution: int | None = None, num_classes: int = 1000) -> ZooTable:
    """:func:`zoo_row` for every model of :data:`ZOO`."""
    return ZooTable(board.name, board.core,
                    tuple(zoo_row(m, resolution, board, num_classes) for m in ZOO),
                    (ARENA_SOURCE, LATENCY_SOURCE, "tinyexport.train.pretrained (published top-1)"))

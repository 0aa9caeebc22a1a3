"""``evaluate_firmware``: the firmware stage the export pipeline calls on an int8 ``.tflite``.

Validate (:mod:`tflm_readiness`), analyse the arena (:mod:`arena_analysis`), run the model in TFLM and LiteRT's
reference kernels (:mod:`tflm_measurement`), apply the memory optimiser (:mod:`optimize`: operator order,
patch-based inference, offline plan) when TFLM confirms identical outputs, write the C bundle
(:mod:`bundle`), run it on the board's core in QEMU when asked (:mod:`emulate`) and give the final
board verdict (:mod:`verdicts`). Returns a :class:`FirmwareResult`. Inputs: see :mod:`tflm_measurement`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from tinyexport.atomic import write_bytes
from tinyexport.boards import Board, Verdict
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.arena_analysis import analyse, arena_dict
from tinyexport.firmware_eval.bundle import ArenaBasis, write_bundle
from tinyexport.firmware_eval.emulate import emulate_cores
from tinyexport.firmware_eval.emulation_summary import EmulationSummary
from tinyexport.firmware_eval.optimize import OptimizeOptions, optimize
from tinyexport.firmware_eval.tflm_measurement import (
    measure,
    measure_arena_size,
    prepare_inputs,
    top1,
)
from tinyexport.firmware_eval.tflm_readiness import load, load_verified, runtime_blockers
from tinyexport.firmware_eval.verdicts import board_core, board_verdict
from tinyexport.firmware_eval.verified_rewrites import (
    Compaction,
    CompactionLevel,
    OptimizeResult,
    PlanRow,
    RewriteVerification,
)
from tinyexport.json_record import OMIT_NONE, relative_paths
from tinyexport.tflite_graph.compact import Compacted, compact_for_tflm, compact_portable

__all__ = ["verify_rewrite", "optimize_verified", "compact_verified", "seeded_baseline",
           "FirmwareResult",
           "evaluate_firmware"]


def verify_rewrite(original: Path, data: bytes, x: np.ndarray,
                   base_outputs: np.ndarray) -> RewriteVerification:
    """Run a rewrite of the model at ``original`` in TFLM (measured arena) and in LiteRT's
    reference kernels on ``x``. ``confirmed`` when, in both runtimes, every output equals the
    original model's bit for bit (``base_outputs``: the original's TFLM outputs) and nothing
    failed. (TFLM and LiteRT may differ by an LSB on some FULLY_CONNECTED outputs of a model;
    a rewrite must change neither.)"""
    with tempfile.TemporaryDirectory(dir=original.parent, prefix=".rewrite-") as work:
        candidate = Path(work) / "candidate.tflite"
        candidate.write_bytes(data)
        graph = load(candidate)
        pred = analyse(graph).prediction
        run = measure(candidate, graph, x, pred.total, pred.min_arena)
        reference_same = _same_reference(original, candidate, x)
    same = run.outputs is not None and np.array_equal(run.outputs, base_outputs)
    return RewriteVerification(
        inputs=int(len(x)), outputs_equal_to_original=bool(same),
        litert_reference_equal_to_original=reference_same,
        tflm_equals_litert_reference={} if run.bit_exact is None else run.bit_exact,
        measured=run.measured, predicted=arena_dict(pred), errors=run.errors,
        confirmed=bool(same and reference_same and not run.errors))


def _same_reference(original: Path, candidate: Path, x: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(tflm_runner.run_litert_ref(original, x),
                                   tflm_runner.run_litert_ref(candidate, x)))
    except tflm_runner.TflmFailure:
        return False


def optimize_verified(path: Path, x: np.ndarray, base_outputs: np.ndarray,
                      options: OptimizeOptions) -> OptimizeResult:
    """Optimise the model at ``path`` (:mod:`optimize`) and keep the result only if TFLM runs it
    with every output equal to the original's and LiteRT's reference kernels agree; the original
    is kept beside it as ``<name>_unoptimized.tflite``."""
    original = path.read_bytes()
    result = optimize(original, options)
    found = OptimizeResult(steps=result.steps, changed=result.changed, patch_frontier=(
        None if result.search is None else tuple(_plan_row(r) for r in result.search.frontier)))
    if not result.changed:
        return replace(found, reason="nothing lowered the arena")
    check = verify_rewrite(path, result.data, x, base_outputs)
    if not check.confirmed:
        return replace(found, verification=check, reason="TFLM did not confirm identical "
                                                         "outputs: the original model is kept")
    write_bytes(path.with_name(path.stem + "_unoptimized.tflite"), original)
    write_bytes(path, result.data)
    return replace(found, verification=check, applied=True)


COMPACTION_INPUTS = 64  # inputs each compacted model must reproduce bit for bit (as the optimiser)


def compact_verified(path: Path, x: np.ndarray, base_outputs: np.ndarray) -> Compaction:
    """Model compaction (:mod:`tinyexport.tflite_graph.compact`, docs/tflm_memory.md §13), each
    level kept only when verified: the portable removals rewrite ``path`` in place when TFLM and
    LiteRT's reference kernels both give the original outputs bit for bit; the TFLM-only ones
    are written beside it as ``<name>_tflm.tflite`` (the firmware's model array) when TFLM and
    LiteRT (on the file's LiteRT form, :func:`~tinyexport.tflite_graph.compact.litert_form`) do."""
    original = path.read_bytes()
    x, base_outputs = _with_seeded_inputs(path, x, base_outputs)
    compacted = compact_portable(original)
    portable = _verified_level(path, compacted, x, base_outputs)
    kept = compacted.data if portable.applied else original
    if kept is not original:
        write_bytes(path, kept)
    compacted = compact_for_tflm(kept)  # after a portable level that failed: every step again
    tflm = _verified_level(path, compacted, x, base_outputs)
    firmware = path.with_name(path.stem + "_tflm.tflite")
    if tflm.applied:
        write_bytes(firmware, compacted.data)
    return Compaction(bytes_before=len(original), portable=portable, tflm=tflm,
                      firmware_model=str(firmware if tflm.applied else path),
                      firmware_model_bytes=len(compacted.data if tflm.applied else kept))


def seeded_baseline(path: Path, count: int, graph=None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` seeded uniform int8 inputs of the model at ``path`` and its TFLM outputs on them:
    what a rewrite (optimiser, compaction) must reproduce bit for bit."""
    graph = graph or load(path)
    x = prepare_inputs(graph, None, count=count)
    size = measure_arena_size(graph, analyse(graph).prediction.total)
    return x, tflm_runner.run_tflm(path, x, arena_size=size).outputs


def _with_seeded_inputs(path: Path, x: np.ndarray, outputs: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``x`` topped up to :data:`COMPACTION_INPUTS` with seeded uniform int8 inputs (an export
    without evaluation data has only a few check images), with the original's TFLM outputs."""
    if len(x) >= COMPACTION_INPUTS:
        return x, outputs
    extra, more = seeded_baseline(path, COMPACTION_INPUTS - len(x))
    return np.concatenate([x, extra]), np.concatenate([outputs, more])


def _verified_level(path: Path, compacted: Compacted, x: np.ndarray,
                    base_outputs: np.ndarray) -> CompactionLevel:
    """One compaction level: bytes, steps, its verification and whether it applies (LiteRT runs
    a TFLM-only model in its LiteRT form)."""
    check = verify_rewrite(path, compacted.data, x, base_outputs)
    return CompactionLevel(bytes_after=compacted.bytes_after, steps=compacted.steps,
                           kept=compacted.kept, verification=check, applied=check.confirmed)


def _optimization(path: Path, x: np.ndarray, outputs: np.ndarray | None,
                  options: OptimizeOptions, board: Board | None,
                  can_verify: bool) -> OptimizeResult:
    if not can_verify or outputs is None:
        return OptimizeResult(reason="not applied: TFLM cannot run this model to verify")
    return optimize_verified(path, x, outputs, options.for_board(board))


def _plan_row(row) -> PlanRow:
    return PlanRow(plan=row.label, head=row.head, tail=row.tail, total=row.total,
                   min_arena=row.min_arena, macs=row.macs,
                   mac_overhead_percent=round(row.mac_overhead, 2), flash_delta=row.flash_delta)


@dataclass(frozen=True)
class FirmwareResult:
    """What the firmware stage found (export.json's ``firmware``, in this order): the model, its
    predicted arena, the TFLM run (``measured``, ``bit_exact``, ``top1``), the memory optimiser's
    record, the final board verdict, the bundle's files and the emulation runs (core -> summary)."""

    model: str
    model_bytes: int
    ops: list[str]
    arena: dict
    min_arena: int
    lower_bound: int
    linear_planner: int
    errors: list[str]
    measured: dict | None = field(default=None, metadata=OMIT_NONE)
    notes: list[str] | None = field(default=None, metadata=OMIT_NONE)
    bit_exact: dict | None = field(default=None, metadata=OMIT_NONE)
    top1: float | None = field(default=None, metadata=OMIT_NONE)
    optimization: OptimizeResult | None = field(default=None, metadata=OMIT_NONE)
    arena_before_optimization: dict | None = field(default=None, metadata=OMIT_NONE)
    compaction: Compaction | None = field(default=None, metadata=OMIT_NONE)
    board: Verdict | None = field(default=None, metadata=OMIT_NONE)  # the final verdict
    bundle: list[str] = field(default_factory=list)
    emulation: dict[str, EmulationSummary] | None = field(default=None, metadata=OMIT_NONE)

    def relative_to(self, root: Path) -> FirmwareResult:
        """This result with every path under ``root`` made relative to it."""
        moved = replace(self, **{f.name: relative_paths(getattr(self, f.name), root)
                                 for f in fields(self) if isinstance(getattr(self, f.name),
                                                                     (str, dict, list))})
        if self.compaction is None:
            return moved
        return replace(moved, compaction=self.compaction.naming(
            relative_paths(self.compaction.firmware_model, root)))


def _predicted_figures(path: Path, graph, analysis) -> dict:
    """The FirmwareResult fields of a static analysis."""
    pred = analysis.prediction
    return {"model": str(path), "model_bytes": graph.model_bytes, "ops": graph.opcodes,
            "arena": arena_dict(pred), "min_arena": pred.min_arena,
            "lower_bound": pred.lower_bound, "linear_planner": pred.linear}


def _optimized_figures(graph, analysis) -> dict:
    """The figures an applied optimisation changes, the op list included: it describes the model
    shipped (a patch plan adds STRIDED_SLICE / CONCATENATION); the linear planner's figure keeps
    describing the model as exported."""
    pred = analysis.prediction
    return {"model_bytes": graph.model_bytes, "ops": graph.opcodes, "arena": arena_dict(pred),
            "min_arena": pred.min_arena, "lower_bound": pred.lower_bound}


def _tflm_run(path: Path, graph, analysis, x: np.ndarray, labels) -> tuple[dict, np.ndarray | None]:
    """The FirmwareResult fields of a TFLM run, and its outputs (None when it did not run)."""
    run = measure(path, graph, x, analysis.prediction.total, analysis.prediction.min_arena)
    labelled = run.outputs is not None and labels is not None
    return ({"errors": run.errors, "measured": run.measured, "notes": run.notes,
             "bit_exact": run.bit_exact, "top1": top1(graph, run.outputs, labels) if labelled
             else None}, run.outputs)


def _emulated(bundle_dir: Path, board: Board, keep: Path) -> dict[str, EmulationSummary]:
    """The bundle built for ``board``'s core and run in QEMU (ELF, map and logs kept in
    ``keep/<core>``): core -> its summary."""
    runs = emulate_cores(bundle_dir, [board_core(board)], keep=keep)
    for build in keep.glob("**/obj"):  # object files: rebuildable and the bulk of the folder
        shutil.rmtree(build, ignore_errors=True)
    return runs


def evaluate_firmware(tflite_path, out_dir, *, optimize_options: OptimizeOptions | None = None,
                      board: Board | None = None, images=None, labels=None, run_tflm=True,
                      preprocessing: dict | None = None,
                      emulate_into: Path | None = None, compact: bool = False,
                      class_names: Sequence[str] | None = None) -> FirmwareResult:
    """Analyse, run in TFLM, (optionally) optimise the arena, write the bundle, (optionally) run
    it on the board's core in QEMU, give the final board verdict.

    Args:
        tflite_path: int8 ``.tflite`` model (rewritten in place when an optimisation applies;
            the original kept as ``<name>_unoptimized.tflite``).
        optimize_options: the memory optimiser's settings (None: no optimisation); its patch
            budget defaults to the board's SRAM.
        out_dir: folder for the C bundle.
        board: the board's profile, for CMSIS-NN scratch and the verdict.
        images: NHWC batch, int8 or float (see :mod:`tflm_measurement`); labels: int class ids.
        preprocessing: the export's preprocessing as a record (resize, crop, mean / std),
            written to the bundle's ``preprocess.h``.
        emulate_into: with a board, build the bundle for its core and run it in QEMU, keeping
            the builds in this folder; the verdict is then the measured one.
        class_names: the output classes' names, for the bundle's ``labels.h``.
        compact: compact the model once TFLM has run it (:func:`compact_verified`): the
            portable file replaces ``tflite_path``, the TFLM-only one goes into the bundle and
            the flash figures.
    Raises:
        UserError: unreadable, non-int8 or unsupported model; bad images.
    """
    path = Path(tflite_path)
    graph = load_verified(path)
    x = prepare_inputs(graph, images)
    isa = board.isa if board else None
    analysis = analyse(graph, isa)
    result = FirmwareResult(**_predicted_figures(path, graph, analysis),
                            errors=[f"TFLM not run: {b}" for b in runtime_blockers(graph)])
    outputs = None
    if run_tflm and not result.errors:
        run, outputs = _tflm_run(path, graph, analysis, x, labels)
        result = replace(result, **run)
    if optimize_options is not None:
        record = _optimization(path, x, outputs, optimize_options, board,
                               run_tflm and not result.errors)
        result = replace(result, optimization=record)
        if record.applied:  # the model file was rewritten: its figures change
            graph = load(path)
            analysis = analyse(graph, isa)
            result = replace(result, **_optimized_figures(graph, analysis),
                             arena_before_optimization=result.arena,
                             measured=record.verification.measured)
    firmware_path = path
    if outputs is not None and compact:
        record = compact_verified(path, x[:COMPACTION_INPUTS], outputs[:COMPACTION_INPUTS])
        result = replace(result, compaction=record, model_bytes=path.stat().st_size)
        firmware_path = Path(record.firmware_model)
        graph = load(firmware_path)  # flash: the model array the firmware links
    os.makedirs(out_dir, exist_ok=True)
    result = replace(result, bundle=_bundle(Path(out_dir), firmware_path, graph, analysis, board,
                                            preprocessing, class_names))
    if board is None:
        return result
    if emulate_into is not None:
        result = replace(result, emulation=_emulated(Path(out_dir), board, emulate_into))
    return replace(result, board=board_verdict(graph, board, result.emulation))


def _bundle(out_dir: Path, path: Path, graph, analysis, board: Board | None,
            preprocessing: dict | None, class_names: Sequence[str] | None = None) -> list[str]:
    """Write the C bundle; with a board, its arena includes the predicted CMSIS-NN scratch and
    says which reference-kernel arena it came from."""
    # The arena must also hold CommitStaticMemoryPlan's temp section (arena.planning_peak).
    pred = analysis.prediction
    basis = ArenaBasis(board.name if board else None, board.isa if board else None,
                       max(pred.total, pred.min_arena) if board else None,
                       board.core if board else None)
    return write_bundle(out_dir, path.read_bytes(), graph, analysis.arena_needed, basis,
                        preprocessing, class_names=class_names, name=path.stem)

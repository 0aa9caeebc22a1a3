"""``firmware_check``: the firmware stage the export pipeline calls on an int8 ``.tflite``.

Validate (:mod:`check`), analyse the arena (:mod:`analysis`), run the model in TFLM and LiteRT's
reference kernels (:mod:`measure`), apply the memory optimiser (:mod:`optimize`: operator order,
patch-based inference, offline plan) when TFLM confirms identical outputs, give the board
verdict (:mod:`verdicts`) and write the C bundle (:mod:`bundle`). Inputs: see :mod:`measure`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from tinyexport.atomic import write_bytes
from tinyexport.boards import BOARDS
from tinyexport.firmware_eval import tflm_runner as tr
from tinyexport.firmware_eval.analysis import analyse, arena_dict
from tinyexport.firmware_eval.bundle import ArenaBasis, write_bundle
from tinyexport.firmware_eval.check import load, load_verified, runtime_blockers
from tinyexport.firmware_eval.measure import measure, prepare_inputs, top1
from tinyexport.firmware_eval.optimize import OptimizeOptions, optimize
from tinyexport.firmware_eval.verdicts import board_isa, board_verdicts


def verify_rewrite(original: Path, data: bytes, x: np.ndarray, base_outputs: np.ndarray) -> dict:
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
    outputs = run.pop("outputs", None)
    same = outputs is not None and np.array_equal(outputs, base_outputs)
    return {"inputs": int(len(x)), "outputs_equal_to_original": bool(same),
            "litert_reference_equal_to_original": reference_same,
            "tflm_equals_litert_reference": run.get("bit_exact", {}),
            "measured": run.get("measured"), "predicted": arena_dict(pred),
            "errors": run.get("errors"),
            "confirmed": bool(same and reference_same and not run.get("errors"))}


def _same_reference(original: Path, candidate: Path, x: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(tr.run_litert_ref(original, x), tr.run_litert_ref(candidate, x)))
    except tr.TflmFailure:
        return False


def optimize_verified(path: Path, x: np.ndarray, base_outputs: np.ndarray,
                      options: OptimizeOptions) -> dict:
    """Optimise the model at ``path`` (:mod:`optimize`) and keep the result only if TFLM runs it
    with every output equal to the original's and LiteRT's reference kernels agree; the original
    is kept beside it as ``<name>_unoptimized.tflite``. Returns the record for export.json."""
    original = path.read_bytes()
    result = optimize(original, options)
    record = dict(result.as_dict(), applied=False)
    if result.search is not None:
        record["patch_frontier"] = [_plan_row(r) for r in result.search.frontier]
    if not result.changed:
        record["reason"] = "nothing lowered the arena"
        return record
    record["verification"] = verify_rewrite(path, result.data, x, base_outputs)
    if not record["verification"]["confirmed"]:
        record["reason"] = "TFLM did not confirm identical outputs: the original model is kept"
        return record
    write_bytes(path.with_name(path.stem + "_unoptimized.tflite"), original)
    write_bytes(path, result.data)
    record["applied"] = True
    return record


def _optimization(path: Path, x: np.ndarray, outputs: np.ndarray | None,
                  options: OptimizeOptions, board: str | None, can_verify: bool) -> dict:
    if not can_verify or outputs is None:
        return {"applied": False, "reason": "not applied: TFLM cannot run this model to verify"}
    if board is not None and options.budget is None:
        board_profile = BOARDS.get(board)
        options = replace(options, budget=board_profile.sram_bytes, isa=board_profile.isa,
                          flash_budget=board_profile.flash_bytes)
    return optimize_verified(path, x, outputs, options)


def _plan_row(row) -> dict:
    return {"plan": row.label, "head": row.head, "tail": row.tail, "total": row.total,
            "min_arena": row.min_arena, "macs": row.macs,
            "mac_overhead_percent": round(row.mac_overhead, 2), "flash_delta": row.flash_delta}


def firmware_check(tflite_path, out_dir, *, optimize_options: OptimizeOptions | None = None,
                   board=None, images=None, labels=None, run_tflm=True,
                   preprocessing: dict | None = None) -> dict:
    """Analyse, run in TFLM, (optionally) optimise the arena, give the verdict, write the bundle.

    Args:
        tflite_path: int8 ``.tflite`` model (rewritten in place when an optimisation applies;
            the original kept as ``<name>_unoptimized.tflite``).
        optimize_options: the memory optimiser's settings (None: no optimisation); its patch
            budget defaults to the board's SRAM.
        out_dir: folder for the C bundle.
        board: board name from ``tinyexport.boards.BOARDS`` for CMSIS-NN scratch and verdicts.
        images: NHWC batch, int8 or float (see :mod:`measure`); labels: int class ids.
        preprocessing: the export's ``Preprocessing.as_dict()``, written to the bundle's
            ``preprocess.h`` (resize, crop, mean / std).
    Returns:
        JSON-serialisable summary.
    Raises:
        UserError: unreadable, non-int8 or unsupported model; bad images.
    """
    path = Path(tflite_path)
    graph = load_verified(path)
    x = prepare_inputs(graph, images)
    isa = board_isa(board)
    ana = analyse(graph, isa)
    blockers = runtime_blockers(graph)
    summary = {"model": str(path), "model_bytes": graph.model_bytes, "ops": graph.opcodes,
               "arena": arena_dict(ana.prediction), "min_arena": ana.prediction.min_arena,
               "lower_bound": ana.prediction.lower_bound, "linear_planner": ana.prediction.linear,
               "errors": [f"TFLM not run: {b}" for b in blockers]}
    outputs = None
    if run_tflm and not summary["errors"]:
        result = measure(path, graph, x, ana.prediction.total, ana.prediction.min_arena)
        outputs = result.pop("outputs", None)
        summary.update(result)
        summary["errors"] = result["errors"]
        if outputs is not None and labels is not None:
            summary["top1"] = top1(graph, outputs, labels)
    if optimize_options is not None:
        summary["optimization"] = _optimization(path, x, outputs, optimize_options, board,
                                                run_tflm and not summary["errors"])
        if summary["optimization"]["applied"]:
            graph = load(path)
            ana = analyse(graph, isa)
            summary["arena_before_optimization"] = summary["arena"]
            summary["model_bytes"] = graph.model_bytes
            summary["arena"] = arena_dict(ana.prediction)
            summary["min_arena"] = ana.prediction.min_arena
            summary["lower_bound"] = ana.prediction.lower_bound
            summary["measured"] = summary["optimization"]["verification"]["measured"]
    if board is not None:
        summary["board"] = board_verdicts(graph, [board])[0]
    os.makedirs(out_dir, exist_ok=True)
    # The arena must also hold CommitStaticMemoryPlan's temp section (arena.planning_peak).
    basis = ArenaBasis(board, isa, max(ana.prediction.total, ana.prediction.min_arena)
                       if board is not None else None)
    summary["bundle"] = write_bundle(Path(out_dir), path.read_bytes(), graph, ana.arena_needed,
                                     basis, preprocessing)
    return summary

"""``firmware_check``: the firmware stage the export pipeline calls on an int8 ``.tflite``.

Validate (:mod:`check`), analyse the arena (:mod:`analysis`), run the model in TFLM and LiteRT's
reference kernels (:mod:`measure`), apply our offline memory plan when TFLM confirms it, give the
board verdict (:mod:`verdicts`) and write the C bundle (:mod:`bundle`). Inputs: see
:mod:`measure`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinyexport.atomic import atomic_path, write_bytes
from tinyexport.firmware_eval import tflm_runner as tr
from tinyexport.firmware_eval.analysis import analyse, arena_dict
from tinyexport.firmware_eval.bundle import ArenaBasis, write_bundle
from tinyexport.firmware_eval.check import load, load_verified, runtime_blockers
from tinyexport.firmware_eval.measure import measure, measure_arena_size, prepare_inputs, top1
from tinyexport.firmware_eval.offline_plan import OfflinePlan
from tinyexport.firmware_eval.verdicts import board_isa, board_verdicts
from tinyexport.tflite_graph.reader import Graph
from tinyexport.tflite_graph.writer import with_offline_plan


def _plan_summary(plan: OfflinePlan) -> dict:
    return {"applied": False, "ordering": plan.ordering, "predicted_head": plan.head,
            "greedy_head": plan.greedy_head, "lower_bound": plan.lower_bound,
            "optimal": plan.optimal}


def apply_offline_plan(path: Path, graph: Graph, plan: OfflinePlan, x: np.ndarray,
                       base_head: int | None, base_outputs: np.ndarray | None,
                       run_tflm: bool) -> dict:
    """Write the plan into the model (atomically) after TFLM confirms it; return a summary."""
    summary = _plan_summary(plan)
    if plan.ordering == "greedy":
        summary["reason"] = "greedy already at the best placement found"
        return summary
    data = with_offline_plan(path.read_bytes(), list(plan.tensor_offsets))
    if run_tflm:
        with atomic_path(path.with_suffix(".planned.tflite")) as tmp:
            tmp.write_bytes(data)
            run = tr.run_tflm(tmp, x, arena_size=measure_arena_size(graph, plan.head))
        summary["measured_head"] = run.head
        same = base_outputs is not None and np.array_equal(run.outputs, base_outputs)
        summary["bit_identical"] = bool(same)
        if not same or (base_head is not None and run.head >= base_head):
            summary["reason"] = "TFLM did not confirm a smaller head with identical outputs"
            return summary
    write_bytes(path, data)
    summary["applied"] = True
    return summary


def firmware_check(tflite_path, out_dir, *, offline_plan=False, board=None, images=None,
                   labels=None, run_tflm=True, preprocessing: dict | None = None) -> dict:
    """Analyse, (optionally) run in TFLM, (optionally) apply the offline plan, write the bundle.

    Args:
        tflite_path: int8 ``.tflite`` model (rewritten in place when ``offline_plan`` applies).
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
    if offline_plan and blockers:
        summary["offline_plan"] = dict(_plan_summary(ana.plan),
                                       reason="not applied: TFLM cannot run this model")
    elif offline_plan:
        head = summary.get("measured", {}).get("head")
        summary["offline_plan"] = apply_offline_plan(path, graph, ana.plan, x, head, outputs,
                                                     run_tflm)
        if summary["offline_plan"]["applied"]:
            graph = load(path)
            ana = analyse(graph, isa)
            summary["arena_before_plan"] = summary["arena"]
            summary["arena"] = arena_dict(ana.prediction)
            summary["min_arena"] = ana.prediction.min_arena
    if board is not None:
        summary["board"] = board_verdicts(graph, [board])[0]
    os.makedirs(out_dir, exist_ok=True)
    # The arena must also hold CommitStaticMemoryPlan's temp section (arena.planning_peak).
    basis = ArenaBasis(board, isa, max(ana.prediction.total, ana.prediction.min_arena)
                       if board is not None else None)
    summary["bundle"] = write_bundle(Path(out_dir), path.read_bytes(), graph, ana.arena_needed,
                                     basis, preprocessing)
    return summary

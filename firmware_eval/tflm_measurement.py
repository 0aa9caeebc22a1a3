"""Run an int8 ``.tflite`` in the real TFLite Micro interpreter and measure it: arena (head /
tail / total, smallest working ``arena_size``), bit-exactness against LiteRT's reference kernels
(and the first op where they part), top-1 against labels. Each run is a child process
(:mod:`tflm_runner`).

Inputs (``images``): an NHWC batch. ``int8`` arrays are used as they are (already quantized);
floating arrays are in the model's real input domain and are quantized here with the model's own
input scale and zero point, ``q = clip(round(x / scale) + zero_point, -128, 127)`` (docs/style.md
§13). Without images, a seeded uniform int8 batch is used (no top-1 then).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.firmware_eval import arena, planner, tflm_runner
from tinyexport.firmware_eval.tflm_readiness import runtime_blockers
from tinyexport.json_record import NOT_RECORDED, OMIT_NONE
from tinyexport.safe_io import check_finite
from tinyexport.safe_io import check_labels as safe_check_labels
from tinyexport.tflite_graph.quant import quantize_values
from tinyexport.tflite_graph.reader import Graph
from tinyexport.tflite_graph.writer import without_offline_plan

_log = logging.getLogger(__name__)
N_SYNTHETIC = 4


def prepare_inputs(graph: Graph, images: np.ndarray | None, seed: int = 0,
                   count: int = N_SYNTHETIC) -> np.ndarray:
    """An int8 batch shaped like the model input (see module docstring); without images,
    ``count`` seeded uniform ones."""
    t = graph.tensors[graph.inputs[0]]
    shape = tuple(t.shape[1:])
    if images is None:
        return np.random.default_rng(seed).integers(-128, 128, (count, *shape), np.int8)
    images = np.asarray(images)
    if images.ndim == 0 or len(images) == 0:
        raise UserError("no images given (an empty batch); pass at least one NHWC image")
    if images.shape[1:] != shape:
        raise UserError(f"images have shape {images.shape}; the model wants (N, "
                        f"{', '.join(map(str, shape))}) NHWC")
    if images.dtype == np.int8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"images dtype {images.dtype}: pass int8 (quantized) or float (real "
                        "values, quantized here with the model's input scale/zero point)")
    check_finite(images, "images")
    return quantize_values(images, t.quant.scales[0], t.quant.zero_points[0], np.int8)


def check_labels(graph: Graph, labels: np.ndarray, count: int) -> np.ndarray:
    """Labels usable for top-1: integer class ids, one per input, for a model with exactly one
    (1, C) output (a classifier). Raises UserError otherwise."""
    labels = np.asarray(labels)
    out = [graph.tensors[i].shape for i in graph.outputs]
    if len(out) != 1 or len(out[0]) != 2 or out[0][0] != 1:
        raise UserError(f"labels need a classifier with one (1, classes) output; this model's "
                        f"outputs are {[tuple(s) for s in out]} - pass images without labels")
    if labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be {count} integer class ids (one per image), got "
                        f"shape {labels.shape} dtype {labels.dtype}")
    if len(graph.inputs) > 1:
        raise UserError("labels need a single-input model: only input 0 comes from the images")
    safe_check_labels(labels, int(out[0][1]), "labels of the images file")
    return labels


def top1(graph: Graph, outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 of TFLM's outputs (one row per input) against integer labels (check_labels)."""
    labels = check_labels(graph, labels, len(outputs))
    return float(np.mean(outputs.argmax(1) == labels))


def measure_arena_size(graph: Graph, predicted: int) -> int:
    """Arena for the measuring run. The runtime's default (10x the model size, docs/tflm_memory.md
    §9.1) is too small for models with few weights and large activations, which then fail with
    "TFLM failed to allocate tensors"; give 2x the prediction + 64 KiB (a multiple of 16)."""
    return planner.align_up(max(10 * graph.model_bytes, 2 * predicted + (1 << 16)))


@dataclass(frozen=True)
class TflmMeasurement:
    """What :func:`measure` found. ``errors``: why a part did not run (empty when all did);
    ``measured``: TFLM's arena (head, tail, total, min_arena); ``bit_exact``: TFLM against LiteRT's
    reference kernels; ``outputs``: TFLM's (one row per input), never recorded. A figure the run
    stopped before is None, and absent from the record (``tinyreport --measure``'s keys)."""

    errors: list[str]
    measured: dict | None = field(default=None, metadata=OMIT_NONE)
    notes: list[str] | None = field(default=None, metadata=OMIT_NONE)
    bit_exact: dict | None = field(default=None, metadata=OMIT_NONE)
    outputs: np.ndarray | None = field(default=None, metadata=NOT_RECORDED)


def measure(path: Path, graph: Graph, x: np.ndarray, predicted_total: int,
            predicted_min: int | None = None) -> TflmMeasurement:
    """Run TFLM (arena, min arena, outputs) and LiteRT reference kernels (bit-exactness).
    ``predicted_min``: :attr:`arena.ArenaPrediction.min_arena`, quoted in the #2738 error."""
    errors = [f"TFLM not run: {b}" for b in runtime_blockers(graph)]
    if errors:
        return TflmMeasurement(errors)
    try:
        run = tflm_runner.run_tflm(path, x, arena_size=measure_arena_size(graph, predicted_total))
    except tflm_runner.TflmFailure as exc:
        return TflmMeasurement([f"TFLM: {exc}"])
    try:
        found = tflm_runner.min_arena(path, x, run.outputs, start=run.total)
    except tflm_runner.TflmFailure as exc:
        errors.append(f"TFLM min-arena search: {exc}")
        found = tflm_runner.MinArena(None, run.total, 0)
    measured = {"head": run.head, "tail": run.tail, "total": run.total,
                "min_arena": found.min_arena}
    notes = None
    if found.min_arena is None or found.min_arena > run.total + planner.ALIGN:
        text = (f"TFLM needs more than its recorded total {run.total} B to allocate "
                f"(min arena {found.min_arena or f'> {found.searched_up_to}'} B"
                + (f", predicted {predicted_min} B" if predicted_min else "")
                + ", tflite-micro#2738)")
        # Predicted (arena.planning_peak) and used by the bundle: a note, not a failure.
        predicted_ok = found.min_arena is not None and (predicted_min or 0) >= found.min_arena
        if predicted_ok:
            notes = [text]
        else:
            errors.append(text)
    return TflmMeasurement(errors, measured, notes, _reference_check(path, graph, x, run.outputs,
                                                                     errors), run.outputs)


def _reference_check(path: Path, graph: Graph, x: np.ndarray, outputs: np.ndarray,
                     errors: list[str]) -> dict | None:
    """TFLM's ``outputs`` against LiteRT's reference kernels, with the first op that differs;
    None (and a line in ``errors``) when LiteRT could not run."""
    try:
        ref = tflm_runner.run_litert_ref(path, x)
    except tflm_runner.TflmFailure as exc:
        errors.append(f"LiteRT reference: {exc}")
        return None
    exact = bit_exactness(ref, outputs)
    if not exact["equal"]:
        row = int(np.argwhere(ref != outputs)[0][0])
        exact["first_difference"] = localize(path, graph, x[row:row + 1])
    return exact


def bit_exactness(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How two integer output arrays of the same shape differ: equal, count and max |diff|."""
    diff = np.abs(np.asarray(reference, np.int64) - np.asarray(candidate, np.int64))
    return {"equal": bool((diff == 0).all()), "mismatches": int((diff > 0).sum()),
            "max_abs_diff": int(diff.max(initial=0)), "values": int(diff.size)}


def localize(path: Path, graph: Graph, x: np.ndarray) -> dict | None:
    """Where a TFLM / LiteRT-reference mismatch starts: the first op whose output differs."""
    pred = arena.predict(graph)
    size = 2 * (pred.linear + pred.tail) + (1 << 16)  # kPreserveAllTensors = linear planner
    pairs = [(op.index, op.outputs[0]) for op in graph.ops if op.outputs and op.outputs[0] >= 0]
    data = path.read_bytes()
    online = without_offline_plan(data)  # a plan's shared offsets cannot keep every tensor
    try:
        with tempfile.TemporaryDirectory(prefix="localize-") as work:
            model = path if online is data else Path(work) / "online.tflite"
            if online is not data:
                model.write_bytes(online)
            found = tflm_runner.first_difference(model, x, pairs, size)
    except tflm_runner.TflmFailure as exc:
        _log.warning("could not localize the TFLM / LiteRT difference: %s", exc)
        return None
    if found is not None:
        found["opcode"] = graph.ops[found["op"]].opcode
    return found

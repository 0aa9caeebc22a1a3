"""Firmware checks of an int8 ``.tflite`` model: validation, static arena analysis, the TFLM run,
the offline plan and the C bundle. ``firmware_check`` is what the export pipeline calls.

Inputs (``images``): an NHWC batch. ``int8`` arrays are used as they are (already quantized);
floating arrays are in the model's real input domain and are quantized here with the model's own
input scale and zero point, ``q = clip(round(x / scale) + zero_point, -128, 127)`` (STYLE.md
habit 13). Without images, a seeded uniform int8 batch is used (no top-1 then).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.firmware_eval import arena, planner
from tinyexport.firmware_eval.flatbuf import Graph, read_graph
from tinyexport.firmware_eval.offline_plan import OfflinePlan, tight_plan

_log = logging.getLogger(__name__)
_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
N_SYNTHETIC = 4


def validate(graph: Graph, label: str) -> None:
    """Raise :class:`UserError` unless TFLM can run the model as int8 (tflm_memory.md §11.3)."""
    if graph.num_subgraphs != 1:
        raise UserError(f"{label}: {graph.num_subgraphs} subgraphs (control flow); the arena "
                        "analyser supports single-subgraph models only")
    # An int32/int64 output made by ARG_MAX/ARG_MIN (e.g. a segmentation head) runs in TFLM too.
    index_outputs = {o for op in graph.ops if op.opcode in {"ARG_MAX", "ARG_MIN"}
                     for o in op.outputs}
    io = [graph.tensors[i] for i in (*graph.inputs, *graph.outputs)
          if not (i in index_outputs and graph.tensors[i].dtype in {"int32", "int64"})]
    bad_io = sorted({t.dtype for t in io if t.dtype != "int8"})
    compute = [(op, graph.tensors[op.inputs[2 if op.opcode == "TRANSPOSE_CONV" else 0]],
                graph.tensors[op.inputs[1]])
               for op in graph.ops if op.opcode in _COMPUTE_OPS and len(op.inputs) > 2 - (
                   op.opcode != "TRANSPOSE_CONV") and min(op.inputs[:2]) >= 0]
    if any(w.dtype == "int8" and x.dtype.startswith("float") for _, x, w in compute):
        raise UserError(f"{label} is a hybrid model (int8 weights, float activations); TFLM runs "
                        "int8 compute only - export a full-integer model (--int8)")
    if any(w.dtype.startswith("float") for _, _, w in compute) or (
            "float32" in bad_io and not compute):
        raise UserError(f"{label} is a float model; TFLM needs int8 inputs/outputs and int8 "
                        "compute - export with --int8 (full-integer quantization)")
    if any(x.dtype == "int16" for _, x, _ in compute):
        raise UserError(f"{label} is 16x8-quantized (int16 activations, int8 weights); the arena "
                        "analyser handles int8 models only - export with full int8 quantization")
    if "float32" in bad_io:
        raise UserError(f"{label} has float32 inputs/outputs around int8 compute (QUANTIZE/"
                        "DEQUANTIZE at the edges); TFLM needs int8 I/O - convert with "
                        "inference_input_type = inference_output_type = tf.int8 (--int8)")
    if bad_io:
        hint = " (uint8 quantization is deprecated in TFLM: use int8)" if "uint8" in bad_io else ""
        raise UserError(f"{label}: input/output dtype {', '.join(bad_io)}; TFLM needs int8 I/O"
                        + hint)
    for op, _, w in compute:
        want = 2 if op.opcode == "FULLY_CONNECTED" else 4
        if len(w.shape) != want or any(o < 0 for o in op.outputs):
            raise UserError(f"{label}: {op.opcode} #{op.index} has a {len(w.shape)}-D filter "
                            f"(expected {want}-D); the file is corrupt - re-export it")
    missing = sorted({op.opcode for op in graph.ops} - arena.TFLM_OPS)
    if missing:
        raise UserError(f"{label} uses ops TFLite Micro lacks: {', '.join(missing)}; replace "
                        "them in the model before export")


def runtime_blockers(graph: Graph) -> list[str]:
    """Why TFLM would abort or compute garbage on a model the analyser can still plan: reported
    as errors next to the arena analysis, and TFLM is not started on such a model."""
    return _softmax_scale_problems(graph) + _batch_shape_problems(graph)


def _softmax_scale_problems(graph: Graph) -> list[str]:
    """int8 SOFTMAX Prepare (kernels/softmax_common.cc) calls PreprocessSoftmaxScaling, whose
    QuantizeMultiplierGreaterThanOne does TFLITE_CHECK_GT(beta * input_scale * 2^26, 1): a
    smaller input scale aborts the process with no message (quantization_util.cc; seen on a
    randomly initialised Keras MobileNetV2 whose logits calibrated to scale 7.8e-9)."""
    problems = []
    for op in graph.ops:
        if op.opcode != "SOFTMAX" or not op.inputs or op.inputs[0] < 0:
            continue
        x = graph.tensors[op.inputs[0]]
        if x.dtype != "int8" or not x.quant.scales:
            continue
        beta, scale = op.option("beta", 1.0), x.quant.scales[0]
        if beta * scale * 2.0 ** 26 <= 1.0:
            problems.append(
                f"SOFTMAX #{op.index} has input scale {scale:.3g} (beta {beta:g}); TFLM aborts "
                f"(SIGABRT) when beta * scale <= 2^-26 ({2.0 ** -26:.3g}) - the logits collapsed "
                "in calibration (untrained weights or unrepresentative data); recalibrate the "
                "model or export it without the softmax")
    return problems


def _batch_shape_problems(graph: Graph) -> list[str]:
    """TFLM never resizes tensors: SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND Prepare check only the
    rank (kernels/space_to_batch_nd.cc, batch_to_space_nd.cc) and Eval writes/reads by the stored
    shapes. TFLiteConverter can leave an un-fused dilated convolution whose stored batch dims are
    1 where the op makes prod(block_shape); TFLM then reads past a buffer and the output depends on
    the arena contents (seen on a Keras Conv2D(dilation_rate=2, padding='same') int8 export)."""
    problems = []
    for op in graph.ops:
        if op.opcode not in {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} or len(op.inputs) < 2:
            continue
        x, block, y = (graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]],
                       graph.tensors[op.outputs[0]])
        if not (x.shape and y.shape and block.is_const):
            continue
        factor = math.prod(graph.extra.get("int_buffers", {}).get(block.index, ()) or (0,))
        if factor <= 0:
            continue
        want = x.shape[0] * factor if op.opcode == "SPACE_TO_BATCH_ND" else x.shape[0] // factor
        if y.shape[0] != want:
            problems.append(
                f"{op.opcode} #{op.index} stores output batch {y.shape[0]} but makes {want}; "
                "TFLM does not resize tensors, so it would compute garbage (an un-fused dilated "
                "convolution left by the converter) - re-export so the dilation stays inside "
                "CONV_2D / DEPTHWISE_CONV_2D (e.g. padding='valid' with an explicit pad)")
    return problems


def load(path: str | Path) -> Graph:
    """Read and validate a model."""
    graph = read_graph(path)
    validate(graph, str(path))
    return graph


def prepare_inputs(graph: Graph, images: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """An int8 batch shaped like the model input (see module docstring)."""
    t = graph.tensors[graph.inputs[0]]
    shape = tuple(t.shape[1:])
    if images is None:
        return np.random.default_rng(seed).integers(-128, 128, (N_SYNTHETIC, *shape), np.int8)
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
    from tinyexport.quantize.check import quantize_values

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
    return labels


def top1(graph: Graph, outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 of TFLM's outputs (one row per input) against integer labels (check_labels)."""
    labels = check_labels(graph, labels, len(outputs))
    return float(np.mean(outputs.argmax(1) == labels))


@dataclass(frozen=True)
class Analysis:
    prediction: arena.ArenaPrediction
    plan: OfflinePlan
    board_head: int | None = None
    board_total: int | None = None
    board_min_arena: int | None = None

    @property
    def arena_needed(self) -> int:
        """What a firmware must give TFLM: the total, or the planning-time minimum when that is
        larger (arena.planning_peak, tflite-micro#2738); with the board's scratch when a board
        was given."""
        if self.board_total is not None:
            return max(self.board_total, self.board_min_arena or 0)
        return max(self.prediction.total, self.prediction.min_arena)


def analyse(graph: Graph, isa: str | None = None) -> Analysis:
    """Static arena analysis: prediction, lower bound, linear size and our offline plan."""
    pred = arena.predict(graph)
    plan = tight_plan(graph, pred.scratch)
    if isa is None:
        return Analysis(pred, plan)
    on_board = arena.predict(graph, isa)
    return Analysis(pred, plan, on_board.head, on_board.total, on_board.min_arena)


def arena_dict(pred: arena.ArenaPrediction) -> dict:
    return {"head": pred.head, "tail": pred.tail, "total": pred.total}


def measure_arena_size(graph: Graph, predicted: int) -> int:
    """Arena for the measuring run. The runtime's default (10x the model size, tflm_memory.md
    §9.1) is too small for models with few weights and large activations, which then fail with
    "TFLM failed to allocate tensors"; give 2x the prediction + 64 KiB (a multiple of 16)."""
    return planner.align_up(max(10 * graph.model_bytes, 2 * predicted + (1 << 16)))


def measure(path: Path, graph: Graph, x: np.ndarray, predicted_total: int,
            predicted_min: int | None = None) -> dict:
    """Run TFLM (arena, min arena, outputs) and LiteRT reference kernels (bit-exactness).
    ``predicted_min``: :attr:`arena.ArenaPrediction.min_arena`, quoted in the #2738 error."""
    from tinyexport.firmware_eval import tflm_runner as tr

    out: dict = {"errors": [f"TFLM not run: {b}" for b in runtime_blockers(graph)]}
    if out["errors"]:
        return out
    try:
        run = tr.run_tflm(path, x, arena_size=measure_arena_size(graph, predicted_total))
    except tr.TflmFailure as exc:
        out["errors"].append(f"TFLM: {exc}")
        return out
    out["measured"] = {"head": run.head, "tail": run.tail, "total": run.total}
    try:
        found = tr.min_arena(path, x, run.outputs, start=run.total)
    except tr.TflmFailure as exc:
        out["errors"].append(f"TFLM min-arena search: {exc}")
        found = tr.MinArena(None, run.total, 0)
    out["measured"]["min_arena"] = found.min_arena
    if found.min_arena is None or found.min_arena > run.total + planner.ALIGN:
        text = (f"TFLM needs more than its recorded total {run.total} B to allocate "
                f"(min arena {found.min_arena or f'> {found.searched_up_to}'} B"
                + (f", predicted {predicted_min} B" if predicted_min else "")
                + ", tflite-micro#2738)")
        # Predicted (arena.planning_peak) and used by the bundle: a note, not a failure.
        predicted_ok = found.min_arena is not None and (predicted_min or 0) >= found.min_arena
        out.setdefault("notes", []).append(text) if predicted_ok else out["errors"].append(text)
    out["outputs"] = run.outputs
    try:
        ref = tr.run_litert_ref(path, x)
        out["bit_exact"] = bit_exactness(ref, run.outputs)
        if not out["bit_exact"]["equal"]:
            row = int(np.argwhere(ref != run.outputs)[0][0])
            out["bit_exact"]["first_difference"] = localize(path, graph, x[row:row + 1])
    except tr.TflmFailure as exc:
        out["errors"].append(f"LiteRT reference: {exc}")
    return out


def bit_exactness(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How two integer output arrays of the same shape differ: equal, count and max |diff|."""
    diff = np.abs(np.asarray(reference, np.int64) - np.asarray(candidate, np.int64))
    return {"equal": bool((diff == 0).all()), "mismatches": int((diff > 0).sum()),
            "max_abs_diff": int(diff.max(initial=0)), "values": int(diff.size)}


def localize(path: Path, graph: Graph, x: np.ndarray) -> dict | None:
    """Where a TFLM / LiteRT-reference mismatch starts: the first op whose output differs."""
    from tinyexport.firmware_eval import tflm_runner as tr

    pred = arena.predict(graph)
    size = 2 * (pred.linear + pred.tail) + (1 << 16)  # kPreserveAllTensors = linear planner
    pairs = [(op.index, op.outputs[0]) for op in graph.ops if op.outputs and op.outputs[0] >= 0]
    try:
        found = tr.first_difference(path, x, pairs, size)
    except tr.TflmFailure as exc:
        _log.warning("could not localize the TFLM / LiteRT difference: %s", exc)
        return None
    if found is not None:
        found["opcode"] = graph.ops[found["op"]].opcode
    return found


def apply_offline_plan(path: Path, graph: Graph, plan: OfflinePlan, x: np.ndarray,
                       base_head: int | None, base_outputs: np.ndarray | None,
                       run_tflm: bool) -> dict:
    """Write the plan into the model (atomically) after TFLM confirms it; return a summary."""
    from tinyexport.atomic import atomic_path, write_bytes
    from tinyexport.firmware_eval.flatbuf_write import with_offline_plan

    summary = {"applied": False, "ordering": plan.ordering, "predicted_head": plan.head,
               "greedy_head": plan.greedy_head, "lower_bound": plan.lower_bound,
               "optimal": plan.optimal}
    if plan.ordering == "greedy":
        summary["reason"] = "greedy already at the best placement found"
        return summary
    data = with_offline_plan(path.read_bytes(), list(plan.tensor_offsets))
    if run_tflm:
        from tinyexport.firmware_eval import tflm_runner as tr

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
                   labels=None, run_tflm=True) -> dict:
    """Analyse, (optionally) run in TFLM, (optionally) apply the offline plan, write the bundle.

    Args:
        tflite_path: int8 ``.tflite`` model (rewritten in place when ``offline_plan`` applies).
        out_dir: folder for the C bundle.
        board: board name from ``tinyexport.boards.BOARDS`` for CMSIS-NN scratch and verdicts.
        images: NHWC batch, int8 or float (see module docstring); labels: int class ids.
    Returns:
        JSON-serialisable summary.
    Raises:
        UserError: unreadable, non-int8 or unsupported model; bad images.
    """
    from tinyexport.firmware_eval.bundle import write_bundle
    from tinyexport.firmware_eval.report import board_verdicts

    path = Path(tflite_path)
    graph = load(path)
    x = prepare_inputs(graph, images)
    isa = _board_isa(board)
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
        summary["offline_plan"] = {"applied": False, "ordering": ana.plan.ordering,
                                   "predicted_head": ana.plan.head,
                                   "greedy_head": ana.plan.greedy_head,
                                   "lower_bound": ana.plan.lower_bound,
                                   "optimal": ana.plan.optimal,
                                   "reason": "not applied: TFLM cannot run this model"}
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
        summary["board"] = board_verdicts(graph, ana, [board])[0]
    os.makedirs(out_dir, exist_ok=True)
    # The arena must also hold CommitStaticMemoryPlan's temp section (arena.planning_peak).
    summary["bundle"] = write_bundle(Path(out_dir), path.read_bytes(), graph, ana.arena_needed)
    return summary


def _board_isa(board: str | None) -> str | None:
    if board is None:
        return None
    from tinyexport.boards import BOARDS

    try:
        return BOARDS.get(board).isa
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc)) from None


__all__ = ["firmware_check", "analyse", "load", "prepare_inputs", "validate", "measure",
           "Analysis", "asdict"]

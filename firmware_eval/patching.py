"""Patch-based inference (MCUNetV2) in stock TFLite Micro, as a rewrite of the int8 flatbuffer.

The memory-heavy first *stage* of a CNN (ops ``0..k``, a prefix of the graph whose only tensor
used later is op ``k``'s output; or a segment ``j..k`` of blocks that reads one activation) is run
once per spatial patch of its output, so only one patch of each big activation is alive at a time
(docs/tflm_memory.md §7.3). Each patch is built from ops TFLM already has:

1. ``STRIDED_SLICE`` of the stage input, with the halo the receptive field needs (the regions are
   computed backwards through every op of the stage: :func:`plan_regions`);
2. the stage's ops copied onto the patch with ``VALID`` padding; where the original padded (SAME
   convolutions, explicit ``PAD`` ops) a border patch gets a ``PAD`` with the input zero point on
   exactly those sides and by exactly that much. An int8 convolution with SAME padding skips the
   out-of-image taps, which equals reading the zero point there (``(zp - zp) * w = 0``), so the
   patch outputs are the original values bit for bit; an input read by two ops with different
   needs is cropped (``STRIDED_SLICE``) to what each reads;
3. ``CONCATENATION`` of the patch outputs, one per row of patches (along W) then one over the
   rows (along H), into the original stage output tensor; the rest of the graph is unchanged.

Copied ops share their weight buffers (same buffer index), so the flash grows by metadata only.
Intermediate patch tensors keep the original quantization, so every requantization is identical.
Each copied op adds TFLM persistent data (node, OpData, per-channel multipliers: the tail), so
more patches lower the head but raise the tail; :func:`search_patch_plans` weighs both with the
exact arena predictor (:func:`tinyexport.firmware_eval.arena.predict`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tinyexport.errors import UserError
from tinyexport.tflite_graph import edit
from tinyexport.tflite_graph.reader import Graph, Op, parse_graph
from tinyexport.tflite_graph.schema import schema

MAX_CONCAT_INPUTS = 10  # kMaxInputNum of TFLM's kernels/concatenation.cc
_WINDOW_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"})
_POOL_OPS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D"})
_PAD_OPS = frozenset({"PAD", "PADV2"})
# Ops whose output pixel (h, w) depends on their inputs' pixel (h, w) only.
_ELEMENTWISE = frozenset({"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE",
                          "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "HARD_SWISH", "LOGISTIC",
                          "TANH", "ELU", "QUANTIZE", "DEQUANTIZE", "ABS", "NEG", "PRELU"})
# Op versions for int8 operands (LiteRT op_version.cc); TFLM ignores versions.
_VERSIONS = {"STRIDED_SLICE": 2, "CONCATENATION": 2, "PAD": 2}


@dataclass(frozen=True)
class PatchPlan:
    """Run ops ``start..split_after`` once per patch of a ``rows`` x ``cols`` grid over the output
    of op ``split_after``. ``start`` 0 is the prefix stage; a later ``start`` (a block boundary)
    patches a segment in the middle, and several disjoint plans can be applied together."""

    split_after: int
    rows: int
    cols: int
    start: int = 0  # first op of the stage: 0 (a prefix) or a later block start (a segment)

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.split_after:
            raise ValueError(f"need 0 <= start <= split_after, got start={self.start!r}, "
                             f"split_after={self.split_after!r}")
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not 1 <= v <= MAX_CONCAT_INPUTS:
                raise ValueError(f"{name} must be in 1..{MAX_CONCAT_INPUTS} (TFLM concatenates "
                                 f"at most {MAX_CONCAT_INPUTS} tensors), got {v!r}")
        if self.rows * self.cols < 2:
            raise ValueError("a patch grid needs at least 2 patches, got 1x1")

    def __str__(self) -> str:
        ops = f"ops {self.start}..{self.split_after}"
        return f"{ops} {self.rows}x{self.cols}"


@dataclass(frozen=True)
class Rect:
    """Half-open pixel rectangle ``[top, bottom) x [left, right)`` of an NHWC tensor."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def union(self, other: Rect | None) -> Rect:
        if other is None:
            return self
        return Rect(min(self.top, other.top), max(self.bottom, other.bottom),
                    min(self.left, other.left), max(self.right, other.right))


@dataclass(frozen=True)
class Need:
    """What one op reads from one input in one patch: ``rect`` inside the tensor and ``pads``
    (top, bottom, left, right) pixels of the original padding outside it."""

    rect: Rect
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True)
class PatchRegions:
    """One patch: the region each stage tensor is computed on, and each op input's read."""

    row: int
    col: int
    regions: Mapping[int, Rect]  # tensor index -> region
    needs: Mapping[tuple[int, int], Need]  # (op index, input slot) -> read


@dataclass(frozen=True)
class Stage:
    """Ops ``start..k`` of a graph: ``input`` is the one activation they read from outside,
    ``output`` op k's output (the only tensor of theirs read later)."""

    ops: tuple[Op, ...]
    input: int
    output: int


def stage_of(graph: Graph, split_after: int, start: int = 0) -> Stage:
    """The stage of ops ``start..split_after``, checked: one NHWC activation read from outside
    (for a prefix, the graph input), every tensor it computes used later only through op
    ``split_after``'s output, every op mappable.

    Raises:
        UserError: naming the op or tensor that makes the split impossible.
    """
    if not 0 <= start <= split_after < len(graph.ops):
        raise UserError(f"ops {start}..{split_after} are not a range of op indices (the graph "
                        f"has {len(graph.ops)} ops)")
    ops = graph.ops[start:split_after + 1]
    out = ops[-1].outputs
    if len(out) != 1:
        raise UserError(f"op {split_after} ({ops[-1].opcode}) has {len(out)} outputs; split "
                        "after an op with one output")
    _check_escapes(graph, ops, out[0])
    source = _stage_input(graph, ops)
    for op in ops:
        _check_mappable(graph, op)
    return Stage(tuple(ops), source, out[0])


def _check_escapes(graph: Graph, ops: tuple[Op, ...], output: int) -> None:
    made = {o for op in ops for o in op.outputs}
    later = {i for op in graph.ops[ops[-1].index + 1:] for i in op.inputs} | set(graph.outputs)
    escaping = sorted((made & later) - {output})
    if escaping:
        t = graph.tensors[escaping[0]]
        raise UserError(f"cannot split after op {ops[-1].index}: tensor {t.index} ({t.name!r}) "
                        "made inside the stage is read after it (a residual branch crosses the "
                        "split); split at the end of the block")


def _stage_input(graph: Graph, ops: tuple[Op, ...]) -> int:
    """The one non-constant tensor the stage reads from outside."""
    made = {o for op in ops for o in op.outputs}
    outside = sorted({i for op in ops for i in op.inputs
                      if i >= 0 and i not in made and not graph.tensors[i].is_const})
    if len(outside) != 1:
        names = [graph.tensors[i].name for i in outside]
        raise UserError(f"ops {ops[0].index}..{ops[-1].index} read {len(outside)} activations "
                        f"from before them ({names}); a stage must read exactly one (start it "
                        "at a block boundary)")
    return outside[0]


def _check_mappable(graph: Graph, op: Op) -> None:
    known = op.opcode in _WINDOW_OPS | _PAD_OPS | _ELEMENTWISE or (
        op.opcode == "CONCATENATION" and op.option("axis") in (3, -1))
    if not known:
        raise UserError(f"op {op.index} ({op.opcode}) cannot be run patch by patch (no "
                        "pixel-to-pixel mapping: global, reshaping or unknown op); split before it")
    for i in (*op.inputs, *op.outputs):
        t = graph.tensors[i] if i >= 0 else None
        if t is not None and not t.is_const and (len(t.shape) != 4 or t.shape[0] != 1):
            raise UserError(f"op {op.index} ({op.opcode}): tensor {i} has shape {t.shape}; "
                            "patching needs NHWC tensors of batch 1 through the stage")
    if op.opcode in _ELEMENTWISE:
        _check_same_spatial(graph, op)
    if op.opcode in _PAD_OPS:
        _pad_amounts(graph, op)


def _check_same_spatial(graph: Graph, op: Op) -> None:
    out = graph.tensors[op.outputs[0]].shape[1:3]
    for i in op.inputs:
        t = graph.tensors[i] if i >= 0 else None
        if t is not None and not t.is_const and t.shape[1:3] != out:
            raise UserError(f"op {op.index} ({op.opcode}) broadcasts tensor {i} of shape "
                            f"{t.shape} to {graph.tensors[op.outputs[0]].shape}; patching "
                            "supports same-size elementwise inputs only")


def _pad_amounts(graph: Graph, op: Op) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a PAD / PADV2; refuses batch or channel padding."""
    values = graph.extra.get("int_buffers", {}).get(op.inputs[1])
    if values is None or len(values) != 8:
        raise UserError(f"op {op.index} ({op.opcode}): paddings are not a constant 4x2 int32 "
                        "tensor; cannot patch it")
    if values[0] or values[1] or values[6] or values[7]:
        raise UserError(f"op {op.index} ({op.opcode}) pads the batch or channel axis "
                        f"({values}); only H/W padding can be patched")
    return values[2], values[3], values[4], values[5]


# ---------------------------------------------------------------- region arithmetic


def _window(graph: Graph, op: Op) -> tuple[int, int, int, int, int, int]:
    """(kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w) of a window op."""
    if op.opcode in _POOL_OPS:
        kh, kw = op.option("filter_h"), op.option("filter_w")
        return kh, kw, op.option("stride_h"), op.option("stride_w"), 1, 1
    _, kh, kw, _ = graph.tensors[op.inputs[1]].shape
    return (kh, kw, op.option("stride_h"), op.option("stride_w"), op.option("dilation_h", 1),
            op.option("dilation_w", 1))


def same_padding_before(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Pixels TFLite's SAME padding adds before the first row/column
    (``ComputePaddingHeightWidth``: the odd extra pixel goes after)."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    return max(0, (out - 1) * stride + effective - size) // 2


def window_need(out: Rect, graph: Graph, op: Op) -> Rect:
    """Input pixels (not clipped) a conv / depthwise / pool needs for the output ``out``:
    output row ``o`` reads rows ``o*s - pad_top + [0, (k-1)*d]``."""
    kh, kw, sh, sw, dh, dw = _window(graph, op)
    _, h, w, _ = graph.tensors[op.inputs[0]].shape
    same = op.option("padding") == schema().Padding.SAME
    pt = same_padding_before(h, kh, sh, dh) if same else 0
    pl = same_padding_before(w, kw, sw, dw) if same else 0
    return Rect(out.top * sh - pt, (out.bottom - 1) * sh - pt + (kh - 1) * dh + 1,
                out.left * sw - pl, (out.right - 1) * sw - pl + (kw - 1) * dw + 1)


def input_needs(graph: Graph, op: Op, out: Rect) -> list[tuple[int, Rect]]:
    """(input slot, unclipped rect) for every non-constant input of ``op`` computing ``out``."""
    if op.opcode in _WINDOW_OPS:
        return [(0, window_need(out, graph, op))]
    if op.opcode in _PAD_OPS:
        top, _, left, _ = _pad_amounts(graph, op)
        return [(0, Rect(out.top - top, out.bottom - top, out.left - left, out.right - left))]
    return [(slot, out) for slot, i in enumerate(op.inputs)
            if i >= 0 and not graph.tensors[i].is_const]


def clip(rect: Rect, shape: tuple[int, ...]) -> Need:
    """Split an unclipped read into the part inside an NHWC tensor and the padding outside."""
    _, h, w, _ = shape
    inside = Rect(max(rect.top, 0), min(rect.bottom, h), max(rect.left, 0), min(rect.right, w))
    pads = (max(0, -rect.top), max(0, rect.bottom - h), max(0, -rect.left), max(0, rect.right - w))
    return Need(inside, pads)


def grid_edges(size: int, parts: int) -> list[int]:
    """``parts + 1`` boundaries splitting ``size`` pixels as evenly as possible."""
    if parts > size:
        raise UserError(f"cannot cut {size} pixels into {parts} patches")
    return [round(k * size / parts) for k in range(parts + 1)]


def plan_regions(graph: Graph, plan: PatchPlan) -> tuple[PatchRegions, ...]:
    """Regions of every stage tensor and reads of every op input, patch by patch (row-major).

    Example (the docstring of the region test): a 3x3 stride-2 SAME conv on 32x32 (pad_top 0,
    pad_bottom 1) split 2x1: the top patch computes output rows [0, 8) from input rows
    [0, 17), the bottom one rows [8, 16) from [16, 33) -> rows [16, 32) plus 1 row of padding.

    Raises:
        UserError: the stage cannot be split (:func:`stage_of`), the grid does not fit the
            stage output, or a patch would need padding a pool op cannot take.
    """
    stage = stage_of(graph, plan.split_after, plan.start)
    _, h, w, _ = graph.tensors[stage.output].shape
    rows, cols = grid_edges(h, plan.rows), grid_edges(w, plan.cols)
    return tuple(_patch(graph, stage, r, c, Rect(rows[r], rows[r + 1], cols[c], cols[c + 1]))
                 for r in range(plan.rows) for c in range(plan.cols))


def _patch(graph: Graph, stage: Stage, row: int, col: int, out: Rect) -> PatchRegions:
    regions: dict[int, Rect] = {stage.output: out}
    needs: dict[tuple[int, int], Need] = {}
    for op in reversed(stage.ops):
        region = regions.get(op.outputs[0])
        if region is None:
            continue  # nothing downstream reads this op in this patch
        for slot, want in input_needs(graph, op, region):
            t = op.inputs[slot]
            need = clip(want, graph.tensors[t].shape)
            if need.rect.height <= 0 or need.rect.width <= 0:
                raise UserError(f"patch ({row}, {col}) reads only padding of tensor {t} at op "
                                f"{op.index}; use fewer patches")
            if any(need.pads) and op.opcode in _POOL_OPS:
                raise UserError(f"op {op.index} ({op.opcode}) pads its input; a padded pool "
                                "cannot be split into patches (the zero point is not neutral)")
            needs[(op.index, slot)] = need
            regions[t] = need.rect.union(regions.get(t))
    return PatchRegions(row, col, regions, needs)


# ---------------------------------------------------------------- the rewrite


class _Writer:
    """Appends tensors and ops to an unpacked model (constants deduplicated)."""

    def __init__(self, model) -> None:
        self.model = model
        self.ops: list = []
        self.activation_buffer = edit.empty_buffer(model)
        self._consts: dict[tuple, int] = {}

    def const(self, name: str, values: np.ndarray) -> int:
        key = (values.dtype.str, values.shape, values.tobytes())
        if key not in self._consts:
            self._consts[key] = edit.add_constant(self.model, name, values)
        return self._consts[key]

    def like(self, tensor: int, rect: Rect, tag: str) -> int:
        """A new activation tensor with ``tensor``'s dtype, channels and quantization, named
        ``t<original index>/<tag>``: the converter's names run to 100+ characters, and a copy
        per patch would cost flash (15 KB on mcunet-in3) for nothing the runtime reads."""
        orig = self.model.subgraphs[0].tensors[tensor]
        shape = (1, rect.height, rect.width, orig.shape[3])
        return edit.add_tensor(self.model, f"t{tensor}/{tag}", shape, orig.type,
                               orig.quantization, self.activation_buffer)

    def crop(self, src: int, have: Rect, want: Rect, tensor: int, tag: str) -> int:
        channels = self.model.subgraphs[0].tensors[tensor].shape[3]
        begin = [0, want.top - have.top, want.left - have.left, 0]
        end = [1, begin[1] + want.height, begin[2] + want.width, channels]
        out = self.like(tensor, want, tag)
        args = [self.const(f"patch/{k}", np.array(v, np.int32))
                for k, v in (("begin", begin), ("end", end), ("strides", [1, 1, 1, 1]))]
        self._add("STRIDED_SLICE", [src, *args], out, schema().StridedSliceOptionsT())
        return out

    def pad(self, src: int, pads: tuple[int, ...], tensor: int, rect: Rect, tag: str) -> int:
        top, bottom, left, right = pads
        padded = Rect(rect.top - top, rect.bottom + bottom, rect.left - left, rect.right + right)
        out = self.like(tensor, padded, tag)
        paddings = self.const("patch/paddings",
                              np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        self._add("PAD", [src, paddings], out, schema().PadOptionsT())
        return out

    def concat(self, srcs: list[int], axis: int, out: int) -> None:
        opts = schema().ConcatenationOptionsT()
        opts.axis = axis
        self._add("CONCATENATION", srcs, out, opts)

    def _add(self, name: str, inputs: list[int], out: int, options) -> None:
        self.ops.append(edit.make_op(self.model, name, inputs, [out], options, _VERSIONS[name]))


def patch_model(data: bytes, plan: PatchPlan | Sequence[PatchPlan]) -> bytes:
    """The int8 model ``data`` rewritten to run a stage (or several disjoint stages, op indices
    of ``data``) patch by patch (module docstring). Pure: ``data`` is not changed.

    Raises:
        UserError: a plan cannot apply (see :func:`plan_regions`), two stages overlap, or the
            model carries an offline memory plan (per tensor index: patch first, plan after).
    """
    plans = sorted([plan] if isinstance(plan, PatchPlan) else plan, key=lambda p: p.start)
    for earlier, later in itertools.pairwise(plans):
        if earlier.split_after >= later.start:
            raise UserError(f"stages {earlier} and {later} overlap; give disjoint op ranges")
    graph = parse_graph(data, what="int8 model to patch")
    if graph.offline_offsets is not None:
        raise UserError("the model has an OfflineMemoryAllocation plan; patch the model without "
                        "it, then add the plan")
    regions = [plan_regions(graph, p) for p in plans]
    model = edit.unpack(data)
    originals = list(model.subgraphs[0].operators)
    w = _Writer(model)
    ops, done = [], 0
    for p, patches in zip(plans, regions, strict=True):
        stage = stage_of(graph, p.split_after, p.start)
        ops += originals[done:p.start]
        outputs = [_emit_patch(w, graph, stage, originals, patch) for patch in patches]
        _emit_concats(w, outputs, p, stage.output)
        ops += w.ops
        w.ops, done = [], p.split_after + 1
    edit.set_operators(model, ops + originals[done:])
    edit.drop_unused_tensors(model)
    edit.drop_unused_buffers(model)
    return edit.pack(model)


def _emit_patch(w: _Writer, graph: Graph, stage: Stage, originals: list,
                patch: PatchRegions) -> int:
    """Append one patch's ops; return the tensor holding its part of the stage output."""
    tag = f"patch{patch.row}_{patch.col}"
    full = graph.tensors[stage.input].shape
    have = {stage.input: (stage.input, Rect(0, full[1], 0, full[2]))}
    crops: dict[tuple[int, Rect], int] = {}
    for op in stage.ops:
        if op.outputs[0] not in patch.regions:
            continue
        inputs = list(op.inputs)
        for slot, t in enumerate(op.inputs):
            need = patch.needs.get((op.index, slot))
            if need is not None:
                inputs[slot] = _read(w, have, crops, t, need, tag, op.opcode not in _PAD_OPS)
        _emit_op(w, op, originals[op.index], inputs, patch, have, tag)
    return have[stage.output][0]


def _read(w: _Writer, have: dict, crops: dict, t: int, need: Need, tag: str,
          pad_here: bool) -> int:
    """The tensor an op reads for ``need``: the patch tensor of ``t``, cropped to the read when
    it was computed larger, padded with the zero point where the original padded."""
    src, rect = have[t]
    if need.rect != rect:
        key = (t, need.rect)
        if key not in crops:
            crops[key] = w.crop(src, rect, need.rect, t, tag)
        src = crops[key]
    if pad_here and any(need.pads):
        src = w.pad(src, need.pads, t, need.rect, tag)
    return src


def _emit_op(w: _Writer, op: Op, original, inputs: list[int], patch: PatchRegions,
             have: dict, tag: str) -> None:
    out_t = op.outputs[0]
    region = patch.regions[out_t]
    if op.opcode in _PAD_OPS:
        top, bottom, left, right = patch.needs[(op.index, 0)].pads
        if not (top or bottom or left or right):  # an inner patch: the PAD is the identity
            have[out_t] = (inputs[0], region)
            return
        inputs[1] = w.const("patch/paddings", np.array(
            [[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
    new = edit.copy_op(original, inputs, [w.like(out_t, region, tag)])
    if op.opcode in _WINDOW_OPS:
        new.builtinOptions.padding = schema().Padding.VALID
    w.ops.append(new)
    have[out_t] = (new.outputs[0], region)


def _emit_concats(w: _Writer, outputs: list[int], plan: PatchPlan, stage_output: int) -> None:
    """One CONCATENATION per row of patches (axis W), then one over the rows (axis H) writing
    the original stage output tensor."""
    rows = []
    for r in range(plan.rows):
        parts = outputs[r * plan.cols:(r + 1) * plan.cols]
        if len(parts) == 1:
            rows.append(parts[0])
            continue
        out = stage_output if plan.rows == 1 else w.like(
            stage_output, _row_rect(w, stage_output, parts), f"row{r}")
        w.concat(parts, 2, out)
        rows.append(out)
    if plan.rows > 1:
        w.concat(rows, 1, stage_output)


def _row_rect(w: _Writer, stage_output: int, parts: list[int]) -> Rect:
    tensors = w.model.subgraphs[0].tensors
    height = tensors[parts[0]].shape[1]
    return Rect(0, height, 0, tensors[stage_output].shape[2])


# ---------------------------------------------------------------- the search

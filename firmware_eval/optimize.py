"""One memory optimiser: what lowers TFLite Micro's arena without changing a single output.

Three rewrites of the int8 flatbuffer, in this order (each needs the one before done):

1. **operator order** (:mod:`reorder`): the order with the lowest predicted head (Serenity-style
   dynamic programming; TFLM runs ops in flatbuffer order, so the order decides the live sets);
2. **patch-based inference** (:mod:`patching`, :mod:`patch_search`): the memory-heavy stages run
   patch by patch (MCUNetV2). It costs extra MACs (halo) and persistent data, so it is applied
   only when asked (``patch="on"``) or, with ``patch="auto"``, when the model does not fit the
   ``budget`` (a board's SRAM) as it is;
3. **offline plan** (:mod:`offline_plan`): tensor offsets written into the model's metadata where
   they beat TFLM's greedy placement (docs/tflm_memory.md §4).

Each step is kept only when the exact predictor says it lowers the arena TFLM needs. The caller
(:func:`tinyexport.firmware_eval.evaluate.evaluate_firmware`, ``tinyreport --optimize``) then runs the
result in TFLM and LiteRT's reference kernels and keeps it only if every output equals the
original model's and the measured arena is the predicted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from tinyexport.boards import Board
from tinyexport.errors import UserError
from tinyexport.firmware_eval import arena
from tinyexport.firmware_eval.offline_plan import tight_plan
from tinyexport.firmware_eval.patch_search import PatchSearch, search_patch_plans
from tinyexport.firmware_eval.patching import patch_model
from tinyexport.firmware_eval.reorder import best_order, reorder_model
from tinyexport.firmware_eval.verdicts import runtime_estimate
from tinyexport.json_record import NOT_RECORDED
from tinyexport.tflite_graph.compact import compact_for_tflm
from tinyexport.tflite_graph.reader import parse_graph
from tinyexport.tflite_graph.writer import with_offline_plan

_log = logging.getLogger(__name__)

PATCH_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class OptimizeOptions:
    reorder: bool = True
    patch: str = "auto"  # "auto": only when the model does not fit ``budget``
    offline_plan: bool = True
    max_mac_overhead: float = 0.30
    budget: int | None = None  # bytes of SRAM the arena must fit (a board's), for patch="auto"
    isa: str | None = None  # the board's core, for its CMSIS-NN scratch in the budget check
    flash_budget: int | None = None  # the board's flash: patch plans that keep it are preferred
    compacted_flash: bool = True  # the firmware links the TFLM-compacted model (export --compact)

    def __post_init__(self) -> None:
        if self.patch not in PATCH_MODES:
            raise UserError(f"--patch must be one of {', '.join(PATCH_MODES)}, got {self.patch!r}")
        if not 0.0 <= self.max_mac_overhead <= 10.0:
            raise UserError("--patch-max-mac-overhead must be a percentage in 0..1000, got "
                            f"{100 * self.max_mac_overhead:g}")

    def for_board(self, board: Board | None) -> OptimizeOptions:
        """These options with ``board``'s SRAM, flash and ISA as the budget, unless a budget is
        already set (or no board is given)."""
        if board is None or self.budget is not None:
            return self
        return replace(self, budget=board.sram_budget, isa=board.isa,
                       flash_budget=board.flash_budget)


@dataclass(frozen=True)
class Step:
    """One rewrite: whether it was applied, why, and the predicted smallest arena around it."""

    name: str
    applied: bool
    reason: str
    arena_before: int
    arena_after: int
    details: dict = field(default_factory=dict)
    saved: int = field(init=False)  # a field, not a property: records (to_record) carry it

    def __post_init__(self) -> None:
        object.__setattr__(self, "saved",
                           self.arena_before - self.arena_after if self.applied else 0)


@dataclass(frozen=True)
class Optimized:
    data: bytes = field(metadata=NOT_RECORDED)
    steps: tuple[Step, ...]
    # the patch search, when one ran (frontier for reports)
    search: PatchSearch | None = field(default=None, metadata=NOT_RECORDED)
    changed: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changed", any(step.applied for step in self.steps))


def needed(data: bytes, isa: str | None = None) -> int:
    """The arena TFLM needs for ``data``: max(head + tail, planning-time peak), with the ISA's
    CMSIS-NN scratch when ``isa`` is given (arena.predict)."""
    pred = arena.predict(parse_graph(data), isa)
    return max(pred.total, pred.min_arena)


def optimize(data: bytes, options: OptimizeOptions = OptimizeOptions()) -> Optimized:
    """Apply the rewrites that lower the predicted arena (pure; see the module docstring)."""
    steps: list[Step] = []
    search = None
    if options.reorder:
        data = _step(steps, "operator order", data, _reorder)
    if _wants_patch(data, options):
        data, search = _patch(steps, data, options)
    elif options.patch == "auto":
        steps.append(Step("patch-based inference", False, _no_patch_reason(data, options),
                          needed(data), needed(data)))
    if options.offline_plan:
        data = _step(steps, "offline plan", data, _offline_plan)
    return Optimized(data, tuple(steps), search)


def _step(steps: list[Step], name: str, data: bytes, rewrite) -> bytes:
    before = needed(data)
    new, reason, details = rewrite(data)
    after = needed(new) if new is not None else before
    applied = new is not None and after < before
    if new is not None and not applied:
        reason = f"no gain (predicted arena {after:,} B vs {before:,} B)"
    steps.append(Step(name, applied, reason, before, after if applied else before, details))
    return new if applied else data


def _reorder(data: bytes):
    result = best_order(parse_graph(data))
    details = {"method": result.method, "states": result.states,
               "head_before": result.head_before, "head_after": result.head_after}
    if not result.changed:
        return None, "the model's own order is already the best found", details
    return reorder_model(data, result.order), "reordered", details


def _offline_plan(data: bytes):
    graph = parse_graph(data)
    plan = tight_plan(graph, arena.predict(graph).scratch)
    details = {"ordering": plan.ordering, "head": plan.head, "greedy_head": plan.greedy_head,
               "lower_bound": plan.lower_bound, "optimal": plan.optimal}
    if plan.ordering == "greedy" or plan.head >= plan.greedy_head:
        return None, "TFLM's greedy placement is already the best found", details
    return with_offline_plan(data, list(plan.tensor_offsets)), "offsets written", details


def _wants_patch(data: bytes, options: OptimizeOptions) -> bool:
    if options.patch == "on":
        return True
    return (options.patch == "auto" and options.budget is not None
            and needed(data, options.isa) > options.budget)


FLASH_TRIES = 20  # best-arena plans checked against the flash budget before giving up


def _flash_aware(data: bytes, search: PatchSearch, flash_budget: int | None,
                 compacted: bool = True):
    """The search's choice, or, with a flash budget, the lowest-arena plan (within the MAC
    limit) whose model + runtime estimate still fits the flash; a note when none does.
    Patch copies add tensor and op metadata (no weights) and two op types' kernels.
    ``compacted``: the firmware links the TFLM-compacted model (docs/tflm_memory.md §13); a plan's
    model is counted as patched minus what compaction drops from the unpatched model (a bound
    from above: compaction drops the copies' names too)."""
    if flash_budget is None or search.chosen is None:
        return search.chosen, None
    base = needed(data)
    saved = len(data) - len(compact_for_tflm(data).data) if compacted else 0
    limit = 100 * search.max_mac_overhead + 1e-9
    ranked = sorted((r for r in search.rows if r.plan and r.mac_overhead <= limit
                     and r.min_arena < base), key=lambda r: (r.min_arena, r.macs))
    for row in ranked[:FLASH_TRIES]:
        graph = parse_graph(patch_model(data, row.plan))
        if graph.model_bytes - saved + runtime_estimate(graph) <= flash_budget:
            return row, None
    return search.chosen, (f"no plan among the {min(len(ranked), FLASH_TRIES)} best keeps the "
                           f"{'compacted ' if compacted else ''}model + runtime estimate within "
                           f"{flash_budget:,} B of flash")


def _no_patch_reason(data: bytes, options: OptimizeOptions) -> str:
    if options.budget is None:
        return "not needed without a board (--patch on forces it)"
    return (f"fits the board as it is ({needed(data, options.isa):,} B <= "
            f"{options.budget:,} B)")


def _patch(steps: list[Step], data: bytes, options: OptimizeOptions):
    _log.info("searching patch plans (MAC overhead <= %g %%): a few minutes on a zoo model",
              100 * options.max_mac_overhead)
    search = search_patch_plans(data, max_mac_overhead=options.max_mac_overhead)
    before = needed(data)
    chosen, flash_note = _flash_aware(data, search, options.flash_budget,
                                      options.compacted_flash)
    if chosen is None:
        steps.append(Step("patch-based inference", False,
                          f"no plan within {100 * options.max_mac_overhead:g} % extra MACs "
                          "lowers the arena", before, before, {"plans": len(search.rows)}))
        return data, search
    patched = patch_model(data, chosen.plan)
    details = {"plan": chosen.label, "mac_overhead_percent": round(chosen.mac_overhead, 2),
               "flash_delta": chosen.flash_delta, "plans": len(search.rows)}
    if flash_note:
        details["flash"] = flash_note
    after = needed(patched)
    steps.append(Step("patch-based inference", True, f"patched: {chosen.label}", before, after,
                      details))
    return patched, search

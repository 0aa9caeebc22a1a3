"""Static arena analysis of a validated int8 graph: TFLM's predicted arena (:mod:`arena`), our
offline plan (:mod:`offline_plan`) and, for a board, the arena with its CMSIS-NN scratch."""

from __future__ import annotations

from dataclasses import dataclass

from tinyexport.firmware_eval import arena
from tinyexport.firmware_eval.offline_plan import OfflinePlan, tight_plan
from tinyexport.tflite_graph.reader import Graph


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
    """``{head, tail, total}`` of a prediction (the report / export.json shape)."""
    return {"head": pred.head, "tail": pred.tail, "total": pred.total}

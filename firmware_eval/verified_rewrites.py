"""What a verified rewrite of a model (the memory optimiser, the model compaction) found: the
results :mod:`evaluate` returns and the reports render.

Each travels by attribute; it becomes JSON only at the edge (``tinyexport.json_record.to_record``:
export.json's ``firmware.optimization`` and ``firmware.compaction``, ``tinyreport --optimize
--json``), field by field in the order those records have always had. :class:`OptimizeResult`
and :class:`Compaction` are read back from such a record with ``from_record`` to be rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tinyexport.firmware_eval.optimize import Step
from tinyexport.json_record import OMIT_NONE
from tinyexport.tflite_graph.compact import CompactionStep, KeptItem

__all__ = ["RewriteVerification", "PlanRow", "OptimizeResult", "CompactionLevel", "Compaction"]


@dataclass(frozen=True)
class RewriteVerification:
    """A rewrite run in TFLM (arena ``measured``, ``predicted``) and LiteRT's reference kernels on
    ``inputs`` inputs; ``confirmed`` when both give the original's outputs bit for bit and
    nothing failed."""

    inputs: int
    outputs_equal_to_original: bool
    litert_reference_equal_to_original: bool
    tflm_equals_litert_reference: dict
    measured: dict | None
    predicted: dict
    errors: list[str]
    confirmed: bool


@dataclass(frozen=True)
class PlanRow:
    """One patch plan on the search's frontier, as export.json lists it."""

    plan: str
    head: int
    tail: int
    total: int
    min_arena: int
    macs: int
    mac_overhead_percent: float
    flash_delta: int


@dataclass(frozen=True, kw_only=True)
class OptimizeResult:
    """The memory optimiser's outcome in an export: its steps, whether anything changed, whether
    the rewrite was kept (``applied``: TFLM confirmed it), the patch frontier when a search ran
    and the verification when one ran, or the ``reason`` it was not kept. When TFLM cannot run
    the model, only ``applied`` and ``reason`` are set."""

    steps: tuple[Step, ...] | None = field(default=None, metadata=OMIT_NONE)
    changed: bool | None = field(default=None, metadata=OMIT_NONE)
    applied: bool = False
    patch_frontier: tuple[PlanRow, ...] | None = field(default=None, metadata=OMIT_NONE)
    verification: RewriteVerification | None = field(default=None, metadata=OMIT_NONE)
    reason: str | None = field(default=None, metadata=OMIT_NONE)

    @classmethod
    def from_record(cls, record: dict) -> OptimizeResult:
        """The outcome a record holds (export.json's ``firmware.optimization``)."""
        steps, frontier = record.get("steps"), record.get("patch_frontier")
        check = record.get("verification")
        return cls(steps=None if steps is None else tuple(_step(s) for s in steps),
                   changed=record.get("changed"), applied=record["applied"],
                   patch_frontier=None if frontier is None else tuple(PlanRow(**r)
                                                                      for r in frontier),
                   verification=None if check is None else RewriteVerification(**check),
                   reason=record.get("reason"))


def _step(record: dict) -> Step:
    """A step read back: ``saved`` is derived (not an argument), so the record's is left out."""
    return Step(**{k: v for k, v in record.items() if k != "saved"})


@dataclass(frozen=True)
class CompactionLevel:
    """One compaction level (portable, TFLM-only): its size, its steps, what it kept on purpose,
    its verification and whether it was kept (``applied``: the verification confirmed it)."""

    bytes_after: int
    steps: tuple[CompactionStep, ...]
    kept: tuple[KeptItem, ...]
    verification: RewriteVerification
    applied: bool

    @classmethod
    def from_record(cls, record: dict) -> CompactionLevel:
        return cls(bytes_after=record["bytes_after"],
                   steps=tuple(CompactionStep(**s) for s in record["steps"]),
                   kept=tuple(KeptItem(**k) for k in record["kept"]),
                   verification=RewriteVerification(**record["verification"]),
                   applied=record["applied"])

    def applied_steps(self) -> tuple[CompactionStep, ...]:
        return self.steps if self.applied else ()


@dataclass(frozen=True)
class Compaction:
    """The model compaction (``evaluate.compact_verified``): the size before, each level, and the
    file the firmware links (``firmware_model``, its size ``firmware_model_bytes``)."""

    bytes_before: int
    portable: CompactionLevel
    tflm: CompactionLevel
    firmware_model: str
    firmware_model_bytes: int

    @classmethod
    def from_record(cls, record: dict) -> Compaction:
        """The compaction a record holds (export.json's ``firmware.compaction``)."""
        return cls(bytes_before=record["bytes_before"],
                   portable=CompactionLevel.from_record(record["portable"]),
                   tflm=CompactionLevel.from_record(record["tflm"]),
                   firmware_model=record["firmware_model"],
                   firmware_model_bytes=record["firmware_model_bytes"])

    def naming(self, firmware_model: str) -> Compaction:
        """This compaction with the linked file named otherwise (relative, written elsewhere)."""
        return replace(self, firmware_model=firmware_model)

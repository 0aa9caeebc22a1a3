"""What reports, verdicts and export.json keep of an emulation run (:mod:`emulate`): figures only,
no arrays and no paths into the build folder.

:class:`EmulationSummary` travels between the stages by attribute; it becomes JSON only at the
edge (``tinyexport.json_record.to_record``: export.json's ``firmware.emulation``, ``tinyreport
--json``'s ``emulated``), field by field in the order those records have always had, and is read
back from such a record with :meth:`EmulationSummary.from_record` to be rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tinyexport.json_record import OMIT_NONE

__all__ = ["ProfileFigures", "EmulationSummary"]


@dataclass(frozen=True)
class ProfileFigures:
    """One firmware profile's row of the side-by-side table: product-image flash, what the run
    image adds, the kernels' flash, instructions per inference, whether the outputs agree."""

    flash_bytes: int
    flash_harness: int
    kernels: int
    instructions_mean: int
    bit_exact: bool | None

    @classmethod
    def of(cls, run: EmulationSummary) -> ProfileFigures:
        return cls(flash_bytes=run.flash_bytes, flash_harness=run.flash_harness["total"],
                   kernels=run.flash["kernels"], instructions_mean=run.instructions_mean,
                   bit_exact=run.bit_exact.get("equal"))


@dataclass(frozen=True)
class EmulationSummary:
    """The figures of one emulation run (``EmulationResult.summary()``). ``flash`` is the product
    image's split by origin (``flash_bytes`` its total), ``flash_run_image`` the emulator's image
    and ``flash_harness`` what it adds; ``sram`` the parts of ``sram_bytes``. ``profiles``: each
    measured firmware profile's figures (``emulate_cores``: the first profile's summary holds
    them all), None for a single run."""

    core: str
    machine: str
    profile: str
    flash_bytes: int
    flash: dict
    flash_run_image: dict
    flash_harness: dict
    sram_bytes: int
    sram: dict             # arena_min, data, bss (and any other static section), stack
    arena_used: int
    arena_sections: dict
    bundle_arena_size: int
    bundle_arena_allocates: bool
    instructions_per_inference: list[int]
    instructions_mean: int
    instructions_by_op_type: dict[str, int]
    bit_exact: dict
    inputs: int
    notes: list[str]
    seconds: dict
    profiles: dict[str, ProfileFigures] | None = field(default=None, metadata=OMIT_NONE)

    @classmethod
    def from_record(cls, record: dict) -> EmulationSummary:
        """The summary a record holds (export.json's ``firmware.emulation[core]``, a report's
        ``emulated[core]``)."""
        values = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        if values.get("profiles") is not None:
            values["profiles"] = {name: ProfileFigures(**row)
                                  for name, row in values["profiles"].items()}
        return cls(**values)

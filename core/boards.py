"""Board profiles: SRAM and flash budgets of common TinyML microcontrollers.

The built-in profiles are data, ``core/boards.yaml`` (figures from ``docs/boards.md`` §1), in
the format of a user's board file (:func:`read_board_file`), which may also set a reserve for the
application (RTOS, buffers, stack): a verdict's budget is the region minus the reserve.
``sram_bytes`` is the contiguous RAM a model's arena can use (e.g. the 512 KB AXI SRAM of the
STM32H743, not its 1 MB total); ``flash_bytes`` is on-chip flash, or the usual on-board QSPI
part where the chip has none (RP2040, ESP32-S3).
``isa`` selects the CMSIS-NN scratch rules of ``docs/tflm_memory.md`` §5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tinyexport.config import load_yaml
from tinyexport.errors import UserError, printable
from tinyexport.json_record import OMIT_NONE
from tinyexport.registry import Registry

__all__ = ["KIB", "MIB", "ISAS", "UNLIMITED", "BOARDS", "Board", "Needs", "Verdict", "verdict",
           "parse_size", "board_from_mapping", "read_board_file", "is_board_file", "with_budgets",
           "custom_board"]

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    """A board's memory regions and the part the application keeps (``reserve``): the model's
    budget is the region minus the reserve (:attr:`sram_budget`, :attr:`flash_budget`)."""

    name: str
    mcu: str
    core: str
    isa: str  # "dsp" (Cortex-M4/M7), "mve" (M55/M85), "none" (M0+), "xtensa"
    sram_bytes: int
    flash_bytes: int
    source: str
    sram_reserve_bytes: int = 0  # RTOS, camera buffers, stack, .data/.bss of the application
    flash_reserve_bytes: int = 0  # the application's own code and data

    def __post_init__(self) -> None:
        if self.sram_bytes <= 0 or self.flash_bytes <= 0:
            raise UserError(f"board {self.name}: SRAM and flash must be positive, got "
                            f"{self.sram_bytes} and {self.flash_bytes} bytes")
        if self.isa not in ISAS:
            raise UserError(f"board {self.name}: unknown isa {self.isa!r} (known: "
                            f"{', '.join(ISAS)})")
        for what in ("sram", "flash"):
            reserve, region = getattr(self, f"{what}_reserve_bytes"), getattr(self, f"{what}_bytes")
            if not 0 <= reserve < region:
                raise UserError(f"board {self.name}: the {what} reserve ({reserve:,} B) must be "
                                f">= 0 and below the {what} region ({region:,} B)")

    @property
    def sram_budget(self) -> int:
        return self.sram_bytes - self.sram_reserve_bytes

    @property
    def flash_budget(self) -> int:
        return self.flash_bytes - self.flash_reserve_bytes


ISAS = ("dsp", "mve", "none", "xtensa")
_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": KIB, "k": KIB, "mb": 1000 ** 2, "mib": MIB, "m": MIB}


def parse_size(value: str | int, what: str, minimum: int = 1) -> int:
    """Bytes from ``327680``, ``"320 KiB"``, ``"1MiB"`` or ``"1 MB"`` (KB/MB are decimal, K/KiB
    and M/MiB binary), in ``minimum`` .. :data:`MAX_SIZE`."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?i?[bB]?)\s*", str(value)[:100])
        unit = match.group(2).lower() if match else None
        if unit not in _UNITS:
            raise UserError(f"{what}: {printable(value, 100)!r} is not a size; give bytes or "
                            "e.g. '320 KiB', '1 MiB'")
        size = float(match.group(1)) * _UNITS[unit]
    if not minimum <= size <= MAX_SIZE:  # inf (400 digits) and negative ints included
        raise UserError(f"{what}: {printable(value, 100)} is outside {minimum} B..1 TiB; give "
                        "the board's size, e.g. '320 KiB', '1 MiB'")
    return int(size)


MAX_SIZE = 2 ** 40  # bytes: no microcontroller has a terabyte of SRAM or flash


_FIELDS = ("name", "mcu", "core", "isa", "sram", "flash")


def board_from_mapping(entry: dict, where: str) -> Board:
    """A :class:`Board` from one entry of a board file (the format of ``core/boards.yaml``)."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: a board is a mapping with {', '.join(_FIELDS)}, got {entry!r}")
    missing = [k for k in ("name", "sram", "flash") if k not in entry]
    unknown = sorted(set(entry) - {*_FIELDS, "aliases", "source", "reserve"})
    if missing or unknown:
        raise UserError(f"{where}: board {entry.get('name', '?')!r} "
                        + (f"lacks {', '.join(missing)}" if missing else
                           f"has unknown keys {', '.join(unknown)}")
                        + f" (keys: {', '.join(_FIELDS)}, aliases, source, reserve)")
    reserve = entry.get("reserve") or {}
    if not isinstance(reserve, dict) or set(reserve) - {"sram", "flash"}:
        raise UserError(f"{where}: reserve of {entry['name']!r} must be a mapping with sram "
                        f"and/or flash, got {reserve!r}")
    name = printable(entry["name"])  # names from a user's file reach every verdict line
    return Board(name, printable(entry.get("mcu", name)),
                 printable(entry.get("core", "unknown core")), str(entry.get("isa", "dsp")),
                 parse_size(entry["sram"], f"{where}: sram"),
                 parse_size(entry["flash"], f"{where}: flash"),
                 printable(entry.get("source", where)),
                 parse_size(reserve.get("sram", 0), f"{where}: reserve sram", 0),
                 parse_size(reserve.get("flash", 0), f"{where}: reserve flash", 0))


def read_board_file(path: str | Path) -> list[tuple[Board, tuple[str, ...]]]:
    """The boards of a YAML board file (``boards:`` list, or one board mapping), with their
    aliases."""
    doc = load_yaml(path, "board file")
    entries = doc.get("boards") if isinstance(doc, dict) and "boards" in doc else [doc]
    if not isinstance(entries, list) or not entries:
        raise UserError(f"board file {str(path)!r} holds no board (see core/boards.yaml)")
    return [(board_from_mapping(e, str(path)), tuple(str(a) for a in (e.get("aliases") or ())))
            for e in entries]


def is_board_file(request: str) -> bool:
    return request.lower().endswith((".yaml", ".yml"))


def with_budgets(board: Board, sram: int | None = None, flash: int | None = None) -> Board:
    """``board`` with its SRAM / flash region replaced (``--sram`` / ``--flash``); the reserve
    stays."""
    return replace(board, sram_bytes=sram or board.sram_bytes,
                   flash_bytes=flash or board.flash_bytes,
                   source=board.source + ("; budgets from --sram / --flash" if sram or flash
                                          else ""))


def custom_board(sram: int | None, flash: int | None) -> Board:
    """The board of bare ``--sram`` / ``--flash`` budgets (no --board): a missing one is
    unlimited in effect (never the reason a model does not fit)."""
    return Board("custom", "budgets from --sram / --flash", "unknown core", "dsp",
                 sram or UNLIMITED, flash or UNLIMITED, "--sram / --flash")


UNLIMITED = 2 ** 40
BOARDS: Registry[Board] = Registry("board")
for _board, _aliases in read_board_file(Path(__file__).with_name("boards.yaml")):
    BOARDS.add(_board.name, _board, _aliases)


@dataclass(frozen=True)
class Needs:
    """What a model needs in SRAM and flash (bytes)."""

    sram_needed: int
    flash_needed: int


@dataclass(frozen=True)
class Verdict:
    """Whether a model's SRAM and flash needs fit a board, with margins (positive = room left).

    Predicted (``basis`` unset) or measured on the board's core in emulation (``basis`` says how;
    ``predicted`` keeps the analytic needs, ``latency_ms`` an estimate where calibrated). The
    derived figures are fields, so a record of a verdict (``tinyexport.json_record.to_record``)
    carries them, in the order reports have always shown them."""

    board: str
    fits: bool = field(init=False)
    sram_needed: int
    sram_budget: int
    sram_margin: int = field(init=False)
    flash_needed: int
    flash_budget: int
    flash_margin: int = field(init=False)
    isa: str | None = field(default=None, metadata=OMIT_NONE)
    basis: str | None = field(default=None, metadata=OMIT_NONE)
    predicted: Needs | None = field(default=None, metadata=OMIT_NONE)
    latency_ms: float | None = field(default=None, metadata=OMIT_NONE)
    latency_basis: str | None = field(default=None, metadata=OMIT_NONE)
    # Why it does not fit: "SRAM", "flash" or "SRAM and flash" (None when it fits).
    short_of: str | None = field(init=False, default=None, metadata=OMIT_NONE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sram_margin", self.sram_budget - self.sram_needed)
        object.__setattr__(self, "flash_margin", self.flash_budget - self.flash_needed)
        object.__setattr__(self, "fits", self.sram_margin >= 0 and self.flash_margin >= 0)
        short = [what for what, margin in (("SRAM", self.sram_margin),
                                           ("flash", self.flash_margin)) if margin < 0]
        object.__setattr__(self, "short_of", " and ".join(short) or None)

    @classmethod
    def from_record(cls, record: dict) -> Verdict:
        """The verdict a record holds (a report's JSON, export.json's ``firmware.board``)."""
        names = [f.name for f in fields(cls) if f.init]
        values = {k: record[k] for k in names if k in record}
        if values.get("predicted") is not None:
            values["predicted"] = Needs(**values["predicted"])
        return cls(**values)


def verdict(board: Board, sram_needed: int, flash_needed: int, isa: str | None = None) -> Verdict:
    """The verdict for ``board`` (a resolved profile: the registry was asked once, by the caller)."""
    return Verdict(board.name, sram_needed, board.sram_budget, flash_needed, board.flash_budget,
                   isa=isa)

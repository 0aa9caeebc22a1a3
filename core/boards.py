"""Board profiles: SRAM and flash budgets of common TinyML microcontrollers.

Figures from ``docs/boards.md`` §1. ``sram_bytes`` is the contiguous RAM a model's
arena can use (e.g. the 512 KB AXI SRAM of the STM32H743, not its 1 MB total); ``flash_bytes`` is
on-chip flash, or the usual on-board QSPI part where the chip has none (RP2040, ESP32-S3).
``isa`` selects the CMSIS-NN scratch rules of ``docs/tflm_memory.md`` §5.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tinyexport.json_record import OMIT_NONE
from tinyexport.registry import Registry

__all__ = ["KIB", "MIB", "Board", "Needs", "Verdict", "verdict"]

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    name: str
    mcu: str
    core: str
    isa: str  # "dsp" (Cortex-M4/M7), "mve" (M55/M85), "none" (M0+), "xtensa"
    sram_bytes: int
    flash_bytes: int
    source: str

    def __post_init__(self) -> None:
        if self.sram_bytes <= 0 or self.flash_bytes <= 0:
            raise ValueError(f"board {self.name}: SRAM and flash must be positive")
        if self.isa not in {"dsp", "mve", "none", "xtensa"}:
            raise ValueError(f"board {self.name}: unknown isa {self.isa!r}")


BOARDS: Registry[Board] = Registry("board")


def _add(board: Board, *aliases: str) -> None:
    BOARDS.add(board.name, board, aliases)


_add(Board("stm32f412", "STM32F412 (Nucleo-F412ZG)", "Cortex-M4F @ 100 MHz", "dsp",
           256 * KIB, 1 * MIB, "RIOT board doc; MCUNet 256 kB/1 MB target (mcunet-in2)"), "f412")
_add(Board("stm32f746", "STM32F746NG (DISCO-F746NG)", "Cortex-M7 @ 216 MHz", "dsp",
           320 * KIB, 1 * MIB, "DS10916 (320 KB main SRAM); MCUNet default board"), "f746")
_add(Board("stm32f765", "STM32F765", "Cortex-M7", "dsp",
           512 * KIB, 1 * MIB, "MCUNet paper Table 4"), "f765")
_add(Board("stm32h743", "STM32H743 (Nucleo-H743ZI)", "Cortex-M7 @ 480 MHz", "dsp",
           512 * KIB, 2 * MIB, "DS12110; 512 KB contiguous AXI SRAM; MCUNet 512 kB/2 MB target"),
     "h743")
_add(Board("nrf52840", "nRF52840 (Arduino Nano 33 BLE Sense)", "Cortex-M4F @ 64 MHz", "dsp",
           256 * KIB, 1 * MIB, "nRF52840 PS v1.11 §4.2"), "nano33ble")
_add(Board("rp2040", "RP2040 (Raspberry Pi Pico)", "2x Cortex-M0+ @ 133 MHz", "none",
           264 * KIB, 2 * MIB, "RP2040 datasheet; 2 MB QSPI flash on the Pico board"), "pico")
_add(Board("esp32s3", "ESP32-S3 (DevKitC-1 N8)", "2x Xtensa LX7 @ 240 MHz", "xtensa",
           512 * KIB, 8 * MIB, "ESP32-S3 datasheet; 8 MB external flash (N8)"), "esp32-s3")
_add(Board("nucleo-l4r5zi", "STM32L4R5ZI (NUCLEO-L4R5ZI)", "Cortex-M4F @ 120 MHz", "dsp",
           640 * KIB, 2 * MIB, "vendor figure; MLPerf Tiny reference platform"), "l4r5zi")


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "sram_margin", self.sram_budget - self.sram_needed)
        object.__setattr__(self, "flash_margin", self.flash_budget - self.flash_needed)
        object.__setattr__(self, "fits", self.sram_margin >= 0 and self.flash_margin >= 0)

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
    return Verdict(board.name, sram_needed, board.sram_bytes, flash_needed, board.flash_bytes,
                   isa=isa)

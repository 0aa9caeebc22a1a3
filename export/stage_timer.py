"""The export's stage records and their timer: one progress line a stage, one record a stage
(``export.json``'s ``checks``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StageRecord", "StageTimer"]

_log = logging.getLogger(__name__)


@dataclass
class StageRecord:
    name: str
    seconds: float = 0.0
    status: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


class StageTimer:
    """Runs named stages, logs one progress line each and keeps their records."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.records: list[StageRecord] = []
        self.progress = progress or _log.info

    @contextmanager
    def stage(self, name: str):
        record = StageRecord(name)
        index = len(self.records) + 1
        self.progress(f"[{index}] {name} ...")
        start = time.perf_counter()
        try:
            yield record
        except Exception as exc:
            record.status = "FAILED"
            record.details.setdefault("reason", str(exc))
            raise
        except BaseException:  # Ctrl-C, SIGTERM / SIGHUP (errors.Terminated): not an "ok" stage
            record.status = "interrupted"
            raise
        finally:
            record.seconds = time.perf_counter() - start
            self.records.append(record)
            self.progress(_stage_line(index, record))


def _stage_line(index: int, record: StageRecord) -> str:
    """``[8] int8 checks: ok in 0.1 s (...)`` or ``[9] int8 gate: FAILED — why``."""
    if record.status == "FAILED":
        return f"[{index}] {record.name}: FAILED — {record.details.get('reason', 'see export.json')}"
    summary = ", ".join(f"{k}={_short(v)}" for k, v in record.details.items()
                        if not isinstance(v, (dict, list)))
    return (f"[{index}] {record.name}: {record.status} in {record.seconds:.1f} s"
            + (f" ({summary})" if summary else ""))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

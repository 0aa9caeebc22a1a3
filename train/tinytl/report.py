"""``tinyreport --train-memory``: the analytic training memory of the six methods (docs/tinytl.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyexport.errors import UserError
from tinyexport.json_record import NOT_RECORDED, OMIT_NONE, to_record
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.memory import (
    MemoryBreakdown,
    analytic_train_memory,
    breakdown_record,
    measure_train_memory,
)
from tinyexport.train.tinytl.methods import METHODS, set_trainable_
from tinyexport.train.tinytl.modules import default_config, insert_lite_residual


@dataclass(frozen=True)
class TrainMemoryTable:
    model: str
    resolution: int
    num_classes: int
    batch_size: int
    lite_residual: dict
    rows: tuple[MemoryBreakdown, ...] = field(metadata=NOT_RECORDED)  # recorded in MB, rounded
    measured_mb: dict | None = field(default=None, metadata=OMIT_NONE)
    measured_how: str | None = field(default=None, metadata=OMIT_NONE)


RULES = ("docs/tinytl.md §6: batch x per-sample peak activation + 4 B/trainable + 1 B/frozen param; "
         "no gradient / optimizer state")


def train_memory_record(table: TrainMemoryTable) -> dict:
    """The ``tinyreport --train-memory --json`` document: the settings, each method's total MB,
    the breakdown rows, the counting rules, then the measured column when there is one."""
    record = to_record(table)
    measured = {key: record.pop(key) for key in ("measured_mb", "measured_how") if key in record}
    return {**record, "train_memory_mb": {r.method: round(r.total_mb, 2) for r in table.rows},
            "breakdown": [breakdown_record(r) for r in table.rows], "rules": RULES, **measured}


def train_memory_table(model_name: str, resolution: int | None = None, num_classes: int = 1000,
                       batch_size: int = 8, measure: bool = False) -> TrainMemoryTable:
    """Adapters inserted by the model's default rule, then each method's trainable set."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    base = build_model(model_name, num_classes=num_classes, resolution=resolution)
    res = base.spec.resolution
    config = default_config(base.spec.name)
    adapted = insert_lite_residual(base, config)
    rows, measured = [], {}
    for method in METHODS:  # requires_grad toggled in place on our own copy (no deep copies)
        set_trainable_(adapted, method)
        prepared = adapted
        rows.append(analytic_train_memory(prepared, res, method, batch_size))
        if measure:
            m = measure_train_memory(prepared, res, method, batch_size)
            measured[method], how = round(m.mb, 2), m.how
    return TrainMemoryTable(base.spec.name, res, num_classes, batch_size, to_record(config),
                            tuple(rows), measured or None, how if measure else None)


def render(table: TrainMemoryTable) -> str:
    head = (f"training memory — {table.model} @ {table.resolution}px, batch {table.batch_size}, "
            f"{table.num_classes} classes (analytic, docs/tinytl.md §6; MB = 1e6 B)")
    lines = [head, f"{'method':<14}{'total MB':>10}{'params MB':>11}{'peak act/sample MB':>20}"
                   f"{'trainable':>12}" + (f"{'measured MB':>13}" if table.measured_mb else "")]
    for r in table.rows:
        line = (f"{r.method:<14}{r.total_mb:>10.1f}{r.param_bytes / 1e6:>11.2f}"
                f"{r.peak_activation_bytes / 1e6:>20.3f}{r.trainable_params:>12,}")
        if table.measured_mb:
            line += f"{table.measured_mb[r.method]:>13.1f}"
        lines.append(line)
    if table.measured_how:
        lines.append(f"measured: {table.measured_how} (fp32, one Adam step)")
    return "\n".join(lines)

"""``tinyreport --train-memory``: the analytic training memory of the six methods (docs/tinytl.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

from tinyexport.errors import UserError
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.memory import MemoryBreakdown, analytic_train_memory, measure_train_memory
from tinyexport.train.tinytl.methods import METHODS, set_trainable_
from tinyexport.train.tinytl.modules import default_config, insert_lite_residual


@dataclass(frozen=True)
class TrainMemoryTable:
    model: str
    resolution: int
    num_classes: int
    batch_size: int
    lite_residual: dict
    rows: tuple[MemoryBreakdown, ...]
    measured_mb: dict | None = None
    measured_how: str | None = None

    def as_dict(self) -> dict:
        d = {"model": self.model, "resolution": self.resolution, "num_classes": self.num_classes,
             "batch_size": self.batch_size, "lite_residual": self.lite_residual,
             "train_memory_mb": {r.method: round(r.total_mb, 2) for r in self.rows},
             "breakdown": [r.as_dict() for r in self.rows],
             "rules": "docs/tinytl.md §6: batch x per-sample peak activation + 4 B/trainable + "
                      "1 B/frozen param; no gradient / optimizer state"}
        if self.measured_mb is not None:
            d["measured_mb"] = self.measured_mb
            d["measured_how"] = self.measured_how
        return d


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
    return TrainMemoryTable(base.spec.name, res, num_classes, batch_size, config.as_dict(),
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

"""Checks of numeric settings, shared by the training configs (``Recipe``, ``TrainConfig``,
``TransferConfig``): each raises ``ValueError`` naming the setting (and its flag), the allowed
range and the value, so ``--lr nan`` fails before anything is built or written.
"""

from __future__ import annotations

import math

from tinyexport.safe_io import short_repr
from tinyexport.train.models.spec import resolution_problem

MAX_SEED = 2**32 - 1  # numpy's seed range (torch accepts more)
# Any LR above this diverges at once (the reference's is 0.05 per 256 images; Adam's 2e-4); the
# bound also keeps LR x batch from overflowing to inf inside the optimizer.
MAX_LR = 10.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    """``value`` is an integer >= ``minimum`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        none = " or null" if optional else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{none}, got {short_repr(value)}")


def check_positive(name: str, value: object, optional: bool = False) -> None:
    """``value`` is a finite number > 0 (or None when ``optional``)."""
    if optional and value is None:
        return
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {short_repr(value)}")


def check_non_negative(name: str, value: object) -> None:
    """``value`` is a finite number >= 0."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {short_repr(value)}")


def check_fraction(name: str, value: object) -> None:
    """``value`` is a number in [0, 1) (label smoothing, dropout, momentum)."""
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {short_repr(value)}")


def check_lr_factor(name: str, value: object) -> None:
    """``value`` is a number in (0, 1]: a fraction of the peak LR (the warmup's start)."""
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {short_repr(value)}")


def check_lr(name: str, value: object, optional: bool = False) -> None:
    """``value`` is a learning rate in (0, :data:`MAX_LR`] (or None when ``optional``)."""
    if optional and value is None:
        return
    if not _is_real(value) or not 0 < value <= MAX_LR:
        raise ValueError(f"{name} must be a number in (0, {MAX_LR:g}], got {short_repr(value)}; "
                         "typical values are 0.05 (SGD, per 256 images) or 2e-4 (Adam)")


def check_seed(name: str, value: object) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in 0..{MAX_SEED}, got {short_repr(value)}")


def check_resolution(name: str, value: object) -> None:
    """None (the model's own) or a zoo input size (``models.spec`` bounds)."""
    problem = resolution_problem(value) if value is not None else None
    if problem:  # "resolution must be ..." -> "resolution (--resolution) must be ..."
        raise ValueError(problem.replace("resolution", name, 1))


def check_multipliers(name: str, values: tuple | None) -> None:
    """None or a non-empty list of finite numbers > 0 (width / expand multipliers)."""
    if values is None:
        return
    if not values:
        raise ValueError(f"{name} must not be empty")
    for value in values:
        check_positive(f"each of {name}", value)

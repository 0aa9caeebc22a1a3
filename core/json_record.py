"""The one conversion of our result dataclasses to plain JSON values (``export.json``, ``--json``).

Result types are frozen dataclasses; :func:`to_record` turns one (with everything it holds) into
dicts, lists, strings and numbers, field by field in declaration order, the way
``dataclasses.asdict`` does, so no result class writes its own ``as_dict``. Two field flags, as
``field(metadata=...)``, say what a record leaves out:

* :data:`OMIT_NONE` - an optional figure that is absent from the record (not ``null``) when unset;
* :data:`NOT_RECORDED` - what a caller needs but a record does not hold (model bytes, a search).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

__all__ = ["OMIT_NONE", "NOT_RECORDED", "to_record", "relative_paths"]

OMIT_NONE = {"record": "omit if None"}
NOT_RECORDED = {"record": "never"}


def to_record(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses by field, tuples as lists, paths as strings,
    numpy scalars as Python numbers, non-finite floats as strings (``"inf"``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_record(getattr(value, f.name)) for f in dataclasses.fields(value)
                if _recorded(f, getattr(value, f.name))}
    if isinstance(value, dict):
        return {str(k): to_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_record(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return to_record(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _recorded(field: dataclasses.Field, value: Any) -> bool:
    flag = field.metadata.get("record")
    return not (flag == NOT_RECORDED["record"] or (flag == OMIT_NONE["record"] and value is None))


def relative_paths(value: Any, root: Path) -> Any:
    """A record with every string path under ``root`` made relative to it (an export is written
    into a temporary folder renamed into place at the end: export.json names the final files)."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(root)):
        return str(Path(value).relative_to(root))
    return value

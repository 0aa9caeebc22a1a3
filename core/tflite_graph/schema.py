"""The TFLite flatbuffer schema (generated Python), op names and tensor dtypes.

The generated ``schema_py_generated.py`` ships inside the ``tflite-micro`` wheel (docs/tflm_memory.md
§9.1) and, identically, inside ``ai-edge-litert``. It is loaded from its file path, so neither
package's ``__init__`` (which loads a C library) runs in the caller's process; the module itself
only needs ``flatbuffers``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from tinyexport.errors import UserError

# Where each wheel keeps the generated schema, in order of preference (TFLM's own first).
_SCHEMA_FILES = (("tflite_micro", "tensorflow/lite/micro/python/schema_py_generated.py"),
                 ("ai_edge_litert", "schema_py_generated.py"))

# TensorType enum value -> (name, bytes per element); tflite schema.fbs `enum TensorType`.
DTYPES: dict[int, tuple[str, float]] = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
    5: ("string", 1), 6: ("bool", 1), 7: ("int16", 2), 8: ("complex64", 8), 9: ("int8", 1),
    10: ("float64", 8), 11: ("complex128", 16), 12: ("uint64", 8), 15: ("uint32", 4),
    16: ("uint16", 2), 17: ("int4", 0.5), 18: ("bfloat16", 2),
}
DTYPE_BYTES: dict[str, float] = {name: size for name, size in DTYPES.values()}


@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The tflite flatbuffer schema module from the installed tflite-micro (or LiteRT) wheel.

    Raises:
        UserError: neither wheel is installed.
    """
    for package, relative in _SCHEMA_FILES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / relative
        if path.is_file():
            return _load(path)
    raise UserError("the 'tflite-micro' package is not installed; "
                    "install it (pip install tflite-micro) to read .tflite files")


def _load(path: Path) -> ModuleType:
    mod_spec = importlib.util.spec_from_file_location("_tinyexport_tflite_schema", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def op_names() -> dict[int, str]:
    """BuiltinOperator code -> name (e.g. 3 -> 'CONV_2D')."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}

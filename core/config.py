"""Frozen config helpers: YAML file -> CLI overrides -> resolved config saved with the run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any, TypeVar

from tinyexport.errors import UserError

C = TypeVar("C")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def from_mapping(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build a frozen dataclass from a mapping; unknown keys are an error naming the known ones."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(f"unknown key(s) {unknown} in {source}; known: {sorted(fields)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid {source}: {exc}") from None


def git_sha(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions(names: tuple[str, ...] = ("torch", "onnx", "onnxruntime", "tensorflow-cpu",
                                               "onnx2tf", "ai-edge-litert", "tflite-micro",
                                               "numpy")) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions

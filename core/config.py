"""Frozen config helpers: YAML file -> CLI overrides -> resolved config saved with the run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any, TypeVar

from tinyexport.errors import UserError
from tinyexport.safe_io import MiB, read_capped, short_repr

C = TypeVar("C")
MAX_YAML_BYTES = 1 * MiB  # a recipe is a few hundred bytes
MAX_MESSAGE = 300  # characters of a validation error quoted back (values are never dumped)


def load_yaml(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping from a regular file of at most :data:`MAX_YAML_BYTES`, without anchors or
    aliases (a kilobyte of nested aliases expands to gigabytes; recipes and board files never
    need them). The one YAML reader of user files: recipes, board files. ``what`` names the file
    in messages."""
    import yaml

    path = Path(path)
    try:
        text = read_capped(path, what, MAX_YAML_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 text; pass a YAML file") from None
    try:
        _refuse_aliases(yaml, text, path, what)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {str(path)!r} is not valid YAML: "
                        f"{_clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def _refuse_aliases(yaml, text: str, path: Path, what: str) -> None:
    """Scan the parser's events (linear in the text: nothing is expanded) for ``&anchor`` and
    ``*alias``."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        name = getattr(event, "anchor", None)
        if name is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            line = event.start_mark.line + 1
            raise UserError(f"{what} {str(path)!r} uses the YAML anchor/alias "
                            f"{sign}{short_repr(name)[1:-1]} (line {line}); these files are "
                            "plain mappings: write the values out instead")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def from_mapping(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build a frozen dataclass from a mapping; unknown keys are an error naming the known ones."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(f"unknown key(s) {short_repr(unknown)} in {source}; known: "
                        f"{sorted(fields)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid {source}: {_clip(str(exc))}") from None


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

"""Atomic writes: the old result survives a failed write, and new files get normal permissions."""

import os
import stat

import pytest

from tinyexport.atomic import atomic_dir, atomic_path, write_json, write_text
from tinyexport.errors import UserError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_write_replaces_and_uses_the_umask(tmp_path):
    target = tmp_path / "a" / "x.json"
    write_json(target, {"a": 1})
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o666 & ~_umask()  # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temp left


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_atomic_dir_needs_force_and_survives_failure(tmp_path):
    out = tmp_path / "export"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("1")
    assert (out / "f").read_text() == "1"
    assert _mode(out) == 0o777 & ~_umask()  # not mkdtemp's 0700
    with pytest.raises(UserError, match="--force"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "f").write_text("2")
            raise RuntimeError("interrupted")
    assert (out / "f").read_text() == "1"
    with atomic_dir(out, force=True) as tmp:
        (tmp / "f").write_text("3")
    assert (out / "f").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]

"""Atomic writes: the old result survives a failed write, and new files get normal permissions."""

import os
import stat

import pytest

import tinyexport.atomic as atomic
from tinyexport.errors import UserError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def _umask_022():
    """A known umask (022): the modes then differ from mkstemp's 0600 / mkdtemp's 0700, so the
    tests fail if the chmod is missing (under umask 077 they could not)."""
    import importlib

    import tinyexport.atomic as atomic

    old = os.umask(0o022)
    importlib.reload(atomic)  # the module reads the umask at import
    yield
    os.umask(old)
    importlib.reload(atomic)


def test_write_replaces_and_uses_the_umask(tmp_path):
    target = tmp_path / "a" / "x.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o644  # umask 022, not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temp left


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_atomic_dir_needs_force_and_survives_failure(tmp_path):
    out = tmp_path / "export"
    with atomic.atomic_dir(out) as tmp:
        (tmp / "f").write_text("1")
    assert (out / "f").read_text() == "1"
    assert _mode(out) == 0o755  # umask 022, not mkdtemp's 0700
    with pytest.raises(UserError, match="--force"):
        with atomic.atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(out, force=True) as tmp:
            (tmp / "f").write_text("2")
            raise RuntimeError("interrupted")
    assert (out / "f").read_text() == "1"
    with atomic.atomic_dir(out, force=True) as tmp:
        (tmp / "f").write_text("3")
    assert (out / "f").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_force_replaces_only_what_the_caller_accepts(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="will not replace.*holds notes"):
        with atomic.atomic_dir(out, force=True, replaceable=lambda p: "it holds notes.txt"):
            pass
    assert (out / "notes.txt").read_text() == "mine"


def test_existing_file_as_folder_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="existing file"):
        with atomic.atomic_dir(tmp_path / "f"):
            pass


def test_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    out = tmp_path / "export"
    with atomic.atomic_dir(out) as tmp:
        with pytest.raises(atomic.FolderBusy, match="another run"):
            with atomic.atomic_dir(out):
                pass
        (tmp / "f").write_text("first")
    assert (out / "f").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # lock file removed


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path):
    out = tmp_path / "export"
    stale = tmp_path / ".export.123.abc.partial"
    (stale / ".scratch").mkdir(parents=True)
    old = tmp_path / ".export.old"
    old.mkdir()
    (old / "f").write_text("last good")  # killed between the two renames: DIR missing
    assert atomic.recover_folder(out)
    assert (out / "f").read_text() == "last good" and not stale.exists() and not old.exists()
    old.mkdir()  # both present: the replacement finished, only the cleanup was lost
    atomic.recover_folder(out)
    assert not old.exists() and (out / "f").read_text() == "last good"


def test_a_rerun_after_a_kill_restores_then_replaces(tmp_path):
    out = tmp_path / "export"
    old = tmp_path / ".export.old"
    old.mkdir()
    (old / "f").write_text("last good")
    with pytest.raises(UserError, match="--force"):  # restored first, so it now exists
        with atomic.atomic_dir(out):
            pass
    assert (out / "f").read_text() == "last good"

"""Atomic writes: write to a temporary name in the same folder, then rename into place.

An interrupted run therefore leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tinyexport.errors import UserError

_log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the file what open() would have
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file (imports torch lazily)."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos"
            raise OSError(errno.EIO, f"torch.save failed ({str(exc).splitlines()[0][:120]}); is "
                          "the disk full?", str(path)) from None


class FolderBusy(UserError):
    """Another live process is writing the same output folder."""


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on output folder ``path`` (a ``.NAME.lock`` file beside it).

    ``flock`` is released by the kernel when the holder dies, so a killed run never leaves a stale
    lock; the file is removed on release, and a lock taken on a file that another process removed
    meanwhile is retried (same inode check as lockfile tools do).
    """
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"output folder {str(path)!r} is being written by another run "
                             "right now; wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def recover_folder(path: Path) -> list[str]:
    """Clean what a killed run left beside ``path`` (call with the folder's lock held, so no live
    run owns any of it): stale ``.NAME.*.partial`` folders are removed; a ``.NAME.old`` left by a
    kill between the two renames of a replacement is restored when ``path`` is missing (it is the
    last complete result) and removed otherwise. Returns what was done, for the log."""
    done = []
    for stale in sorted(path.parent.glob(f".{path.name}.*.partial")):
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"removed the unfinished {stale.name} of an interrupted run")
    old = path.with_name(f".{path.name}.old")
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}, left by an interrupted replacement")
        else:
            os.replace(old, path)
            done.append(f"restored {path.name} from {old.name} (an interrupted replacement had "
                        "moved the previous result aside)")
    return done


MANIFEST = "files.sha256"  # what a folder written by atomic_dir holds (``sha256sum -c`` format)


def write_manifest(folder: Path) -> None:
    """``folder/files.sha256``: the SHA-256 of every file in ``folder`` (the last file written),
    so a later ``--force`` can tell the files it wrote from files added or edited since."""
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}" for p in _files(folder)
             if p.name != MANIFEST or p.parent != folder]
    write_text(folder / MANIFEST, "".join(line + "\n" for line in lines))


def foreign_files(folder: Path) -> list[str]:
    """Files of ``folder`` that its manifest does not list with their current content: added or
    edited since it was written (every file when there is no manifest)."""
    listed: dict[str, str] = {}
    try:
        for line in (folder / MANIFEST).read_text().splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
    except (OSError, UnicodeDecodeError):
        listed = {}
    foreign = []
    for p in _files(folder):
        name = p.relative_to(folder).as_posix()
        if name == MANIFEST:
            continue
        if p.is_symlink() or listed.get(name) != file_sha256(p):
            foreign.append(name)
    return foreign


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def out_folder_problem(text: str | os.PathLike, allow_cwd: bool = False,
                       what: str = "output folder",
                       example: str = "exports/my-model") -> str | None:
    """Why ``--out text`` cannot be a folder the tools write (empty, the file system's root, or,
    unless ``allow_cwd``, the current folder or one above it: an export folder is replaced as a
    whole), or None. ``what`` and ``example`` word the hint (``--out example``)."""
    if not str(text).strip():
        return f"--out is empty; name the {what}, e.g. --out {example}"
    resolved = Path(text).resolve()
    if resolved.parent == resolved:
        return (f"--out {str(text)!r} is the file system's root; name a folder below it, e.g. "
                f"--out {example}")
    cwd = Path.cwd().resolve()
    if not allow_cwd and (resolved == cwd or resolved in cwd.parents):
        return (f"--out {str(text)!r} is the current folder (or one above it), which the output "
                f"folder would replace as a whole; name a new folder, e.g. --out {example}")
    return None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False,
               replaceable: Callable[[Path], str | None] | None = None) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it onto ``path`` at the end.

    Without ``force`` an existing ``path`` is an error (nothing is overwritten). With ``force`` the
    old folder is replaced only after the new one is complete, and only if ``replaceable(path)``
    returns None (else its text says why not: ``force`` never deletes what is not ours); files
    in it that its manifest (:func:`write_manifest`) does not list as they are (a user's notes,
    an edited source) are kept: the old folder is moved aside to ``PATH.backup-N`` and a warning
    says so. A ``path`` that is a symlink to a folder is written through: its target is
    replaced, the link stays. The folder is locked for the whole block (a second writer fails
    with :class:`FolderBusy`), and leftovers of killed runs are cleaned first
    (:func:`recover_folder`).
    """
    problem = out_folder_problem(path)
    if problem:
        raise UserError(problem)
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {str(path)!r} is an existing file, not a folder; choose another "
                        "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path):
        for line in recover_folder(path):
            _log.warning("%s: %s", path, line)
        _check_replace(path, force, replaceable)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial",
                                    dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, _DIR_MODE)  # mkdtemp creates 0700
            write_manifest(tmp)
            _keep_foreign_files(path)
            _swap_into_place(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _check_replace(path: Path, force: bool, replaceable: Callable[[Path], str | None] | None
                   ) -> None:
    if not path.exists():
        return
    if not force:
        raise UserError(f"output folder {str(path)!r} exists; pass --force to replace it")
    reason = replaceable(path) if replaceable is not None else None
    if reason:
        raise UserError(f"--force will not replace {str(path)!r}: {reason}; choose another --out "
                        "or move those files away")


def _keep_foreign_files(path: Path) -> None:
    """Move the folder being replaced to ``PATH.backup-N`` when it holds files it was not written
    with (never deleted); the new folder then takes its place."""
    if not path.is_dir():
        return
    foreign = foreign_files(path)
    if not foreign:
        return
    n = 1
    while path.with_name(f"{path.name}.backup-{n}").exists():
        n += 1
    backup = path.with_name(f"{path.name}.backup-{n}")
    os.replace(path, backup)
    shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
    _log.warning("warning: %s held %d file(s) the previous export did not write or that were "
                 "edited since (%s); the previous folder was moved to %s, nothing was deleted",
                 path, len(foreign), shown, backup)


def _swap_into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)  # a kill here leaves .old, restored by the next run (recover_folder)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)

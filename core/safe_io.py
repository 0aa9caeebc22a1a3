"""Reading user files with limits decided up front: regular files only, a byte cap per file, a
bounded ``repr`` for values quoted in error messages.

Every reader of user data (images, IDX / CIFAR-10 files, checkpoints, recipe YAML) opens through
:func:`open_regular`: a FIFO, a device such as ``/dev/zero``, a socket or a folder is refused by
name before a byte is read (a FIFO would block forever, ``/dev/zero`` never ends), and a file
larger than the reader's cap is refused before anything is allocated for it.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import BinaryIO

from tinyexport.errors import UserError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6
_REPR.maxlevel = 3


def short_repr(value: object) -> str:
    """``repr(value)`` cut to about 80 characters: error messages quote values, never dump them."""
    return _REPR.repr(value)


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', ... for an ``st_mode`` that is not a regular
    file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def human_bytes(count: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def open_regular(path: str | os.PathLike, what: str, max_bytes: int) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file of at most ``max_bytes``.

    The file is opened without blocking (a FIFO opens at once instead of waiting for a writer)
    and checked on the open descriptor, so a path swapped for something else in between is caught.

    Raises:
        UserError: naming ``what`` and the path: it does not exist, is a FIFO / device / socket /
            folder, cannot be read, or is larger than ``max_bytes``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {str(path)!r} is a folder, not a file; pass a file") from None
    except OSError as exc:
        raise UserError(f"{what} {str(path)!r} cannot be opened: {exc.strerror or exc}") from None
    try:
        _check_regular(os.fstat(fd), path, what, max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(info: os.stat_result, path: Path, what: str, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {str(path)!r} is {file_kind(info.st_mode)}, not a regular file; "
                        "pass a regular file")
    if info.st_size > max_bytes:
        raise UserError(f"{what} {str(path)!r} is {human_bytes(info.st_size)}, above the limit "
                        f"of {human_bytes(max_bytes)} for {what}s; pass the right file")


def check_regular(path: str | os.PathLike, what: str, max_bytes: int) -> Path:
    """:func:`open_regular`'s checks alone (for readers that open the file themselves)."""
    with open_regular(path, what, max_bytes):
        return Path(path)


def read_capped(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """All bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`)."""
    with open_regular(path, what, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise UserError(f"{what} {str(path)!r} is larger than the limit of "
                        f"{human_bytes(max_bytes)}; pass the right file")
    return data


def read_exactly(stream: BinaryIO, count: int, path: str | os.PathLike, what: str) -> bytes:
    """``count`` bytes of ``stream`` (a file or a decompressing reader) and nothing more: more data
    after them (a gzip bomb, padding) or fewer is an error naming the file."""
    data = stream.read(count)
    if len(data) < count:
        raise UserError(f"{what} {str(path)!r} is truncated: {len(data)} bytes where its header "
                        f"says {count}; fix or replace the file")
    if stream.read(1):
        raise UserError(f"{what} {str(path)!r} holds more data than its header says ({count} "
                        "bytes); fix or replace the file")
    return data

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
from typing import TYPE_CHECKING, BinaryIO

from tinyexport.errors import UserError

if TYPE_CHECKING:
    import numpy as np

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


# Arrays a user gives as a file (``tinyreport --images``): ``.npy`` or ``.npz``, checked from
# headers alone before anything is allocated or unpacked.
MAX_ARRAY_FILE_BYTES = 256 * MiB  # the file, and what its arrays unpack to (TFLM runs them all)
MAX_ARCHIVE_MEMBERS = 16  # an images file holds 'images' and 'labels'
_NPY_MAGIC = b"\x93NUMPY"


def read_array_file(path: str | os.PathLike, what: str,
                max_bytes: int = MAX_ARRAY_FILE_BYTES) -> dict[str, np.ndarray]:
    """The arrays of a ``.npy`` (one, named ``""``) or ``.npz`` file, without pickles.

    Everything is bounded before it is allocated: a regular file of at most ``max_bytes``; an
    ``.npz`` of at most :data:`MAX_ARCHIVE_MEMBERS` members whose declared sizes sum to at most
    ``max_bytes`` (a zip bomb declares terabytes); each array's header (dtype, shape) read first
    and its bytes checked against the member's declared size and ``max_bytes``.

    Raises:
        UserError: naming ``what`` and the path, the value and the limit.
    """
    import zipfile

    path = Path(path)
    with open_regular(path, what, max_bytes) as f:
        head = f.read(len(_NPY_MAGIC))
        f.seek(0)
        if head == _NPY_MAGIC:
            return {"": _read_npy(f, os.fstat(f.fileno()).st_size, path, what, max_bytes)}
        if not zipfile.is_zipfile(f):
            raise UserError(f"{what} {str(path)!r} is not a readable .npy / .npz file (it "
                            f"starts with {head!r}); save the arrays with numpy.save / numpy.savez")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                entries = archive.infolist()
                _check_members(entries, path, what, max_bytes)
                arrays = {}
                for entry in entries:
                    with archive.open(entry) as member:
                        name = entry.filename[:-4] if entry.filename.endswith(".npy") \
                            else entry.filename
                        arrays[name] = _read_npy(member, entry.file_size, path, what, max_bytes,
                                                 f" (array {short_repr(name)})")
                return arrays
        except (zipfile.BadZipFile, EOFError, NotImplementedError, ValueError, OSError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"{what} {str(path)!r} is a damaged .npz archive "
                            f"({str(exc)[:160]}); save it again with numpy.savez") from None


def _check_members(entries: list, path: Path, what: str, max_bytes: int) -> None:
    if len(entries) > MAX_ARCHIVE_MEMBERS:
        raise UserError(f"{what} {str(path)!r} holds {len(entries)} arrays, above the limit of "
                        f"{MAX_ARCHIVE_MEMBERS}; save only the arrays asked for")
    if len({e.filename for e in entries}) < len(entries):
        raise UserError(f"{what} {str(path)!r} names one array more than once (a crafted "
                        "archive); save it again with numpy.savez")
    total = sum(e.file_size for e in entries)
    if total > max_bytes:
        raise UserError(f"{what} {str(path)!r} unpacks to {human_bytes(total)}, above the "
                        f"limit of {human_bytes(max_bytes)}; pass fewer or smaller arrays")


def _read_npy(stream: BinaryIO, size: int, path: Path, what: str, max_bytes: int,
              where: str = "") -> np.ndarray:
    """One array from a ``.npy`` stream of ``size`` bytes: its header first (no object dtype, a
    byte count that fits in ``size`` and ``max_bytes``), then the data."""
    import math

    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        header = (fmt.read_array_header_1_0 if version == (1, 0)
                  else fmt.read_array_header_2_0)(stream, max_header_size=10_000)
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise UserError(f"{what} {str(path)!r}{where} has no valid .npy header "
                        f"({str(exc)[:120]}); save it with numpy.save") from None
    shape, _, dtype = header
    if dtype.hasobject:
        raise UserError(f"{what} {str(path)!r}{where} holds Python objects (dtype "
                        f"{short_repr(str(dtype))}); only numeric arrays are read, never pickles")
    count = math.prod(shape) * dtype.itemsize
    if count > min(max_bytes, size):
        raise UserError(f"{what} {str(path)!r}{where} declares shape {short_repr(shape)} of "
                        f"{dtype} ({human_bytes(count)}), more than it holds or the limit of "
                        f"{human_bytes(max_bytes)}; fix or replace the file")
    data = stream.read(count)
    if len(data) < count:
        raise UserError(f"{what} {str(path)!r}{where} is truncated: {len(data)} of the "
                        f"{count} bytes its header declares; fix or replace the file")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if header[1] else "C")
    return array.copy() if not array.flags.writeable else array


def check_labels(labels, classes: int, source: str) -> None:
    """Every label an integer in ``0..classes-1``; the first that is not is an error naming
    ``source`` (one check for every labelled input: data sets, ``--images`` files)."""
    import numpy as np

    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{source}: labels are {labels.dtype}, not integer class ids; save "
                        "them as integers")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        raise UserError(f"{source}: label {int(labels.flat[bad[0]])} (at index {int(bad[0])}, "
                        f"{len(bad)} such) is outside 0..{classes - 1} for {classes} classes; "
                        "fix the labels or the file")


def check_finite(values, source: str) -> None:
    """No NaN / Inf in a float array given as input (images): the first is an error naming
    ``source``."""
    import numpy as np

    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise UserError(f"{source}: {len(bad)} value(s) are NaN or Inf (first at flat index "
                        f"{int(bad[0])}: {values.flat[bad[0]]}); images must be finite numbers - "
                        "fix the file")

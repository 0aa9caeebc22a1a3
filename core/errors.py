"""User-facing errors: one clear message, a non-zero exit code, no traceback.

Library code raises :class:`UserError` (or ``ValueError``/``FileNotFoundError``) for bad input;
each CLI's ``main`` catches them through :func:`run_cli` and prints one line.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable

_log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILURE = 1
# A requested board's verdict is DOES NOT FIT (tinyexport / tinyreport --board): everything is
# still written and printed; CI fails on it without parsing the output.
EXIT_DOES_NOT_FIT = 3


class UserError(Exception):
    """A mistake in what the user asked for (a value, a path, a file)."""

    exit_code = EXIT_USAGE


class StageError(Exception):
    """A pipeline stage failed for a reason outside the user's input (converter, interpreter)."""

    exit_code = EXIT_FAILURE


_OS_HINTS = {
    errno.ENOSPC: "free some space or choose another --out",
    errno.EDQUOT: "free some space or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "you may not write there; choose another --out",
    errno.EPERM: "you may not write there; choose another --out",
    errno.EEXIST: "it already exists; choose another --out",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a failed read/write: what, where, why and what to do (no traceback)."""
    where = f" {exc.filename!r}" if exc.filename else ""
    why = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno)
    return f"cannot write or read{where}: {why}" + (f" ({hint})" if hint else "")


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body; turn user mistakes into a one-line error and an exit code.

    ``UserError``/``ValueError``/``FileNotFoundError``/``StageError`` become ``error: <message>``
    on stderr; anything else is a bug and keeps its traceback.
    """
    try:
        return body()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path we cannot write: permissions, read-only mount, full disk
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE

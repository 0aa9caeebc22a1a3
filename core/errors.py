"""User-facing errors: one clear message, a non-zero exit code, no traceback.

Library code raises :class:`UserError` (or ``ValueError``/``FileNotFoundError``) for bad input;
each CLI's ``main`` catches them through :func:`run_cli` and prints one line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

_log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILURE = 1
# A requested board's verdict is DOES NOT FIT (tinyexport / tinyreport --board): everything is
# still written and printed; CI fails on it without parsing the output.
EXIT_DOES_NOT_FIT = 3


class UserError(Exception):
    """A mistake in what the user asked for (a value, a path, a file)."""

    exit_code = EXIT_USAGE


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP turned into an exception (:func:`terminating_signals`), so the same
    ``finally`` blocks run as for Ctrl-C: partial folders and locks removed, children killed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


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


MAX_PRINTED = 200  # characters of one name from a file, as printed


def printable(text: object, limit: int | None = MAX_PRINTED) -> str:
    """``text`` safe to print on one line of a terminal, a table or a Markdown report: control
    characters (newline, ESC of an ANSI sequence, BEL, ...), line / paragraph separators and
    other non-printing code points are written as ``\\xNN`` / ``\\uNNNN`` escapes, and it is cut
    to ``limit`` characters. The one escaper for every name a file brings (op, tensor, signature
    and metadata names, class folder names) and for error messages: no input can make a report
    print a line the program did not write. ``limit`` None: no cut."""
    out = []
    for char in str(text):
        if char.isprintable() or char == " ":
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    joined = "".join(out)
    return joined if limit is None or len(joined) <= limit else joined[:limit] + "..."


def describe_os_error(exc: OSError) -> str:
    """One line for a failed read/write: what, where, why and what to do (no traceback)."""
    where = f" {exc.filename!r}" if exc.filename else ""
    why = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno)
    return f"cannot write or read{where}: {why}" + (f" ({hint})" if hint else "")


NOTHING_KEPT = "nothing of this run was kept (the previous result, if any, is as it was)"


def run_cli(body: Callable[[], int], kept: str = NOTHING_KEPT) -> int:
    """Run a CLI body; turn user mistakes into a one-line error and an exit code.

    ``UserError``/``ValueError``/``FileNotFoundError``/``StageError`` become ``error: <message>``
    on stderr; anything else is a bug and keeps its traceback. ``kept`` ends the line printed when
    the run is stopped (Ctrl-C, SIGTERM, SIGHUP): what of it stays and what to do next.
    """
    try:
        with terminating_signals():
            return body()
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        print(f"error: stopped by {name}; {kept}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"error: interrupted; {kept}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, StageError) as exc:
        print(f"error: {printable(exc, MAX_MESSAGE)}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:  # an allocation refused (a memory limit such as ulimit -v): one line
        print("error: out of memory: the run needed more memory than this process may use "
              "(ulimit -v, a container limit); raise the limit or ask for less (fewer or smaller "
              "images)", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        print(f"error: {printable(exc, MAX_MESSAGE)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path we cannot write: permissions, read-only mount, full disk
        print(f"error: {printable(describe_os_error(exc), MAX_MESSAGE)}", file=sys.stderr)
        return EXIT_FAILURE


MAX_MESSAGE = 2000  # an error line is one line, however long what it quotes
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while the block runs (as
    SIGINT raises KeyboardInterrupt): the run stops as on Ctrl-C, cleaning what it started
    (``subprocess.run`` kills its child on the way out). Elsewhere than the main thread, nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise Terminated(signum)

    # A signal the user chose to ignore (``nohup`` ignores SIGHUP) stays ignored.
    previous = {s: signal.signal(s, stop) for s in TERMINATING
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

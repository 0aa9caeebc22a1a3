"""Logging setup for the CLIs (library modules only create loggers)."""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import re
import sys
import tempfile
from collections.abc import Iterator

from tinyexport.errors import MAX_MESSAGE, printable

_log = logging.getLogger(__name__)


def setup_logging(verbose: bool = False, rank: int | None = None) -> None:
    """Configure the root logger once: INFO on the primary process, WARNING elsewhere."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(PrintableFormatter())


class PrintableFormatter(logging.Formatter):
    """``%(message)s`` with every control character escaped (issue 23, class 6: no input can make
    a tool print a line the program did not write). A record's arguments are names and paths that
    come from files and folders, so their text is escaped whole, newline included; in the message
    around them only the line breaks the program wrote stay (tables, reports), while ESC, BEL, CR,
    tabs and other non-printing characters become ``\\xNN`` escapes wherever they come from
    (f-strings included)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            escaped = logging.makeLogRecord({**record.__dict__,
                                             "args": _escaped_args(record.args)})
            with contextlib.suppress(TypeError, ValueError):  # e.g. %d of a numpy bool: as given
                escaped.getMessage()
                record = escaped
        text = super().format(record)
        return "\n".join(printable(line, limit=None) for line in text.split("\n"))


def _escaped_args(args):
    """Record arguments with their text escaped (numbers stay numbers for %d / %.4f)."""
    def one(value):
        return value if isinstance(value, numbers.Number) else printable(value, MAX_MESSAGE)
    if isinstance(args, dict):
        return {key: one(value) for key, value in args.items()}
    return tuple(one(value) for value in args)


@contextlib.contextmanager
def native_output_to_debug_log() -> Iterator[None]:
    """Route what native code writes straight to file descriptors 1 and 2 during the block
    (TensorFlow's absl / oneDNN banners, the TFLite converter's ``fully_quantize: 0, ...``,
    LiteRT's ``Created TensorFlow Lite XNNPACK delegate``) into this module's DEBUG log (shown with
    ``-v``); lines that mention an error are logged as warnings. Python's own ``sys.stdout`` /
    ``sys.stderr`` and the logging handlers keep writing to the terminal.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as sink, _python_streams_on(saved):
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            _relay(sink.read().decode("utf-8", "replace"))


def _relay(text: str) -> None:
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        level = logging.WARNING if _ERROR_WORDS.search(line) else logging.DEBUG
        _log.log(level, "(native) %s", line)


_ERROR_WORDS = re.compile(r"\b(error|fatal|failed)\b", re.IGNORECASE)


@contextlib.contextmanager
def _python_streams_on(saved: dict[int, int]) -> Iterator[None]:
    """Point Python-level output that targets the real fds 1/2 at copies of them for the block."""
    swaps = []
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if _fileno(stream) == fd:  # not replaced by a capture (pytest's capsys, a redirect)
            swaps.append((name, stream, os.fdopen(os.dup(saved[fd]), "w", buffering=1,
                                                  encoding=getattr(stream, "encoding", None))))
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    old_streams = [h.stream for h in handlers]
    try:
        for name, stream, replacement in swaps:
            setattr(sys, name, replacement)
            for handler in handlers:
                if handler.stream is stream:
                    handler.setStream(replacement)
        yield
    finally:
        for handler, stream in zip(handlers, old_streams, strict=True):
            handler.setStream(stream)
        for name, stream, replacement in swaps:
            replacement.flush()
            setattr(sys, name, stream)
            replacement.close()


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None

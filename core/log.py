"""Logging setup for the CLIs (library modules only create loggers)."""

from __future__ import annotations

import logging
import os


def setup_logging(verbose: bool = False, rank: int | None = None) -> None:
    """Configure the root logger once: INFO on the primary process, WARNING elsewhere."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", force=True)

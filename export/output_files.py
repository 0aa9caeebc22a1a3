"""Files of an export's output folder: their hashes, and the scratch folder kept inside it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinyexport.atomic import file_sha256 as sha256

__all__ = ["sha256", "scratch_dir"]


@contextmanager
def scratch_dir(out_tmp: Path) -> Iterator[Path]:
    """A scratch folder inside the export's own partial folder (not the system temp dir): a killed
    run leaves it only inside ``.DIR.*.partial``, which the next run removes; removed here when
    the block ends, so it never reaches the final folder."""
    work = out_tmp / ".scratch"
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Where every benchmark's results go: ``<stem>.json`` (the figures) and ``<stem>.md`` (the table
the README and guides link to), written atomically side by side."""

from __future__ import annotations

from pathlib import Path

from tinyexport.atomic import write_json, write_text


def write_results(folder: Path, stem: str, doc, markdown: str) -> None:
    """Write ``folder/<stem>.json`` (``doc``) and ``folder/<stem>.md`` (``markdown``)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{stem}.json", doc)
    write_text(folder / f"{stem}.md", markdown)

"""``docs/README.md`` indexes every document under ``docs/``, and every link in it resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
LINK_RE = re.compile(r"\]\(([^)\s]+\.md)\)")


def indexed_documents() -> set[str]:
    return set(LINK_RE.findall(INDEX.read_text()))


def test_the_index_names_every_document():
    documents = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p != INDEX}
    missing = sorted(documents - indexed_documents())
    assert not missing, f"docs/README.md does not index: {', '.join(missing)}"


def test_every_indexed_document_exists():
    broken = sorted(link for link in indexed_documents() if not (DOCS / link).is_file())
    assert not broken, f"docs/README.md links to missing files: {', '.join(broken)}"

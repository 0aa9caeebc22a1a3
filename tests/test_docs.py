"""Every citation of the project notes resolves to a file and a section heading under docs/.

The code cites the notes as ``docs/NAME.md §N`` (also ``§N.M``, lists ``§2, §3`` and ranges ``§5.2–5.4``, whose
two ends are both checked; Markdown links ``[`docs/NAME.md`](../NAME.md) §N`` count too). The notes in
``NOTE_NAMES`` must always be cited with the ``docs/`` prefix, so a reader can open them from the repository.
A bare ``§N`` in a file that cites exactly one note is read as a section of that note and checked as well.
Pure text scanning: no project import, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTE_NAMES = frozenset({"netaug", "tinytl", "mcunet", "tflm_memory", "toolchain", "boards", "style"})
SOURCE_DIRS = ("core", "train", "export", "quantize", "firmware_eval", "benchmarks", "scripts", "tests",
               "requirements")
SOURCE_SUFFIXES = frozenset({".py", ".sh", ".yaml", ".yml", ".txt", ".toml"})
SKIP_PARTS = frozenset({"__pycache__", "results", ".venv", "node_modules"})
THIS_FILE = Path(__file__).resolve()

_NUM = r"\d+(?:\.\d+)*"
_SPAN = rf"{_NUM}(?:[ \t]*[–-][ \t]*{_NUM})?"  # one section or a range
# path/NAME.md, optional closing backticks and Markdown link target, at most one line break (a comment's
# "#" allowed), then "§" and one or more sections: "§4", "§4–5", "§2, §3", "§1 and §6".
CITATION_RE = re.compile(
    r"(?<![\w./-])(?P<dir>(?:[\w.-]+/)*)(?P<name>[\w-]+)\.md`{0,2}(?:\]\([^)\s]*\))?"
    r"[ \t]*(?:\n[ \t]*(?:#[ \t]*)?)?"
    rf"§[ \t]*(?P<sections>{_SPAN}(?:[ \t]*(?:,|and|or)[ \t]*§[ \t]*{_SPAN})*)"
)
SECTION_RE = re.compile(_SPAN)
BARE_SECTION_RE = re.compile(rf"§[ \t]*(?P<sections>{_SPAN})")
# A "§" that belongs to another document (a datasheet, a paper, a source tag like "S7 §3.2").
FOREIGN_BEFORE_RE = re.compile(r"(?:\bv\d[\w.]*|\bS\d+|\bPS|\bpaper|\bTable|\barXiv\S*|\w+\.\w+)[ \t]*$")
HEADING_RE = re.compile(r"^#{1,6}[ \t]+(?P<number>\d+(?:\.\d+)*)\.?(?:[ \t]|$)", re.MULTILINE)


@dataclass(frozen=True)
class Citation:
    file: Path
    line: int
    text: str
    target: Path  # the cited file, resolved
    name: str  # the cited file's stem
    sections: tuple[str, ...]


def heading_numbers(markdown: str) -> set[str]:
    """Section numbers of a note: "## 4. Recipe" -> "4", "### 1.7 BN" -> "1.7" (fenced code ignored)."""
    unfenced = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {m.group("number") for m in HEADING_RE.finditer(unfenced)}


def expand_sections(spec: str) -> tuple[str, ...]:
    """"5.2–5.4" -> ("5.2", "5.4"); "2, §3" -> ("2", "3"). Both ends of a range must exist."""
    out: list[str] = []
    for span in SECTION_RE.findall(spec):
        out.extend(part.strip() for part in re.split(r"[–-]", span))
    return tuple(out)


def find_citations(text: str, file: Path) -> list[Citation]:
    found = []
    for m in CITATION_RE.finditer(text):
        directory = m.group("dir")
        base = file.parent if directory.startswith(".") else ROOT
        target = (base / directory / f"{m.group('name')}.md").resolve()
        line = text.count("\n", 0, m.start()) + 1
        found.append(Citation(file, line, m.group(0).replace("\n", " "), target, m.group("name"),
                              expand_sections(m.group("sections"))))
    return found


def implicit_sections(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """Bare "§N" outside any file citation, with its line; foreign ones ("PS v1.11 §4.2") left out."""
    masked = CITATION_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    out = []
    for m in BARE_SECTION_RE.finditer(masked):
        line_start = masked.rfind("\n", 0, m.start()) + 1
        if FOREIGN_BEFORE_RE.search(masked[line_start:m.start()]):
            continue
        out.append((masked.count("\n", 0, m.start()) + 1, m.group(0), expand_sections(m.group("sections"))))
    return out


def source_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    for name in SOURCE_DIRS:
        for path in sorted((ROOT / name).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file() and not SKIP_PARTS & set(path.parts):
                files.append(path)
    return [f for f in files if f.is_file() and f.resolve() != THIS_FILE]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def citation_problems(text: str, file: Path) -> list[str]:
    """Everything wrong with the note citations of one file's text (empty when all resolve)."""
    problems = []
    headings: dict[Path, set[str]] = {}
    for cite in find_citations(text, file):
        where = f"{_rel(file)}:{cite.line}: {cite.text!r}"
        if cite.target.parent != DOCS:
            if cite.name in NOTE_NAMES:
                problems.append(f"{where}: cite the note as docs/{cite.name}.md")
            continue
        if not cite.target.is_file():
            problems.append(f"{where}: {_rel(cite.target)} does not exist")
            continue
        if cite.target not in headings:
            headings[cite.target] = heading_numbers(cite.target.read_text(encoding="utf-8"))
        for section in cite.sections:
            if section not in headings[cite.target]:
                problems.append(f"{where}: no heading §{section} in {_rel(cite.target)}")
    return problems


def implicit_problems(text: str, file: Path) -> list[str]:
    """Bare "§N" in a file whose citations name exactly one note must be sections of that note."""
    notes = {c.target for c in find_citations(text, file) if c.target.parent == DOCS and c.target.is_file()}
    if len(notes) != 1 or file.suffix == ".md":
        return []
    (note,) = notes
    numbers = heading_numbers(note.read_text(encoding="utf-8"))
    return [f"{_rel(file)}:{line}: {raw!r} (read as {_rel(note)}): no heading §{section}"
            for line, raw, sections in implicit_sections(text) for section in sections if section not in numbers]


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Shadows the suite's autouse torch setup (tests/conftest.py): nothing here needs torch."""
    yield


# -- the repository ------------------------------------------------------------------------------------------


def test_every_note_exists_with_numbered_sections():
    for name in sorted(NOTE_NAMES):
        note = DOCS / f"{name}.md"
        assert note.is_file(), f"missing {_rel(note)}"
        assert heading_numbers(note.read_text(encoding="utf-8")), f"{_rel(note)} has no numbered section"


def test_citations_resolve_to_docs_sections():
    problems, count = [], 0
    for file in source_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        count += len(find_citations(text, file))
        problems += citation_problems(text, file)
    assert not problems, f"{len(problems)} broken citation(s):\n" + "\n".join(problems)
    assert count > 0, "no note citation found at all: is the scan looking in the right place?"


def test_bare_sections_resolve_in_single_note_files():
    problems = []
    for file in source_files():
        problems += implicit_problems(file.read_text(encoding="utf-8", errors="replace"), file)
    assert not problems, "\n".join(problems)


# -- the checker itself, on synthetic text --------------------------------------------------------------------

NOTE = """Summary line.

# Title

## 1. First
### 1.2 Sub
## 4. Recipe
```
## 9. inside a code fence, not a heading
```
### 6.3 Targets
"""


def test_heading_numbers_on_a_synthetic_note():
    assert heading_numbers(NOTE) == {"1", "1.2", "4", "6.3"}


def test_expand_sections():
    assert expand_sections("5.2–5.4") == ("5.2", "5.4")
    assert expand_sections("2, §3") == ("2", "3")
    assert expand_sections("1.7") == ("1.7",)


@pytest.mark.parametrize(("text", "dir_", "sections"), [
    ("see docs/netaug.md §4 here", "docs/", ("4",)),
    ("(``docs/tinytl.md`` §2, §3.1)", "docs/", ("2", "3.1")),
    ("toolchain.md §5.2–5.4: onnx2tf", "", ("5.2", "5.4")),
    ("(netaug.md``  §4–5)", "", ("4", "5")),
    ("the default (tflm_memory.md\n    §9.1) is", "", ("9.1",)),
    ("[`docs/mcunet.md`](../mcunet.md) §2.3", "docs/", ("2.3",)),
    ("`shared/reference/tinytl.md §6`", "shared/reference/", ("6",)),
])
def test_citation_forms(text, dir_, sections):
    (cite,) = find_citations(text, ROOT / "x.py")
    assert cite.sections == sections
    assert (cite.target.parent == DOCS) == (dir_ == "docs/")


def test_checker_flags_bad_citations(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "netaug.md").write_text(NOTE, encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "DOCS", docs)
    file = tmp_path / "mod.py"
    assert citation_problems("ok: docs/netaug.md §1.2, §4 and docs/netaug.md §1–4", file) == []
    bad = citation_problems("a docs/netaug.md §7 b docs/nope.md §1 c netaug.md §4 d docs/netaug.md §4–6.3", file)
    assert len(bad) == 3, bad  # §7 missing, nope.md missing, bare netaug.md; both ends of §4–6.3 exist
    assert "no heading §7" in bad[0] and "does not exist" in bad[1] and "docs/netaug.md" in bad[2]
    assert len(citation_problems("docs/netaug.md §2–4", file)) == 1  # range start 2 missing
    assert citation_problems("STYLE.md §3 and benchmarks/results/tinytl.md are not notes", file) == []
    # implicit: a .py citing one note; "§6.3" fine, "§8" not a heading, a datasheet's "§4.2" ignored
    text = "docs/netaug.md §4\nsee §6.3 and §8\nnRF52840 PS v1.11 §4.2\n"
    assert implicit_problems(text, file) == ["mod.py:2: '§8' (read as docs/netaug.md): no heading §8"]

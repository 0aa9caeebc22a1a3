"""The C++ the firmware stage writes or builds lives in real source files beside the modules, shipped
as package data (setup.py's ``package_data`` patterns), not in Python strings; no module, script
or test holds a program of over 30 lines in a string."""

import ast
import fnmatch
from pathlib import Path

import pytest

from tinyexport.firmware_eval import bundle, emulate_build

ROOT = Path(__file__).resolve().parents[2]
MAX_PROGRAM_LINES = 30  # longer program text belongs in a file


def package_data_patterns() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    data = next(k.value for k in call.keywords if k.arg == "package_data")
    return ast.literal_eval(data)[""]


@pytest.mark.parametrize("source", [bundle.MAIN_CC, emulate_build.DRIVER_CC])
def test_sources_are_files_shipped_as_package_data(source):
    assert source.is_file() and "int main()" in source.read_text()
    assert any(fnmatch.fnmatch(source.name, p) for p in package_data_patterns()), source.name


@pytest.mark.parametrize("files, least", [(bundle.TEMPLATES, 10), (bundle.BUNDLE_FILES, 7)])
def test_bundle_templates_are_package_data(files, least):
    """Every file of firmware_eval/templates/ (the bundle's model API and project layouts) and
    firmware_eval/bundle_files/ (its generated headers) is matched by a package_data pattern, as
    setuptools globs it (``*`` within one folder)."""
    folder = files.parent
    shipped = {p for pattern in package_data_patterns() for p in folder.glob(pattern)}
    templates = [p for p in files.rglob("*") if p.is_file()]
    assert len(templates) >= least
    assert [str(p.relative_to(folder)) for p in templates if p not in shipped] == []


def is_program(text: str) -> bool:
    """C/C++ (an ``#include`` line) or Python that imports something."""
    if "#include" in text:
        return True
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))


def test_no_long_program_text_in_python_strings():
    """No string constant of over 30 lines that is a program, in the package, the scripts or the
    tests (a test's child script is a file beside it, e.g. tests/train/ddp_workers/)."""
    found = []
    for folder in ("core", "train", "export", "quantize", "firmware_eval", "benchmarks", "scripts",
                   "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and node.value.count("\n") > MAX_PROGRAM_LINES
                        and is_program(node.value)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "program text in Python strings: " + ", ".join(found)

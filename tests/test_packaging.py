"""Packaging: the wheel holds only ``tinyexport`` with every stage inside it; imports are absolute
and ``import tinyexport.train`` stays lean (no tensorflow / onnx)."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "quantize", "firmware_eval", "benchmarks")
SOURCE_DIRS = ("core",) + STAGES


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build_dir = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(ROOT)], check=True, cwd=build_dir,
                   capture_output=True)
    return next(out.glob("tinyexport-*.whl"))


def test_wheel_has_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"tinyexport"}
    for stage in STAGES:
        assert f"tinyexport/{stage}/__init__.py" in names
    assert "tinyexport/train/models/zoo.py" in names


def test_every_source_package_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    mapping = {"core": "tinyexport"} | {s: f"tinyexport/{s}" for s in STAGES}
    for folder, target in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            assert f"{target}/{rel}" in names, f"{folder}/{rel} missing from the wheel"


def test_console_scripts_declared(wheel):
    entry = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    for script in ("tinyexport =", "tinyreport =", "tinytrain ="):
        assert script in text


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "." * node.level + (node.module or "")
            elif node.module:
                yield node.module


def test_imports_are_absolute_from_tinyexport():
    bad = []
    for folder in SOURCE_DIRS + ("tests",):
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(".") or name.split(".")[0] in SOURCE_DIRS:
                    bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "use absolute tinyexport.* imports: " + "; ".join(bad)


def test_lean_imports():
    code = ("import sys, tinyexport, tinyexport.train, tinyexport.train.models, "
            "tinyexport.benchmarks.report_cli, tinyexport.export, tinyexport.firmware_eval\n"
            "heavy = [m for m in ('tensorflow', 'onnx', 'onnx2tf', 'onnxruntime', 'tflite_micro',"
            " 'ai_edge_litert') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    # `import tinyexport` itself does not even import torch
    out = subprocess.run([sys.executable, "-c", "import sys, tinyexport; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The import graph of the project's own code: arrows point one way (docs/architecture.md).

Reads every module's imports with ``ast`` (nothing is imported) and fails on
- an import from a component to one it may not depend on (a lower floor importing a higher one,
  or two components of one floor importing each other), with no exceptions list;
- any import cycle between modules, inside a package too;
- an import of our own modules inside a function: those belong at the top of the module, so the
  dependency graph is visible (lazy imports are for heavy third-party libraries only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE_FOLDERS = {"core": "tinyexport", "train": "tinyexport.train", "export": "tinyexport.export",
                 "quantize": "tinyexport.quantize", "firmware_eval": "tinyexport.firmware_eval",
                 "benchmarks": "tinyexport.benchmarks"}

# Components by module-name prefix (the longest matching prefix wins); see docs/architecture.md.
COMPONENTS = {
    "tinyexport": "core",
    "tinyexport.tflite_graph": "tflite_graph",
    "tinyexport.train": "training",
    "tinyexport.train.models": "models",
    "tinyexport.train.data": "models",
    "tinyexport.train.tv_compat": "models",
    "tinyexport.train.checkpoint": "models",
    "tinyexport.train.bn_recalibration": "models",
    "tinyexport.quantize": "quantize",
    "tinyexport.firmware_eval": "firmware_eval",
    "tinyexport.export": "export",
    "tinyexport.benchmarks": "benchmarks",
}
# What each component may import besides itself. Floors, ground first: core; the .tflite graph
# layer; models, data and checkpoints; the training methods; quantize and firmware_eval (which
# know nothing of training); export (which orchestrates them); benchmarks; the CLIs.
ALLOWED = {
    "core": set(),
    "tflite_graph": {"core"},
    "models": {"core"},
    "training": {"core", "models"},
    "quantize": {"core", "tflite_graph"},
    "firmware_eval": {"core", "tflite_graph"},
    "export": {"core", "tflite_graph", "models", "training", "quantize", "firmware_eval"},
    "benchmarks": {"core", "tflite_graph", "models", "training", "quantize", "firmware_eval",
                   "export"},
}
ALLOWED["cli"] = set(ALLOWED) | {"benchmarks"}


def component(module: str) -> str:
    """The component of a module: a ``cli`` / ``__main__`` module is a CLI, whatever its stage."""
    if module.rsplit(".", 1)[-1] in ("cli", "__main__"):
        return "cli"
    prefixes = [p for p in COMPONENTS if module == p or module.startswith(p + ".")]
    if module.count(".") == 1 and module.split(".")[1] not in {v.split(".")[-1] for v in
                                                               STAGE_FOLDERS.values()}:
        return "core"  # tinyexport.errors, tinyexport.atomic, ... (the core/ folder)
    return COMPONENTS[max(prefixes, key=len)]


def project_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in STAGE_FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts
                     if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(tree: ast.AST, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(our module, line, at top level?) for every import of ours in a parsed module."""
    top_level = {id(node) for node in getattr(tree, "body", [])}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in known else node.module for n in names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "tinyexport" and name in known:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module → modules it imports, and the function-local imports found on the way."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    local = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for target, line, top in imported_modules(tree, modules):
            graph[module].add(target)
            if not top and not _under_type_checking(tree, line):
                local.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a block")
    return graph, local


def _under_type_checking(tree: ast.AST, line: int) -> bool:
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING" and node.lineno <= line <= node.end_lineno):
            return True
    return False


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components (a cycle is one of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            components.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        source = component(module)
        for target in sorted(targets):
            wanted = component(target)
            if wanted != source and wanted not in ALLOWED[source]:
                problems.append(f"{module} ({source}) imports {target} ({wanted})")
    return problems


def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    cycles += [[m] for m, targets in graph.items() if m in targets]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_point_down_the_floors():
    graph, _ = import_graph()
    problems = layer_violations(graph)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_own_modules_are_imported_at_the_top():
    _, local = import_graph()
    assert not local, "\n".join(local)


def test_every_module_has_a_component():
    for module in project_modules():
        assert component(module) in ALLOWED, module


# The checker itself, on hand-made graphs: it must catch what it claims to.
def test_checker_finds_a_cycle_and_an_upward_import():
    graph = {"tinyexport.quantize.a": {"tinyexport.quantize.b"},
             "tinyexport.quantize.b": {"tinyexport.quantize.a"},
             "tinyexport.train.engine": {"tinyexport.benchmarks.x"},
             "tinyexport.benchmarks.x": set()}
    assert ["tinyexport.quantize.a", "tinyexport.quantize.b"] in strongly_connected(graph)
    assert layer_violations(graph) == [
        "tinyexport.train.engine (training) imports tinyexport.benchmarks.x (benchmarks)"]


@pytest.mark.parametrize("module, expected", [
    ("tinyexport.errors", "core"), ("tinyexport.tflite_graph.reader", "tflite_graph"),
    ("tinyexport.train.models.zoo", "models"), ("tinyexport.train.checkpoint", "models"),
    ("tinyexport.train.checkpoint_loader", "training"), ("tinyexport.train.netaug.task", "training"),
    ("tinyexport.train.cli", "cli"), ("tinyexport.export.stages", "export"),
])
def test_component_of(module, expected):
    assert component(module) == expected


def test_checker_finds_a_local_import():
    tree = ast.parse("import os\n\ndef f():\n    from tinyexport.errors import UserError\n")
    found = imported_modules(tree, {"tinyexport.errors": Path("x")})
    assert found == [("tinyexport.errors", 4, False)]

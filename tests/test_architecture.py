"""The import graph of the project's own code: arrows point one way (docs/architecture.md); and the
house's measurable layout (front doors, module size, one record conversion; at the end).

Reads every module's imports with ``ast`` (nothing is imported) and fails on
- an import from a component to one it may not depend on (a lower floor importing a higher one,
  or two components of one floor importing each other), with no exceptions list;
- any import cycle between modules, inside a package too;
- an import of our own modules inside a function: those belong at the top of the module, so the
  dependency graph is visible (lazy imports are for heavy third-party libraries only).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Components by module-name prefix (the longest matching prefix wins). Which component may import
# which is read from the table in docs/architecture.md (``allowed_imports``), and the stage folders
# from setup.py (``stage_folders``): neither is written down here a second time.
COMPONENTS = {
    "tinyexport": "core",
    "tinyexport.tflite_graph": "tflite_graph",
    "tinyexport.train": "training",
    "tinyexport.train.models": "models",
    "tinyexport.train.data": "models",
    "tinyexport.train.data_readers": "models",
    "tinyexport.train.tv_compat": "models",
    "tinyexport.train.checkpoint_format": "models",
    "tinyexport.train.bn_recalibration": "models",
    "tinyexport.quantize": "quantize",
    "tinyexport.firmware_eval": "firmware_eval",
    "tinyexport.export": "export",
    "tinyexport.benchmarks": "benchmarks",
}
TABLE_ROW = re.compile(r"^\|\s*(?P<component>[\w ]+?)\s*\|(?P<modules>.*)\|(?P<imports>[^|]*)\|\s*$")
TABLE_NAMES = {"CLIs": "cli"}  # the table's plural for the one component name the code uses


def stage_folders() -> dict[str, str]:
    """Folder -> package, read from ``STAGE_FOLDERS`` in setup.py (package -> folder)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "STAGE_FOLDERS"):
            return {folder: package for package, folder in ast.literal_eval(node.value).items()}
    raise AssertionError("setup.py defines no STAGE_FOLDERS")


STAGE_FOLDERS = stage_folders()


def architecture_table() -> list[tuple[str, str, str]]:
    """(component, modules cell, may-import cell) of each row of the table in architecture.md."""
    rows = []
    for line in ARCHITECTURE.read_text().splitlines():
        match = TABLE_ROW.match(line)
        if match and match["component"] not in ("component",) and not set(line) <= set("|- "):
            name = match["component"]
            rows.append((TABLE_NAMES.get(name, name), match["modules"], match["imports"]))
    return rows


def allowed_imports() -> dict[str, set[str]]:
    """What each component may import besides itself, as the table says: a list of components,
    ``nothing of ours``, ``all of the above`` or ``everything``."""
    allowed: dict[str, set[str]] = {}
    for name, _, cell in architecture_table():
        cell = cell.strip()
        if cell == "nothing of ours":
            allowed[name] = set()
        elif cell == "all of the above":
            allowed[name] = set(allowed)
        elif cell == "everything":
            allowed[name] = set(allowed) | {name}
        else:
            allowed[name] = {TABLE_NAMES.get(c.strip(), c.strip()) for c in cell.split(",")}
    return allowed


ALLOWED = allowed_imports()


def component(module: str) -> str:
    """The component of a module: a ``cli`` / ``__main__`` module is a CLI, whatever its stage."""
    if module.rsplit(".", 1)[-1] in ("cli", "__main__"):
        return "cli"
    prefixes = [p for p in COMPONENTS if module == p or module.startswith(p + ".")]
    stages = {package.split(".")[-1] for package in STAGE_FOLDERS.values()}
    if module not in COMPONENTS and module.count(".") == 1 and module.split(".")[1] not in stages:
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


def module_constants(tree: ast.AST) -> dict[str, str]:
    """Module-level ``NAME = "string"`` assignments (``MODULE = "tinyexport..."`` names a child)."""
    return {node.targets[0].id: node.value.value for node in getattr(tree, "body", [])
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def child_entry_points(tree: ast.AST, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(our module, line) for every ``python -m tinyexport...`` child a module starts: the
    string after ``"-m"`` in a command list, written out or through a module constant. ``-m`` on
    a package counts as importing the package; its ``__main__`` is a CLI, which a child process
    starts as a user would."""
    constants = module_constants(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.List, ast.Tuple)):
            continue
        for flag, target in zip(node.elts, node.elts[1:], strict=False):
            if not (isinstance(flag, ast.Constant) and flag.value == "-m"):
                continue
            name = (target.value if isinstance(target, ast.Constant)
                    else constants.get(getattr(target, "id", ""), ""))
            if name in known:
                found.append((name, node.lineno))
    return found


def imports_in_code_strings(tree: ast.AST, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(our module, line) for the imports of Python code held in a string (``python -c CODE``)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and "import" in node.value and "\n" in node.value.strip()):
            continue
        try:
            code = ast.parse(node.value)
        except SyntaxError:  # prose, not code
            continue
        found += [(name, node.lineno) for name, _, _ in imported_modules(code, known)]
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module → modules it imports or starts as a child process, and the function-local imports
    found on the way (a child started from a function is no local import: it runs elsewhere)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    local = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for target, line, top in imported_modules(tree, modules):
            graph[module].add(target)
            if not top and not _under_type_checking(tree, line):
                local.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a block")
        children = child_entry_points(tree, modules) + imports_in_code_strings(tree, modules)
        graph[module] |= {target for target, _ in children if target != module}  # a worker of itself
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


def test_the_table_names_each_module_in_its_component():
    """Every module the table of docs/architecture.md names (``tinyexport.x`` or ``.x`` under
    ``tinyexport``) has the component of its row, and every prefix of ``COMPONENTS`` is named in
    the row of its component: the table and this test cannot drift apart."""
    problems = []
    named: dict[str, str] = {}
    modules = project_modules()
    for row, cell, _ in architecture_table():
        for name in re.findall(r"`(tinyexport[\w.]*|\.[a-z_][\w.]*)`", cell):
            module = name if name.startswith("tinyexport") else "tinyexport" + name
            if module not in modules:  # `.tflite`: a file type, not a module
                continue
            named[module] = row
            if component(module) != row:
                problems.append(f"the table puts {module} in {row}, the test in {component(module)}")
    problems += [f"{prefix} ({wanted}) is not named in the table" for prefix, wanted in
                 COMPONENTS.items() if prefix != "tinyexport" and named.get(prefix) != wanted]
    assert not problems, "\n".join(problems)


def test_every_component_has_a_row():
    assert set(COMPONENTS.values()) | {"cli"} == set(ALLOWED)


def test_stage_folders_come_from_setup_py():
    assert STAGE_FOLDERS["core"] == "tinyexport"
    assert all((ROOT / folder / "__init__.py").is_file() for folder in STAGE_FOLDERS)


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
    ("tinyexport.train.models.zoo", "models"), ("tinyexport.train.checkpoint_format", "models"),
    ("tinyexport.train.model_from_checkpoint", "training"), ("tinyexport.train.netaug.task", "training"),
    ("tinyexport.train.cli", "cli"), ("tinyexport.export.stages", "export"),
])
def test_component_of(module, expected):
    assert component(module) == expected


def test_checker_counts_child_processes_and_code_strings():
    known = {"tinyexport.export": Path("x"), "tinyexport.export.__main__": Path("x"),
             "tinyexport.firmware_eval._tflm_child": Path("x"), "tinyexport.errors": Path("x")}
    tree = ast.parse('import sys\nCHILD = "tinyexport.firmware_eval._tflm_child"\n'
                     'def f():\n    run([sys.executable, "-m", "tinyexport.export", "--x"])\n'
                     '    run([sys.executable, "-m", CHILD])\n'
                     '    run([sys.executable, "-c", "import os\\nfrom tinyexport.errors import A\\n"])\n')
    assert child_entry_points(tree, known) == [
        ("tinyexport.export", 4), ("tinyexport.firmware_eval._tflm_child", 5)]
    assert imports_in_code_strings(tree, known) == [("tinyexport.errors", 6)]


def test_checker_finds_a_local_import():
    tree = ast.parse("import os\n\ndef f():\n    from tinyexport.errors import UserError\n")
    found = imported_modules(tree, {"tinyexport.errors": Path("x")})
    assert found == [("tinyexport.errors", 4, False)]


# -- the house a newcomer walks (issue 21): front doors, module size, one record conversion -----

MAX_MODULE_LINES = 600


def test_no_module_over_600_lines():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in project_modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "split these by role:\n" + "\n".join(long)


def test_no_result_class_writes_its_own_record():
    """Records come from ``tinyexport.json_record.to_record`` (or a named record function that
    adds derived figures to it), never from a per-class ``as_dict`` copy."""
    copies = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in project_modules().values()
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.FunctionDef) and node.name == "as_dict"]
    assert not copies, "as_dict copies: " + ", ".join(copies)


def front_door_problems(init: Path) -> list[str]:
    """What a package's ``__init__`` lacks: a docstring naming each of its modules and
    subpackages (``bench_*`` names a family), and ``__all__`` when it imports names."""
    tree = ast.parse(init.read_text())
    doc = ast.get_docstring(tree) or ""
    if not doc:
        return [f"{init.relative_to(ROOT)} has no docstring"]
    families = re.findall(r"\b(\w+_)\*", doc)
    members = [p.stem for p in init.parent.glob("*.py") if p.stem not in ("__init__", "__main__")]
    members += [p.parent.name for p in init.parent.glob("*/__init__.py")]
    problems = [f"{init.relative_to(ROOT)} does not name {name}" for name in sorted(members)
                if not re.search(rf"\b{name}\b", doc) and not name.startswith(tuple(families))]
    imports_names = any(isinstance(node, ast.ImportFrom) and node.module != "__future__"
                        for node in tree.body)
    exports = any(isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__"
                  for node in tree.body)
    if imports_names and not exports:
        problems.append(f"{init.relative_to(ROOT)} imports names but has no __all__")
    return problems


def test_every_package_has_a_front_door():
    inits = [path for path in project_modules().values() if path.name == "__init__.py"]
    assert len(inits) >= 10
    problems = [problem for init in inits for problem in front_door_problems(init)]
    assert not problems, "\n".join(problems)

"""The package's own import graph has no circle, and the library never imports its test helpers.

Every `import` / `from ... import` of an `alignment` module counts, at module level or inside a function (a
function-level import hides a circle from Python, not from the layout); imports under `if TYPE_CHECKING:` do not run
and are left out. `alignment/testing.py` is the test-helper module: it may import the library, never the other way.
"""

import ast
import os
from pathlib import Path

PACKAGE = "alignment"
ROOT = Path(os.environ.get("ALIGNMENT_LAYOUT_ROOT", Path(__file__).resolve().parents[1])) / PACKAGE
TEST_HELPERS = f"{PACKAGE}.testing"


def _module_name(path: Path, root: Path) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _from_target(node: ast.ImportFrom, package_parts: list[str]) -> str:
    """The absolute module a `from ... import` reads from (relative levels resolved against ``package_parts``)."""
    if not node.level:
        return node.module or ""
    base = package_parts[: len(package_parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package modules `module` imports anywhere in its body (TYPE_CHECKING blocks excluded)."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        # `from .x import y` names either module `x.y` or an attribute `y` of module `x`: take the longest module.
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.add(resolve(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base_name = _from_target(node, package_parts)
            if base_name == PACKAGE or base_name.startswith(PACKAGE + "."):
                for alias in node.names:
                    found.add(resolve(f"{base_name}.{alias.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(None)
    # A package's `__init__` runs before any of its modules, so importing `a.b` also imports `a`: that edge
    # is only a circle if `a/__init__.py` imports back, which the graph sees through `a`'s own imports.
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    known = {_module_name(path, root) for path in files}
    graph = {}
    for path in files:
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = _imported(tree, module, path.name == "__init__.py", known)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search with an explicit path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def unresolved_imports(root: Path = ROOT) -> list[str]:
    """``"<module>: from <target> import ..."`` for every import of a package module that does not exist (a relative
    import left pointing at a file's old place after a move fails only when its function runs)."""
    files = sorted(root.rglob("*.py"))
    known = {_module_name(path, root) for path in files}
    missing = []
    for path in files:
        module = _module_name(path, root)
        package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                targets = [_from_target(node, package_parts)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if (target == PACKAGE or target.startswith(PACKAGE + ".")) and target not in known:
                    missing.append(f"{module}: {target}")
    return missing


def test_every_import_of_a_package_module_resolves():
    missing = unresolved_imports()
    assert not missing, f"imports of modules that do not exist: {missing}"


def test_the_package_import_graph_has_no_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_library_never_imports_the_test_helpers():
    offenders = sorted(module for module, targets in import_graph().items()
                       if module != TEST_HELPERS and TEST_HELPERS in targets)
    assert not offenders, f"library modules importing {TEST_HELPERS}: {offenders}"


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import x\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import y\nfrom .. import a\n")
    (package / "c.py").write_text("import alignment.a\n")
    graph = import_graph(package)
    assert graph["alignment.a"] == {"alignment.sub.b"}
    assert graph["alignment.sub.b"] == {"alignment.a"}  # the TYPE_CHECKING import is left out
    assert graph["alignment.c"] == {"alignment.a"}
    assert find_cycle(graph) == ["alignment.a", "alignment.sub.b", "alignment.a"]
    assert unresolved_imports(package) == []
    (package / "sub" / "d.py").write_text("def g():\n    from .losses import z\n")  # `losses` is one level up
    assert unresolved_imports(package) == ["alignment.sub.d: alignment.sub.losses"]

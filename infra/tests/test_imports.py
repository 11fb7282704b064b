"""The local stack's modules import each other without a circle, as the Rust crate's do
(functions/herald/src/layering_tests.rs): every import counts, at the top of a file, inside a
function or under TYPE_CHECKING, since a circle hidden in a late import is still a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "herald_local"


def local_imports(source: str, package: str = "herald_local") -> set[str]:
    """The package's modules a file's source imports (`from .x import`, `from . import x`,
    `import herald_local.x`, `from herald_local.x import`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 and base:
                found.add(base.split(".")[0])
            elif node.level == 1:
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif node.level == 0 and base == package:
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif node.level == 0 and base.startswith(package + "."):
                found.add(base.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(package + "."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    return {name: {m for m in local_imports(path.read_text()) if m in modules and m != name}
            for name, path in sorted(modules.items())}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for used in sorted(graph.get(module, ())):
            circle = visit(used, path + [module])
            if circle:
                return circle
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module, [])
        if circle:
            return circle
    return None


def test_no_import_circle_in_the_local_stack() -> None:
    graph = import_graph()
    assert len(graph) > 10, f"no modules found under {PACKAGE}"
    assert sum(map(len, graph.values())) > 10, "the checker found no imports"
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_checker_sees_every_form_of_import() -> None:
    source = ("from .a import x\nfrom . import b, c\nimport herald_local.d\n"
              "from herald_local.e import y\nfrom herald_local import f\nimport os\n"
              "def late():\n    from .g import z\n")
    assert local_imports(source) == {"a", "b", "c", "d", "e", "f", "g"}
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None

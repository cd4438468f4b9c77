"""The import graph of yogo/ points one way (docs/design.md, "A map of the code")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "yogo"


def import_graph() -> dict[str, set[str]]:
    """Module -> the yogo modules it imports anywhere (top level or inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yogo"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else str(node.module))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("yogo.")}
        graph[name] = {m for m in found if m in modules and m not in (name, "yogo")}
    return graph


def test_no_import_cycles() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dependency in graph[module]:
            assert dependency not in path, " -> ".join([*path, dependency])
            if dependency not in done:
                visit(dependency, [*path, dependency])
        done.add(module)

    for module in graph:
        visit(module, [module])


def _imports_of(graph: dict[str, set[str]], prefix: str) -> set[str]:
    return {dep for module, deps in graph.items() if module.startswith(prefix) for dep in deps}


def test_the_packages_import_one_way_and_nothing_imports_the_cli() -> None:
    """cli -> {training, evaluation, deploy, dataset_check} -> {model, data, plumbing} ->
    {config, errors}: each package's docstring says what it may import."""
    graph = import_graph()
    packages = ("yogo.training", "yogo.evaluation", "yogo.deploy", "yogo.model", "yogo.data")
    for package in packages:
        assert package + "." in " ".join(graph), f"{package} has modules"
    model = _imports_of(graph, "yogo.model.")
    assert {m for m in model if not m.startswith("yogo.model.")} <= {"yogo.errors", "yogo.outputs"}
    assert graph["yogo.model.grid"] <= {"yogo.errors"}  # numpy only: `yogo check` is torch-free
    assert graph["yogo.config"] <= {"yogo.errors"}
    assert not [m for m in _imports_of(graph, "yogo.data.") if m.startswith(packages[:3])]
    for lower in ("yogo.evaluation.", "yogo.deploy.", "yogo.dataset_check"):
        assert not [m for m in _imports_of(graph, lower) if m.startswith("yogo.training")], lower
    assert not [m for m in _imports_of(graph, "yogo.evaluation.") if m.startswith("yogo.deploy")]
    assert not [m for m, deps in graph.items() if "yogo.cli" in deps and m != "yogo.__main__"]

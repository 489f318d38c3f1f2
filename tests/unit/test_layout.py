"""The layout's rules, read from the source: arrows point one way
(script -> ingress/runtime -> actors -> sinks -> wire), no module is part of
an import circle, and workflow modules import no activity, sink or client
code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("wire", "sinks", "actors", "ingress", "runtime", "bench", "script")
# What each top-level package may import of the others.
ALLOWED = {
    "wire": set(),
    "sinks": {"wire"},
    "actors": {"wire", "sinks"},
    "ingress": {"wire", "actors"},
    "runtime": {"wire", "sinks", "actors"},
    "bench": {"wire", "sinks", "actors", "ingress", "runtime"},
    "script": {"wire", "sinks", "actors", "ingress", "runtime", "bench"},
}
WORKFLOW_MODULES = ("actors.proxy", "actors.job", "actors.tenant")
WORKFLOW_MAY_IMPORT = ("actors.names", "actors.contracts", "actors.policies")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                found.add(name)
    return found


GRAPH = {name: imports_of(path, modules()) for name, path in modules().items()}


def test_the_graph_sees_the_project() -> None:
    assert "actors.proxy" in GRAPH
    assert "actors.names" in GRAPH["actors.proxy"]


def test_no_module_is_part_of_an_import_circle() -> None:
    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(GRAPH[start])
        while stack:
            name = stack.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                stack.extend(GRAPH.get(name, ()))
        return False

    circles = [name for name in GRAPH if reaches(name, name)]
    assert circles == []


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_layers_below(package: str) -> None:
    wrong = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package] | {package}
    }
    assert wrong == set()


@pytest.mark.parametrize("workflow_module", WORKFLOW_MODULES)
def test_workflow_modules_import_no_activity_sink_or_client_code(
    workflow_module: str,
) -> None:
    wrong = {
        target
        for target in GRAPH[workflow_module]
        if target != "actors"
        and not target.startswith(("wire", "actors.rules", *WORKFLOW_MAY_IMPORT))
    }
    assert wrong == set()

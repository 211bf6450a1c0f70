"""The package order of orchestrator/ (docs/architecture.md), read from the code: every import
(at a module's top, under TYPE_CHECKING, or inside a function) runs down the layers, `workloads/`
below them all; no module imports itself back through others; a project import inside a function
only in the command modules (which keep `--help` and config errors light) or on the allow-list;
and every module and function short enough to read whole."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("orchestrator", "workloads")
# orchestrator's packages, lowest first: a module imports only from its own package and those
# before it (and from workloads/, below them all); run.py, the command line, stands on top
LAYERS = (
    "common",
    "data",
    "tracking",
    "training",
    "config",
    "analysis",
    "serving",
    "experiments",
    "commands",
)
TOP = "orchestrator.run"
# Project imports inside a function outside the command modules: (module, imported) -> why
FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the project module it imports
    line: int
    in_function: bool


def project_modules() -> dict[str, Path]:
    """Every module of orchestrator/ and workloads/ by its dotted name."""
    modules = {}
    for package in PROJECT:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules `name` imports: `from a.b import c` is `a.b.c` when that is a module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, name, path)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in child.names
                ]
            else:
                inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                visit(child, inner)
                continue
            for target in targets:
                if target.split(".")[0] in PROJECT:
                    found.append(Import(name, target, child.lineno, in_function))

    visit(ast.parse(path.read_text()), False)
    return found


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def layer(module: str) -> int:
    """A module's height: workloads/ -1, orchestrator's packages 0.., run.py on top."""
    parts = module.split(".")
    if parts[0] == "workloads":
        return -1
    if module == TOP:
        return len(LAYERS)
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it in one of {', '.join(LAYERS)}")
    return LAYERS.index(parts[1])


def all_imports() -> list[Import]:
    modules = project_modules()
    return [found for name, path in modules.items() for found in imports_of(name, path, modules)]


def upward(imports: list[Import]) -> list[str]:
    """The imports from a layer above the importing module's."""
    packages = {"orchestrator", "workloads"}  # their __init__ only describe the layers
    return [
        f"{i.module}:{i.line} imports {i.target}"
        for i in imports
        if i.module not in packages and i.target not in packages
        if layer(i.target) > layer(i.module)
    ]


def cycles(imports: list[Import]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.target != i.module:
            graph.setdefault(i.module, set()).add(i.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_every_module_is_in_a_layer():
    for name in project_modules():
        if name.startswith("orchestrator") and name != "orchestrator":
            layer(name)  # raises for a module outside the layers


def test_imports_run_down_the_layers():
    assert upward(all_imports()) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    """The checks themselves: they fail on what they exist to catch."""
    made_up = [
        Import("orchestrator.data.streams", "orchestrator.experiments.sweep", 1, True),
        Import("workloads.alexnet.model", "orchestrator.common.errors", 2, False),
        Import("orchestrator.tracking.run", "orchestrator.tracking.callback", 3, False),
        Import("orchestrator.tracking.callback", "orchestrator.tracking.buffer", 4, False),
        Import("orchestrator.tracking.buffer", "orchestrator.tracking.run", 5, True),
    ]
    assert upward(made_up) == [
        "orchestrator.data.streams:1 imports orchestrator.experiments.sweep",
        "workloads.alexnet.model:2 imports orchestrator.common.errors",
    ]
    assert cycles(made_up) == [
        [
            "orchestrator.tracking.buffer",
            "orchestrator.tracking.callback",
            "orchestrator.tracking.run",
        ]
    ]


def test_no_module_imports_itself_back():
    assert cycles(all_imports()) == []


def test_project_imports_inside_functions_only_in_commands():
    """A command module imports the layers below inside `run`, after the config is loaded:
    `--help` and a config error need neither torch nor Ray nor MLflow (test_config.py). Anywhere
    else an import inside a function hides an arrow from the reader; the allow-list says why."""
    inside = {
        (i.module, i.target)
        for i in all_imports()
        if i.in_function and not i.module.startswith("orchestrator.commands")
    }
    assert inside - set(FUNCTION_IMPORTS_ALLOWED) == set()
    assert set(FUNCTION_IMPORTS_ALLOWED) - inside == set()  # no stale entry


def test_modules_and_functions_are_short():
    too_long = []
    for name, path in project_modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []

"""The folders name the layers, and imports only point down them (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from app.settings import ROOT

# Lower number = lower layer. A module may import its own package or a lower layer, never a
# higher one or a neighbour on the same layer.
LAYERS = {
    "settings": 0, "files": 0, "cache": 0, "errors": 0,
    "data": 1, "budgets": 1,
    "models": 2, "explain": 2,
    "serving": 3,
    "fooling": 4,
    "jobs": 5, "experiments": 5,
    "classroom": 6,
    "web": 7,
    "cli": 8,
    "main": 9, "__main__": 9,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "app").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every app module this file imports, at the top or inside functions."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("app")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod == "app" or mod.startswith("app."):
                # `from app.x import y` may name a module y: count it when it is one
                found |= {f"{mod}.{a.name}" for a in node.names} | {mod}
    return found


def test_every_module_sits_in_a_named_layer():
    loose = [m for m in _modules() if m.count(".") == 1 and m.split(".")[1] not in LAYERS]
    assert loose == [], f"modules outside the layers: {loose}"
    packages = {m.split(".")[1] for m in _modules() if m.count(".") >= 1}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_imports_point_down_the_layers():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if name == "app":
            continue
        mine = name.split(".")[1]
        for dep in _imports(path, name):
            if dep not in modules or dep == "app":
                continue
            theirs = dep.split(".")[1]
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{name} -> {dep}")
    assert wrong == [], "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    modules = _modules()
    graph = {n: {d for d in _imports(p, n) if d in modules and d != n and d != "app"} for n, p in modules.items()}
    # A package's __init__ that re-exports its modules is not a cycle with them.
    for n in graph:
        graph[n] = {d for d in graph[n] if not n.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(trail[trail.index(d):] + [d]) if d in trail else f"{n} -> {d}")
            elif d not in state:
                visit(d, trail + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_each_package_says_what_lives_there():
    for init in (ROOT / "app").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} has no docstring saying what lives there"


def test_no_test_module_imports_another():
    """Helpers the tests share live in tests/helpers.py and tests/conftest.py, not in a test module."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            if mod and mod.startswith("tests.test_"):
                offenders.append(f"{path.name}: {mod}")
    assert offenders == []


def test_below_the_web_layer_nothing_speaks_http():
    """Refusals carry a kind (app.errors), and app/web/errors.py alone turns kinds into statuses: no
    module below web names an HTTP status in an error it raises, or an /api/ path."""
    import re

    status = re.compile(r"(Error|Refused|BudgetFull)\(\s*[45]\d\d\b|status_code|f\"/api/")
    below = [m for m, p in _modules().items() if m.count(".") >= 1
             and LAYERS[m.split(".")[1]] < LAYERS["web"] and status.search(p.read_text())]
    assert below == []

"""The server's modules import one another in one direction: no cycle,
counting every import (at the top, inside a function, or for type checking
only), read from the modules' source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyengine.server

PACKAGE = "pyengine.server"
SOURCES = Path(pyengine.server.__file__).parent


def _imports(path: Path, mine: set[str]) -> set[str]:
    """The modules of `mine` (pyengine.server's) that one module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
                names = [base] if base else [a.name for a in node.names]
            elif node.level == 0 and node.module and node.module.startswith(PACKAGE + "."):
                names = [node.module[len(PACKAGE) + 1 :]]
            elif node.level == 0 and node.module == PACKAGE:
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n.split(".")[0] for n in names if n.split(".")[0] in mine}
        elif isinstance(node, ast.Import):
            found |= {a.name[len(PACKAGE) + 1 :].split(".")[0] for a in node.names
                      if a.name.startswith(PACKAGE + ".")}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    mine = {p.stem for p in SOURCES.glob("*.py")}
    return {p.stem: _imports(p, mine) for p in sorted(SOURCES.glob("*.py")) if p.stem != "__init__"}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_server_modules_import_in_one_direction() -> None:
    edges = graph()
    assert "app" in edges and "session" in edges["app"]  # it reads what it should
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


def test_a_cycle_is_found() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_imports_for_type_checking_and_in_functions_count(tmp_path: Path) -> None:
    x = tmp_path / "x.py"
    x.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .app import Server\n"
                 "def f() -> None:\n    from pyengine.server.session import Session\n")
    assert _imports(x, {"x", "app", "session"}) == {"app", "session"}


def test_the_package_lists_its_modules_in_import_order() -> None:
    """pyengine/server/__init__.py names each module after those it imports."""
    doc = pyengine.server.__doc__ or ""
    order = [m for m in re.findall(r"``(\w+)``", doc) if m in graph()]
    edges = graph()
    assert sorted(order) == sorted(edges)
    for i, m in enumerate(order):
        assert edges[m] <= set(order[:i]), f"{m} imports {sorted(edges[m] - set(order[:i]))}, listed after it"

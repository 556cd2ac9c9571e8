"""The commands that README.md and docs/ show work from the clone root.

README's install command installs the package in place (``pip install -e``),
so the source tree's ``pyengine/`` is the package and the tools find it from
the root. Each documented script starts from the root (``--help`` imports
everything it needs), the console scripts answer, and the load generator
spawns a server from the root and drives it. The commands run with this
test's environment, as a user's shell would run them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"\bpython3? ((?:tools|perf)/[\w-]+\.py)\b")


def documented_scripts() -> list[str]:
    return sorted({m.group(1) for doc in DOCS for m in SCRIPT.finditer(doc.read_text())})


def run_from_root(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_docs_name_scripts() -> None:
    scripts = documented_scripts()
    assert "tools/loadgen.py" in scripts and "perf/bench_mixed.py" in scripts, scripts
    for script in scripts:
        assert (ROOT / script).is_file(), f"the docs name {script}, which does not exist"


@pytest.mark.parametrize("script", documented_scripts())
def test_documented_script_starts_from_the_root(script: str) -> None:
    proc = run_from_root(sys.executable, script, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("command", ["pyengine-server", "pyengine-replay", "pyengine-cluster"])
def test_console_scripts_answer(command: str) -> None:
    proc = run_from_root(str(Path(sys.executable).parent / command), "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"usage: {command}" in proc.stdout


def test_import_from_the_root() -> None:
    code = "import pyengine; e = pyengine.Engine(); e.add_instrument('X'); print(len(e.submit('X', 'buy', 1, 5)))"
    proc = run_from_root(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_loadgen_spawns_a_server_from_the_root(tmp_path: Path) -> None:
    out = tmp_path / "loadgen.json"
    proc = run_from_root(sys.executable, "tools/loadgen.py", "--spawn-server", "--rate", "2000", "--duration", "1.5",
                         "--warmup", "0.2", "--connections", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["acked"] > 0 and result["unanswered"] == 0 and result["errors"] == 0


def test_a_spawned_server_that_fails_shows_why() -> None:
    proc = run_from_root(sys.executable, "tools/loadgen.py", "--spawn-server", "--server-arg=--fsync=sometimes",
                         "--duration", "1", "--warmup", "0.2")
    assert proc.returncode != 0
    assert "the spawned server did not start" in proc.stderr
    assert "invalid choice: 'sometimes'" in proc.stderr


def test_the_closed_loop_in_c_without_the_limits(tmp_path: Path) -> None:
    # As docs/benchmarks.md runs it: the C workers against a server whose
    # per-session rate and per-account open orders are not limited.
    out = tmp_path / "loadgen.json"
    proc = run_from_root(sys.executable, "tools/loadgen.py", "--spawn-server",
                         "--server-arg=--config=perf/no_limits.toml", "--rate", "0", "--driver", "c",
                         "--duration", "1.5", "--warmup", "0.2", "--connections", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["acked"] > 0 and result["unanswered"] == 0 and result["errors"] == 0
    assert result["rejected"] == 0  # at 4 connections, what the default limits would refuse within the second


def _dist(requirement: str) -> str:
    """The normalized distribution name a requirement string names."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _installed_by(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with what they require in turn (their extras' left out)."""
    todo, seen = [_dist(r) for r in requirements], set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_dist(r) for r in requires if "extra ==" not in r.partition(";")[2]]
    return seen


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The top-level names a file imports at module level, and inside functions (an optional feature's)."""
    tree = ast.parse(path.read_text(), str(path))
    module_level = {id(node) for node in tree.body}
    eager, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.partition(".")[0]}
        else:
            continue
        (eager if id(node) in module_level else lazy).update(names)
    return eager, lazy


def test_the_install_command_brings_what_tools_and_perf_import() -> None:
    # README's install is pip install -e ".[tools,cluster]": every script of
    # tools/ and perf/ must start in that venv (the test extra, which this
    # suite's venv has, is not in it); an import inside a function, for an
    # optional feature, may come from another extra (--plot: [plot]).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    readme_venv = _installed_by([*project["dependencies"], *extras["tools"], *extras["cluster"]])
    any_extra = readme_venv | {_dist(r) for reqs in extras.values() for r in reqs}
    local = {"pyengine"} | {p.stem for d in ("tools", "perf") for p in (ROOT / d).rglob("*.py")} | {
        p.name for p in (ROOT / "tools").iterdir() if p.is_dir()}
    dists = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted([*(ROOT / "tools").rglob("*.py"), *(ROOT / "perf").rglob("*.py")]):
        eager, lazy = _imports(path)
        for names, allowed in ((eager, readme_venv), (lazy - eager, any_extra)):
            for name in sorted(names - local - set(sys.stdlib_module_names)):
                found = {_dist(d) for d in dists.get(name, [])} or {_dist(name)}  # not installed here: its own name
                if not found & allowed:
                    missing.append(f"{path.relative_to(ROOT)} imports {name} (from {', '.join(sorted(found))})")
    assert not missing, "not installed by README's install command:\n" + "\n".join(missing)

"""The commands that README.md and docs/ show work from the clone root.

README's install command installs the package in place (``pip install -e``),
so the source tree's ``pyengine/`` is the package and the tools find it from
the root. Each documented script starts from the root (``--help`` imports
everything it needs), the console scripts answer, and the load generator
spawns a server from the root and drives it. The commands run with this
test's environment, as a user's shell would run them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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

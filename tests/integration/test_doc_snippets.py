"""The Python examples of the documentation run, each on its own, as printed.

The rule, for README.md and every docs/*.md:

* A fenced block opened with ```python is an example that must run alone,
  pasted as it is into a fresh interpreter: it imports what it uses and sets
  up what it needs. Each one runs here in a new ``python`` process and must
  exit with status 0.
* Any other fence (```text, ```json, ```sh, ```toml, or none) is not run.
  Write a fragment that does not run alone (a signature, an excerpt, output)
  in one of those.
* A ```python block that mentions 7001, the server's default port, talks to
  a server: it runs against a fresh ``pyengine-server`` that this test starts
  on a free port, with 7001 replaced by that port (nothing else is changed).
* A ```python block that mentions 7101, the first port of ``pyengine-cluster
  up``, talks to a local cluster: it runs against one that this test starts
  (two shards of two nodes), with 7101-7104 replaced by its nodes' ports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from .conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SERVER_PORT = "7001"
CLUSTER_PORTS = ("7101", "7102", "7103", "7104")  # pyengine-cluster up: a1, a2, b1, b2
_FENCE = re.compile(r"^(\s*)```(.*)$")


class Snippet(NamedTuple):
    path: Path
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Snippet]:
    """The ```python blocks of a Markdown file, dedented to their fence."""
    out: list[Snippet] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, info = len(m.group(1)), m.group(2).strip()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        i += 1  # the closing fence
        if info.split()[:1] == ["python"]:
            out.append(Snippet(path, start + 1, "\n".join(body) + "\n"))
    return out


SNIPPETS = [s for path in DOCS for s in python_blocks(path)]


def test_the_documentation_has_examples_to_run() -> None:
    """The extraction finds the examples (a broken one would pass vacuously)."""
    by_file = {s.path.name for s in SNIPPETS}
    assert {"README.md", "batch.md"} <= by_file
    assert any(SERVER_PORT in s.code for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.name)
def test_example_runs_alone(
    snippet: Snippet, server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    code = snippet.code
    if SERVER_PORT in code:
        code = code.replace(SERVER_PORT, str(server_factory().port))
    env = dict(os.environ, PYTHONSAFEPATH="1")  # the installed pyengine, not a checkout on the path
    cluster = None
    if CLUSTER_PORTS[0] in code:
        cluster = tmp_path / "cluster"
        up = subprocess.run([sys.executable, "-m", "pyengine.cluster.cli", "up", "--dir", str(cluster), "--port", "0"],
                            capture_output=True, text=True, timeout=180, env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        nodes = json.loads((cluster / "state.json").read_text())["nodes"]
        for documented, node in zip(CLUSTER_PORTS, nodes):
            code = code.replace(documented, node["address"].rpartition(":")[2])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        if cluster is not None:
            subprocess.run([sys.executable, "-m", "pyengine.cluster.cli", "down", "--dir", str(cluster)],
                           capture_output=True, timeout=60, env=env)
    assert proc.returncode == 0, f"{snippet.name} failed:\n{code}\n--- stderr ---\n{proc.stderr}"

"""The commands that README.md and docs/ show work from the clone root.

README's install command installs the package in place (``pip install -e``),
so the source tree's ``pyengine/`` is the package and the tools find it from
the root. Each documented script starts from the root (``--help`` imports
everything it needs), the console scripts answer, and the load generator
spawns a server from the root and drives it. The commands run with this
test's environment, as a user's shell would run them. Every command line the
docs give parses with its program's own options, and so do the arguments it
passes on (below), without running; and README's install brings every
module tools/ and perf/ import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"\bpython3? ((?:tools|perf)/[\w-]+\.py)\b")


def documented_scripts() -> list[str]:
    return sorted({m.group(1) for doc in DOCS for m in SCRIPT.finditer(doc.read_text())})


def run_from_root(*args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input)


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


# Every command line the docs give -- each line of a ```sh block, and each
# inline `code` span that starts with python SCRIPT, a script of tools/ or
# perf/, or a console script -- is parsed by its program's own argparse
# parser (tests/integration/argparse_probe.py: nothing runs, no benchmark
# starts): each option must exist and take the value shown, and so must the
# arguments it passes on (--server-arg to pyengine-server, --pyengine-arg
# and the arguments after -- to tools/loadgen.py, ...). A span that names a
# script's option in prose (`pyengine-server --data-dir`, with no value) is
# a mention: a missing value or positional is not counted against it. Files
# of the clone a command names (a script, --config=perf/no_limits.toml)
# must exist.

SHELL_FENCES = ("sh", "bash", "shell", "console")
OPERATORS = {"&&", "||", ";", "|", "&"}
PYTHON_SCRIPT = re.compile(r"(?:tools|perf)/[\w-]+\.py")
CLONE_FILE = re.compile(r"(?:csrc|docs|perf|pyengine|tests|tools)/[\w./-]+\.(?:c|h|py|sh|toml)")
CONSOLE_SCRIPTS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
# What the docs write for a value the reader chooses.
PLACEHOLDERS = {"P": "7001", "R": "20000", "S": "200", "N": "1", "PY": "/usr/bin/python3", "OLD": "/old/bin/python",
                "NEW": "/new/bin/python", "OLD_BENCH": "old/pyengine_bench", "NEW_BENCH": "new/pyengine_bench",
                "FILE": "file"}
# The options whose values are another program's arguments: (program, its
# namespace's attribute) -> that program.
PASSED_ON = {
    ("tools/loadgen.py", "server_arg"): "pyengine-server",  # unless --spawn-script: then that script's
    ("perf/loadgen_table.py", "pyengine_arg"): "tools/loadgen.py",
    ("perf/loadgen_table.py", "loadgen_args"): "tools/loadgen.py",
    ("perf/latency_breakdown.py", "server_arg"): "pyengine-server",
    ("perf/latency_breakdown.py", "loadgen_args"): "tools/loadgen.py",
    ("perf/compare_servers.py", "server_arg"): "pyengine-server",
    ("perf/login_storm.py", "server_args"): "pyengine-server",
    ("perf/flood_neighbour.py", "server_args"): "pyengine-server",
}
_FENCE_LINE = re.compile(r"^\s*```(.*)$")
_INLINE = re.compile(r"`([^`]+)`")
_MENTION_ERRORS = re.compile(r"expected one argument|the following arguments are required")


class Command(NamedTuple):
    where: str  # doc:line
    program: str  # a script's path from the root, or a console script
    args: tuple[str, ...]
    whole: bool  # a command as one runs it; else a mention of a program's options in prose

    @property
    def name(self) -> str:
        return f"{self.where}: {self.program} {' '.join(self.args)}".rstrip()


def _lines_of_code(doc: Path) -> list[tuple[int, str, bool]]:
    """(line, text, fenced): each line of the shell blocks, continuations joined; each inline code span."""
    out: list[tuple[int, str, bool]] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    prose = list(lines)
    i = 0
    while i < len(lines):
        fence = _FENCE_LINE.match(lines[i])
        if fence is None:
            i += 1
            continue
        shell = fence.group(1).strip() in SHELL_FENCES
        prose[i] = ""
        i += 1
        while i < len(lines) and not _FENCE_LINE.match(lines[i]):
            start, text = i, lines[i]
            while text.endswith("\\") and i + 1 < len(lines):
                prose[i] = ""
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            prose[i] = ""
            if shell:
                out.append((start + 1, text, True))
            i += 1
        if i < len(lines):
            prose[i] = ""
        i += 1
    text = "\n".join(prose)
    for m in _INLINE.finditer(text):
        out.append((text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()), False))
    return out


def documented_commands() -> list[Command]:
    commands: list[Command] = []
    for doc in DOCS:
        for line, text, fenced in _lines_of_code(doc):
            try:
                tokens = shlex.split(text, comments=fenced)
            except ValueError:  # not a command line (a python -c '...' over several lines)
                continue
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token not in OPERATORS:
                    segment.append(token)
                    continue
                # [--option VALUE] is an optional part: the command is checked with it.
                words = [w for w in (t.strip("[]") for t in segment) if w]
                words = [PLACEHOLDERS.get(w, w) for w in words]
                segment = []
                where = f"{doc.relative_to(ROOT)}:{line}"
                if len(words) > 1 and words[0] in ("python", "python3") and PYTHON_SCRIPT.fullmatch(words[1]):
                    commands.append(Command(where, words[1], tuple(words[2:]), True))
                elif words and (words[0] in CONSOLE_SCRIPTS or PYTHON_SCRIPT.fullmatch(words[0])):
                    commands.append(Command(where, words[0], tuple(words[1:]), fenced))
    return commands


COMMANDS = documented_commands()


def _probe(requests: list[tuple[str, tuple[str, ...]]]) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    """Each (program, args) parsed by argparse_probe.py, one process a program."""
    results: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for program in sorted({p for p, _ in requests}):
        arg_lists = sorted({args for p, args in requests if p == program})
        proc = run_from_root(sys.executable, "tests/integration/argparse_probe.py", program,
                             input=json.dumps(arg_lists))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results.update({(program, args): r for args, r in zip(arg_lists, json.loads(proc.stdout), strict=True)})
    return results


def _passed_on(program: str, parsed: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """The arguments that a parsed command passes on to other programs, each with its program."""
    out = []
    for (owner, key), target in PASSED_ON.items():
        if owner != program or not parsed.get(key):
            continue
        if program == "tools/loadgen.py" and parsed.get("spawn_script"):
            continue  # the floors' own options (perf/floor_epoll.py's parser is in C)
        if key.endswith("_args"):  # the positional arguments after --: one command line
            out.append((target, tuple(parsed[key])))
        else:  # one option a value: --server-arg=--server-cpu=0
            out += [(target, (arg,)) for arg in parsed[key]]
    return out


@pytest.fixture(scope="module")
def parsed_commands() -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    results: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    todo = [(c.program, c.args) for c in COMMANDS]
    while todo:
        results.update(_probe(todo))
        todo = [n for key in todo if "parsed" in results[key] for n in _passed_on(key[0], results[key]["parsed"])
                if n not in results]
    return results


def test_the_docs_commands_are_found() -> None:
    """The extraction finds the documented commands (a broken one would check nothing)."""
    names = [c.name for c in COMMANDS]
    assert len(COMMANDS) > 100, names
    for doc, expected in (
        ("README.md", "pyengine-server --data-dir ./pyengine-data"),  # a ```sh block
        ("README.md", "perf/loadgen_table.py --floors --rates 0 --runs 3 --duration 8 --pin "  # inline, over lines
                      "--pyengine-arg=--server-arg=--config=perf/no_limits.toml -- --driver c"),
        ("docs/durability.md", "pyengine-replay ./pyengine-data --full --check"),  # a comment after it
        ("docs/benchmarks.md", "tools/loadgen.py --spawn-server --spawn-fsync batch --rate 20000"),  # [--option value]
    ):
        assert any(c.where.startswith(f"{doc}:") and expected in c.name for c in COMMANDS), (expected, names)
    assert sum(not c.whole for c in COMMANDS) < len(COMMANDS) // 2


def test_the_files_the_docs_shell_blocks_name_exist() -> None:
    # bash tools/run_tests.sh, bash perf/run_all.sh, --config=perf/no_limits.toml, ...
    named = [(f"{doc.relative_to(ROOT)}:{line}", m.group(0)) for doc in DOCS
             for line, text, fenced in _lines_of_code(doc) if fenced for m in CLONE_FILE.finditer(text)]
    assert any(where.startswith("README.md:") and path == "tools/run_tests.sh" for where, path in named), named
    assert [(where, path) for where, path in named if not (ROOT / path).is_file()] == []


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_documented_command_parses(command: Command,
                                   parsed_commands: dict[tuple[str, tuple[str, ...]], dict[str, Any]]) -> None:
    if command.program not in CONSOLE_SCRIPTS:
        assert (ROOT / command.program).is_file(), f"{command.program} does not exist"
    for arg in command.args:
        for part in arg.split("="):
            if CLONE_FILE.fullmatch(part):
                assert (ROOT / part).is_file(), f"{part} does not exist"
    result = parsed_commands[(command.program, command.args)]
    if "parsed" not in result:
        help_asked = "--help" in command.args and result["exit"] == 0
        mention = not command.whole and bool(_MENTION_ERRORS.search(result["stderr"]))
        assert help_asked or mention, result["stderr"]
        return
    todo = _passed_on(command.program, result["parsed"])
    while todo:
        program, args = todo.pop()
        passed = parsed_commands[(program, args)]
        assert "parsed" in passed, f"{' '.join(args)}, passed on to {program}: {passed['stderr']}"
        todo += _passed_on(program, passed["parsed"])

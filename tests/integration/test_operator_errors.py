"""What an operator sees when the server cannot start, and when it idles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any



def start_server(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pyengine-server in the foreground: for starts that must fail."""
    return subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--engine-cpu", "-1", *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"))


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-dir"
    plain.write_text("x")
    proc = start_server("--port", "0", "--data-dir", str(plain))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"data_dir {plain} exists and is not a directory" in proc.stderr
    assert plain.read_text() == "x"


def test_port_in_use_is_one_line_before_the_engine_starts(server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_server("--port", str(server.port), "--data-dir", str(data_dir))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "event=cannot_start" in lines[0] and f"port {server.port} on 127.0.0.1 is in use" in lines[0]
    # Nothing was recovered or created: the port was checked first.
    assert not data_dir.exists()


def count_lines(server: Any, text: str, at_least: int, timeout: float = 10.0) -> int:
    """How many log lines contain `text`, once there are `at_least` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while (n := sum(text in line for line in list(server.lines))) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return n


def test_an_idle_server_logs_stats_once_then_at_debug(server_factory: Any) -> None:
    server = server_factory(None, "--stats-interval", "0.1")
    assert count_lines(server, "level=debug event=stats ", 3) >= 3
    infos = [line for line in list(server.lines) if "level=info event=stats " in line]
    assert len(infos) == 1 and "connections=0" in infos[0]
    with server.client() as c:
        c.login(7)
        c.request(c.new_order("ESZ6", "buy", 1, 450_000))
        # Something happened: the next line is at info again.
        server.wait_log(r"level=info event=stats .*connections=1")

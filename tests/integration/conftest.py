"""Integration fixtures: a real pyengine-server process on a free loopback port.

``server_factory(config_toml=None, *args)`` starts ``python -m
pyengine.server.cli --port 0`` (with a TOML file when given), waits for its
``listening`` log line, and returns a handle with the port and the log lines
so far. Every server is stopped with SIGTERM at teardown and must exit 0
(unless a test killed it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyengine.client import Client


class RunningServer:
    def __init__(self, proc: subprocess.Popen[str], port: int, lines: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.lines = lines  # stderr so far; a reader thread keeps appending
        self.killed = False

    def client(self, **kw: object) -> Client:
        return Client("127.0.0.1", self.port, **kw)  # type: ignore[arg-type]

    def wait_log(self, pattern: str, timeout: float = 5.0) -> str:
        """The first log line matching `pattern`, waiting for it."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if rx.search(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n" + "".join(self.lines[-40:]))

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def _start(config: str | None, extra: list[str], tmp_path: Path) -> RunningServer:
    cmd = [sys.executable, "-m", "pyengine.server.cli", "--port", "0", "--engine-cpu", "-1",
           "--stats-interval", "0", "--log-level", "debug", *extra]
    if config is not None:
        path = tmp_path / f"server-{time.monotonic_ns()}.toml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    env = dict(os.environ, PYTHONSAFEPATH="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    port_box: list[int] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"event=listening .*port=(\d+)", line)
            if m:
                port_box.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(20) or not port_box:
        proc.kill()
        raise AssertionError("the server did not start:\n" + "".join(lines))
    return RunningServer(proc, port_box[0], lines)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def factory(config: str | None = None, *extra: str) -> RunningServer:
        s = _start(config, list(extra), tmp_path)
        started.append(s)
        return s

    yield factory
    for s in started:
        if s.killed:
            continue
        code = s.stop()
        assert code == 0, "the server did not stop cleanly:\n" + "".join(s.lines[-40:])


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A server on the embedded default configuration."""
    return server_factory()

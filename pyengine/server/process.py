"""A pyengine-server in a child process, for tools and tests.

The server's log goes to a file; ``ServerProcess`` starts it, waits for its
``listening`` line (the port it got, with ``--port 0``), and reads the log
on demand. A server that does not come up raises ``ServerStartError`` with
the end of its log, so the reason is never lost. ``detached`` servers run
in a session of their own and outlive the process that started them
(``pyengine-cluster up``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServerProcess", "ServerStartError"]

_LISTENING = re.compile(r"event=listening .*port=(\d+)")


class ServerStartError(RuntimeError):
    """The server exited, or did not listen in time; the message has its log's end."""


class ServerProcess:
    """`args` for pyengine-server; `launcher`, the Python arguments before
    them (another entry point, for a test that wraps the server); `python`,
    the interpreter (another venv's: another build of the server)."""

    def __init__(self, args: list[str], log_path: str | os.PathLike[str], *, timeout: float = 30.0,
                 env: dict[str, str] | None = None, detached: bool = False, stdin: int | None = None,
                 launcher: tuple[str, ...] = ("-m", "pyengine.server.cli"), python: str | None = None) -> None:
        self.log_path = Path(log_path)
        self.command = [python or sys.executable, *launcher, *args]
        self._lines: list[str] = []
        self._partial = ""
        self._offset = 0
        self._port: int | None = None
        # The installed package, not a source tree that happens to be the working directory.
        env = dict(os.environ if env is None else env, PYTHONSAFEPATH="1")
        with open(self.log_path, "ab") as log:
            self._offset = log.tell()  # a log that exists already: only what this process writes counts
            self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         stdin=stdin, start_new_session=detached)
        self.killed = False
        deadline = time.monotonic() + timeout
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                code = self.proc.wait()
                raise ServerStartError(f"the server did not start (exit code {code}): {' '.join(self.command)}\n"
                                       + self.tail())
            time.sleep(0.02)

    @property
    def lines(self) -> list[str]:
        """Its log so far, a line each (with the newline)."""
        self._read()
        return self._lines

    def _read(self) -> None:
        """Take in what the log gained since the last look."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        text = self._partial + data.decode(errors="replace")
        *whole, self._partial = text.split("\n")
        for line in whole:
            self._lines.append(line + "\n")
            m = _LISTENING.search(line)
            if m:
                self._port = int(m.group(1))

    @property
    def port(self) -> int | None:
        """The port of its latest ``listening`` line (a cluster node that
        restarts in place listens again)."""
        self._read()
        return self._port

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    def wait_log(self, pattern: str, timeout: float = 5.0) -> str:
        """The first log line matching `pattern`, waiting for it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, and its exit code; SIGKILL if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

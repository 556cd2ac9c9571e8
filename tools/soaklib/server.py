"""The server under test: the configuration the soak needs, spawning and
stopping a server, following its log, and sampling its RSS."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import gevent
import gevent.event
import gevent.subprocess

from pyengine.server.config import DEFAULT_INSTRUMENTS

from .common import (ACCOUNTS_PER_DISCONNECTOR, HOSTILE_BASE, LOG, PROBE_ACCOUNT, QUIET, SPAWN_ATTEMPTS,
                     TRACKED_BASE, Options, Report, SetupError)
from .disconnect_clients import disconnect_account


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def soak_accounts(opts: Options) -> list[int]:
    return [
        *range(1, opts.loadgen_connections + 1),
        *(TRACKED_BASE + i for i in range(opts.tracked_clients)),
        *(disconnect_account(g, j) for g in range(opts.disconnect_clients) for j in range(ACCOUNTS_PER_DISCONNECTOR)),
        *(HOSTILE_BASE + i for i in range(opts.hostile_clients)),
        PROBE_ACCOUNT,
    ]


def server_config(opts: Options) -> str:
    """The TOML configuration the soak's server runs with (see the docstring)."""
    lines = ["# Written by tools/soak.py: the default instruments plus SOAK-QUIET, the soak's accounts.",
             "[server]", f"max_unsent = {opts.max_unsent}", ""]
    for inst in (*DEFAULT_INSTRUMENTS, QUIET):
        lines.append("[[instruments]]")
        for f in dataclasses.fields(inst):
            value = getattr(inst, f.name)
            if value is not None:
                lines.append(f"{f.name} = {toml_value(value)}")
        lines.append("")
    for account in soak_accounts(opts):
        lines += ["[[accounts]]", f"account = {account}", ""]
    return "\n".join(lines)


class LogWatch:
    """Follows a spawned server's log: its port, why sessions closed, errors."""

    LISTENING = re.compile(r"event=listening .*port=(\d+)")
    SESSION_CLOSE = re.compile(r"event=session_close .*reason=(\S+)")

    def __init__(self, stream: IO[str], sink: IO[str] | None) -> None:
        self._stream = stream
        self._sink = sink
        self.port: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.close_reasons: Counter[str] = Counter()
        self.errors: list[str] = []
        self.tail: deque[str] = deque(maxlen=60)

    def pump(self) -> None:
        for line in self._stream:
            self._line(line.rstrip("\n"))
        if not self.port.ready():
            self.port.set(None)

    def _line(self, line: str) -> None:
        self.tail.append(line)
        if self._sink is not None:
            self._sink.write(line + "\n")
        if m := self.LISTENING.search(line):
            self.port.set(int(m.group(1)))
        elif m := self.SESSION_CLOSE.search(line):
            self.close_reasons[m.group(1)] += 1
        if "level=error" in line or line.startswith("Traceback"):
            self.errors.append(line)


@dataclass
class Target:
    """The server under test."""

    host: str
    port: int
    pid: int | None
    proc: gevent.subprocess.Popen | None = None
    watch: LogWatch | None = None
    exit_code: int | None = None


def spawn_server(opts: Options, workdir: Path, sink: IO[str] | None) -> Target:
    config = workdir / "server.toml"
    config.write_text(server_config(opts))
    for attempt in range(1, SPAWN_ATTEMPTS + 1):
        data_dir = workdir / f"data-{attempt}"
        data_dir.mkdir()
        cmd = [sys.executable, "-m", "pyengine.server.cli", "--config", str(config), "--port", "0",
               "--data-dir", str(data_dir), "--fsync", opts.fsync, "--engine-cpu", str(opts.engine_cpu)]
        proc = gevent.subprocess.Popen(cmd, stdout=gevent.subprocess.DEVNULL, stderr=gevent.subprocess.PIPE,
                                       text=True)
        watch = LogWatch(proc.stderr, sink)
        gevent.spawn(watch.pump)
        port = watch.port.get(timeout=30)
        if port is not None:
            LOG.info("server pid %d listening on port %d, data dir %s", proc.pid, port, data_dir)
            return Target(opts.host, port, proc.pid, proc, watch)
        proc.kill()
        proc.wait()
        LOG.warning("the server did not start (attempt %d of %d):\n%s", attempt, SPAWN_ATTEMPTS, "\n".join(watch.tail))
        gevent.sleep(10.0)
    raise SetupError("the server did not start")


def stop_server(target: Target, report: Report) -> None:
    proc = target.proc
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except gevent.subprocess.TimeoutExpired:
            report.fail("server_exit", "the server did not exit within 30 s of SIGTERM")
            proc.kill()
            proc.wait()
    target.exit_code = proc.returncode
    if proc.returncode != 0:
        report.fail("server_exit", f"the server exited with status {proc.returncode}")
    gevent.sleep(0.1)  # the last log lines
    if target.watch is not None and target.watch.errors:
        errors = target.watch.errors
        report.fail("server_log", f"{len(errors)} error line(s) in the server log, e.g. {errors[0][:300]}")


class RssSampler:
    """VmRSS of a process, once a second."""

    def __init__(self, pid: int, t0: float) -> None:
        self.pid = pid
        self.t0 = t0
        self.samples: list[tuple[float, int]] = []  # (seconds since t0, kB)

    def sample(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m is None:
            return None
        kb = int(m.group(1))
        self.samples.append((time.monotonic() - self.t0, kb))
        return kb

    def run(self) -> None:
        while self.sample() is not None:
            gevent.sleep(1.0)

    def first_after(self, t: float) -> int | None:
        return next((kb for at, kb in self.samples if at >= t), None)

    def max_kb(self) -> int | None:
        return max((kb for _, kb in self.samples), default=None)

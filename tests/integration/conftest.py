"""Integration fixtures: a real pyengine-server process on a free loopback port.

``server_factory(config_toml=None, *args, env=None)`` starts ``python -m
pyengine.server.cli --port 0`` (with a TOML file when given), waits for its
``listening`` log line, and returns a handle with the port and the log
(pyengine.server.process.ServerProcess). Every server is stopped with
SIGTERM at teardown and must exit 0 (unless a test killed it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyengine.client import Client
from pyengine.server.config import hash_secret
from pyengine.server.process import ServerProcess, ServerStartError


class RunningServer(ServerProcess):
    def client(self, **kw: object) -> Client:
        return Client("127.0.0.1", self.port, **kw)  # type: ignore[arg-type]


def accounts_config(secrets: dict[int, str], admins: frozenset[int] = frozenset()) -> str:
    """An ``[[accounts]]`` table for each account, its secret hashed with few
    iterations (a test's secrets need no strength, its logins speed)."""
    return "".join(f'\n[[accounts]]\naccount = {account}\nsecret = "{hash_secret(secret, iterations=1000)}"\n'
                   + ("admin = true\n" if account in admins else "") for account, secret in secrets.items())


def _start(config: str | None, extra: list[str], tmp_path: Path, env: dict[str, str] | None) -> RunningServer:
    stamp = time.monotonic_ns()
    args = ["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0", "--log-level", "debug", *extra]
    if config is not None:
        path = tmp_path / f"server-{stamp}.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    try:
        return RunningServer(args, tmp_path / f"server-{stamp}.log", timeout=20, env=env)
    except ServerStartError as exc:
        raise AssertionError(str(exc)) from None


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def factory(config: str | None = None, *extra: str, env: dict[str, str] | None = None) -> RunningServer:
        s = _start(config, list(extra), tmp_path, env)
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

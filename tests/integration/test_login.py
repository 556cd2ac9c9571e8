"""Logins over real TCP: secrets checked off the event loop, the bound on
logins in progress, the per-host budget, failures that look alike, and the
admin rights of a server without accounts (docs/security.md).

The tests that hold secret checks mid-way run the server with its check
function wrapped (``GatedServer``): each check says on stderr which thread
it runs on and the iteration count it checks with, then waits for a line on
the server's stdin. So "a login is being checked" is a state the test holds, not a race
it hopes to win.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pyengine.client import Client, ServerError
from pyengine.server.config import hash_secret

from .conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
ES = "ESZ6"
SEVEN = hash_secret("seven", iterations=1000)
ACCOUNTS = f"""
[[accounts]]
account = 7
secret = "{SEVEN}"

[[accounts]]
account = 9
"""

# The server's entry point with every secret check held until a line comes
# on stdin; the checks are found where the server takes them from.
_GATED_MAIN = r"""
import sys, threading
from pyengine.server import app, cli, session

loop_thread = threading.get_ident()
real_check = app.check_secret if hasattr(app, "check_secret") else session.check_secret

def gated_check(stored, given):
    print(f"event=secret_check on_event_loop={threading.get_ident() == loop_thread} "
          f"iterations={stored.split('$')[1]}", file=sys.stderr, flush=True)
    sys.stdin.readline()
    return real_check(stored, given)

for module in (app, session):
    if hasattr(module, "check_secret"):
        module.check_secret = gated_check
sys.exit(cli.main(sys.argv[1:]))
"""


class GatedServer(RunningServer):
    def release(self, n: int = 1) -> None:
        """Let `n` held secret checks go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n" * n)
        self.proc.stdin.flush()

    def wait_lines(self, event: str, n: int, timeout: float = 10.0) -> list[str]:
        """The log lines of `event` so far, once there are `n`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if f"event={event} " in line]
            if len(found) >= n:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} {event} lines, not {n}; log:\n" + "".join(self.lines[-40:]))
            time.sleep(0.02)

    def wait_checks(self, n: int) -> list[str]:
        """The lines of the secret checks so far, once there are `n`."""
        return self.wait_lines("secret_check", n)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # every check held or still to come goes on
        return super().stop(timeout)


@pytest.fixture
def gated_server(tmp_path: Path) -> Iterator[Callable[[str], GatedServer]]:
    started: list[GatedServer] = []

    def start(config: str) -> GatedServer:
        path = tmp_path / f"gated-{len(started)}.toml"
        path.write_text(config)
        args = ["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0", "--log-level", "debug",
                "--config", str(path)]
        server = GatedServer(args, tmp_path / f"gated-{len(started)}.log", timeout=20, stdin=subprocess.PIPE,
                             launcher=("-c", _GATED_MAIN))
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, "the server did not stop cleanly:\n" + "".join(server.lines[-40:])


def send_login(c: Client, account: int, secret: str | None = None, req_id: Any = "login") -> Any:
    msg: dict[str, Any] = {"type": "login", "req_id": req_id, "account": account}
    if secret is not None:
        msg["secret"] = secret
    c.send(msg)
    return req_id


def nothing_arrives(c: Client) -> bool:
    try:
        c.recv(timeout=0.2)
    except (TimeoutError, socket.timeout):
        return True
    return False


def test_secrets_are_checked_off_the_event_loop(gated_server: Callable[[str], GatedServer]) -> None:
    server = gated_server(ACCOUNTS)
    with server.client() as established, server.client() as newcomer:
        established.login(9)  # listed without a secret: nothing to check
        send_login(newcomer, 7, "seven")
        (check,) = server.wait_checks(1)
        assert "on_event_loop=False" in check
        # The check is held: the established client is served all the same.
        for _ in range(5):
            assert established.request(established.ping(), timeout=5)["type"] == "pong"
        assert established.request(established.new_order(ES, "buy", 1, 450_000), timeout=5)["type"] == "ack"
        assert nothing_arrives(newcomer)
        server.release()
        assert newcomer.request("login", timeout=10)["type"] == "logged_in"


def test_logins_in_progress_are_bounded(gated_server: Callable[[str], GatedServer]) -> None:
    server = gated_server(ACCOUNTS + "\n[server]\nlogin_workers = 1\nmax_pending_logins = 2\n")
    clients = [server.client() for _ in range(3)]
    try:
        send_login(clients[0], 7, "seven")
        server.wait_checks(1)  # one login on the worker
        for c in clients[1:]:
            send_login(c, 7, "seven")
        # Of the other two, one waits for the worker, one is over the bound.
        readable, _, _ = select.select([c.sock for c in clients[1:]], [], [], 10)
        assert len(readable) == 1
        refused = next(c for c in clients[1:] if c.sock is readable[0])
        waiting = next(c for c in clients[1:] if c is not refused)
        with pytest.raises(ServerError) as info:
            refused.request("login", timeout=5)
        assert info.value.code == "login_busy"
        assert info.value.reply["message"] == "2 logins are being checked; try again shortly"
        server.wait_log(r"event=login_busy .*reason=pending")
        assert nothing_arrives(waiting)
        server.release(2)
        assert clients[0].request("login", timeout=10)["type"] == "logged_in"
        assert waiting.request("login", timeout=10)["type"] == "logged_in"
        # Once they are done, the refused client gets in.
        send_login(refused, 7, "seven", req_id="again")
        server.wait_checks(3)
        server.release()
        assert refused.request("again", timeout=10)["type"] == "logged_in"
    finally:
        for c in clients:
            c.close()


def test_a_failed_login_is_the_same_whether_the_account_exists(gated_server: Callable[[str], GatedServer]) -> None:
    server = gated_server(ACCOUNTS)
    replies = []
    with server.client() as c:
        for n, (account, secret) in enumerate(((7, "wrong"), (99, "seven"), (7, None)), 1):
            send_login(c, account, secret, req_id=1)
            server.wait_checks(n)  # each one checks a secret, unknown account and missing secret too
            server.release()
            with pytest.raises(ServerError) as info:
                c.request(1, timeout=10)
            replies.append(info.value.reply)
    assert replies == [{"type": "error", "req_id": 1, "code": "auth_failed",
                        "message": "unknown account or wrong secret"}] * 3
    # Checked with the listed account's parameters.
    assert all("iterations=1000" in line for line in server.wait_checks(3))
    failed = server.wait_lines("login_failed", 3)
    assert [re.search(r" account=(\d+)", line).group(1) for line in failed] == ["7", "99", "7"]  # type: ignore[union-attr]


def test_logins_per_host_are_budgeted_whatever_the_outcome(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS + "\n[limits]\nhost_logins = 3\nhost_login_window = 60.0\n")
    for secret in ("seven", "wrong", "seven"):
        with server.client() as c:
            try:
                c.login(7, secret)
            except ServerError as exc:
                assert exc.code == "auth_failed"
    with server.client() as c:
        with pytest.raises(ServerError) as info:
            c.login(7, "seven")
        assert (info.value.code, info.value.reply["message"]) == (
            "login_throttled", "too many logins from 127.0.0.1; try again later")
        # An account listed without a secret has nothing to check: not counted.
        assert c.login(9)["account"] == 9
    server.wait_log(r"event=login_throttled .*account=7 reason=logins")


def test_refused_logins_are_logged_a_line_a_second(server_factory: Any) -> None:
    """A host over its logins may go on asking as fast as its rate allows:
    each is refused, the log gets a line a second at most."""
    server = server_factory(ACCOUNTS + "\n[limits]\nhost_logins = 1\nhost_login_window = 60.0\n")
    with server.client() as c:
        assert c.login(7, "seven")["account"] == 7
    with server.client() as c:
        login = orjson.dumps({"type": "login", "req_id": 1, "account": 7, "secret": "seven"})
        frame = struct.pack(">I", len(login)) + login
        started = time.monotonic()
        c.send_raw(frame * 300)
        codes = [c.recv(timeout=10)["code"] for _ in range(300)]
        took = time.monotonic() - started
        time.sleep(1.05)  # the next is logged, with how many were held back
        c.send_raw(frame)
        codes.append(c.recv(timeout=10)["code"])
    assert codes == ["login_throttled"] * 301
    first = re.search(r"event=login_throttled sid=(\d+) ", server.wait_log(r"event=login_throttled "))
    assert first
    server.wait_log(rf"event=session_close sid={first.group(1)} ")  # logged after all of them
    held = [int(m.group(1)) for line in server.lines
            if (m := re.search(r"event=login_throttled .*account=7 reason=logins held_back=(\d+)", line))]
    # Every refusal is either logged or counted in the next line logged.
    assert 2 <= len(held) <= 2 + math.ceil(took) and held[0] == 0
    assert len(held) + sum(held) == 301


def test_without_accounts_every_session_is_an_admin(server_factory: Any) -> None:
    server = server_factory()
    with server.client() as c, server.client() as other:
        assert c.login(5)["admin"] is True
        server.wait_log(r"event=login .*account=5 admin=True")
        other.login(6)
        other.request(other.new_order(ES, "buy", 1, 450_000))
        assert c.request(c.halt(ES))["state"] == "halted"
        assert c.request(c.resume(ES))["state"] == "open"
        assert c.request(c.mass_cancel(account=6))["count"] == 1


def test_the_login_storm_benchmark_reports(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    proc = subprocess.run([sys.executable, "perf/login_storm.py", "--logins", "5", "--iterations", "1000",
                           "--baseline", "0.2", "--floor", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["outcomes"] == {"logged_in": 5}
    assert result["round_trips_before"]["count"] > 0
    assert "established client's round trips during the storm" in proc.stdout
    # The C floor got the same probe and storm, its "during" as long as the server's storm.
    floor = result["floor"]
    assert floor["outcomes"] == {"logged_in": 5}
    assert floor["round_trips_before"]["count"] > 0
    assert floor["storm_s"] >= result["storm_s"]
    assert proc.stdout.count("the C floor's: p50") == 2

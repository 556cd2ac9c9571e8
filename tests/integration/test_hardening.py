"""Authentication, authorization, limits and trading states over real TCP.

Every limit of docs/security.md is hit here and answered with its documented
code; admin-only requests are refused to other accounts.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client, ConnectionClosed, ServerError

from .conftest import RunningServer, accounts_config

ES, NQ = "ESZ6", "NQZ6"
ROOT = Path(__file__).resolve().parents[2]

SECRETS = {7: "seven", 8: "eight", 1: "admin-pw"}
ACCOUNTS = accounts_config(SECRETS, admins=frozenset({1}))


def login(server: Any, account: int, **kw: Any) -> Client:
    c = server.client()
    c.login(account, SECRETS.get(account), **kw)
    return c


def drain(c: Client, until: float = 0.3) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(c.recv(timeout=until))
        except (TimeoutError, socket.timeout):
            return out


def documented_errors() -> set[str]:
    """The codes of the table of errors in docs/protocol.md (its last section)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Errors\n"):]
    return {code for row in re.findall(r"^\| (`.*?) \|", table, re.M) for code in re.findall(r"`(\w+)`", row)}


def error_code(c: Client, req_id: Any) -> str:
    with pytest.raises(ServerError) as info:
        c.request(req_id)
    return str(info.value.code)


def test_requests_before_login_are_refused(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    with server.client() as c:
        assert error_code(c, c.new_order(ES, "buy", 1, 450_000)) == "not_logged_in"
        assert error_code(c, c.cancel(order_id=1)) == "not_logged_in"
        assert error_code(c, c.halt(ES)) == "not_logged_in"
        assert error_code(c, c.mass_cancel()) == "not_logged_in"
        assert c.request(c.ping())["type"] == "pong"  # the session stays
        assert c.request(c.status())["role"] == "standalone"  # as ping, subscribe and unsubscribe: no login needed


def test_a_session_acts_only_for_its_account(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    with login(server, 7) as seven, login(server, 8) as eight:
        order = seven.request(seven.new_order(ES, "buy", 1, 450_000, client_order_id="mine"))
        for req in (eight.cancel(order_id=order["order_id"]),
                    eight.modify(order_id=order["order_id"], qty=5)):
            reply = eight.request(req)
            assert (reply["type"], reply["code"]) == ("reject", "not_owner")
        # A client order id names only the sender's own orders.
        reply = eight.request(eight.cancel(client_order_id="mine"))
        assert (reply["type"], reply["code"]) == ("reject", "unknown_order")
        assert seven.request(seven.cancel(order_id=order["order_id"]))["type"] == "cancelled"


def test_admin_only_requests(server_factory: Any, tmp_path: Any) -> None:
    server = server_factory(ACCOUNTS, "--data-dir", str(tmp_path / "data"))
    with login(server, 7) as seven:
        assert error_code(seven, seven.halt(ES)) == "not_admin"
        assert error_code(seven, seven.resume(ES)) == "not_admin"
        assert error_code(seven, seven.snapshot()) == "not_admin"
        assert error_code(seven, seven.mass_cancel(account=8)) == "not_admin"
        assert error_code(seven, seven.mass_cancel(all_accounts=True)) == "not_admin"
        assert error_code(seven, seven.mass_cancel(account=7, all_accounts=True)) == "bad_field"  # one or the other
    with login(server, 1) as admin:
        assert admin.request(admin.halt(ES))["state"] == "halted"
        assert admin.request(admin.resume(ES))["state"] == "open"
        assert admin.request(admin.snapshot())["type"] == "snapshot"


def test_failed_logins_are_throttled_and_logged(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS + "\n[limits]\nlogin_failures = 3\nlogin_window = 1.0\n")
    with server.client() as c:
        for _ in range(3):
            with pytest.raises(ServerError) as info:
                c.login(7, "guess")
            assert info.value.code == "auth_failed"
        # Locked out now, even with the right secret.
        with pytest.raises(ServerError) as info:
            c.login(7, "seven")
        assert info.value.code == "login_throttled"
        server.wait_log(r"event=login_throttled .*account=7")
        assert len([line for line in server.lines if "event=login_failed" in line]) == 3
        time.sleep(1.1)  # the failures age out of the window
        assert c.login(7, "seven")["account"] == 7


def test_admin_mass_cancel_across_accounts(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    with login(server, 7) as seven, login(server, 8) as eight, login(server, 1) as admin:
        for c, price in ((seven, 450_000), (eight, 449_975)):
            c.request(c.new_order(ES, "buy", 1, price))
            c.request(c.new_order(NQ, "buy", 1, 1_800_000))
        # An order whose session left without cancel-on-disconnect counts too.
        with login(server, 8, cancel_on_disconnect=False) as gone:
            gone.request(gone.new_order(ES, "buy", 2, 449_950))
        done = admin.request(admin.mass_cancel(ES, account=8))
        assert (done["type"], done["count"]) == ("mass_cancelled", 2)
        # One command: its seq is its cancels' (the pushed one and the one no session holds).
        assert [(m["type"], m["seq"]) for m in drain(eight)] == [("cancelled", done["seq"])]
        assert drain(seven) == []
        done = admin.request(admin.mass_cancel(all_accounts=True))
        assert done["count"] == 3  # one command: one log line
        server.wait_log(r"event=mass_cancelled account=None symbol=None reason=user count=3 seq=\d+ sid=\d+")
        assert sorted(m["type"] for m in drain(seven)) == ["cancelled", "cancelled"]


def test_a_mass_cancel_of_an_account_with_no_orders_costs_the_engine_nothing(server_factory: Any) -> None:
    """Answered 0 by the server: no command is sequenced (each would walk
    the books), so the next order takes the next seq."""
    server = server_factory(ACCOUNTS)
    with login(server, 7) as seven, login(server, 1) as admin:
        before = seven.request(seven.new_order(ES, "buy", 1, 440_000))["seq"]
        assert admin.request(admin.mass_cancel(account=8))["count"] == 0
        assert admin.request(admin.mass_cancel(all_accounts=True, symbol=NQ))["count"] == 0  # one walk: seven's
        assert seven.request(seven.new_order(ES, "buy", 1, 440_000))["seq"] == before + 2


def test_a_mass_cancel_of_an_account_that_runs_out_of_memory_says_so(server_factory: Any,
                                                                      failing_realloc: Any) -> None:
    """3000 orders to cancel at once need 6001 events, a realloc of the
    engine's event buffer to 768 KiB, which fails: the engine refuses the
    whole CANCEL_ALL, and the admin hears it (not a count of 0)."""
    n = 3000
    server = server_factory(ACCOUNTS, env=failing_realloc.env)
    with login(server, 8) as eight, login(server, 1) as admin:
        for _ in range(n // 500):
            for req in [eight.new_order(ES, "buy", 1, 440_000) for _ in range(500)]:
                assert eight.request(req, timeout=10)["type"] == "ack"
        failing_realloc.flag.touch()
        assert error_code(admin, admin.mass_cancel(account=8)) == "no_memory"
        assert "no_memory" in documented_errors()
        failing_realloc.flag.unlink()
        assert len(eight.open_orders()) == n
        assert admin.request(admin.mass_cancel(account=8), timeout=10)["count"] == n


def test_a_session_may_cancel_the_orders_of_its_own_account(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    with login(server, 7) as seven, login(server, 7) as also_seven, login(server, 8) as eight:
        for c in (seven, also_seven, eight):
            c.request(c.new_order(ES, "buy", 1, 450_000))
        assert error_code(seven, seven.mass_cancel(account=8)) == "not_admin"
        assert seven.request(seven.mass_cancel(account=7))["count"] == 2  # both sessions' orders
        assert [m["type"] for m in drain(also_seven)] == ["cancelled"]
        assert len(eight.open_orders()) == 1


def test_max_open_orders_per_account(server_factory: Any) -> None:
    server = server_factory("[limits]\nmax_open_orders = 3\n")
    with server.client() as a, server.client() as b:
        a.login(5)
        b.login(5)  # the same account: the limit is for both sessions together
        ids = [a.request(a.new_order(ES, "buy", 1, 450_000))["order_id"] for _ in range(2)]
        b.request(b.new_order(ES, "buy", 1, 450_000))
        reply = b.request(b.new_order(ES, "buy", 1, 450_000, client_order_id="x"))
        assert (reply["type"], reply["code"], reply["client_order_id"]) == ("reject", "max_open_orders_exceeded", "x")
        # An order that never rests is not held to the limit: at it, an IOC, a
        # FOK and a market order with nothing to take are acked and cancelled.
        for order in (b.new_order(ES, "sell", 1, 460_000, tif="ioc"), b.new_order(ES, "sell", 1, 460_000, tif="fok"),
                      b.new_order(ES, "buy", 1, order_type="market")):
            assert b.request(order)["type"] == "ack"
        assert sorted(m["reason"] for m in drain(b) if m["type"] == "cancelled") == ["fok", "ioc", "market_remainder"]
        assert b.request(b.new_order(ES, "buy", 1, 450_000))["code"] == "max_open_orders_exceeded"
        a.request(a.cancel(order_id=ids[0]))
        assert b.request(b.new_order(ES, "buy", 1, 450_000))["type"] == "ack"
        # A filled order is no longer open: a counterparty takes two.
        with server.client() as c:
            c.login(6)
            c.request(c.new_order(ES, "sell", 2, 450_000, tif="ioc"))
        drain(a)
        drain(b)
        assert b.request(b.new_order(ES, "buy", 1, 449_000))["type"] == "ack"
        # Another account has its own count, and orders still in flight
        # count: five sent at once get three acks and two rejects.
        with server.client() as d:
            d.login(9)
            req_ids = [d.new_order(ES, "sell", 1, 460_000) for _ in range(5)]
            replies = [d.request(r) for r in req_ids]
            assert sorted(r.get("code", r["type"]) for r in replies) == ["ack"] * 3 + ["max_open_orders_exceeded"] * 2


def test_orders_over_the_open_order_limit_are_logged_a_line_a_second(server_factory: Any) -> None:
    server = server_factory("[limits]\nmax_open_orders = 1\n")
    with server.client() as a:
        a.login(5)
        a.request(a.new_order(ES, "buy", 1, 450_000))
        t0 = time.monotonic()
        replies = [a.request(r) for r in [a.new_order(ES, "buy", 1, 450_000) for _ in range(500)]]
        elapsed = time.monotonic() - t0
        assert {r["code"] for r in replies} == {"max_open_orders_exceeded"}
        a.request(a.new_order(ES, "buy", 1, 450_000, client_order_id="last"))
    lines = [line for line in server.lines if "event=order_limit " in line]
    # The first reject's line, then one a second at most: each says how many it left out.
    assert 1 <= len(lines) <= 2 + elapsed
    assert "held_back=0" in lines[0]
    assert sum(int(line.split("held_back=")[1].split()[0]) for line in lines) <= 501 - len(lines)


# ESZ6 alone, with both of an instrument's order limits.
LIMITED_ES = """
[[instruments]]
symbol = "ESZ6"
tick_size = 25
max_qty = 100
max_notional = 10000000
"""


def test_max_qty_and_notional_per_instrument(server_factory: Any) -> None:
    server = server_factory(LIMITED_ES)
    with server.client() as c:
        c.login(1)
        reply = c.request(c.new_order(ES, "buy", 101, 25))
        assert (reply["type"], reply["code"]) == ("reject", "max_qty_exceeded")
        reply = c.request(c.new_order(ES, "buy", 100, 100_025))  # 10,002,500 > 10,000,000
        assert (reply["type"], reply["code"]) == ("reject", "max_notional_exceeded")
        assert c.request(c.new_order(ES, "buy", 100, 100_000))["type"] == "ack"  # exactly at the limit
        reply = c.request(c.new_order(ES, "sell", 101, order_type="market"))
        assert reply["code"] == "max_qty_exceeded"


def test_a_modify_meets_the_same_limits(server_factory: Any) -> None:
    server = server_factory(LIMITED_ES)
    with server.client() as c:
        c.login(1)
        order = c.request(c.new_order(ES, "buy", 10, 100_000, client_order_id="m1"))
        oid = order["order_id"]

        def refused(reply: dict[str, Any], code: str) -> None:
            assert (reply["type"], reply["code"]) == ("reject", code), reply
            assert isinstance(reply["seq"], int)  # the engine's: sequenced with the rest

        refused(c.request(c.modify(order_id=oid, qty=101)), "max_qty_exceeded")
        refused(c.request(c.modify(client_order_id="m1", qty=101)), "max_qty_exceeded")
        refused(c.request(c.modify(order_id=oid, qty=100, price=100_025)), "max_notional_exceeded")
        # The field not given is the order's: 100 at the new price, 10 lots at 1,000,025 ...
        refused(c.request(c.modify(order_id=oid, price=1_000_025)), "max_notional_exceeded")
        assert c.request(c.modify(order_id=oid, qty=100))["type"] == "modified"  # exactly at the limit
        refused(c.request(c.modify(order_id=oid, price=100_025)), "max_notional_exceeded")  # ... or its 100 lots
        assert c.request(c.modify(client_order_id="m1", qty=50, price=200_000))["type"] == "modified"
        assert c.open_orders()[0]["open_qty"] == 50 and c.open_orders()[0]["price"] == 200_000


def test_pipelined_modifies_meet_the_limits_of_what_they_may_leave(server_factory: Any) -> None:
    server = server_factory(LIMITED_ES)

    def frame(msg: dict[str, Any]) -> bytes:
        body = json.dumps(msg).encode()
        return struct.pack(">I", len(body)) + body

    def modifies(*changes: dict[str, Any]) -> list[dict[str, Any]]:
        """The modifies in one write (the second read before the first is answered); their
        answers, in the order sent."""
        c.send_raw(b"".join(frame({"type": "modify", "req_id": i, "order_id": oid, **ch})
                            for i, ch in enumerate(changes)))
        answers = {m["req_id"]: m for m in (c.recv(timeout=5) for _ in changes)}
        return [answers[i] for i in range(len(changes))]

    with server.client() as c:
        c.login(1)
        oid = c.request(c.new_order(ES, "buy", 10, 100_000))["order_id"]
        # 100 lots, then the price with the quantity left out: 100 x 1,000,000 is ten times the limit.
        first, second = modifies({"qty": 100}, {"price": 1_000_000})
        assert (first["type"], second["type"], second["code"]) == ("modified", "reject", "max_notional_exceeded")
        # The other way round: a price first, then the quantity alone.
        assert [m["type"] for m in modifies({"qty": 10}, {"price": 100_000})] == ["modified", "modified"]
        first, second = modifies({"price": 1_000_000}, {"qty": 100})
        assert (first["type"], second["code"]) == ("modified", "max_notional_exceeded")
        # Answered, the modifies count no more: 10 at 1,000,000 is at the limit, and stays there.
        assert c.open_orders()[0]["open_qty"] == 10
        assert c.request(c.modify(order_id=oid, price=1_000_000))["type"] == "modified"


def test_a_modify_sent_before_its_orders_ack_meets_the_limits(server_factory: Any) -> None:
    server = server_factory(LIMITED_ES)
    messages = [
        {"type": "new_order", "req_id": 0, "symbol": ES, "side": "buy", "qty": 10, "price": 100_000,
         "client_order_id": "early"},
        {"type": "modify", "req_id": 1, "client_order_id": "early", "qty": 101},
        {"type": "modify", "req_id": 2, "client_order_id": "early", "price": 1_000_025},
        {"type": "modify", "req_id": 3, "client_order_id": "early", "qty": 20},
    ]
    with server.client() as c:
        c.login(1)
        # One write: the modifies are read before the order is acked.
        c.send_raw(b"".join(struct.pack(">I", len(b)) + b for b in (json.dumps(m).encode() for m in messages)))
        answers = [c.recv(timeout=5) for _ in messages]
        assert [(a["type"], a["req_id"], a.get("code")) for a in answers] == [
            ("ack", 0, None), ("reject", 1, "max_qty_exceeded"), ("reject", 2, "max_notional_exceeded"),
            ("modified", 3, None)]
        (order,) = c.open_orders()
        assert (order["open_qty"], order["price"]) == (20, 100_000)


def test_the_limits_follow_the_configuration_across_restarts(server_factory: Any, tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    unlimited_es = '[[instruments]]\nsymbol = "ESZ6"\ntick_size = 25\n'
    runs = ((LIMITED_ES, "max_qty_exceeded", 1), (unlimited_es, None, 1), (LIMITED_ES, "max_qty_exceeded", 1),
            (LIMITED_ES, "max_qty_exceeded", 0))
    for config, code, set_now in runs:
        server = server_factory(config, "--data-dir", data)
        with server.client() as c:
            c.login(1)
            reply = c.request(c.new_order(ES, "buy", 101, 25, tif="ioc"))
            assert reply.get("code") == code, reply
        assert server.stop() == 0
        # Set by a sequenced command of its own, journaled like any other, when they change (only then).
        assert sum("event=order_limits_set" in line for line in server.lines) == set_now


def test_rate_limit_rejects_without_disconnecting(server_factory: Any) -> None:
    server = server_factory("[limits]\nrate = 5\nburst = 5\n")
    with server.client() as c:
        c.login(1)  # one token
        replies = []
        for _ in range(8):
            try:
                replies.append(c.request(c.ping())["type"])
            except ServerError as exc:
                replies.append(str(exc.code))
        assert replies[:4] == ["pong"] * 4 and "rate_limited" in replies
        time.sleep(1.0)  # five more tokens
        assert c.request(c.ping())["type"] == "pong"


def _pings_answered(c: Client, n: int) -> int:
    """Send `n` pings at once: how many are answered before the rest are
    refused rate_limited (the orders' acks on the way are passed over)."""
    for _ in range(n):
        c.ping()
    replies: list[dict[str, Any]] = []
    while len(replies) < n:
        if (r := c.recv(timeout=5))["type"] in ("pong", "error"):
            replies.append(r)
    answered = sum(r["type"] == "pong" for r in replies)
    assert [r["type"] for r in replies] == ["pong"] * answered + ["error"] * (n - answered)
    assert all(r["code"] == "rate_limited" for r in replies[answered:])
    return answered


@contextmanager
def _resting_in_a_still_bucket(server_factory: Any, burst: int, orders: int) -> Iterator[Client]:
    """A logged-in client with `orders` resting buys of ESZ6, on a server
    whose bucket of `burst` tokens barely refills (0.001 a second): what is
    left is what was spent, 1 + `orders` tokens so far."""
    server = server_factory(f"[limits]\nrate = 0.001\nburst = {burst}\nmax_open_orders = 0\n")
    with server.client() as c:
        c.login(7)
        for i in range(orders):
            c.new_order("ESZ6", "buy", 1, 450_000 - 25 * i)
        yield c


def test_a_reply_that_lists_more_spends_more_of_the_rate(server_factory: Any) -> None:
    with _resting_in_a_still_bucket(server_factory, 200, 100) as c:  # 99 left
        assert len(c.request(c.orders(), timeout=10)["orders"]) == 100  # 1 + 100 / 4: 73 left
        snapshot = c.request(c.subscribe("ESZ6"), timeout=10)  # 1 + 100 / 32: 68.875 left
        assert len(snapshot["bids"]) == 100 and snapshot["asks"] == []
        assert _pings_answered(c, 80) == 68


def test_a_request_of_one_symbol_spends_the_rate_for_the_orders_it_skips(server_factory: Any) -> None:
    # Each request goes through all 256 orders and takes none.
    with _resting_in_a_still_bucket(server_factory, 400, 256) as c:  # 143 left
        assert c.request(c.orders("NQZ6"), timeout=10)["orders"] == []  # 1 + 256 / 128: 140 left
        assert c.request(c.mass_cancel("NQZ6"), timeout=10)["count"] == 0  # 1 + 256 / 512: 138.5 left
        assert _pings_answered(c, 140) == 138


def test_junk_spends_the_rate_and_its_errors_are_logged_sparingly(server_factory: Any) -> None:
    server = server_factory("[limits]\nrate = 5\nburst = 5\n")
    junk = [b"{not json", b'{"type": "cancel", "order_id": "x"}', b"[1]"] * 100
    with server.client() as c:
        started = time.monotonic()
        c.send_raw(b"".join(struct.pack(">I", len(j)) + j for j in junk))
        codes = [c.recv(timeout=5)["code"] for _ in junk]
        took = time.monotonic() - started
    assert codes[:5] == ["bad_json", "bad_field", "bad_message", "bad_json", "bad_field"]
    assert codes[5:] == ["rate_limited"] * (len(junk) - 5)
    # Every message answered; the log a line a second at most.
    server.wait_log(r"event=request_error .*code=rate_limited")
    limited = [line for line in server.lines if "event=request_error" in line and "code=rate_limited" in line]
    assert 1 <= len(limited) <= 1 + math.ceil(took) and "held_back=0" in limited[0]


def test_refused_requests_within_the_rate_are_logged_a_line_a_second_for_each_code(server_factory: Any) -> None:
    server = server_factory()
    junk = [b"{not json", b'{"type": "cancel", "order_id": "x"}', b"[1]"] * 300
    with server.client() as c:
        started = time.monotonic()
        c.send_raw(b"".join(struct.pack(">I", len(j)) + j for j in junk))
        codes = [c.recv(timeout=5)["code"] for _ in junk]
        took = time.monotonic() - started
        time.sleep(1.05)  # the next of each code is logged, with how many were held back
        c.send_raw(b"".join(struct.pack(">I", len(j)) + j for j in junk[:3]))
        assert [c.recv(timeout=5)["code"] for _ in range(3)] == codes[:3]
    assert codes == ["bad_json", "bad_field", "bad_message"] * 300
    server.wait_log(r"event=session_close ")  # logged after all of them
    for code in ("bad_json", "bad_field", "bad_message"):
        pattern = rf"event=request_error sid=\d+ code={code} .*held_back=(\d+)"
        held = [int(m.group(1)) for line in server.lines if (m := re.search(pattern, line))]
        # Every message is either logged or counted in the next line logged.
        assert 2 <= len(held) <= 2 + math.ceil(took) and held[0] == 0
        assert len(held) + sum(held) == 301


def test_settings_changed_as_fast_as_the_rate_allows_are_logged_ten_lines_a_second(server_factory: Any) -> None:
    server = server_factory()
    with server.client() as c:
        c.login(7)
        started = time.monotonic()
        for req_id in [c.set_mmp(ES, 100 + i, 1000) for i in range(200)]:
            assert c.request(req_id)["type"] == "mmp"
        took = time.monotonic() - started
        time.sleep(1.05)  # the next is logged, with how many were held back
        c.request(c.set_mmp(ES, 1, 1000))
    server.wait_log(r"event=session_close ")
    held = [int(m.group(1)) for line in server.lines if (m := re.search(r"event=set_mmp .*held_back=(\d+)", line))]
    assert 11 <= len(held) <= 10 * (2 + math.ceil(took))
    assert len(held) + sum(held) == 201  # each logged, or counted in a later line


def test_refused_connections_are_logged_ten_lines_a_second(server_factory: Any) -> None:
    server = server_factory("[server]\nmax_connections = 1\n")
    with server.client() as holder:
        assert holder.request(holder.ping())["type"] == "pong"
        started = time.monotonic()
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.settimeout(5)
                assert b"too_many_connections" in s.recv(4096)
        took = time.monotonic() - started
    refused = [line for line in server.lines if "event=connection_refused " in line]
    assert 10 <= len(refused) <= 10 * (1 + math.ceil(took)) < 100


def test_idle_sessions_are_closed(server_factory: Any) -> None:
    server = server_factory("[limits]\nidle_timeout = 0.5\n")
    with server.client() as idle, server.client() as busy:
        for _ in range(6):
            assert busy.request(busy.ping())["type"] == "pong"
            time.sleep(0.2)
        reply = idle.recv(timeout=2)
        assert reply["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed):
            idle.recv(timeout=2)
    server.wait_log(r"event=session_close .*reason=idle_timeout")


def _server_side_timer(server_port: int, client: socket.socket) -> tuple[int, int]:
    """The kernel's timer on the server's end of `client`'s connection, from
    /proc/net/tcp: (kind, seconds to go); kind 2 is the keepalive timer, 0
    none (an idle connection without keepalive)."""
    ours = client.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            local, remote, timer = fields[1], fields[2], fields[5]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == ours:
                kind, when = timer.split(":")
                return int(kind, 16), int(when, 16) // 100  # in clock ticks of 1/100 s
    raise AssertionError(f"no connection from port {ours} to {server_port} in /proc/net/tcp")


@pytest.mark.parametrize("keepalive", [None, 3, 0])
def test_the_server_probes_quiet_connections(server_factory: Any, keepalive: int | None) -> None:
    # A client machine gone without a word is found by TCP keepalive on the
    # server's side: the kernel's timer on the server's end of a quiet
    # connection is the keepalive's, due within [limits] keepalive seconds.
    server = server_factory(None if keepalive is None else f"[limits]\nkeepalive = {keepalive}\n")
    with server.client(keepalive=None) as c:
        assert c.request(c.ping())["type"] == "pong"
        time.sleep(0.2)  # the pong acknowledged: no retransmission timer left
        kind, due = _server_side_timer(server.port, c.sock)  # type: ignore[arg-type]
    if keepalive == 0:
        assert kind == 0
    else:
        assert kind == 2 and 0 <= due <= (10 if keepalive is None else keepalive)


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def _frames(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    """The next `count` frames from `sock`, read as they come."""
    buf, out = b"", []
    while len(out) < count:
        data = sock.recv(65536)
        assert data, f"the server closed the connection after {len(out)} of {count} frames"
        buf += data
        while len(buf) >= 4 and len(buf) >= 4 + (n := struct.unpack_from(">I", buf)[0]):
            out.append(json.loads(buf[4 : 4 + n]))
            buf = buf[4 + n :]
    return out


def test_a_client_that_pauses_reading_keeps_its_session(server_factory: Any) -> None:
    # A client that reads nothing for a while, with the server's replies
    # waiting for room in its receive window all that time (far less than
    # max_unsent), is there still: it answers the server's window probes.
    # It must get every reply once it reads again, not lose its session as
    # an unreachable peer after [limits] keepalive's 1 + 3 x 1 s.
    server = server_factory("[limits]\nkeepalive = 1\n")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(_frame({"type": "login", "account": 7, "req_id": 0}))
        s.sendall(_frame({"type": "ping", "req_id": 1}) * 15_000)  # about 400 KB of pongs
        time.sleep(7)  # the pause: its receive window shut, the server's send queue full
        replies = _frames(s, 1 + 15_000)
        assert [r["type"] for r in replies] == ["logged_in"] + ["pong"] * 15_000
        s.sendall(_frame({"type": "ping", "req_id": 2}))
        assert _frames(s, 1) == [{"type": "pong", "req_id": 2}]
        assert not [line for line in server.lines if "event=session_close" in line]


_OFF_TICK = {"type": "new_order", "symbol": ES, "side": "buy", "qty": 1, "price": 400_001}  # refused, with a seq


def _rest_orders(c: Client, n: int) -> None:
    for _ in range(n // 250):
        for req in [c.new_order(ES, "buy", 1, 400_000) for _ in range(250)]:
            assert c.request(req, timeout=10)["type"] == "ack"


def test_a_read_of_requests_with_large_answers_stops_at_a_slow_reader(server_factory: Any) -> None:
    # One read holds a few hundred requests whose answers are large (the
    # orders of an account with 500 open: some 100 KB each), from a client
    # that reads none: once what it let pile up passes max_unsent the
    # session closes, and the rest of the read is not carried out. Each
    # comes with a cancel_all_after that disarms nothing and is logged, so
    # the log tells how many were.
    server = server_factory("[server]\nmax_unsent = 262144\n")
    with server.client() as owner:
        owner.login(7)
        _rest_orders(owner, 500)
        k = 200
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(_frame({"type": "login", "account": 7, "req_id": 0}) + b"".join(
                _frame({"type": "orders", "req_id": i}) + _frame({"type": "cancel_all_after", "seconds": 0})
                for i in range(k)))
            server.wait_log(r"event=session_close .*reason=slow_reader")
    carried_out = sum("event=cancel_all_after " in line for line in server.lines)
    assert carried_out < k // 4, f"{carried_out} of the {k} requests of the read were carried out"


def test_a_closed_session_holds_its_place_until_its_socket_closes(server_factory: Any) -> None:
    """A client that asks for large answers, reads none and half-closes:
    its session ends (its order cancelled on disconnect), but its socket,
    a file descriptor, stays open while the writer tries to send what is
    queued (5 s at most), and counts against max_connections until then."""
    server = server_factory("[server]\nmax_connections = 2\n")
    with server.client() as owner:
        owner.login(7)
        _rest_orders(owner, 500)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(_frame({"type": "login", "account": 7, "req_id": 0})
                      + _frame({"type": "new_order", "req_id": 1, "symbol": ES, "side": "sell", "qty": 1,
                                "price": 500_000})
                      + b"".join(_frame({"type": "orders", "req_id": 2 + i}) for i in range(10)))
            deadline = time.monotonic() + 10  # its sell rests: its session owns an order
            while all(o["side"] == "buy" for o in owner.request(owner.orders(ES))["orders"]):
                assert time.monotonic() < deadline
            s.shutdown(socket.SHUT_WR)  # after its requests: about 1 MB of answers wait for it to read
            server.wait_log(r"event=cancel_on_disconnect .*orders=1")
            with pytest.raises(ConnectionClosed, match="too_many_connections"):
                server.client(timeout=5).login(8)
        server.wait_log(r"event=session_close .*reason=peer_closed")
        with server.client(timeout=5) as c:  # its place is free again
            assert c.login(8)["type"] == "logged_in"


def _reading_until_last(client: Client) -> tuple[threading.Thread, list[dict[str, Any]], threading.Event]:
    """A thread, started, that reads `client`'s frames into a list until the
    one of req_id "last"; the event is set at the first (or as it fails)."""
    replies: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        try:
            while not replies or replies[-1].get("req_id") != "last":
                replies.append(client.recv(timeout=30))
                first.set()
        finally:
            first.set()

    reading = threading.Thread(target=read)
    reading.start()
    return reading, replies, first


def test_the_other_sessions_are_served_between_the_requests_of_one_read(server_factory: Any) -> None:
    # A client that pipelines a few hundred requests with large answers, and
    # reads them (max_unsent holds them all, however it keeps up): the first
    # answer goes out, and another session's order is carried out, before
    # the last of them is. (No rate limit: each answer costs 126 tokens.)
    server = server_factory("[server]\nmax_unsent = 67108864\n[limits]\nrate = 0\n")
    with server.client() as owner, server.client() as asker:
        owner.login(7)
        asker.login(7)
        _rest_orders(owner, 500)
        reading, replies, first = _reading_until_last(asker)
        asker.send_raw(b"".join(_frame({"type": "orders", "req_id": i}) for i in range(300))
                       + _frame({**_OFF_TICK, "req_id": "last"}))
        first.wait(30)
        between = owner.request(owner.new_order(ES, "buy", 1, 400_001))["seq"]
        reading.join(60)
        assert replies and replies[-1]["req_id"] == "last", replies[-1:]
        assert between < replies[-1]["seq"]


def test_the_other_sessions_are_served_between_the_frames_of_one_read_answered_in_python(
        server_factory: Any) -> None:
    # 12,000 frames that are not JSON (60 KB: one read), each answered
    # through Python, then an order: the read is carried out 0.2 ms (HOLD)
    # at a time, and another session's order, sent once the first answer
    # came, is carried out before the last frame is. Every frame is answered,
    # in order.
    server = server_factory()
    junk = 12_000
    with server.client() as flooder, server.client() as other:
        flooder.login(7)
        other.login(8)
        reading, replies, first = _reading_until_last(flooder)
        flooder.send_raw(b"".join([struct.pack(">I", 1) + b"x"] * junk) + _frame({**_OFF_TICK, "req_id": "last"}))
        first.wait(30)
        between = other.request(other.new_order(ES, "buy", 1, 400_001))["seq"]
        reading.join(60)
    assert len(replies) == junk + 1 and {r["code"] for r in replies[:junk]} == {"bad_json"}
    assert replies[-1]["req_id"] == "last" and between < replies[-1]["seq"]


def test_the_flood_benchmark_reports(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    proc = subprocess.run([sys.executable, "perf/flood_neighbour.py", "--seconds", "0.5", "--baseline", "0.2",
                           "--flood-rate", "20000", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    # About 10,000 frames sent, each answered (20,000 a second: the burst, then over the rate).
    assert result["sent"] >= 1000 and sum(result["answers"].values()) == result["sent"]
    assert set(result["answers"]) <= {"bad_json", "rate_limited"} and "slow_reader" not in result["sessions_closed"]
    assert result["round_trips_before"]["count"] > 0 and result["round_trips_during"]["count"] > 0
    assert "during / before: p50" in proc.stdout


_SO_ATTACH_FILTER = 26  # Linux's, in <asm-generic/socket.h>; the socket module does not name it


def _deaf(sock: socket.socket) -> None:
    """Attach a socket filter that drops every packet arriving for `sock`:
    its kernel acknowledges nothing more, as if its machine were gone."""
    drop_all = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0 bytes
    program = struct.pack("@HP", 1, ctypes.addressof(drop_all))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)  # the kernel copies the program


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux socket filter")
def test_a_client_machine_gone_while_its_fill_was_on_its_way_is_found(server_factory: Any) -> None:
    # Keepalive probes only a quiet connection: one with data the client
    # never acknowledged is closed after [limits] keepalive's 1 + 3 x 1 s of
    # that too, and cancel-on-disconnect cancels what is left of its order.
    server = server_factory(ACCOUNTS + "[limits]\nkeepalive = 1\n")
    gone = server.client(keepalive=None)  # its machine, once gone, sends nothing more
    gone.login(7, SECRETS[7])  # cancel-on-disconnect, by default
    with login(server, 8) as taker:
        assert gone.request(gone.new_order(ES, "buy", 2, 400_000))["type"] == "ack"
        assert gone.sock is not None
        _deaf(gone.sock)  # type: ignore[arg-type]
        taker.request(taker.new_order(ES, "sell", 1, 400_000))  # a fill for the gone client, never acknowledged
        line = server.wait_log(r"event=session_close .*account=7", timeout=30)
        assert "reason=peer_unreachable" in line, line
        server.wait_log(r"event=cancel_on_disconnect .*orders=1")
    gone.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux socket filter")
def test_a_client_machine_gone_while_its_receive_window_was_shut_is_found(server_factory: Any) -> None:
    # A client that stopped reading, its receive window shut with the
    # server's replies waiting, then its machine gone: nothing is in flight
    # (the window has no room), so nothing goes unacknowledged; the probes
    # of the shut window go unanswered instead, and once three have and
    # [limits] keepalive's 1 + 3 x 1 s have passed the session closes and
    # cancel-on-disconnect cancels its order. (A client there that pauses
    # answers them: test_a_client_that_pauses_reading_keeps_its_session.)
    server = server_factory(ACCOUNTS + "[limits]\nkeepalive = 1\n")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(_frame({"type": "login", "account": 7, "secret": SECRETS[7], "req_id": 0}))
        assert _frames(s, 1)[0]["type"] == "logged_in"
        s.sendall(_frame({"type": "new_order", "symbol": ES, "side": "buy", "qty": 2, "price": 400_000,
                          "req_id": 1}))
        assert _frames(s, 1)[0]["type"] == "ack"
        s.sendall(_frame({"type": "ping", "req_id": 2}) * 15_000)  # about 400 KB of pongs
        time.sleep(1)  # its receive window shut, the server's send queue full
        _deaf(s)
        line = server.wait_log(r"event=session_close .*account=7", timeout=30)
        assert "reason=peer_unreachable" in line, line
        server.wait_log(r"event=cancel_on_disconnect .*orders=1")


def test_a_client_machine_gone_without_a_word_is_found_and_its_orders_cancelled(tmp_path: Path) -> None:
    # The whole way, in a network namespace whose loopback goes down under a
    # quiet session (tests/integration/peer_gone.py): keepalive probes go
    # unanswered, the kernel fails the socket (ETIMEDOUT), the session closes
    # and cancel-on-disconnect cancels its order.
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode:
        pytest.skip("needs a network namespace of its own (unshare --net: root, or user namespaces)")
    proc = subprocess.run(["unshare", "--net", sys.executable, str(Path(__file__).with_name("peer_gone.py")),
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    close = [line for line in proc.stdout.splitlines() if "event=session_close" in line]
    assert len(close) == 1 and "reason=peer_unreachable" in close[0], proc.stdout
    assert re.search(r"event=cancel_on_disconnect .*orders=1", proc.stdout), proc.stdout


def test_connections_up_to_the_limit_leave_the_journal_its_files(tmp_path: Path) -> None:
    """A soft descriptor limit of 300 (hard 4,096) under the default 1,024
    connections: the server raises it at start, so 400 clients held open
    leave room for one more client and for the files the journal and a
    snapshot open; the orders are journaled and answered."""
    limited = ("-c", "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (300, 4096)); "
                     "from pyengine.server.cli import main; sys.exit(main())")
    data = tmp_path / "data"
    server = RunningServer(["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0", "--data-dir", str(data)],
                           tmp_path / "server.log", timeout=20, launcher=limited)
    held: list[socket.socket] = []
    try:
        assert any("event=descriptor_limit was=300 now=1280" in line for line in server.lines), server.tail()
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(400)]
        with server.client(timeout=10) as c:
            c.login(7)
            for i in range(20):
                ack = c.request(c.new_order(ES, "buy", 1, 450_000 + i * 25))
                assert ack["type"] == "ack", ack
            assert c.request(c.snapshot())["type"] == "snapshot"
    finally:
        for sock in held:
            sock.close()
        code = server.stop()
    assert code == 0, server.tail()
    assert len(list(data.glob("snapshot-*.snap"))) == 1


def test_halt_and_resume(server_factory: Any, tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    server = server_factory(ACCOUNTS, "--data-dir", data)
    with login(server, 1) as admin, login(server, 7) as seven, server.client() as md:
        resting = seven.request(seven.new_order(ES, "buy", 2, 450_000))
        spare = seven.request(seven.new_order(ES, "buy", 2, 449_000))
        assert md.request(md.subscribe(ES))["state"] == "open"
        reply = admin.request(admin.halt(ES))
        assert (reply["type"], reply["symbol"], reply["state"]) == ("trading_state", ES, "halted")
        pushed = drain(md)
        assert [(m["type"], m["state"]) for m in pushed] == [("trading_state", "halted")]
        # Halted: new orders and modifies are rejected, cancels go through.
        reply = seven.request(seven.new_order(ES, "sell", 1, 450_000))
        assert (reply["type"], reply["code"]) == ("reject", "halted")
        reply = seven.request(seven.modify(order_id=resting["order_id"], qty=1))
        assert (reply["type"], reply["code"]) == ("reject", "halted")
        assert seven.request(seven.cancel(order_id=spare["order_id"]))["type"] == "cancelled"
        assert seven.request(seven.new_order(NQ, "buy", 1, 1_800_000))["type"] == "ack"
    assert server.stop() == 0
    # The halt is in the journal: it holds after a restart.
    server = server_factory(ACCOUNTS, "--data-dir", data)
    with login(server, 1) as admin, login(server, 7) as seven, server.client() as md:
        assert md.request(md.subscribe(ES))["state"] == "halted"
        assert seven.request(seven.new_order(ES, "sell", 1, 450_000))["code"] == "halted"
        admin.request(admin.resume(ES))
        assert [(m["type"], m["state"]) for m in drain(md)] == [("trading_state", "open")]
        fill = seven.request(seven.new_order(ES, "sell", 1, 450_000))
        assert fill["type"] == "ack"

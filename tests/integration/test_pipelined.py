"""Requests that read a session's orders (mass_cancel, orders, order_status)
sent in one write right after the orders they must see, over TCP against a
real server: they wait for those orders' acks (pyengine/server/settle.py),
and the replies come in the order the requests were sent."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pyengine.client import Client

from .conftest import RunningServer

ES, NQ = "ESZ6", "NQZ6"


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


def new_order(req_id: int, symbol: str, price: int, coid: str | None = None) -> bytes:
    msg: dict[str, Any] = {"type": "new_order", "req_id": req_id, "symbol": symbol, "side": "buy", "qty": 1,
                           "price": price}
    if coid is not None:
        msg["client_order_id"] = coid
    return frame(msg)


def until_reply(c: Client, req_id: int) -> list[dict[str, Any]]:
    """Every message up to and including the reply to `req_id`."""
    out = []
    while True:
        m = c.recv(timeout=5)
        out.append(m)
        if m.get("req_id") == req_id and m["type"] not in ("ack", "fill"):
            return out


@pytest.fixture
def server(server_factory: Callable[..., RunningServer], tmp_path: Path) -> RunningServer:
    """A server whose acks wait for the journal's fsync of each command: the
    request that follows the orders is read long before their acks can go."""
    return server_factory(None, "--data-dir", str(tmp_path / "data"), "--fsync", "always")


def login(server: RunningServer, account: int) -> Client:
    c = server.client()
    assert c.login(account)["type"] == "logged_in"
    return c


def test_a_mass_cancel_cancels_the_orders_sent_just_before_it(server: RunningServer) -> None:
    with login(server, 1) as c:
        c.send_raw(new_order(10, ES, 450_000) + new_order(11, NQ, 2_000_000) + new_order(12, ES, 449_975)
                   + frame({"type": "mass_cancel", "req_id": 13, "symbol": ES}))
        got = until_reply(c, 13)
        assert [(m["type"], m["req_id"]) for m in got] == [
            ("ack", 10), ("ack", 11), ("ack", 12), ("cancelled", None), ("cancelled", None), ("mass_cancelled", 13)]
        acks = {m["req_id"]: m["order_id"] for m in got if m["type"] == "ack"}
        assert {m["order_id"] for m in got if m["type"] == "cancelled"} == {acks[10], acks[12]}
        assert got[-1]["count"] == 2
        assert [o["order_id"] for o in c.open_orders()] == [acks[11]]
        # All of them, and none left behind for a second one.
        c.send_raw(new_order(20, ES, 450_000) + frame({"type": "mass_cancel", "req_id": 21}))
        got = until_reply(c, 21)
        assert [m["type"] for m in got] == ["ack", "cancelled", "cancelled", "mass_cancelled"]
        assert got[-1]["count"] == 2 and c.open_orders() == []


def test_a_mass_cancel_of_an_account_takes_its_orders_still_on_their_way(server: RunningServer) -> None:
    """The kill switch: an admin's mass_cancel of an account cancels every
    order of it that reaches the engine before the request does, answered or
    not yet (here the acks wait for the journal's fsync of each order, so
    the request comes while most of the account's orders are on their way);
    the orders after it stay open."""
    n = 300
    with login(server, 8) as trader, login(server, 1) as admin:
        trader.send_raw(b"".join(new_order(i, ES, 440_000 + 25 * (i % 40)) for i in range(1, n + 1)))
        first = trader.recv(timeout=10)
        admin.send_raw(frame({"type": "mass_cancel", "req_id": "kill", "account": 8}))
        done = until_reply(admin, "kill")[-1]  # type: ignore[arg-type]
        assert done["type"] == "mass_cancelled" and done["count"] > 0
        acked: dict[int, int] = {first["order_id"]: first["seq"]}  # order id -> its ack's seq
        cancelled: dict[int, int] = {}  # order id -> the cancel's seq
        while len(acked) < n or len(cancelled) < done["count"]:
            m = trader.recv(timeout=10)
            if m["type"] == "ack":
                acked[m["order_id"]] = m["seq"]
            else:
                assert (m["type"], m["reason"]) == ("cancelled", "user"), m
                cancelled[m["order_id"]] = m["seq"]
        kill = max(cancelled.values(), default=0)
        assert sorted(oid for oid, seq in acked.items() if seq < kill) == sorted(cancelled)
        assert {o["order_id"] for o in trader.open_orders()} == {oid for oid, seq in acked.items() if seq > kill}


def test_queries_see_the_orders_sent_just_before_them(server: RunningServer) -> None:
    with login(server, 1) as c:
        c.send_raw(new_order(1, ES, 450_000, "q1") + frame({"type": "order_status", "req_id": 2,
                                                            "client_order_id": "q1"})
                   + frame({"type": "orders", "req_id": 3}))
        ack, status, orders = (c.recv(timeout=5) for _ in range(3))
        assert (ack["type"], ack["req_id"]) == ("ack", 1)
        assert (status["type"], status["order"]["order_id"], status["order"]["status"]) == (
            "order_status", ack["order_id"], "open")
        assert (orders["type"], [o["order_id"] for o in orders["orders"]]) == ("orders", [ack["order_id"]])
        # A reject answers too: the query that follows it waits for it, then finds nothing.
        c.send_raw(new_order(4, "NOPE", 450_000, "q2") + frame({"type": "order_status", "req_id": 5,
                                                                "client_order_id": "q2"}))
        reject, error = c.recv(timeout=5), c.recv(timeout=5)
        assert (reject["type"], reject["code"], error["type"], error["code"]) == (
            "reject", "unknown_instrument", "error", "unknown_order")



def test_a_query_after_a_sweep_waits_for_all_its_fills(server_factory: Callable[..., RunningServer]) -> None:
    """A new order that fills 300 makers: its events reach the event loop in
    many batches (an output ring of 4 events), its ack in the first; an
    `order_status` sent right after it is answered after the last fill."""
    n = 300
    server = server_factory("[engine]\nout_capacity = 4\n")
    with login(server, 7) as maker, login(server, 8) as taker:
        maker.send_raw(b"".join(frame({"type": "new_order", "req_id": i, "symbol": ES, "side": "sell", "qty": 1,
                                       "price": 450_000}) for i in range(n)))
        for _ in range(n):
            assert maker.recv(timeout=10)["type"] == "ack"
        taker.send_raw(frame({"type": "new_order", "req_id": "sweep", "symbol": ES, "side": "buy", "qty": n,
                              "price": 450_000, "client_order_id": "sweep"})
                       + frame({"type": "order_status", "req_id": "q", "client_order_id": "sweep"}))
        got = until_reply(taker, "q")  # type: ignore[arg-type]
        assert [m["type"] for m in got] == ["ack"] + ["fill"] * n + ["order_status"]
        assert got[-1]["order"]["status"] == "filled", got[-1]


def test_frames_read_behind_a_query_are_dropped_when_the_session_closes_meanwhile(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    """A session that closes while a query waits for its orders' answers
    (here: its client reset the connection, and the first answer's send
    fails) carries out nothing it read after the query. An order behind the
    query went to the engine for a session already forgotten: it stayed
    open, nobody's, past the session's cancel-on-disconnect, and its
    account's count of orders in flight kept it for good."""
    server = server_factory("[limits]\nmax_open_orders = 1\n", "--data-dir", str(tmp_path / "data"),
                            "--fsync", "always")
    c = login(server, 3)
    c.send_raw(frame({"type": "new_order", "req_id": 1, "symbol": ES, "side": "buy", "qty": 1, "price": 440_000,
                      "tif": "ioc"})
               + frame({"type": "orders", "req_id": 2}) + new_order(3, ES, 430_000, "late"))
    assert c.sock is not None
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets it
    c.close()
    server.wait_log(r"event=session_close .*account=3")
    with login(server, 3) as again:
        placed = again.request(again.new_order(ES, "buy", 1, 420_000))
        assert placed["type"] == "ack", placed
        assert [o["order_id"] for o in again.open_orders()] == [placed["order_id"]]


def test_a_query_after_a_mass_cancel_of_the_account_waits_for_all_of_it(
        server_factory: Callable[..., RunningServer]) -> None:
    """A mass_cancel of the session's account is one engine command whose
    cancels may reach the event loop in many batches (here an output ring of
    4 events: a few at a time); an `orders` sent right after it is answered
    once the mass cancel is, and finds none of the orders it cancelled."""
    n = 300
    server = server_factory("[engine]\nout_capacity = 4\n")
    with login(server, 8) as c:
        c.send_raw(b"".join(new_order(i, ES, 440_000 + 25 * (i % 40)) for i in range(1, n + 1)))
        for _ in range(n):
            assert c.recv(timeout=10)["type"] == "ack"
        c.send_raw(frame({"type": "mass_cancel", "req_id": "kill", "account": 8})
                   + frame({"type": "orders", "req_id": "q"}))
        got = until_reply(c, "q")  # type: ignore[arg-type]
        replies = [(m["type"], m["req_id"]) for m in got if m.get("req_id") is not None]
        assert replies == [("mass_cancelled", "kill"), ("orders", "q")]
        assert got[-1]["orders"] == []
        assert sum(m["type"] == "cancelled" for m in got) == n

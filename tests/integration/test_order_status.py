"""The orders and order_status requests over TCP against a real server:
open orders with their fills, modifies and priorities; finished orders
within the kept window; another account's orders never found; orders
recovered from a data directory after a restart."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client, ServerError

ES, NQ = "ESZ6", "NQZ6"


def _by_id(orders: list[Any]) -> dict[int, Any]:
    return {o["order_id"]: o for o in orders}


def test_open_orders_show_fills_modifies_and_priority(server: Any) -> None:
    with server.client() as a, server.client() as b:
        a.login(1, cancel_on_disconnect=False)
        b.login(2)
        first = a.request(a.new_order(ES, "buy", 10, 450_000, client_order_id="b1"))
        second = a.request(a.new_order(ES, "buy", 5, 450_000, client_order_id="b2"))
        other = a.request(a.new_order(NQ, "sell", 3, 2_000_000))
        # B sells 4 into the first bid: a partial fill.
        b.request(b.new_order(ES, "sell", 4, 450_000, tif="ioc"))
        orders = a.open_orders()
        assert [o["order_id"] for o in orders] == [first["order_id"], second["order_id"], other["order_id"]]
        o1, o2, o3 = orders
        assert o1 == {"order_id": first["order_id"], "client_order_id": "b1", "symbol": ES, "side": "buy",
                      "price": 450_000, "qty": 10, "open_qty": 6, "filled_qty": 4, "priority": first["seq"],
                      "status": "open", "reason": None, "last_seq": o1["last_seq"]}
        assert o1["last_seq"] > second["seq"]  # the trade's
        assert (o2["open_qty"], o2["filled_qty"], o2["priority"]) == (5, 0, second["seq"])
        assert o3["symbol"] == NQ and o3["side"] == "sell" and o3["client_order_id"] is None
        assert [o["order_id"] for o in a.open_orders(NQ)] == [other["order_id"]]
        # Lowering the quantity keeps the priority; a price change loses it.
        kept = a.request(a.modify(client_order_id="b1", qty=3))
        assert a.order_state(client_order_id="b1")["priority"] == first["seq"]
        assert kept["priority_kept"] is True
        moved = a.request(a.modify(client_order_id="b2", price=449_975))
        state = a.order_state(second["order_id"])
        assert (state["price"], state["open_qty"], state["priority"]) == (449_975, 5, moved["seq"])
        # Another session of the same account sees them all.
        with server.client() as a2:
            a2.login(1)
            assert [o["order_id"] for o in a2.open_orders()] == [o["order_id"] for o in orders]


def test_fills_past_the_largest_quantity_show_the_largest(server: Any) -> None:
    """Raising an order's open qty by modify lets its fills add up past
    2^63 - 1: its filled_qty stops there (it wrapped to a negative number)."""
    most = 2**63 - 1
    with server.client() as a, server.client() as b:
        a.login(1)
        b.login(2)
        sell = a.request(a.new_order(ES, "sell", most, 450_000))["order_id"]
        b.request(b.new_order(ES, "buy", most - 1, 450_000))
        assert a.request(a.modify(sell, most))["qty"] == most
        b.request(b.new_order(ES, "buy", most, 450_000))
        state = a.order_state(sell)
        assert (state["status"], state["open_qty"], state["filled_qty"]) == ("filled", 0, most)


def test_finished_orders_and_errors(server: Any) -> None:
    with server.client() as a, server.client() as b:
        a.login(1)
        b.login(2)
        ack = a.request(a.new_order(ES, "sell", 2, 460_000, client_order_id="s1"))
        b.request(b.new_order(ES, "buy", 2, 460_000, tif="ioc"))
        filled = a.order_state(ack["order_id"])
        assert (filled["status"], filled["open_qty"], filled["filled_qty"], filled["reason"]) == ("filled", 0, 2, None)
        again = a.request(a.new_order(ES, "sell", 7, 470_000, client_order_id="s1"))
        assert a.order_state(client_order_id="s1")["order_id"] == again["order_id"]  # the open one first
        a.request(a.cancel(client_order_id="s1"))
        cancelled = a.order_state(client_order_id="s1")
        assert (cancelled["order_id"], cancelled["status"], cancelled["reason"]) == (again["order_id"], "cancelled",
                                                                                    "user")
        assert a.open_orders() == []
        # Another account's order is not found, and reads as an unknown one.
        with pytest.raises(ServerError) as info:
            b.order_state(ack["order_id"])
        assert info.value.code == "unknown_order"
        with pytest.raises(ServerError) as info:
            b.order_state(client_order_id="s1")
        assert info.value.code == "unknown_order"
        with pytest.raises(ServerError) as info:
            a.order_state(999_999)
        assert info.value.code == "unknown_order"
        for bad, code in (({}, "missing_field"), ({"order_id": 1, "client_order_id": "x"}, "bad_field"),
                          ({"order_id": "1"}, "bad_field")):
            a.send({"type": "order_status", "req_id": "q", **bad})
            with pytest.raises(ServerError) as info:
                a.request("q")
            assert info.value.code == code
        with pytest.raises(ServerError) as info:
            a.open_orders("NOPE")
        assert info.value.code == "unknown_symbol"
    with Client("127.0.0.1", server.port) as c:
        c.send({"type": "orders", "req_id": 1})
        with pytest.raises(ServerError) as info:
            c.request(1)
        assert info.value.code == "not_logged_in"


def test_only_the_last_finished_orders_are_kept(server_factory: Any) -> None:
    srv = server_factory("[server]\nfinished_orders = 2\n")
    with srv.client() as a:
        a.login(1)
        ids = [a.request(a.new_order(ES, "buy", 1, 440_000 + 25 * i))["order_id"] for i in range(3)]
        for oid in ids:
            a.request(a.cancel(oid))
        with pytest.raises(ServerError) as info:
            a.order_state(ids[0])
        assert info.value.code == "unknown_order"
        assert [a.order_state(oid)["status"] for oid in ids[1:]] == ["cancelled", "cancelled"]


def test_the_orders_status_is_the_same_after_a_restart(server_factory: Any, tmp_path: Path) -> None:
    # No snapshot: the restart runs the whole journal once more for the
    # orders' status, which is then what it was, finished orders too.
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a, srv.client() as b:
        a.login(1, cancel_on_disconnect=False)
        b.login(2)
        first = a.request(a.new_order(ES, "buy", 10, 450_000, client_order_id="r1"))
        second = a.request(a.new_order(ES, "buy", 5, 450_000))
        b.request(b.new_order(ES, "sell", 4, 450_000, tif="ioc"))
        done = a.request(a.new_order(NQ, "buy", 1, 1_000_000))
        a.request(a.cancel(done["order_id"]))
        before = a.open_orders(), a.order_state(done["order_id"])
    assert srv.stop() == 0
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1)
        assert (a.open_orders(), a.order_state(done["order_id"])) == before
        orders = before[0]
        assert [(o["order_id"], o["client_order_id"], o["open_qty"], o["filled_qty"]) for o in orders] == [
            (first["order_id"], "r1", 6, 4), (second["order_id"], None, 5, 0)]
        assert before[1]["status"] == "cancelled"
        moved = a.request(a.modify(second["order_id"], price=449_950))
        state = a.order_state(second["order_id"])
        assert state["priority"] == state["last_seq"] == moved["seq"]


def test_after_a_crash_an_order_finished_by_the_last_commands_is_found(server_factory: Any, tmp_path: Path) -> None:
    """A server killed as it journals a trade may never tell the maker its
    order filled: after the restart, the journal says so (the maker's order
    is found filled, not unknown), for the taker's order as well."""
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data), "--fsync", "always")
    with srv.client() as a, srv.client() as b:
        a.login(1)
        b.login(2)
        maker = a.request(a.new_order(ES, "sell", 3, 450_000, client_order_id="m1"))
        taker = b.request(b.new_order(ES, "buy", 3, 450_000, tif="ioc", client_order_id="t1"))
        srv.kill()  # no clean stop: no session's cancel-on-disconnect runs
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a, srv.client() as b:
        a.login(1)
        b.login(2)
        made = a.order_state(client_order_id="m1")
        took = b.order_state(client_order_id="t1")
        assert a.open_orders() == b.open_orders() == []
    assert (made["order_id"], made["status"], made["filled_qty"], made["open_qty"]) == (maker["order_id"], "filled", 3, 0)
    assert (took["order_id"], took["status"], took["filled_qty"]) == (taker["order_id"], "filled", 3)


def test_orders_resting_at_the_snapshot_are_known_as_the_books_have_them(server_factory: Any, tmp_path: Path) -> None:
    # What the engine does not keep of an order resting at the snapshot is
    # unknown after a restart, and so are the orders finished before it; the
    # commands after the snapshot are known as they happened.
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1, cancel_on_disconnect=False)
        gone = a.request(a.new_order(NQ, "buy", 1, 1_000_000))
        a.request(a.cancel(gone["order_id"]))
        old = a.request(a.new_order(ES, "buy", 10, 450_000, client_order_id="old"))
        new = a.request(a.new_order(ES, "buy", 5, 450_000, client_order_id="new"))
        assert a.request(a.snapshot())["seq"] == new["seq"]  # a server without accounts: every session may
        last = a.request(a.new_order(ES, "buy", 2, 449_975, client_order_id="last"))
    assert srv.stop() == 0
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1)
        orders = _by_id(a.open_orders())
        assert list(orders) == [old["order_id"], new["order_id"], last["order_id"]]
        for o in (orders[old["order_id"]], orders[new["order_id"]]):
            assert (o["qty"], o["filled_qty"], o["priority"], o["last_seq"]) == (None,) * 4
        recent = orders[last["order_id"]]
        assert (recent["qty"], recent["filled_qty"], recent["priority"]) == (2, 0, last["seq"])
        with pytest.raises(ServerError) as info:
            a.order_state(gone["order_id"])
        assert info.value.code == "unknown_order"


def test_a_recovered_order_id_is_known_to_every_session(server_factory: Any, tmp_path: Path) -> None:
    # Two sessions of the account open, a third gone without
    # cancel-on-disconnect: its order, entered before the restart and held by
    # no session, is named by its id, which no order accepted since has passed.
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1, cancel_on_disconnect=False)
        oid = a.request(a.new_order(ES, "buy", 3, 449_000))["order_id"]
    assert srv.stop() == 0
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as b, srv.client() as c:
        with srv.client() as a:
            a.login(1, cancel_on_disconnect=False)  # takes it over ...
            b.login(1)
            c.login(1)
        srv.wait_log(r"event=session_close ")  # ... and leaves it to nobody
        gone = b.request(b.cancel(oid))
        assert (gone["type"], gone["order_id"], gone["leaves"]) == ("cancelled", oid, 3)


def test_recovered_orders_are_listed_oldest_first(server_factory: Any, tmp_path: Path) -> None:
    # Entered in an order the books do not keep: another instrument first, a
    # worse bid before a better one, an ask after them.
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1, cancel_on_disconnect=False)
        entered = [a.request(a.new_order(sym, side, 1, price))["order_id"] for sym, side, price in
                   [(NQ, "sell", 2_000_000), (ES, "buy", 449_975), (ES, "buy", 450_000), (ES, "sell", 450_100)]]
        assert [o["order_id"] for o in a.open_orders()] == entered
    assert srv.stop() == 0
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1)
        assert [o["order_id"] for o in a.open_orders()] == entered
        assert [o["order_id"] for o in a.open_orders(ES)] == entered[1:]


def test_an_orders_reply_larger_than_max_unsent_is_sent_whole(server_factory: Any) -> None:
    # No open-order limit: the reply (about 1.4 MB) passes max_unsent plus
    # both socket buffers on its way, and still makes no slow reader of its
    # session, which would have its orders cancelled on the disconnect.
    server = server_factory("[server]\nmax_unsent = 65536\n[limits]\nmax_open_orders = 0\nrate = 0\n")
    with server.client() as c:
        c.login(1)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no room in the client's buffer for it all
        entered = []
        for first in range(0, 6000, 200):
            reqs = [c.new_order(ES, "buy", 1, 440_000 - 25 * (i % 40), client_order_id=f"o{i}")
                    for i in range(first, first + 200)]
            entered += [c.request(r, timeout=10)["order_id"] for r in reqs]
        req = c.orders()
        time.sleep(0.3)  # not read while the server queues and sends it
        assert [o["order_id"] for o in c.request(req, timeout=30)["orders"]] == entered
        assert c.request(c.ping(), timeout=5)["type"] == "pong"  # still connected
    assert not any("reason=slow_reader" in line for line in server.lines)

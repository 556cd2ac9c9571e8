"""Market-maker protection over TCP against a real server: an account's
quotes filled past its limit within the window are cancelled by the engine
(reason mmp), every session of the account gets an ``mmp`` push, new orders
on that instrument are refused (``mmp``) until ``reset_mmp``; the window
runs on the server's clock; the state survives a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client, ServerError

ES, NQ = "ESZ6", "NQZ6"


def _next(c: Client, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        m = c.recv(max(0.05, deadline - time.monotonic()))
        if m["type"] == kind:
            return m


def test_quotes_filled_past_the_limit_are_pulled(server: Any) -> None:
    with server.client() as mm, server.client() as mm2, server.client() as taker:
        mm.login(1)
        mm2.login(1)  # a second session of the same account
        taker.login(2)
        reply = mm.request(mm.set_mmp(ES, qty_limit=5, window_ms=60_000))
        assert (reply["type"], reply["qty_limit"], reply["window_ms"], reply["tripped"]) == ("mmp", 5, 60_000, False)
        asks = [mm.request(mm.new_order(ES, "sell", 3, 450_000 + 25 * i))["order_id"] for i in range(3)]
        bid = mm.request(mm.new_order(ES, "buy", 2, 440_000))["order_id"]
        other = mm.request(mm.new_order(NQ, "sell", 1, 2_000_000))["order_id"]
        # 3 + 3 = 6 > 5 in one order: both fills happen, then the rest goes.
        taker.request(taker.new_order(ES, "buy", 6, 450_025, tif="ioc"))
        pushed = _next(mm, "mmp")
        assert (pushed["req_id"], pushed["tripped"], pushed["filled"], pushed["symbol"]) == (None, True, 6, ES)
        assert _next(mm2, "mmp")["tripped"] is True
        assert {o["order_id"] for o in mm.open_orders()} == {other}
        gone = {o: mm.order_state(o) for o in (asks[2], bid)}
        assert {(s["status"], s["reason"]) for s in gone.values()} == {("cancelled", "mmp")}
        refused = mm.request(mm.new_order(ES, "sell", 1, 460_000))
        assert (refused["type"], refused["code"]) == ("reject", "mmp")
        assert mm.request(mm.new_order(NQ, "sell", 1, 2_000_025))["type"] == "ack"
        assert mm.request(mm.reset_mmp(ES))["tripped"] is False
        assert mm.request(mm.new_order(ES, "sell", 1, 460_000))["type"] == "ack"


def test_the_window_runs_on_the_servers_clock(server: Any) -> None:
    with server.client() as mm, server.client() as taker:
        mm.login(1)
        taker.login(2)
        mm.request(mm.set_mmp(ES, qty_limit=2, window_ms=300))
        mm.request(mm.new_order(ES, "sell", 10, 450_000))
        taker.request(taker.new_order(ES, "buy", 2, 450_000, tif="ioc"))
        time.sleep(0.5)  # the window is over: the next fill opens a new one
        taker.request(taker.new_order(ES, "buy", 2, 450_000, tif="ioc"))
        assert mm.request(mm.set_mmp(ES, qty_limit=2, window_ms=300))["filled"] == 0  # set again: resets
        mm.request(mm.new_order(ES, "sell", 1, 450_000))
        assert [o["open_qty"] for o in mm.open_orders(ES)] == [6, 1]  # not tripped: 2 in each window


def test_a_tripped_account_stays_tripped_across_a_restart(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as mm, srv.client() as taker:
        mm.login(1, cancel_on_disconnect=False)
        taker.login(2)
        mm.request(mm.set_mmp(ES, qty_limit=1))
        mm.request(mm.new_order(ES, "sell", 5, 450_000))
        taker.request(taker.new_order(ES, "buy", 2, 450_000, tif="ioc"))
        assert _next(mm, "mmp")["tripped"] is True
    srv.stop()
    again = server_factory(None, "--data-dir", str(data))
    with again.client() as mm:
        mm.login(1)
        assert mm.request(mm.new_order(ES, "sell", 1, 450_000))["code"] == "mmp"


def test_bad_requests_are_refused(server: Any) -> None:
    with server.client() as c:
        with pytest.raises(ServerError) as err:
            c.request(c.set_mmp(ES, 5))
        assert err.value.code == "not_logged_in"
        c.login(1)
        for msg, code in (({"symbol": "XX", "qty_limit": 1}, "unknown_symbol"),
                          ({"symbol": ES, "qty_limit": -1}, "bad_field"),
                          ({"symbol": ES}, "missing_field"),
                          ({"symbol": ES, "qty_limit": 1, "window_ms": 86_400_001}, "bad_field")):
            with pytest.raises(ServerError) as err:
                c.request(c._send_request({"type": "set_mmp", **msg}))
            assert err.value.code == code, msg

"""The dead-man switch over TCP against a real server: an account that stops
renewing ``cancel_all_after`` has all its orders cancelled by the engine
(reason ``dead_man``) while its connection stays open and silent; renewing
in time, or disarming, keeps them; the switch fires after a disconnect too;
the cancels are journaled and survive a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client, ServerError
from pyengine.server.switch_file import FILE
from pyengine.switch_table import switches_of

from .test_metrics import metrics_port, samples, scrape, value

ES, NQ = "ESZ6", "NQZ6"


def _cancels(c: Client, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next `want` cancelled pushes (other messages skipped)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        m = c.recv(max(0.05, deadline - time.monotonic()))
        if m["type"] == "cancelled":
            got.append(m)
    return got


def test_a_silent_open_connection_loses_its_orders(server: Any) -> None:
    with server.client() as a, server.client() as b:
        a.login(1, cancel_on_disconnect=False)
        b.login(2)
        mine = [a.request(a.new_order(ES, "buy", 5, 450_000))["order_id"],
                a.request(a.new_order(NQ, "sell", 2, 2_000_000))["order_id"]]
        theirs = b.request(b.new_order(ES, "buy", 1, 449_000))["order_id"]
        reply = a.request(a.cancel_all_after(0.5))
        assert reply["armed"] is True and reply["seconds"] == 0.5
        # A says nothing more; the switch runs out and the engine cancels.
        cancelled = _cancels(a, 2)
        assert sorted(m["order_id"] for m in cancelled) == sorted(mine)
        assert {m["reason"] for m in cancelled} == {"dead_man"}
        server.wait_log(r"event=mass_cancelled .*account=1 .*reason=dead_man count=2")
        assert a.open_orders() == []
        assert [o["order_id"] for o in b.open_orders()] == [theirs]
        # It fired once: new orders rest again and stay.
        again = a.request(a.new_order(ES, "buy", 1, 440_000))["order_id"]
        time.sleep(0.8)
        assert [o["order_id"] for o in a.open_orders()] == [again]


def test_renewing_in_time_or_disarming_keeps_the_orders(server: Any) -> None:
    with server.client() as a:
        a.login(1)
        oid = a.request(a.new_order(ES, "sell", 1, 460_000))["order_id"]
        for _ in range(4):  # 1.2 s in all, each renewal 0.3 s apart, armed for 0.8
            a.request(a.cancel_all_after(0.8))
            time.sleep(0.3)
        disarmed = a.request(a.cancel_all_after(0))
        assert disarmed["armed"] is False and disarmed["deadline"] is None
        time.sleep(1.0)
        assert [o["order_id"] for o in a.open_orders()] == [oid]


def test_the_metrics_count_switches_and_trips(server_factory: Any) -> None:
    srv = server_factory(None, "--metrics-port", "0")
    port = metrics_port(srv)
    with srv.client() as a, srv.client() as b:
        a.login(1)
        b.login(2)
        a.request(a.cancel_all_after(60))
        assert value(samples(scrape(port)), "pyengine_dead_man_armed") == 1
        a.request(a.set_mmp(ES, qty_limit=1))
        a.request(a.new_order(ES, "sell", 5, 450_000))
        b.request(b.new_order(ES, "buy", 2, 450_000, tif="ioc"))
        a.request(a.cancel_all_after(0.2))
        _cancels(a, 1)  # the trip's
        time.sleep(0.5)
        after = samples(scrape(port))
    assert value(after, "pyengine_mmp_trips_total") == 1
    assert value(after, "pyengine_dead_man_fired_total") == 1
    assert value(after, "pyengine_dead_man_armed") == 0


def test_it_fires_after_a_disconnect_and_survives_a_restart(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(1, cancel_on_disconnect=False)
        oid = a.request(a.new_order(ES, "buy", 3, 450_000))["order_id"]
        a.request(a.cancel_all_after(0.3))
    time.sleep(1.0)  # gone before its switch ran out
    with srv.client() as a:
        a.login(1)
        assert a.open_orders() == []
        status = a.request(a.order_status(oid))["order"]
        assert (status["status"], status["reason"]) == ("cancelled", "dead_man")
    srv.stop()
    again = server_factory(None, "--data-dir", str(data))
    with again.client() as a:
        a.login(1)
        assert a.open_orders() == []


def test_a_switch_armed_when_the_server_dies_is_armed_again_by_its_restart(server_factory: Any,
                                                                          tmp_path: Path) -> None:
    """A single server with a data directory keeps its switches there: one
    armed when the server is killed fires after the restart (the account's
    program, gone with it, sends nothing more); one armed and disarmed
    before is not armed again. Once fired, it is kept no more."""
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a, srv.client() as b:
        a.login(7, cancel_on_disconnect=False)
        b.login(8, cancel_on_disconnect=False)
        mine = a.request(a.new_order(ES, "buy", 3, 450_000))["order_id"]
        kept = b.request(b.new_order(ES, "buy", 2, 449_000))["order_id"]
        assert a.request(a.cancel_all_after(1.5))["armed"] is True  # answered once kept
        assert b.request(b.cancel_all_after(1.5))["armed"] is True
        assert b.request(b.cancel_all_after(0))["armed"] is False
        assert switches_of((data / FILE).read_bytes()) == {7: 1.5}
        srv.kill()
    srv = server_factory(None, "--data-dir", str(data))
    srv.wait_log(r"event=dead_man_rearmed accounts=1\b")
    srv.wait_log(r"event=mass_cancelled .*account=7 .*reason=dead_man count=1")
    with srv.client() as a, srv.client() as b:
        a.login(7)
        b.login(8)
        state = a.order_state(mine)
        assert (state["status"], state["reason"]) == ("cancelled", "dead_man")
        deadline = time.monotonic() + 30
        while switches_of((data / FILE).read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert switches_of((data / FILE).read_bytes()) == {}
        time.sleep(0.5)  # a switch of 8's armed again would have run out with 7's
        assert [o["order_id"] for o in b.open_orders()] == [kept]
    assert not any("account=8" in line and "dead_man" in line for line in srv.lines)


def test_a_stop_disarms_the_switches_for_good(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(7, cancel_on_disconnect=False)
        oid = a.request(a.new_order(ES, "buy", 3, 450_000))["order_id"]
        a.request(a.cancel_all_after(0.5))
        assert (data / FILE).exists()
        assert srv.stop() == 0
    assert not (data / FILE).exists()  # a planned stop: the orders outlive it, as with cancel-on-disconnect
    srv = server_factory(None, "--data-dir", str(data))
    with srv.client() as a:
        a.login(7)
        time.sleep(1.0)
        assert [o["order_id"] for o in a.open_orders()] == [oid]
    assert not any("dead_man_rearmed" in line for line in srv.lines)


def test_bad_requests_are_refused(server: Any) -> None:
    with server.client() as a:
        with pytest.raises(ServerError) as err:
            a.request(a.cancel_all_after(1))
        assert err.value.code == "not_logged_in"
        a.login(1)
        for bad in (-1, 86401, "5", True, None):
            with pytest.raises(ServerError) as err:
                a.request(a._send_request({"type": "cancel_all_after", "seconds": bad}))
            assert err.value.code in ("bad_field", "missing_field"), bad


def test_arming_disarming_and_new_seconds_are_logged_and_renewals_are_debug(server: Any) -> None:
    with server.client() as a:
        a.login(1)
        for seconds in (60, 60, 60, 30, 0, 0, 45):
            a.request(a.cancel_all_after(seconds))
        server.wait_log(r"event=cancel_all_after .*seconds=45")
    lines = [(line.split("level=")[1].split()[0], line.split("seconds=")[1].split()[0])
             for line in server.lines if "event=cancel_all_after " in line]
    assert lines == [("info", "60"), ("debug", "60"), ("debug", "60"), ("info", "30"), ("info", "0"),
                     ("debug", "0"), ("info", "45")]

"""pyengine-server over real TCP: every message type, routing, ownership,
cancel-on-disconnect, market data, bad input, slow readers, limits, shutdown.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pyengine.client import Client, ConnectionClosed, ServerError
from pyengine.server.config import hash_secret

from .conftest import RunningServer

ES = "ESZ6"


def login(server: RunningServer, account: int, **kw: Any) -> Client:
    c = server.client()
    reply = c.login(account, **kw)
    assert reply["type"] == "logged_in" and reply["account"] == account
    return c


def frame(obj: Any) -> bytes:
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


def drain(c: Client, until: float = 0.3) -> list[dict[str, Any]]:
    """Every message that arrives within `until` seconds of quiet."""
    out = []
    while True:
        try:
            out.append(c.recv(timeout=until))
        except (TimeoutError, socket.timeout):
            return out


def test_login_and_ping(server: RunningServer) -> None:
    with server.client() as c:
        assert c.request(c.ping()) == {"type": "pong", "req_id": 1}
        with pytest.raises(ServerError) as info:
            c.request(c.new_order(ES, "buy", 1, 450_000))
        assert info.value.code == "not_logged_in"
        assert c.login(5) == {"type": "logged_in", "req_id": 3, "account": 5, "admin": True,
                              "cancel_on_disconnect": True, "claimed_orders": 0,
                              "node": None, "shard": None, "role": "standalone"}
        assert c.request(c.status()) == {"type": "status", "req_id": 4, "node": None, "shard": None,
                                         "role": "standalone", "leader": None, "commands": 0}
        with pytest.raises(ServerError) as info:
            c.login(6)
        assert info.value.code == "already_logged_in"
        c.send({"type": "ping", "req_id": "text-ids-work"})
        assert c.recv(2) == {"type": "pong", "req_id": "text-ids-work"}


def test_ack_and_rejects(server: RunningServer) -> None:
    with login(server, 1) as c:
        ack = c.request(c.new_order(ES, "buy", 2, 450_000, client_order_id="b1"))
        assert ack == {"type": "ack", "req_id": 2, "order_id": 1, "client_order_id": "b1", "symbol": ES,
                       "side": "buy", "price": 450_000, "qty": 2, "seq": 1}
        rej = c.request(c.new_order(ES, "buy", 2, 450_010))
        assert (rej["type"], rej["code"], rej["seq"]) == ("reject", "off_tick", 2)
        assert rej["message"] == "price is not a multiple of the tick size"
        rej = c.request(c.new_order("NOPE", "buy", 2, 450_000))
        assert rej["code"] == "unknown_instrument"
        rej = c.request(c.new_order(ES, "buy", 0, 450_000))
        assert rej["code"] == "bad_qty"
        rej = c.request(c.new_order(ES, "buy", 1, 450_000, client_order_id="b1"))
        assert (rej["code"], rej["client_order_id"]) == ("duplicate_client_order_id", "b1")
        rej = c.request(c.cancel(order_id=999))
        assert (rej["code"], rej["order_id"]) == ("unknown_order", 999)


def test_two_clients_cross_and_both_get_fills(server: RunningServer) -> None:
    with login(server, 1) as a, login(server, 2) as b:
        ask = a.request(a.new_order(ES, "sell", 5, 450_000, client_order_id="s1"))
        ack = b.request(b.new_order(ES, "buy", 3, 450_025, client_order_id="b1"))
        taker_fill = b.recv(2)
        maker_fill = a.recv(2)
        assert taker_fill == {"type": "fill", "order_id": ack["order_id"], "client_order_id": "b1", "symbol": ES,
                              "side": "buy", "price": 450_000, "qty": 3, "leaves": 0, "trade_id": 1,
                              "liquidity": "taker", "seq": ack["seq"]}
        assert maker_fill == {"type": "fill", "order_id": ask["order_id"], "client_order_id": "s1", "symbol": ES,
                              "side": "sell", "price": 450_000, "qty": 3, "leaves": 2, "trade_id": 1,
                              "liquidity": "maker", "seq": ack["seq"]}
        # An IOC that cannot fill completely: fill, then its remainder cancelled.
        ioc = b.request(b.new_order(ES, "buy", 4, 450_000, tif="ioc"))
        assert b.recv(2)["leaves"] == 2
        assert b.recv(2) == {"type": "cancelled", "req_id": None, "order_id": ioc["order_id"],
                             "client_order_id": None, "leaves": 2, "reason": "ioc", "seq": ioc["seq"]}
        assert a.recv(2)["leaves"] == 0
        market = b.request(b.new_order(ES, "sell", 1, order_type="market"))
        assert market["price"] is None
        assert b.recv(2)["reason"] == "market_remainder"


def test_cancel_and_modify(server: RunningServer) -> None:
    with login(server, 1) as c:
        a = c.request(c.new_order(ES, "buy", 5, 450_000, client_order_id="x"))
        m = c.request(c.modify(order_id=a["order_id"], qty=3))
        assert (m["type"], m["qty"], m["priority_kept"], m["client_order_id"]) == ("modified", 3, True, "x")
        m = c.request(c.modify(client_order_id="x", qty=3, price=450_025))
        assert (m["price"], m["priority_kept"]) == (450_025, False)
        done = c.request(c.cancel(client_order_id="x"))
        assert (done["type"], done["reason"], done["leaves"], done["order_id"]) == ("cancelled", "user", 3, a["order_id"])
        rej = c.request(c.cancel(client_order_id="x"))
        assert rej["code"] == "unknown_order"
        b = c.request(c.new_order(ES, "buy", 5, 450_000))
        done = c.request(c.modify(order_id=b["order_id"], qty=0))
        assert (done["type"], done["reason"]) == ("cancelled", "user")


def test_modify_price_only_keeps_the_open_qty(server: RunningServer) -> None:
    """No qty: the engine takes the open qty as it is when the modify runs."""
    with login(server, 1) as c, login(server, 2) as taker:
        a = c.request(c.new_order(ES, "buy", 5, 450_000, client_order_id="p"))
        taker.request(taker.new_order(ES, "sell", 2, 450_000))
        m = c.request(c.modify(a["order_id"], price=449_975))
        assert (m["type"], m["qty"], m["price"], m["priority_kept"]) == ("modified", 3, 449_975, False)
        m = c.request(c.modify(client_order_id="p", price=450_000))
        assert (m["qty"], m["price"]) == (3, 450_000)
        m = c.request(c.modify(a["order_id"], 1))
        assert (m["qty"], m["price"], m["priority_kept"]) == (1, 450_000, True)
        with pytest.raises(ServerError) as info:
            c.request(c.modify(a["order_id"]))
        assert info.value.code == "missing_field"
        done = c.request(c.cancel(a["order_id"]))  # positional, as Engine.cancel takes it
        assert (done["type"], done["leaves"]) == ("cancelled", 1)


def test_mass_cancel(server: RunningServer) -> None:
    with login(server, 1) as c, login(server, 2) as other:
        for i in range(3):
            c.request(c.new_order(ES, "buy", 1, 450_000 - 25 * i))
        c.request(c.new_order("CLF7", "sell", 1, 7_000))
        mine_elsewhere = other.request(other.new_order(ES, "buy", 1, 449_000))
        rid = c.mass_cancel(ES)
        got = [c.recv(2) for _ in range(4)]
        assert [m["type"] for m in got] == ["cancelled"] * 3 + ["mass_cancelled"]
        # Its seq is its last cancel's, the engine's last command it took.
        assert got[-1] == {"type": "mass_cancelled", "req_id": rid, "count": 3, "seq": max(m["seq"] for m in got[:3])}
        c.mass_cancel()
        clf7, done = c.recv(2), c.recv(2)  # the CLF7 order's cancel, then the count
        assert (clf7["type"], done) == ("cancelled", {"type": "mass_cancelled", "req_id": 7, "count": 1,
                                                      "seq": clf7["seq"]})
        # Nothing to cancel: answered at once, no command, no seq.
        assert c.request(c.mass_cancel()) == {"type": "mass_cancelled", "req_id": 8, "count": 0, "seq": None}
        # The other session's order is untouched.
        rej = other.request(other.modify(order_id=mine_elsewhere["order_id"], qty=1))
        assert rej["type"] == "modified"


def test_ownership(server: RunningServer) -> None:
    with login(server, 1) as a, login(server, 2) as b, login(server, 1) as a2:
        order = a.request(a.new_order(ES, "buy", 5, 450_000, client_order_id="mine"))
        # Another account, or the same account from another session.
        for other, whose in ((b, "account"), (a2, "session")):
            rej = other.request(other.cancel(order_id=order["order_id"]))
            assert (rej["type"], rej["code"], rej["order_id"]) == ("reject", "not_owner", order["order_id"])
            assert rej["message"] == f"order belongs to another {whose}"
            rej = other.request(other.modify(order_id=order["order_id"], qty=1))
            assert (rej["code"], rej["message"]) == ("not_owner", f"order belongs to another {whose}")
        # By client order id, another account does not even see it; another
        # session of the account sees it and may not touch it.
        assert b.request(b.cancel(client_order_id="mine"))["code"] == "unknown_order"
        for rej in (a2.request(a2.cancel(client_order_id="mine")),
                    a2.request(a2.modify(client_order_id="mine", qty=1))):
            assert (rej["type"], rej["code"], rej["client_order_id"]) == ("reject", "not_owner", "mine")
        a2.close()
        with login(server, 1) as a3:  # logged in after the order was entered, and alone with `a`
            rej = a3.request(a3.cancel(client_order_id="mine"))
            assert (rej["type"], rej["code"]) == ("reject", "not_owner")
        assert a.order_state(order["order_id"])["open_qty"] == 5
        assert a.request(a.modify(client_order_id="mine", qty=4))["type"] == "modified"
        assert a.request(a.cancel(order_id=order["order_id"]))["type"] == "cancelled"


def test_another_sessions_order_in_flight_is_not_its_to_cancel(server: RunningServer) -> None:
    # A client order id the account's other session reuses: its new order
    # has no answer yet when the cancel comes (or is not even read): either
    # way not this session's to cancel or modify.
    with login(server, 1) as a, login(server, 1) as b:
        for i in range(20):
            coid = f"r{i}"
            new = b.new_order(ES, "buy", 1, 440_000, client_order_id=coid)
            verb = a.cancel(client_order_id=coid) if i % 2 else a.modify(client_order_id=coid, qty=2)
            rej = a.request(verb, timeout=5)
            assert (rej["type"], rej["client_order_id"]) == ("reject", coid)
            assert rej["code"] in ("not_owner", "unknown_order")
            assert b.request(new, timeout=5)["type"] == "ack"
            assert b.order_state(client_order_id=coid)["open_qty"] == 1
        assert not [m for m in drain(b) if m["type"] in ("cancelled", "modified")]
        # A new order's answer ends its flight, a reject's too: nothing holds the id then.
        assert b.request(b.new_order(ES, "buy", 1, 440_001, client_order_id="off"))["code"] == "off_tick"
        assert a.request(a.cancel(client_order_id="off"))["code"] == "unknown_order"
        # By order id: the next id the engine gives, guessed before its ack.
        last = a.request(a.new_order(ES, "buy", 1, 440_000))["order_id"]
        for i in range(10):
            new = b.new_order(ES, "buy", 1, 440_000)
            guess = last + 1
            rej = a.request(a.cancel(order_id=guess) if i % 2 else a.modify(order_id=guess, qty=2), timeout=5)
            assert (rej["type"], rej["order_id"]) == ("reject", guess)
            assert rej["code"] in ("not_owner", "unknown_order")
            last = b.request(new, timeout=5)["order_id"]
            assert last == guess and b.order_state(last)["open_qty"] == 1


def test_replies_name_the_client_order_id_of_an_order_no_session_holds(server: RunningServer) -> None:
    with login(server, 1) as keep:  # logged in first: it takes over nothing
        with login(server, 1, cancel_on_disconnect=False) as gone:
            gone.request(gone.new_order(ES, "buy", 5, 440_000, client_order_id="u1"))
            u2 = gone.request(gone.new_order(ES, "buy", 5, 440_000, client_order_id="u2"))
        server.wait_log(r"event=session_close ")  # its orders are held by no session now
        moved = keep.request(keep.modify(client_order_id="u1", qty=3))
        assert (moved["type"], moved["client_order_id"]) == ("modified", "u1")
        gone1 = keep.request(keep.cancel(client_order_id="u1"))
        assert (gone1["type"], gone1["client_order_id"], gone1["leaves"]) == ("cancelled", "u1", 3)
        gone2 = keep.request(keep.cancel(order_id=u2["order_id"]))
        assert (gone2["type"], gone2["client_order_id"]) == ("cancelled", "u2")


def book_of(c: Client, symbol: str) -> dict[str, Any]:
    snap = c.request(c.subscribe(symbol))
    c.request(c.unsubscribe(symbol))
    return snap


def test_cancel_on_disconnect(server: RunningServer) -> None:
    with login(server, 9) as watcher:
        a = login(server, 1)
        for i in range(5):
            a.request(a.new_order(ES, "buy", 1, 450_000 - 25 * i))
        keep = login(server, 2, cancel_on_disconnect=False)
        keep.request(keep.new_order(ES, "sell", 1, 460_000))
        a.close()
        keep.close()
        server.wait_log(r"event=cancel_on_disconnect .*orders=5")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            snap = book_of(watcher, ES)
            if not snap["bids"]:
                break
            time.sleep(0.05)
        assert snap["bids"] == []
        assert snap["asks"] == [[460_000, 1, 1]]  # its session asked to keep it


def test_market_data_rebuilds_the_book(server: RunningServer) -> None:
    """Snapshot plus updates give the book a late subscriber sees, which is
    the book of an in-process Engine fed the same orders in the order the
    server sequenced them."""
    import random

    from pyengine import Engine
    from pyengine.server.config import DEFAULT_INSTRUMENTS

    rng = random.Random(5)
    with login(server, 1) as a, login(server, 2) as b, login(server, 3) as md:
        snap = md.request(md.subscribe(ES))
        book: dict[str, dict[int, list[int]]] = {"buy": {}, "sell": {}}
        seq = snap["seq"]
        sent = []
        for i in range(300):
            c, account = (a, 1) if i % 2 else (b, 2)
            side = rng.choice(["buy", "sell"])
            price = 450_000 + 25 * rng.randint(-4, 4)
            qty = rng.randint(1, 5)
            tif = rng.choice(["gtc", "gtc", "ioc"])
            reply = c.request(c.new_order(ES, side, qty, price, tif=tif))
            sent.append((reply["seq"], side, qty, price, tif, account))
        for m in drain(md):
            assert m["seq"] == seq + 1, "gap or reorder in market data"
            seq = m["seq"]
            if m["type"] == "book_update":
                for side, price, qty, count in m["changes"]:
                    if qty:
                        book[side][price] = [qty, count]
                    else:
                        book[side].pop(price)
        rebuilt_bids = [[p, *book["buy"][p]] for p in sorted(book["buy"], reverse=True)]
        rebuilt_asks = [[p, *book["sell"][p]] for p in sorted(book["sell"])]
        assert rebuilt_bids and rebuilt_asks
        late = book_of(a, ES)
        assert (late["bids"], late["asks"]) == (rebuilt_bids, rebuilt_asks)
    eng = Engine()
    for inst in DEFAULT_INSTRUMENTS:
        eng.add_instrument(inst.symbol, tick_size=inst.tick_size, lot_size=inst.lot_size,
                           price_band=inst.price_band, market_protection=inst.market_protection)
    for _, side, qty, price, tif, account in sorted(sent):
        eng.submit(ES, side, qty, price, tif=tif, account=account)
    view = eng.book(ES, 1000)
    assert [[lv.price, lv.total_qty, lv.order_count] for lv in view.bids] == rebuilt_bids
    assert [[lv.price, lv.total_qty, lv.order_count] for lv in view.asks] == rebuilt_asks


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_message"),
        (b'"text"', "bad_message"),
        ({"type": "teleport"}, "unknown_type"),
        ({"no_type": 1}, "unknown_type"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "price": 450_000}, "missing_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": None, "price": 450_000}, "missing_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": "10", "price": 450_000}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 1.5, "price": 450_000}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 2**63, "price": 450_000}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "up", "qty": 1, "price": 450_000}, "bad_field"),
        ({"type": "new_order", "symbol": 7, "side": "buy", "qty": 1, "price": 450_000}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 1, "price": "450000"}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 1, "price": 1, "order_type": "market"}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 1, "price": 1, "post_only": "yes"}, "bad_field"),
        ({"type": "new_order", "symbol": ES, "side": "buy", "qty": 1, "price": 1, "client_order_id": "x" * 17}, "bad_field"),
        ({"type": "cancel"}, "missing_field"),
        ({"type": "cancel", "order_id": 1, "client_order_id": "a"}, "bad_field"),
        ({"type": "cancel", "order_id": -1}, "bad_field"),
        ({"type": "modify", "order_id": 1}, "missing_field"),
        ({"type": "login", "account": -5}, "bad_field"),
        ({"type": "subscribe", "symbol": "NOPE"}, "unknown_symbol"),
        ({"type": "unsubscribe", "symbol": "NOPE"}, "unknown_symbol"),
        ({"type": "unsubscribe", "symbol": ES}, "not_subscribed"),
        ({"type": "ping", "req_id": [1]}, "bad_field"),
        (b'{"type":' + b"[" * 1000 + b"]" * 1000 + b"}", "unknown_type"),  # nested deeper than repr() goes
        ({"type": "new_order", "symbol": ES, "side": [[[[]]]], "qty": 1, "price": 1}, "bad_field"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_stays(server: RunningServer, payload: Any, code: str) -> None:
    with login(server, 1) as c:
        c.send_raw(frame(payload))
        reply = c.recv(2)
        assert (reply["type"], reply["code"]) == ("error", code), reply
        assert c.request(c.ping(), timeout=2)["type"] == "pong"
        assert c.request(c.new_order(ES, "buy", 1, 450_000), timeout=2)["type"] == "ack"


@pytest.mark.parametrize(
    "data, code",
    [
        (struct.pack(">I", 0), "empty_frame"),
        (struct.pack(">I", 10_000_000) + b"{}", "frame_too_large"),
        (struct.pack(">I", 100) + b'{"type": "pi', "truncated_frame"),
    ],
)
def test_broken_framing_closes_only_that_connection(server: RunningServer, data: bytes, code: str) -> None:
    with login(server, 1) as bystander:
        bad = server.client()
        bad.send_raw(data)
        if code == "truncated_frame":
            bad.sock.shutdown(socket.SHUT_WR)
        else:
            assert bad.recv(2)["code"] == code
        with pytest.raises(ConnectionClosed):
            while True:
                bad.recv(2)
        bad.close()
        server.wait_log(rf"event=session_close .*reason={code}")
        assert bystander.request(bystander.ping(), timeout=2)["type"] == "pong"


def test_a_taker_filled_after_its_session_left_is_not_handed_over(server: RunningServer) -> None:
    """An IOC sent by a session that closed (without cancel-on-disconnect)
    before its ack, and then filled in full, is not open: the account's next
    login must not take it over."""
    with login(server, 1) as maker:
        maker.request(maker.new_order(ES, "sell", 5, 450_000))
        taker = login(server, 2, cancel_on_disconnect=False)
        taker.new_order(ES, "buy", 5, 450_000, tif="ioc")
        taker.close()
        fill = maker.recv(2)
        assert (fill["type"], fill["leaves"]) == ("fill", 0)
    time.sleep(0.2)
    with server.client() as again:
        assert again.login(2)["claimed_orders"] == 0
        assert again.request(again.mass_cancel())["count"] == 0


def test_frames_before_a_broken_one_in_the_same_read_are_handled(server: RunningServer) -> None:
    """However TCP splits the stream, whole frames ahead of a broken one are
    carried out: the order is entered, the ping answered. The order's ack
    comes first if the engine thread answered before the session closed
    (within the turn that read the frames), else it cannot reach the closing
    session; either way the order waits for the account's next login."""
    with login(server, 1, cancel_on_disconnect=False) as c:
        c.send_raw(frame({"type": "new_order", "req_id": 1, "symbol": ES, "side": "buy", "qty": 1, "price": 450_000})
                   + frame({"type": "ping", "req_id": 2}) + struct.pack(">I", 0))
        replies = [c.recv(2)]
        while replies[-1]["type"] != "error":
            replies.append(c.recv(2))
        got = [(r["type"], r.get("req_id"), r.get("code")) for r in replies]
        assert got in ([("pong", 2, None), ("error", None, "empty_frame")],
                       [("ack", 1, None), ("pong", 2, None), ("error", None, "empty_frame")])
    time.sleep(0.2)
    with server.client() as again:
        assert again.login(1)["claimed_orders"] == 1


@pytest.mark.parametrize("value, named", [(7, "an integer"), (True, "a boolean"), (1.5, "a number"),
                                          (["b1"], "an array"), ({"id": "b1"}, "an object")])
def test_a_client_order_id_of_the_wrong_type_is_named_as_json_names_it(server: RunningServer, value: Any,
                                                                         named: str) -> None:
    """Every request that takes a client order id answers alike, whether the
    Intake (C) or Python reads it, in the protocol's words: a JSON type, not
    a Python one."""
    order = {"symbol": ES, "side": "buy", "qty": 1, "price": 450_000}
    with login(server, 1) as c:
        for i, fields in enumerate(({"type": "new_order", **order}, {"type": "cancel"},
                                    {"type": "modify", "qty": 2}, {"type": "order_status"})):
            c.send_raw(frame({**fields, "req_id": i, "client_order_id": value}))
            reply = c.recv(2)
            assert reply == {"type": "error", "req_id": i, "code": "bad_field",
                             "message": f"client_order_id must be a string, not {named}"}, fields["type"]


def test_a_req_id_is_an_integer_of_64_bits_or_a_string(server: RunningServer) -> None:
    """Any integer JSON decodes to 64 bits, signed or not, comes back as sent;
    a longer one (a float once decoded) is refused as any other bad req_id."""
    with server.client() as c:
        for req_id in (b"-9223372036854775808", b"18446744073709551615", b'"x"'):
            c.send_raw(frame(b'{"type": "ping", "req_id": ' + req_id + b"}"))
            assert c.recv(2) == {"type": "pong", "req_id": orjson.loads(req_id)}
        for req_id in (b"-9223372036854775809", b"18446744073709551616", b"1.0", b"true", b"[1]"):
            c.send_raw(frame(b'{"type": "ping", "req_id": ' + req_id + b"}"))
            reply = c.recv(2)
            assert (reply["type"], reply["req_id"], reply["code"]) == ("error", None, "bad_field"), req_id


@pytest.mark.parametrize("value", [b"1e400", b'"\\ud800"', b"[" * 1024 + b"]" * 1024])
def test_json_the_server_does_not_read_is_bad_json(server: RunningServer, value: bytes) -> None:
    """Valid by JSON's grammar, beyond what the decoder takes: refused whole,
    so its req_id is not known; 1023 levels inside the message still go."""
    with server.client() as c:
        c.send_raw(frame(b'{"type": "ping", "req_id": 1, "x": ' + value + b"}"))
        reply = c.recv(2)
        assert (reply["type"], reply["req_id"], reply["code"]) == ("error", None, "bad_json")
        c.send_raw(frame(b'{"type": "ping", "req_id": 2, "x": ' + b"[" * 1023 + b"]" * 1023 + b"}"))
        assert c.recv(2) == {"type": "pong", "req_id": 2}


def test_error_messages_do_not_echo_huge_values(server: RunningServer) -> None:
    with login(server, 1) as c:
        c.send_raw(frame({"type": "x" * 60_000}))
        reply = c.recv(2)
        assert reply["code"] == "unknown_type" and len(reply["message"]) < 200


def test_slow_reader_is_dropped_and_the_fast_one_is_served(server_factory: Any) -> None:
    server = server_factory("[server]\nmax_unsent = 262144\n")
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(frame({"type": "subscribe", "symbol": ES}))  # market data it never reads
    with login(server, 1) as fast:
        deadline = time.monotonic() + 30
        i = 0
        while time.monotonic() < deadline:
            i += 1
            # Orders that trade and move the book: trades and updates pile up
            # for the slow subscriber while the fast client gets its replies.
            fast.request(fast.new_order(ES, "buy" if i % 2 else "sell", 1, 450_000), timeout=5)
            if i % 50 == 0 and any("reason=slow_reader" in line for line in server.lines):
                break
        server.wait_log(r"event=session_close .*reason=slow_reader")
        assert fast.request(fast.ping(), timeout=2)["type"] == "pong"
    slow.close()


def test_connection_limit(server_factory: Any) -> None:
    server = server_factory("[server]\nmax_connections = 2\n")
    with server.client() as a, server.client() as b:
        assert a.request(a.ping())["type"] == "pong"
        assert b.request(b.ping())["type"] == "pong"
        with server.client() as c:
            reply = c.recv(2)
            assert reply["code"] == "too_many_connections"
            with pytest.raises(ConnectionClosed):
                c.recv(2)
    time.sleep(0.3)  # the two close; there is room again
    with server.client() as d:
        assert d.request(d.ping(), timeout=2)["type"] == "pong"


def test_an_admin_account_without_a_secret_is_warned_of(server_factory: Any) -> None:
    server = server_factory("[[accounts]]\naccount = 7\n[[accounts]]\naccount = 1\nadmin = true\n")
    line = server.wait_log(r"event=no_auth ")
    assert "level=warning" in line and "account=1" in line and "admin rights" in line
    with server.client() as c:
        assert c.login(1)["admin"] is True  # what it warns of


def test_authentication(server_factory: Any) -> None:
    config = f"""
[[accounts]]
account = 7
secret = "{hash_secret('s3cret', iterations=1000)}"

[[accounts]]
account = 1
secret = "{hash_secret('admin-pw', iterations=1000)}"
admin = true
"""
    server = server_factory(config)
    with server.client() as c:
        for account, secret in ((7, "wrong"), (7, None), (8, "s3cret")):
            with pytest.raises(ServerError) as info:
                c.login(account, secret)
            assert info.value.code == "auth_failed"
        assert c.login(7, "s3cret")["admin"] is False
        order = c.request(c.new_order(ES, "buy", 1, 450_000))
    server.wait_log(r"event=login_failed .*account=8")
    # An order that outlives its session, cancelled by the administrator.
    with server.client() as c7:
        c7.login(7, "s3cret", cancel_on_disconnect=False)
        order = c7.request(c7.new_order(ES, "buy", 1, 450_000))
    with server.client() as admin:
        assert admin.login(1, "admin-pw")["admin"] is True
        done = admin.request(admin.cancel(order_id=order["order_id"]))
        assert (done["type"], done["order_id"]) == ("cancelled", order["order_id"])
    assert not [line for line in server.lines if "event=no_auth" in line]  # every account has a secret


def test_clean_shutdown(server_factory: Any) -> None:
    server = server_factory()
    c = login(server, 1)
    c.request(c.new_order(ES, "buy", 1, 450_000))
    assert server.stop() == 0
    server.wait_log(r"event=stopped commands=1 ")
    with pytest.raises((ConnectionClosed, ConnectionResetError)):
        c.recv(2)
    c.close()


def _allowed_cpus(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_server_cpu_pins_the_event_loop_thread_alone(server_factory: Any) -> None:
    cpu = max(os.sched_getaffinity(0))
    srv = server_factory(None, "--server-cpu", str(cpu))
    srv.wait_log(f"event=server_thread_pinned cpu={cpu}")
    pid = srv.proc.pid
    assert _allowed_cpus(pid, pid) == str(cpu)
    # The engine thread (started first, unpinned here) keeps the whole mask.
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert any(_allowed_cpus(pid, t) != str(cpu) for t in others) or len(os.sched_getaffinity(0)) == 1
    with srv.client() as c:  # and it serves
        c.login(1)
        assert c.request(c.ping())["type"] == "pong"


def test_engine_thread_sharing_the_event_loops_cpu_does_not_poll(server_factory: Any) -> None:
    cpu = max(os.sched_getaffinity(0))
    srv = server_factory(None, "--server-cpu", str(cpu), "--engine-cpu", str(cpu), "--spin-us", "50")
    srv.wait_log(f"event=engine_thread_started cpu={cpu} spin_us=0")
    with srv.client() as c:
        c.login(1)
        assert c.request(c.ping())["type"] == "pong"


def test_a_server_whose_event_loop_polls_serves_and_trades(server_factory: Any) -> None:
    """--server-spin-us: the event loop polls after each read, sharing its CPU
    with the engine thread, which still runs as soon as it has work; orders
    rest, trade and cancel as ever, and the server stops cleanly."""
    cpu = max(os.sched_getaffinity(0))
    srv = server_factory(None, "--server-cpu", str(cpu), "--engine-cpu", str(cpu), "--server-spin-us", "50000",
                         "--stats-interval", "0.2")
    srv.wait_log("event=listening")
    with login(srv, 1) as maker, login(srv, 2) as taker:
        resting = maker.request(maker.new_order(ES, "sell", 3, 450_000))
        gone = maker.request(maker.new_order(ES, "sell", 1, 460_000))
        for _ in range(20):  # back to back: each read starts or prolongs the polling
            assert taker.request(taker.ping())["type"] == "pong"
        ack = taker.request(taker.new_order(ES, "buy", 2, 450_000))
        fills = [m for m in drain(taker) if m["type"] == "fill"]
        assert [(f["order_id"], f["qty"], f["price"]) for f in fills] == [(ack["order_id"], 2, 450_000)]
        assert maker.request(maker.cancel(gone["order_id"]))["type"] == "cancelled"
        maker_fills = [m for m in drain(maker) if m["type"] == "fill"]
        assert [(f["order_id"], f["qty"], f["leaves"]) for f in maker_fills] == [(resting["order_id"], 2, 1)]
    srv.wait_log(r"event=stats .*loop_spins=[1-9]")  # it did poll
    assert srv.stop() == 0


def test_server_cpu_not_allowed_is_a_warning(server_factory: Any) -> None:
    srv = server_factory(None, "--server-cpu", "100000")
    srv.wait_log("event=server_cpu_not_pinned cpu=100000")
    with srv.client() as c:
        c.login(1)
        assert c.request(c.ping())["type"] == "pong"


def test_a_client_reconnects_and_logs_in_again_but_resends_nothing(server_factory: Any) -> None:
    first = server_factory()
    port = first.port
    c = Client("127.0.0.1", port, timeout=5)
    c.login(3, cancel_on_disconnect=False)
    assert c.request(c.new_order(ES, "buy", 1, 449_000, client_order_id="one"))["type"] == "ack"
    assert first.stop() == 0
    pending = c.new_order(ES, "buy", 1, 449_025, client_order_id="lost")  # into a closed connection
    with pytest.raises(ConnectionClosed):
        c.request(pending)
    server_factory(None, "--port", str(port))  # the server is back (empty: no data directory)
    # The next request connects and logs in first; its reply is its own.
    reply = c.request(c.new_order(ES, "buy", 1, 449_050, client_order_id="two"))
    assert (reply["type"], reply["client_order_id"], reply["seq"]) == ("ack", "two", 1)
    c.close()

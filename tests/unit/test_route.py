"""The dispatcher's Router (csrc/binding/route.c) on hand-made events: its
frames are exactly what ``protocol.encode`` makes of the same messages, its
bookkeeping is the dispatcher's, and the rare events reach the dispatcher's
Python methods with the arguments the Python loop gave them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from pyengine._ffi import ffi
from pyengine._route import Router
from pyengine.server.codes import CANCEL_REASONS
from pyengine.server.protocol import encode
from pyengine.server.unclaimed import UnclaimedOrders

ACCEPTED, REJECTED, TRADE, CANCELLED, MODIFIED, LEVEL, STATE = 1, 2, 3, 4, 5, 6, 7
SYMBOLS = ["ESZ6", "NQZ6"]


class FakeSession:
    def __init__(self, sid: int, closed: bool = False) -> None:
        self.sid = sid
        self.closed = closed
        self.cancel_on_disconnect = True
        self.pending: dict[int, tuple[str, Any, Any]] = {}
        self.orders: dict[int, tuple[int, str | None]] = {}
        self.coids: dict[str, int] = {}
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(f[4:]) for f in self.frames]


class FakeDispatcher:
    """Records the calls the Router makes for the rare events."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))


class Rig:
    def __init__(self) -> None:
        self.dispatcher = FakeDispatcher()
        self.sessions: dict[int, FakeSession] = {1: FakeSession(1), 2: FakeSession(2)}
        self.owners: dict[int, FakeSession] = {}
        self.open: Counter[int] = Counter()
        self.in_flight: Counter[int] = Counter()
        self.unclaimed = UnclaimedOrders()
        self.books: list[tuple[dict[int, Any], ...]] = [({}, {}, {}) for _ in SYMBOLS]
        self.subscribers: list[set[Any]] = [set() for _ in SYMBOLS]
        self.changes: dict[int, dict[Any, Any]] = {}
        self.trades: dict[int, list[Any]] = {}
        self.router_tables = (
            self.dispatcher, self.sessions, self.owners, self.open, self.in_flight, self.unclaimed,
            self.books, self.subscribers, self.changes, self.trades,
            tuple(orjson.dumps(s) for s in SYMBOLS), (b"", b'"buy"', b'"sell"'),
            tuple(orjson.dumps(r) for r in CANCEL_REASONS), orjson.dumps,
        )
        self.router = Router(self.router_tables)

    def route(self, *events: dict[str, Any]) -> None:
        buf = ffi.new("struct runner_event[]", len(events))
        for i, e in enumerate(events):
            for key, value in e.items():
                if key == "tag":
                    buf[i].tag = value
                elif key == "coid":
                    ffi.memmove(buf[i].ev.coid, value.encode().ljust(16, b"\0"), 16)
                else:
                    setattr(buf[i].ev, key, value)
        self.router.route(ffi.buffer(buf), len(events))


def tag(sid: int, n: int) -> int:
    return sid << 32 | n


def frame_of(message: dict[str, Any]) -> bytes:
    return encode(message)


def test_ack_frame_and_bookkeeping() -> None:
    rig = Rig()
    s = rig.sessions[1]
    s.pending[7] = ("new_order", 'r"1\\é', "a\"b\\c")
    rig.in_flight[11] = 1
    rig.route(dict(type=ACCEPTED, side=1, instrument=1, seq=99, order_id=5, price=2_000_000, qty=3, account=11,
                   coid='a"b\\c', tag=tag(1, 7)))
    assert s.frames == [frame_of({"type": "ack", "req_id": 'r"1\\é', "order_id": 5, "client_order_id": 'a"b\\c',
                                  "symbol": "NQZ6", "side": "buy", "price": 2_000_000, "qty": 3, "seq": 99})]
    assert rig.owners == {5: s} and s.orders == {5: (1, 'a"b\\c')} and s.coids == {'a"b\\c': 5}
    assert s.pending == {} and rig.in_flight[11] == 0 and rig.open[11] == 1
    assert rig.router.orders == 1


def test_market_order_ack_has_no_price_and_big_request_ids_survive() -> None:
    rig = Rig()
    s = rig.sessions[2]
    s.pending[1] = ("new_order", 2**64 - 1, None)  # over int64: orjson writes it
    rig.route(dict(type=ACCEPTED, side=2, instrument=0, seq=1, order_id=8, price=0, qty=1, account=3, tag=tag(2, 1)))
    assert s.frames == [frame_of({"type": "ack", "req_id": 2**64 - 1, "order_id": 8, "client_order_id": None,
                                  "symbol": "ESZ6", "side": "sell", "price": None, "qty": 1, "seq": 1})]


def test_trade_fills_both_sides_and_forgets_finished_orders() -> None:
    rig = Rig()
    taker, maker = rig.sessions[1], rig.sessions[2]
    rig.owners.update({10: taker, 20: maker})
    taker.orders[10] = (0, None)
    maker.orders[20] = (0, "m-1")
    maker.coids["m-1"] = 20
    rig.open.update({1: 1, 2: 1})
    rig.subscribers[0].add(object())
    rig.route(dict(type=TRADE, side=1, instrument=0, seq=5, order_id=10, maker_order_id=20, trade_id=77,
                   price=450_000, qty=2, leaves=3, maker_leaves=0, account=1, maker_account=2, tag=tag(1, 1)))
    assert taker.frames == [frame_of({"type": "fill", "order_id": 10, "client_order_id": None, "symbol": "ESZ6",
                                      "side": "buy", "price": 450_000, "qty": 2, "leaves": 3, "trade_id": 77,
                                      "liquidity": "taker", "seq": 5})]
    assert maker.frames == [frame_of({"type": "fill", "order_id": 20, "client_order_id": "m-1", "symbol": "ESZ6",
                                      "side": "sell", "price": 450_000, "qty": 2, "leaves": 0, "trade_id": 77,
                                      "liquidity": "maker", "seq": 5})]
    assert rig.owners == {10: taker} and maker.orders == {} and maker.coids == {}
    assert rig.open == Counter({1: 1, 2: 0})
    assert rig.trades == {0: [(77, 450_000, 2, 1)]} and rig.router.trades == 1


def test_fill_of_an_order_nobody_holds_leaves_unclaimed_books_right() -> None:
    rig = Rig()
    rig.unclaimed.add(20, 0, 2, None)
    rig.unclaimed.add(21, 0, 2, None)
    rig.route(dict(type=TRADE, side=1, instrument=0, seq=5, order_id=10, maker_order_id=20, trade_id=1,
                   price=450_000, qty=2, leaves=0, maker_leaves=0, account=1, maker_account=2))
    assert rig.unclaimed.of_account(2) == [(21, 0)]
    assert rig.trades == {}  # nobody subscribed


def test_cancel_answers_the_owner_that_asked() -> None:
    rig = Rig()
    s = rig.sessions[1]
    rig.owners[5] = s
    s.orders[5] = (1, "c-5")
    s.coids["c-5"] = 5
    s.pending[3] = ("cancel", 42, None)
    rig.open[11] = 1
    rig.route(dict(type=CANCELLED, order_id=5, leaves=4, reason=0, seq=8, account=11, tag=tag(1, 3)),
              dict(type=CANCELLED, order_id=5, leaves=4, reason=0, seq=8, account=11, tag=tag(1, 3)))
    assert s.frames[0] == frame_of({"type": "cancelled", "req_id": 42, "order_id": 5, "client_order_id": "c-5",
                                    "leaves": 4, "reason": CANCEL_REASONS[0], "seq": 8})
    assert rig.owners == {} and s.orders == {} and s.coids == {}
    # The second event of the same command is not the answer: no req_id,
    # and with the owner gone it is the Python method's.
    assert rig.dispatcher.calls == [("_cancelled", None, 5, 4, 0, 8, s, ("cancel", 42, None), False)]
    assert rig.open[11] == -1


def test_an_ioc_remainder_goes_to_its_owner_without_req_id() -> None:
    rig = Rig()
    s = rig.sessions[1]
    s.pending[1] = ("new_order", 9, None)
    rig.route(dict(type=ACCEPTED, side=1, instrument=0, seq=3, order_id=6, price=450_000, qty=5, account=1,
                   tag=tag(1, 1)),
              dict(type=CANCELLED, order_id=6, leaves=5, reason=1, seq=3, account=1, tag=tag(1, 1)))
    assert s.messages()[1] == {"type": "cancelled", "req_id": None, "order_id": 6, "client_order_id": None,
                               "leaves": 5, "reason": CANCEL_REASONS[1], "seq": 3}
    assert rig.owners == {} and rig.open[1] == 0


def test_cancels_of_others_and_mass_cancels_go_to_python() -> None:
    rig = Rig()
    owner, admin = rig.sessions[1], rig.sessions[2]
    rig.owners[5] = owner
    rig.owners[6] = owner
    admin.pending[1] = ("cancel", "x", None)
    admin.pending[2] = ("mass_cancel", None, "state")
    rig.route(dict(type=CANCELLED, order_id=5, leaves=1, reason=0, seq=1, account=1, tag=tag(2, 1)),
              dict(type=CANCELLED, order_id=6, leaves=1, reason=0, seq=2, account=1, tag=tag(2, 2)))
    assert rig.dispatcher.calls == [
        ("_cancelled", owner, 5, 1, 0, 1, admin, ("cancel", "x", None), True),
        ("_cancelled", owner, 6, 1, 0, 2, admin, ("mass_cancel", None, "state"), True),
    ]
    assert owner.frames == admin.frames == []


def test_rare_events_reach_the_python_methods() -> None:
    rig = Rig()
    s = rig.sessions[1]
    rig.owners[5] = s
    s.pending.update({1: ("modify", 1, None), 2: ("new_order", 2, "c"), 3: ("trading_state", 3, None),
                      4: ("snapshot", 4, None)})
    rig.route(dict(type=MODIFIED, order_id=5, price=450_025, qty=2, flags=1, seq=10, tag=tag(1, 1)),
              dict(type=REJECTED, reason=3, coid="c", order_id=0, seq=11, tag=tag(1, 2)),
              dict(type=STATE, instrument=1, qty=1, seq=12, tag=tag(1, 3)),
              dict(type=128, seq=13, leaves=5, tag=tag(1, 4)))
    assert rig.dispatcher.calls == [
        ("_modified", s, 5, 450_025, 2, True, 10, s, ("modify", 1, None), True),
        ("_rejected", s, ("new_order", 2, "c"), 3, b"c" + bytes(15), 0, 11),
        ("_trading_state", s, ("trading_state", 3, None), 1, True, 12),
        ("_snapshot_done", s, ("snapshot", 4, None), 13, 5),
    ]


def test_an_ack_for_a_closed_session_is_pythons() -> None:
    rig = Rig()
    rig.sessions[3] = gone = FakeSession(3, closed=True)
    gone.pending[1] = ("new_order", 1, None)
    rig.route(dict(type=ACCEPTED, side=1, instrument=0, seq=1, order_id=9, price=450_000, qty=1, account=4,
                   coid="k", tag=tag(3, 1)))
    assert rig.dispatcher.calls == [("_accepted_late", gone, 9, 0, 4, "k")]
    assert gone.frames == [] and rig.open[4] == 1


def test_levels_keep_the_books_and_the_changes_of_subscribed_instruments() -> None:
    rig = Rig()
    rig.subscribers[1].add(object())
    rig.route(dict(type=LEVEL, side=1, instrument=0, price=100, qty=5, leaves=2, tag=tag(1, 1)),
              dict(type=LEVEL, side=2, instrument=1, price=200, qty=7, leaves=1, tag=tag(1, 1)),
              dict(type=LEVEL, side=2, instrument=1, price=201, qty=1, leaves=1, tag=tag(1, 1)),
              dict(type=LEVEL, side=2, instrument=1, price=201, qty=0, leaves=0, tag=tag(1, 1)))
    assert rig.books[0][1] == {100: (5, 2)} and rig.books[1][2] == {200: (7, 1)}
    assert rig.changes == {1: {(2, 200): (7, 1), (2, 201): (0, 0)}}


def test_bad_arguments() -> None:
    rig = Rig()
    buf = ffi.new("struct runner_event[]", 1)
    for n in (2, pow(13, -1, 2**61)):  # the second: n x 104 bytes wraps around to 8
        with pytest.raises(ValueError, match="more records than the buffer holds"):
            rig.router.route(ffi.buffer(buf), n)
    with pytest.raises(TypeError, match="initialised once"):
        rig.router.__init__(rig.router_tables)
    with pytest.raises(ValueError, match="not the dispatcher's tables"):
        Router(("too", "short"))
    buf[0].ev.type = ACCEPTED
    buf[0].ev.instrument = 9  # no such instrument: a bug, not a client's doing
    buf[0].tag = tag(1, 1)
    with pytest.raises(ValueError, match="unknown instrument"):
        rig.router.route(ffi.buffer(buf), 1)

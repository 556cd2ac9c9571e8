"""The dispatcher's Router (csrc/binding/route.c) on hand-made events: its
frames are exactly what ``protocol.encode`` makes of the same messages, it
keeps the Ledger and the Links, and the rare events reach the RouterEvents
callbacks (seam.py) with the arguments documented there."""

from __future__ import annotations

import gc
import inspect
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyengine._ffi import ffi, lib
from pyengine._server import Ledger, Link, OrderRecord, OrderStatus, Router
from pyengine.server.codes import CANCEL_REASONS
from pyengine.server.protocol import encode
from pyengine.server.dispatch import Dispatcher
from pyengine.server.requests import Requests
from pyengine.server.seam import IntakeEvents, PendingRequest, RouterEvents

from .conftest import run_python
from .test_ledger import _with_hash

# The codes are pyengine.h's, read through cffi like the Router reads them.
ACCEPTED, REJECTED, TRADE, CANCELLED = lib.ENG_EV_ACCEPTED, lib.ENG_EV_REJECTED, lib.ENG_EV_TRADE, lib.ENG_EV_CANCELLED
MODIFIED, LEVEL, STATE = lib.ENG_EV_MODIFIED, lib.ENG_EV_LEVEL, lib.ENG_EV_STATE
USER, IOC = lib.ENG_CANCEL_USER, lib.ENG_CANCEL_IOC
BUY, SELL = lib.ENG_BUY, lib.ENG_SELL
SYMBOLS = ["ESZ6", "NQZ6"]


class Sink:
    """A session as the Router sees it: a Link without a socket, whose
    output stays queued (csrc/binding/outbox.c) for the test to take."""

    def __init__(self, sid: int, ledger: Ledger) -> None:
        self.sid = sid
        self.cancel_on_disconnect = True
        self._frames: list[bytes] = []
        self.link = Link(sid, self, 0, 0)
        ledger.attach(self.link)

    @property
    def frames(self) -> list[bytes]:
        """Every frame queued for the session so far, its header included."""
        data, pos = self.link.take_output(), 0
        while pos < len(data):
            end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
            self._frames.append(data[pos:end])
            pos = end
        return self._frames

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(f[4:]) for f in self.frames]

    @property
    def pending(self) -> dict[int, PendingRequest]:
        return self.link.pending()

    @property
    def orders(self) -> dict[int, tuple[int, str | None]]:
        return self.link.orders()


class Recorder:
    """seam.RouterEvents, recording each call with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def cancelled(self, owner: Sink | None, order_id: int, leaves: int, reason: int, seq: int,
                  session: Sink | None, request: PendingRequest | None, first: bool) -> None:
        self.calls.append(("cancelled", owner, order_id, leaves, reason, seq, session, request, first))

    def modified(self, owner: Sink | None, order_id: int, price: int, qty: int, priority_kept: bool, seq: int,
                 session: Sink | None, request: PendingRequest | None, first: bool) -> None:
        self.calls.append(("modified", owner, order_id, price, qty, priority_kept, seq, session, request, first))

    def rejected(self, session: Sink | None, request: PendingRequest | None, reason: int, coid_raw: bytes,
                 order_id: int, seq: int) -> None:
        self.calls.append(("rejected", session, request, reason, coid_raw, order_id, seq))

    def trading_state(self, session: Sink | None, request: PendingRequest | None, instrument: int, halted: bool,
                      seq: int) -> None:
        self.calls.append(("trading_state", session, request, instrument, halted, seq))

    def mmp(self, session: Sink | None, request: PendingRequest | None, account: int, instrument: int,
            qty_limit: int, window: int, filled: int, tripped: bool, seq: int) -> None:
        self.calls.append(("mmp", session, request, account, instrument, qty_limit, window, filled, tripped, seq))

    def order_limits(self, session: Sink | None, request: PendingRequest | None, instrument: int, max_qty: int,
                     max_notional: int, seq: int) -> None:
        self.calls.append(("order_limits", session, request, instrument, max_qty, max_notional, seq))

    def mass_cancelled(self, session: Sink | None, request: PendingRequest | None, account: int | None,
                       instrument: int, all_instruments: bool, count: int, reason: int, seq: int) -> None:
        self.calls.append(("mass_cancelled", session, request, account, instrument, all_instruments, count, reason,
                           seq))

    def snapshot_done(self, session: Sink | None, request: PendingRequest | None, seq: int, err: int) -> None:
        self.calls.append(("snapshot_done", session, request, seq, err))

    def state_hash(self, seq: int, value: int, checked: bool, expected: int) -> None:
        self.calls.append(("state_hash", seq, value, checked, expected))

    def accepted_late(self, session: Sink, order_id: int, instrument: int, account: int,
                      client_order_id: str | None) -> None:
        self.calls.append(("accepted_late", session, order_id, instrument, account, client_order_id))

    def accepted_unowned(self, order_id: int, instrument: int, account: int, client_order_id: str | None) -> None:
        self.calls.append(("accepted_unowned", order_id, instrument, account, client_order_id))

    def unowned_gone(self, order_id: int) -> None:
        self.calls.append(("unowned_gone", order_id))


class Rig:
    def __init__(self) -> None:
        self.events = Recorder()
        self.ledger = Ledger()
        self.sessions: dict[int, Sink] = {1: Sink(1, self.ledger), 2: Sink(2, self.ledger)}
        self.books: list[tuple[dict[int, Any], ...]] = [({}, {}, {}) for _ in SYMBOLS]
        self.subscribers: list[set[Any]] = [set() for _ in SYMBOLS]
        self.changes: dict[int, dict[Any, Any]] = {}
        self.trades: dict[int, list[Any]] = {}
        self.router_args: dict[str, Any] = dict(
            ledger=self.ledger, events=self.events,
            market_data=(self.books, self.subscribers, self.changes, self.trades),
            symbols_json=tuple(orjson.dumps(s) for s in SYMBOLS), sides_json=(b"", b'"buy"', b'"sell"'),
            reasons_json=tuple(orjson.dumps(r) for r in CANCEL_REASONS), dumps=orjson.dumps,
        )
        self.router = Router(**self.router_args)

    def pend(self, s: Sink, kind: str, req_id: Any, extra: Any = None) -> int:
        """A request of `s` waiting for its answer: its tag."""
        return s.link.tag(kind, req_id, extra)

    def own(self, s: Sink, oid: int, inst: int = 0, coid: str | None = None) -> None:
        self.ledger.own(s.link, oid, inst, coid)

    def route(self, *events: dict[str, Any]) -> None:
        """Route `events` as the runner publishes them: the last of each
        command's (of a run of one tag) marked so, unless it says ``more``
        (the rest of its command comes in a later call)."""
        buf = ffi.new("struct runner_event[]", len(events))
        for i, e in enumerate(events):
            for key, value in e.items():
                if key == "tag":
                    buf[i].tag = value
                elif key == "coid":
                    ffi.memmove(buf[i].ev.coid, value.encode().ljust(16, b"\0"), 16)
                elif key != "more":
                    setattr(buf[i].ev, key, value)
            ends_run = i + 1 == len(events) or events[i + 1].get("tag", 0) != e.get("tag", 0)
            if ends_run and not e.get("more"):
                buf[i].ev.flags |= lib.RUNNER_EV_F_LAST
        self.router.route(ffi.buffer(buf), len(events))


def frame_of(message: dict[str, Any]) -> bytes:
    return encode(message)


def test_ack_frame_and_bookkeeping() -> None:
    rig = Rig()
    s = rig.sessions[1]
    t = rig.pend(s, "new_order", 'r"1\\é', "a\"b\\c")
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=1, seq=99, order_id=5, price=2_000_000, qty=3, account=11,
                   coid='a"b\\c', tag=t))
    assert s.frames == [frame_of({"type": "ack", "req_id": 'r"1\\é', "order_id": 5, "client_order_id": 'a"b\\c',
                                  "symbol": "NQZ6", "side": "buy", "price": 2_000_000, "qty": 3, "seq": 99})]
    assert rig.ledger.owner(5) is s.link and s.orders == {5: (1, 'a"b\\c')}
    # The new order's answer ends its flight (the Intake counted it in).
    assert s.pending == {} and rig.ledger.in_flight(11) == -1 and rig.ledger.open(11) == 1
    assert rig.router.orders == 1


def test_market_order_ack_has_no_price_and_big_request_ids_survive() -> None:
    rig = Rig()
    s = rig.sessions[2]
    t = rig.pend(s, "new_order", 2**64 - 1)  # over int64: orjson writes it
    rig.route(dict(type=ACCEPTED, side=SELL, instrument=0, seq=1, order_id=8, price=0, qty=1, account=3, tag=t))
    assert s.frames == [frame_of({"type": "ack", "req_id": 2**64 - 1, "order_id": 8, "client_order_id": None,
                                  "symbol": "ESZ6", "side": "sell", "price": None, "qty": 1, "seq": 1})]


@settings(max_examples=300, deadline=None)
@given(price=st.integers(-(2**63), 2**63 - 1).filter(bool), qty=st.integers(1, 2**63 - 1),
       order_id=st.integers(1, 2**64 - 1), seq=st.integers(0, 2**64 - 1), req_id=st.integers(-(2**63), 2**63 - 1))
@example(price=-(2**63), qty=2**63 - 1, order_id=2**64 - 1, seq=0, req_id=-(2**63))
@example(price=-1, qty=1, order_id=10, seq=9, req_id=-10)
def test_every_integer_is_written_as_orjson_writes_it(price: int, qty: int, order_id: int, seq: int,
                                                       req_id: int) -> None:
    rig = Rig()
    s = rig.sessions[1]
    t = rig.pend(s, "new_order", req_id)
    rig.route(dict(type=ACCEPTED, side=SELL, instrument=0, seq=seq, order_id=order_id, price=price, qty=qty,
                   account=4, tag=t))
    assert s.frames == [frame_of({"type": "ack", "req_id": req_id, "order_id": order_id, "client_order_id": None,
                                  "symbol": "ESZ6", "side": "sell", "price": price, "qty": qty, "seq": seq})]


def test_trade_fills_both_sides_and_forgets_finished_orders() -> None:
    rig = Rig()
    taker, maker = rig.sessions[1], rig.sessions[2]
    rig.own(taker, 10)
    rig.own(maker, 20, 0, "m-1")
    rig.ledger.count_open(1, 1)
    rig.ledger.count_open(2, 1)
    rig.subscribers[0].add(object())
    rig.route(dict(type=TRADE, side=BUY, instrument=0, seq=5, order_id=10, maker_order_id=20, trade_id=77,
                   price=450_000, qty=2, leaves=3, maker_leaves=0, account=1, maker_account=2, tag=1 << 32 | 1))
    assert taker.frames == [frame_of({"type": "fill", "order_id": 10, "client_order_id": None, "symbol": "ESZ6",
                                      "side": "buy", "price": 450_000, "qty": 2, "leaves": 3, "trade_id": 77,
                                      "liquidity": "taker", "seq": 5})]
    assert maker.frames == [frame_of({"type": "fill", "order_id": 20, "client_order_id": "m-1", "symbol": "ESZ6",
                                      "side": "sell", "price": 450_000, "qty": 2, "leaves": 0, "trade_id": 77,
                                      "liquidity": "maker", "seq": 5})]
    assert rig.ledger.owner(10) is taker.link and rig.ledger.owner(20) is None and maker.orders == {}
    assert (rig.ledger.open(1), rig.ledger.open(2)) == (1, 0)
    assert rig.trades == {0: [(77, 450_000, 2, 1)]} and rig.router.trades == 1


def test_fill_of_an_order_nobody_holds_is_pythons() -> None:
    rig = Rig()
    rig.route(dict(type=TRADE, side=BUY, instrument=0, seq=5, order_id=10, maker_order_id=20, trade_id=1,
                   price=450_000, qty=2, leaves=0, maker_leaves=0, account=1, maker_account=2),
              dict(type=TRADE, side=BUY, instrument=0, seq=6, order_id=11, maker_order_id=21, trade_id=2,
                   price=450_000, qty=2, leaves=1, maker_leaves=1, account=1, maker_account=2))
    assert rig.events.calls == [("unowned_gone", 10), ("unowned_gone", 20)]  # finished ones only
    assert rig.trades == {}  # nobody subscribed


def test_an_order_accepted_for_no_session_is_pythons() -> None:
    rig = Rig()
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=1, order_id=9, price=450_000, qty=1, account=4,
                   coid="k", tag=0))
    assert rig.events.calls == [("accepted_unowned", 9, 0, 4, "k")] and rig.ledger.open(4) == 1


def test_cancel_answers_the_owner_that_asked() -> None:
    rig = Rig()
    s = rig.sessions[1]
    rig.own(s, 5, 1, "c-5")
    t = rig.pend(s, "cancel", 42)
    rig.ledger.count_open(11, 1)
    rig.route(dict(type=CANCELLED, order_id=5, leaves=4, reason=USER, seq=8, account=11, tag=t),
              dict(type=CANCELLED, order_id=5, leaves=4, reason=USER, seq=8, account=11, tag=t))
    assert s.frames[0] == frame_of({"type": "cancelled", "req_id": 42, "order_id": 5, "client_order_id": "c-5",
                                    "leaves": 4, "reason": CANCEL_REASONS[USER], "seq": 8})
    assert rig.ledger.owner(5) is None and s.orders == {}
    # The second event of the same command is not the answer: no req_id,
    # and with the owner gone it is the Python method's.
    assert rig.events.calls == [("cancelled", None, 5, 4, USER, 8, s, ("cancel", 42, None), False)]
    assert rig.ledger.open(11) == -1


def test_an_ioc_remainder_goes_to_its_owner_without_req_id() -> None:
    rig = Rig()
    s = rig.sessions[1]
    t = rig.pend(s, "new_order", 9)
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=3, order_id=6, price=450_000, qty=5, account=1, tag=t),
              dict(type=CANCELLED, order_id=6, leaves=5, reason=IOC, seq=3, account=1, tag=t))
    assert s.messages()[1] == {"type": "cancelled", "req_id": None, "order_id": 6, "client_order_id": None,
                               "leaves": 5, "reason": CANCEL_REASONS[IOC], "seq": 3}
    assert rig.ledger.owner(6) is None and rig.ledger.open(1) == 0


def test_cancels_of_others_and_mass_cancels_go_to_python() -> None:
    rig = Rig()
    owner, admin = rig.sessions[1], rig.sessions[2]
    rig.own(owner, 5)
    rig.own(owner, 6)
    t1 = rig.pend(admin, "cancel", "x")
    t2 = rig.pend(admin, "mass_cancel", None, "state")
    rig.route(dict(type=CANCELLED, order_id=5, leaves=1, reason=USER, seq=1, account=1, tag=t1),
              dict(type=CANCELLED, order_id=6, leaves=1, reason=USER, seq=2, account=1, tag=t2))
    assert rig.events.calls == [
        ("cancelled", owner, 5, 1, USER, 1, admin, ("cancel", "x", None), True),
        ("cancelled", owner, 6, 1, USER, 2, admin, ("mass_cancel", None, "state"), True),
    ]
    assert owner.frames == admin.frames == []


def test_a_cancel_all_answers_its_request_once_though_its_events_come_in_two_batches() -> None:
    rig = Rig()
    owner, admin = rig.sessions[1], rig.sessions[2]
    for oid in (5, 6, 7):
        rig.own(owner, oid)
    t = rig.pend(admin, "mass_cancel", 9, "state")
    cancel = dict(type=CANCELLED, leaves=1, reason=USER, seq=4, account=1, tag=t)
    rig.route(dict(cancel, order_id=5), dict(cancel, order_id=6, more=True))
    assert list(admin.pending.values()) == [("mass_cancel", 9, "state")]  # until its last event
    rig.route(dict(cancel, order_id=7),
              dict(type=lib.ENG_EV_MASS_CANCELLED, account=1, flags=lib.ENG_EV_F_ALL_INSTRUMENTS, qty=3, reason=USER,
                   seq=4, tag=t))
    request = ("mass_cancel", 9, "state")
    assert rig.events.calls == [
        ("cancelled", owner, 5, 1, USER, 4, admin, request, True),
        ("mass_cancelled", admin, request, 1, 0, True, 3, USER, 4),
    ]
    assert [m["order_id"] for m in owner.messages()] == [6, 7]  # pushes: the owner did not ask
    assert admin.frames == [] and rig.ledger.owned(None) == [(5, 0)]  # the one given to Python is its to forget
    assert admin.pending == {}


def test_rare_events_reach_the_python_methods() -> None:
    rig = Rig()
    s = rig.sessions[1]
    rig.own(s, 5)
    t1, t2, t3, t4, t5 = (rig.pend(s, "modify", 1), rig.pend(s, "new_order", 2, "c"),
                          rig.pend(s, "trading_state", 3), rig.pend(s, "snapshot", 4), rig.pend(s, "mmp", 5))
    rig.route(dict(type=MODIFIED, order_id=5, price=450_025, qty=2, flags=lib.ENG_EV_F_PRIORITY_KEPT, seq=10, tag=t1),
              dict(type=REJECTED, reason=lib.ENG_OFF_LOT, coid="c", order_id=0, seq=11, tag=t2),
              dict(type=STATE, instrument=1, qty=1, seq=12, tag=t3),
              dict(type=lib.RUNNER_EV_SNAPSHOT, seq=13, leaves=5, tag=t4),
              dict(type=lib.RUNNER_EV_STATE_HASH, seq=14, order_id=77, qty=1, maker_order_id=78, tag=0),
              dict(type=lib.ENG_EV_MMP, account=7, instrument=1, qty=50, price=10**9, leaves=0, seq=15, tag=t5),
              dict(type=lib.ENG_EV_MMP, account=7, instrument=0, qty=5, price=0, leaves=6,
                   flags=lib.ENG_EV_F_TRIPPED, seq=16, tag=0),
              dict(type=lib.ENG_EV_LIMITS, instrument=1, qty=10, price=10**7, seq=17, tag=0))
    assert rig.events.calls == [
        ("modified", s, 5, 450_025, 2, True, 10, s, ("modify", 1, None), True),
        ("rejected", s, ("new_order", 2, "c"), lib.ENG_OFF_LOT, b"c" + bytes(15), 0, 11),
        ("trading_state", s, ("trading_state", 3, None), 1, True, 12),
        ("snapshot_done", s, ("snapshot", 4, None), 13, 5),
        ("state_hash", 14, 77, True, 78),
        ("mmp", s, ("mmp", 5, None), 7, 1, 50, 10**9, 0, False, 15),
        ("mmp", None, None, 7, 0, 5, 0, 6, True, 16),
        ("order_limits", None, None, 1, 10, 10**7, 17),
    ]


def test_an_ack_for_a_closed_session_is_pythons() -> None:
    rig = Rig()
    rig.sessions[3] = gone = Sink(3, rig.ledger)
    t = rig.pend(gone, "new_order", 1)
    gone.link.close()
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=1, order_id=9, price=450_000, qty=1, account=4,
                   coid="k", tag=t))
    assert rig.events.calls == [("accepted_late", gone, 9, 0, 4, "k")]
    assert gone.frames == [] and rig.ledger.open(4) == 1


def test_levels_keep_the_books_and_the_changes_of_subscribed_instruments() -> None:
    rig = Rig()
    rig.subscribers[1].add(object())
    rig.route(dict(type=LEVEL, side=BUY, instrument=0, price=100, qty=5, leaves=2, tag=1 << 32 | 1),
              dict(type=LEVEL, side=SELL, instrument=1, price=200, qty=7, leaves=1, tag=1 << 32 | 1),
              dict(type=LEVEL, side=SELL, instrument=1, price=201, qty=1, leaves=1, tag=1 << 32 | 1),
              dict(type=LEVEL, side=SELL, instrument=1, price=201, qty=0, leaves=0, tag=1 << 32 | 1))
    assert rig.books[0][1] == {100: (5, 2)} and rig.books[1][2] == {200: (7, 1)}
    assert rig.changes == {1: {(2, 200): (7, 1), (2, 201): (0, 0)}}


@contextmanager
def collector_off() -> Iterator[None]:
    """No collection meanwhile: a young collection would itself take
    tuples of plain values out of the collector's walks."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_open_orders_give_the_cyclic_collector_nothing_to_walk() -> None:
    """Per open order the Ledger, the Link and the books keep only values
    no cycle can pass through: neither those values nor the dicts holding
    them are tracked, so a young collection does not walk each new order and
    a full one does not walk every open order (it paused the server's loop
    for milliseconds with a hundred thousand of them)."""
    rig = Rig()
    s = rig.sessions[1]
    rig.subscribers[0].add(object())  # the changes of instrument 0 are gathered too
    n = 500
    with collector_off():
        tracked = len(gc.get_objects())
        for oid in range(1, n + 1):
            t = rig.pend(s, "new_order", oid)
            rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=oid, order_id=oid, price=100 + oid, qty=1,
                           account=7, coid=f"c{oid}" if oid % 2 else "", tag=t),
                      dict(type=LEVEL, side=BUY, instrument=0, price=100 + oid, qty=1, leaves=1, tag=t))
        assert s.pending == {} and len(s.orders) == n and len(rig.books[0][BUY]) == n
        assert len(gc.get_objects()) - tracked < 20  # not one (or more) per order
    # The open orders are the Ledger's C memory: nothing the collector could walk, nor a container of them.
    assert not [o for o in (*gc.get_referents(rig.ledger), *gc.get_referents(s.link)) if isinstance(o, dict) and n in o]
    assert len(gc.get_referents(rig.ledger)) <= 1 + len(rig.sessions)  # its sessions' dict, its owners
    for held in (rig.books[0][BUY], rig.changes[0]):
        assert not gc.is_tracked(held)
    assert rig.ledger.owner(n) is s.link and rig.ledger.order(n) == (0, None) and rig.ledger.order(1) == (0, "c1")


def test_a_pending_request_holding_a_container_stays_tracked() -> None:
    """Only tuples of values that hold nothing leave the collector's walks:
    a request id may be any JSON value, a list included."""
    s = Rig().sessions[1]
    with collector_off():
        plain, held = s.link.tag("new_order", 1), s.link.tag("new_order", [1, 2])
        pending = s.link.pending()
        assert not gc.is_tracked(pending[plain & 0xFFFFFFFF]) and gc.is_tracked(pending[held & 0xFFFFFFFF])


def test_the_router_needs_every_callback() -> None:
    class Partial:
        def cancelled(self, *args: Any) -> None: ...

    rig = Rig()
    with pytest.raises(AttributeError, match="modified"):
        Router(**dict(rig.router_args, events=Partial()))


def test_a_router_whose_init_failed_keeps_nothing_and_may_be_initialised() -> None:
    class Partial:
        def cancelled(self, *args: Any) -> None: ...

    rig = Rig()
    misshapen, partial = (rig.books[:1], rig.subscribers, rig.changes, rig.trades), Partial()
    refs = sys.getrefcount(misshapen), sys.getrefcount(partial)
    router = Router.__new__(Router)
    with pytest.raises(ValueError, match="shape"):
        router.__init__(**dict(rig.router_args, market_data=misshapen))  # type: ignore[misc]  # on purpose
    with pytest.raises(AttributeError, match="modified"):
        router.__init__(**dict(rig.router_args, events=partial))  # type: ignore[misc]
    assert (sys.getrefcount(misshapen), sys.getrefcount(partial)) == refs  # what the failures took is let go
    router.__init__(**rig.router_args)  # type: ignore[misc]
    rig.router = router
    t = rig.pend(rig.sessions[1], "new_order", 1)
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=1, order_id=5, price=100, qty=1, account=1, tag=t))
    assert rig.sessions[1].messages()[0]["type"] == "ack"


def test_bad_arguments() -> None:
    rig = Rig()
    buf = ffi.new("struct runner_event[]", 1)
    for n in (2, pow(13, -1, 2**61)):  # the second: n x 104 bytes wraps around to 8
        with pytest.raises(ValueError, match="more records than the buffer holds"):
            rig.router.route(ffi.buffer(buf), n)
    with pytest.raises(TypeError, match="initialised once"):
        rig.router.__init__(**rig.router_args)  # type: ignore[misc]  # a second __init__ is the point
    with pytest.raises(ValueError, match="market data's or the JSON strings' shape"):
        Router(**dict(rig.router_args, symbols_json=(b'"ESZ6"',)))
    buf[0].ev.type = ACCEPTED
    buf[0].ev.instrument = 9  # no such instrument: a bug, not a client's doing
    buf[0].tag = rig.pend(rig.sessions[1], "new_order", 1)
    with pytest.raises(ValueError, match="unknown instrument"):
        rig.router.route(ffi.buffer(buf), 1)


def test_an_order_status_not_initialised_is_refused() -> None:
    """OrderStatus.__new__ alone makes one with no tables: its methods
    refuse it. Run apart: each crashed."""
    proc = run_python(textwrap.dedent("""
        from pyengine._server import OrderStatus

        status = OrderStatus.__new__(OrderStatus)
        for call in (lambda: status.open_orders(1), lambda: status.finished_orders(1), lambda: status.find(1, 1),
                     lambda: status.find_coid(1, "a"), lambda: status.recovered(1, 1, 0, 1, 100, 1, None),
                     status.verify):
            try:
                call()
            except ValueError as exc:
                print(exc)
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["the OrderStatus is not initialised"] * 6


def test_an_order_status_s_arguments() -> None:
    """keep is required, 0 or more (any other number a ValueError, none
    taken for its absence); coid_key_bits 1 to 64; __init__ once."""
    with pytest.raises(TypeError, match="missing required keyword-only argument: 'keep'"):
        OrderStatus()  # type: ignore[call-arg]  # on purpose
    with pytest.raises(TypeError, match="positional"):
        OrderStatus(1)  # type: ignore[call-arg]
    for keep in (-1, -2**63):
        with pytest.raises(ValueError, match="keep is 0 or more"):
            OrderStatus(keep=keep)
    with pytest.raises(OverflowError):
        OrderStatus(keep=2**63)
    with pytest.raises(TypeError, match="integer"):
        OrderStatus(keep=1.0)  # type: ignore[arg-type]
    for bits in (0, 65):
        with pytest.raises(ValueError, match="coid_key_bits is 1 to 64"):
            OrderStatus(keep=1, coid_key_bits=bits)
    status = OrderStatus(keep=3, coid_key_bits=1)
    with pytest.raises(TypeError, match="initialised once"):
        status.__init__(keep=2)  # type: ignore[misc]  # a second __init__ is the point
    assert status.keep == 3


def test_a_router_refuses_a_ledger_or_an_order_status_not_initialised() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="Router: the Ledger is not initialised"):
        Router(**dict(rig.router_args, ledger=Ledger.__new__(Ledger)))
    with pytest.raises(ValueError, match="Router: the OrderStatus is not initialised"):
        Router(**dict(rig.router_args, status=OrderStatus.__new__(OrderStatus)))
    Router(**dict(rig.router_args, status=OrderStatus(keep=1)))


def test_a_callback_may_drop_the_latency_trace() -> None:
    """events.rejected lets go of the Ledger's LatencyTrace (tracing switched
    off) and its memory is taken by others: the reject's trace stamp finds no
    trace. Run apart: it crashed the interpreter."""
    proc = run_python(textwrap.dedent("""
        import gc
        import orjson
        from pyengine._ffi import ffi, lib
        from pyengine._server import LatencyTrace, Ledger, Link, Router
        from pyengine.server.codes import CANCEL_REASONS

        held, taken = {}, []

        class Events:
            def rejected(self, *args):
                del held["trace"]
                gc.collect()
                taken.extend(bytes(n) for n in range(256) for _ in range(100))

            def __getattr__(self, name):
                return lambda *args: None

        ledger = Ledger()
        held["trace"] = LatencyTrace(ledger, 1)
        router = Router(ledger=ledger, events=Events(), market_data=([({}, {}, {})], [set()], {}, {}),
                        symbols_json=(b'"A"',), sides_json=(b"", b'"buy"', b'"sell"'),
                        reasons_json=tuple(orjson.dumps(r) for r in CANCEL_REASONS), dumps=orjson.dumps)
        link = Link(1, None, 0, 0)
        ledger.attach(link)
        buf = ffi.new("struct runner_event[]", 1)
        buf[0].ev.type = lib.ENG_EV_REJECTED
        buf[0].tag = link.tag("new_order", 1, None)
        router.route(ffi.buffer(buf), 1)
        print("routed", ledger.meters()["rejects"])
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("routed"), proc.stdout


@pytest.mark.parametrize(("protocol", "implementation"), [(RouterEvents, Dispatcher), (IntakeEvents, Requests),
                                                          (RouterEvents, Recorder)])
def test_the_server_implements_the_seam(protocol: type, implementation: type) -> None:
    """Every callback the C side binds by name exists, with the parameters
    the seam documents, in the order the C side passes them."""
    names = [n for n in vars(protocol) if not n.startswith("_") and callable(getattr(protocol, n))]
    assert names
    for name in names:
        want = list(inspect.signature(getattr(protocol, name)).parameters)
        got = list(inspect.signature(getattr(implementation, name)).parameters)
        assert got == want, f"{implementation.__name__}.{name}{got}: the seam says {want}"


def test_the_order_ids_the_server_knows_are_those_routed_or_set() -> None:
    rig = Rig()
    assert rig.ledger.known_order_id == 0
    rig.ledger.known_order_id = 7  # recovered ids
    rig.ledger.known_order_id = 3  # only raised
    assert rig.ledger.known_order_id == 7
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=20, order_id=9, price=450_000, qty=1, account=4, tag=0))
    assert rig.ledger.known_order_id == 9
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=21, order_id=8, price=450_000, qty=1, account=4, tag=0))
    assert rig.ledger.known_order_id == 9


def test_a_catch_up_ends_with_the_event_of_its_seq() -> None:
    rig = Rig()
    rig.ledger.catch_up(21)
    rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=20, order_id=9, price=450_000, qty=1, account=4, tag=0))
    assert rig.ledger.catch_up_seq == 21
    rig.route(dict(type=LEVEL, side=BUY, instrument=0, seq=21, price=450_000, qty=2, leaves=2, tag=0))
    assert rig.ledger.catch_up_seq == 0


def record(rec: OrderRecord) -> tuple[Any, ...]:
    """Every field of an OrderRecord."""
    return (rec.order_id, rec.account, rec.instrument, rec.side, rec.price, rec.qty, rec.leaves, rec.filled,
            rec.priority, rec.last_seq, rec.state, rec.reason, rec.client_order_id)


# Ids whose homes are the first slots of one shard of the index, or its last (see test_ledger.py): few of them, so
# that one is often finished while others of its run are open.
_STATUS_IDS = st.one_of(st.integers(0, 6).map(lambda j: _with_hash((0x5A << 56) + j)),
                        st.integers(1, 6).map(lambda j: _with_hash((0x5B << 56) - j)), st.integers(1, 30))
# (kind, order id, the maker's order id, account, qty, a flag, client order id, the event names another account)
_STATUS_STEPS = st.lists(st.tuples(st.sampled_from(["accept", "recover", "trade", "cancel", "modify"]), _STATUS_IDS,
                                   _STATUS_IDS, st.integers(0, 2), st.integers(1, 4), st.booleans(),
                                   st.sampled_from([None, "a", "b"]), st.integers(0, 5).map(lambda n: n == 0)),
                         max_size=100)


@settings(max_examples=150, deadline=None)
@given(_STATUS_STEPS, st.integers(0, 3), st.sampled_from([64, 2, 1]))
# An order open again in another account: one in the index, and one of two open with a client order id.
@example([("recover", 1, 1, 0, 1, True, "a", False), ("recover", 1, 1, 1, 1, True, "b", False)], 0, 64)
@example([("recover", 1, 1, 0, 1, True, "a", False), ("recover", 2, 2, 0, 1, True, "a", False),
          ("recover", 2, 2, 1, 1, True, None, False)], 0, 64)
def test_the_order_status_is_a_dict_of_open_orders_and_a_ring_per_account(
        steps: list[tuple[str, int, int, int, int, bool, str | None, bool]], keep: int, coid_key_bits: int) -> None:
    """Orders accepted, recovered, traded (partly or whole), cancelled and
    modified in any order, as the Router passes the events on, against a
    dict per account of its open orders in the order accepted and a list of
    its last `keep` finished ones, newest first. An event naming an open
    order with another account, or an order not open, changes nothing; an
    open order recovered again replaces its record. By client order id, the
    oldest open order with it, else the newest finished one: with the
    index's keys of 64 bits, and of 1 or 2 so that the keys of different
    accounts' and ids clash (a client order id open twice, which the engine
    refuses, clashes at any width). The same events given at once to
    another OrderStatus's apply_events (as a restart does with those of the
    commands it replays) leave it the same."""
    rig = Rig()
    status = OrderStatus(keep=keep, coid_key_bits=coid_key_bits)
    applied = OrderStatus(keep=keep, coid_key_bits=coid_key_bits)
    rig.router = Router(**dict(rig.router_args, status=status))

    def route(event: dict[str, Any]) -> None:
        rig.route(event)
        raw = ffi.new("struct eng_event *")
        for key, value in event.items():
            if key == "coid":
                ffi.memmove(raw.coid, value.encode().ljust(16, b"\0"), 16)
            else:
                setattr(raw, key, value)
        applied.apply_events(memoryview(b"\0" + bytes(ffi.buffer(raw)))[1:])  # at an odd address, as may be
    model: list[dict[int, list[Any]]] = [{}, {}, {}]  # account -> order id -> the fields of record()
    finished: list[list[list[Any]]] = [[], [], []]
    seen: set[int] = set()  # the engine gives an id once
    for seq, (kind, oid, other, account, qty, flag, coid, astray) in enumerate(steps, start=1):
        holder = next((a for a in range(3) if oid in model[a]), None)
        if kind not in ("accept", "recover") and holder is not None:
            account = (holder + 1) % 3 if astray else holder
        mine = model[account].get(oid)
        if kind in ("accept", "recover"):
            if oid in seen and (kind == "accept" or holder is None):
                continue
            seen.add(oid)
            if holder is not None and holder != account:
                del model[holder][oid]  # replaced: at the end of the other account's (in its place in its own)
            side, price = (BUY if flag else SELL), 100 + qty
            if kind == "accept":
                route(dict(type=ACCEPTED, side=side, instrument=account % 2, seq=seq, order_id=oid, price=price,
                               qty=qty, account=account, coid=coid or ""))
                model[account][oid] = [oid, account, account % 2, side, price, qty, qty, 0, seq, seq, 0, 0, coid]
            else:
                status.recovered(oid, account, account % 2, side, price, qty, coid)
                applied.recovered(oid, account, account % 2, side, price, qty, coid)
                model[account][oid] = [oid, account, account % 2, side, price, None, qty, None, None, None, 0, 0,
                                       coid]
        elif kind == "trade":
            if oid == other:
                continue
            # `oid` of `account` takes from `other`, of the account holding it if open.
            maker = next((a for a in range(3) if other in model[a]), 0)
            fills = [(oid, account, mine), (other, maker, model[maker].get(other))]
            done = min([qty] + [rec[6] for _, _, rec in fills if rec])
            leaves = [rec[6] - done if rec else 1 for _, _, rec in fills]
            route(dict(type=TRADE, side=BUY, instrument=0, seq=seq, order_id=oid, account=account, qty=done,
                           leaves=leaves[0], maker_order_id=other, maker_account=maker, maker_leaves=leaves[1],
                           price=100, trade_id=seq))
            for (fid, facc, rec), left in zip(fills, leaves):
                if rec:
                    rec[6], rec[9] = left, seq
                    rec[7] = None if rec[7] is None else rec[7] + done
                    if left == 0:
                        rec[10] = 1
                        finished[facc].insert(0, model[facc].pop(fid))
        elif kind == "cancel":
            route(dict(type=CANCELLED, instrument=0, seq=seq, order_id=oid, account=account, leaves=qty,
                           reason=IOC))
            if mine:
                mine[6], mine[9], mine[10], mine[11] = qty, seq, 2, IOC
                finished[account].insert(0, model[account].pop(oid))
        else:
            route(dict(type=MODIFIED, instrument=0, seq=seq, order_id=oid, account=account, price=200 + qty,
                           qty=qty, flags=lib.ENG_EV_F_PRIORITY_KEPT if flag else 0))
            if mine:
                mine[4], mine[6], mine[9] = 200 + qty, qty, seq
                if not flag:
                    mine[8] = seq
        for a in range(3):
            del finished[a][keep:]
        assert sum(status.verify()) == sum(map(len, model))
        for a in range(3):
            assert [record(r) for r in status.open_orders(a)] == [tuple(r) for r in model[a].values()]
            assert [record(r) for r in status.finished_orders(a)] == [tuple(r) for r in finished[a]]
            kept = model[a].get(oid) or next((r for r in finished[a] if r[0] == oid), None)
            found = status.find(a, oid)
            assert (found and record(found)) == (kept and tuple(kept))
            for c in ("a", "b"):
                named = next((r for r in model[a].values() if r[12] == c), None) or \
                    next((r for r in finished[a] if r[12] == c), None)
                found = status.find_coid(a, c)
                assert (found and record(found)) == (named and tuple(named))
            assert status.find_coid(a, "z") is None and status.find_coid(a, "\0") is None
            assert [record(r) for r in applied.open_orders(a)] == [record(r) for r in status.open_orders(a)]
            assert [record(r) for r in applied.finished_orders(a)] == [record(r) for r in status.finished_orders(a)]


def test_apply_events_takes_whole_events_and_passes_over_the_others() -> None:
    status = OrderStatus(keep=5)
    size = ffi.sizeof("struct eng_event")
    for n in (1, size - 1, size + 1):
        with pytest.raises(ValueError, match=f"{n} bytes are no whole number of {size}-byte events"):
            status.apply_events(bytes(n))
    with pytest.raises(TypeError):
        status.apply_events("x" * size)  # type: ignore[arg-type]
    events = ffi.new("struct eng_event[]", 3)
    events[0].type, events[0].order_id, events[0].account, events[0].qty = ACCEPTED, 7, 1, 5
    events[1].type, events[1].account = lib.ENG_EV_LEVEL, 1  # no order's status: passed over
    events[2].type, events[2].order_id, events[2].account, events[2].leaves = CANCELLED, 7, 1, 5
    status.apply_events(ffi.buffer(events)[:size * 2])
    assert [(r.order_id, r.state) for r in status.open_orders(1)] == [(7, 0)]
    status.apply_events(ffi.buffer(events)[size * 2:])
    assert status.open_orders(1) == [] and [r.order_id for r in status.finished_orders(1)] == [7]
    assert status.apply_events(b"") is None


def test_open_order_records_give_the_cyclic_collector_nothing_to_walk() -> None:
    """OrderStatus keeps the open records in its C memory and each holds no
    Python object: no object but the record is made per order, and nothing
    the collector tracks, so no collection walks them."""
    rig = Rig()
    status = OrderStatus(keep=10)
    rig.router = Router(**dict(rig.router_args, status=status))
    s, n = rig.sessions[1], 500
    with collector_off():
        tracked = len(gc.get_objects())
        for oid in range(1, n + 1):
            t = rig.pend(s, "new_order", oid)
            rig.route(dict(type=ACCEPTED, side=BUY, instrument=0, seq=oid, order_id=1000 + oid, price=100, qty=1,
                           account=oid % 3, coid=f"c{oid}", tag=t))
        for oid in range(1, n + 1, 2):  # finished: into the rings
            rig.route(dict(type=CANCELLED, instrument=0, seq=n + oid, order_id=1000 + oid, account=oid % 3, leaves=1,
                           reason=IOC, tag=1))
        s.link.take_output()
        assert rig.events.calls == [] and len(gc.get_objects()) - tracked < 20  # not one (or more) per order
    assert sum(status.verify()) == n // 2 and sum(len(status.open_orders(a)) for a in range(3)) == n // 2
    assert not gc.is_tracked(status) and gc.get_referents(status) == []
    assert not any(gc.is_tracked(r) for a in range(3) for r in (*status.open_orders(a), *status.finished_orders(a)))


def test_an_order_id_open_again_replaces_its_record() -> None:
    """The engine gives an order id once; were one recovered or accepted
    again while open, its new record replaces the old: in its place for
    the same account (as a dict's value is), at the end of the other's."""
    status = OrderStatus(keep=2)
    for oid, account, coid in ((1, 1, "a"), (2, 1, None), (3, 1, None), (1, 1, "b"), (2, 2, "c")):
        status.recovered(oid, account, 0, BUY, 100, 1, coid)
    assert [(r.order_id, r.client_order_id) for r in status.open_orders(1)] == [(1, "b"), (3, None)]
    assert [(r.order_id, r.client_order_id) for r in status.open_orders(2)] == [(2, "c")]
    assert status.find(1, 2) is None and status.find_coid(1, "a") is None and sum(status.verify()) == 3


def test_no_order_is_found_by_a_client_order_id_of_nul_bytes() -> None:
    """A record has a client order id unless all its 16 bytes are 0, as in
    the engine: one that begins with a NUL (recovered from outside the
    engine, which refuses it) is found by it whether the account's look-ups
    go through the index or walk (two open orders with one id make them
    walk); an id of NULs names no order, not one without an id."""
    status = OrderStatus(keep=2)
    status.recovered(1, 1, 0, BUY, 100, 1, None)
    status.recovered(2, 1, 0, BUY, 100, 1, "\0y")
    for twice in (False, True):
        if twice:
            for oid in (3, 4):
                status.recovered(oid, 1, 0, BUY, 100, 1, "x")
        found = status.find_coid(1, "\0y")
        assert found is not None and (found.order_id, found.client_order_id) == (2, "\0y")
        assert status.find_coid(1, "\0") is None and status.find_coid(1, "\0" * 16) is None
        assert sum(status.verify()) == (4 if twice else 2)


def test_a_record_is_kept_whole_or_not_at_all_when_memory_runs_out() -> None:
    """Whichever allocation of OrderStatus.recovered fails (the record, the
    new account's lists, a shard of either index), the order is open in
    its account's list and the index, or in neither."""
    import _testcapi as testcapi  # CPython's own test module: a build without it fails here, not skips

    failed_at = []
    for k in range(8):
        status = OrderStatus(keep=2)
        status.recovered(1, 1, 0, BUY, 100, 1, None)
        testcapi.set_nomemory(k, k + 1)
        try:
            status.recovered(2, 2, 0, BUY, 100, 1, "c")
        except MemoryError:
            failed_at.append(k)
        finally:
            testcapi.remove_mem_hooks()
        opened = [r.order_id for r in status.open_orders(2)]
        assert opened == ([] if failed_at and failed_at[-1] == k else [2])
        assert (status.find(2, 2) is None) == (opened == []) and sum(status.verify()) == 1 + len(opened)
    assert len(failed_at) >= 4, f"allocations failed at {failed_at} only"


def test_a_list_of_records_is_whole_when_its_allocation_runs_a_finalizer() -> None:
    """Making the list of an account's records can run a collection, and a
    finalizer that adds records to that account (or finishes some): the list
    has every record there is once it is made, and nothing past its end."""
    proc = run_python(textwrap.dedent("""
        import gc
        from pyengine._server import OrderStatus
        st = OrderStatus(keep=2)
        for i in range(1, 4):
            st.recovered(i, 1, 0, 1, 100, 1, None)
        added = [100]
        class Adds:
            def __del__(self):
                for _ in range(200):
                    added[0] += 1
                    st.recovered(added[0], 1, 0, 1, 100, 1, None)
        def garbage():
            a = Adds()
            a.cycle = a
        gc.disable()
        hold = [[] for _ in range(200)]  # the interpreter's free lists of lists emptied: a list is allocated anew
        garbage()
        gc.set_threshold(1)
        gc.enable()
        out = st.open_orders(1)
        gc.disable()
        print(len(out), sorted(r.order_id for r in out) == list(range(1, 4)) + list(range(101, 301)))
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["203", "True"]

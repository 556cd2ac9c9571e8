"""The server's Intake (csrc/binding/intake.c) against Session.handle, its
reference: for any frame, taking it through the Intake (and through
Session.handle when the Intake declines) leaves the same commands, pending
requests, counts and replies as Session.handle alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine._intake import Intake
from pyengine.server.config import InstrumentConfig, LimitsConfig
from pyengine.server.engine_thread import CMD_SIZE
from pyengine.server.limits import OrderLimits, TokenBucket
from pyengine.server.codes import ORDER_TYPE_CODES, SIDE_CODES, STP_CODES, TIF_CODES
from pyengine.server.commands import CommandQueue
from pyengine.server.session import Session

INSTRUMENTS = (
    InstrumentConfig("ESZ6", 25, 1),
    InstrumentConfig("NQZ6", 25, 1, max_qty=100),
    InstrumentConfig("CLF7", 1, 1, max_notional=1_000_000),
)
TS = slice(40, 48)  # struct eng_cmd.ts: the time of receipt, not compared


class World:
    """A server's worth of state for one session, without sockets or an engine."""

    def __init__(self, *, account: int | None = 7, admin: bool = False, rate: float = 0, burst: int = 1,
                 max_open: int = 3, capacity: int = 64) -> None:
        self.limits = OrderLimits(INSTRUMENTS, LimitsConfig(max_open_orders=max_open, rate=rate, burst=burst))
        self.limits.open[7] = 1
        self.commands = CommandQueue(None, capacity)  # add() never reaches the engine
        self.owners: dict[int, Any] = {}
        self.dirty: list[Any] = []
        self.server = SimpleNamespace(
            engine=SimpleNamespace(instrument_ids={inst.symbol: i for i, inst in enumerate(INSTRUMENTS)}),
            limits=self.limits, commands=self.commands, dirty=self.dirty,
            dispatcher=SimpleNamespace(owner=self.owners.get, owners=self.owners),
            config=SimpleNamespace(limits=SimpleNamespace(rate=rate), max_unsent=1 << 20, auth_required=False),
        )
        s = Session.__new__(Session)
        s.server, s.sid, s.account, s.admin, s.closed = self.server, 3, account, admin, False
        s.pending, s._next, s._out, s.unsent, s._dirty = {}, 41, [], 0, False
        s._bucket = TokenBucket(rate, burst)
        self.session = s
        self.owners.update({900: s, 901: object()})  # its own order, and another session's
        self.intake_tables = (
            self.server.engine.instrument_ids, SIDE_CODES, ORDER_TYPE_CODES, TIF_CODES, STP_CODES,
            self.limits.max_qty, self.limits.max_notional, self.limits.max_open_orders,
            self.limits.open, self.limits.in_flight, self.owners, self.commands, orjson.loads,
        )
        self.intake = Intake(self.intake_tables)

    def state(self) -> tuple[Any, ...]:
        raw = bytes(self.commands._buf[: self.commands._n * CMD_SIZE])
        records = [bytearray(raw[i : i + CMD_SIZE]) for i in range(0, len(raw), CMD_SIZE)]
        for r in records:
            r[TS] = bytes(8)
        s = self.session
        return (records, s.pending, s._next, dict(self.limits.in_flight), dict(self.limits.open),
                [orjson.loads(f[4:]) for f in s._out])


def through_intake(w: World, frame: bytes) -> bool:
    took = w.intake.take(w.session, frame)
    if not took:
        w.session.handle(frame)
    return bool(took)


GOOD = {
    "type": st.sampled_from(["new_order", "cancel", "ping", "modify"]),
    "req_id": st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=6)),
    "symbol": st.sampled_from(["ESZ6", "NQZ6", "CLF7", "ZZZ"]),
    "side": st.sampled_from(["buy", "sell"]),
    "qty": st.integers(-5, 300),
    "price": st.one_of(st.integers(1, 50_000), st.integers(-(2**63), 2**63 - 1)),
    "order_type": st.sampled_from(["limit", "market"]),
    "tif": st.sampled_from(["gtc", "ioc", "fok"]),
    "post_only": st.booleans(),
    "stp": st.sampled_from(["none", "cancel_newest", "cancel_oldest", "cancel_both"]),
    "client_order_id": st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                                         max_size=16),
                                 st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x80), max_size=18)),
    "order_id": st.sampled_from([900, 901, 902, 0, -1, 2**63]),
}
JUNK = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=4),
                 st.integers(-(2**63), 2**64 - 1), st.lists(st.integers(0, 9), max_size=2))


# The keys each request needs; others are optional (or another request's).
NEEDED = {"new_order": {"symbol", "side", "qty", "price"}, "cancel": {"order_id"}}


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    """Mostly well-formed requests, with a field now and then missing, of
    the wrong type or out of range, or one that does not belong."""
    kind = draw(GOOD["type"])
    clean = draw(st.booleans())  # half of them with every needed field, none of them junk
    msg: dict[str, Any] = {"type": kind if clean or draw(st.integers(0, 9)) else draw(JUNK)}
    needed = NEEDED.get(kind, set())
    for key, good in GOOD.items():
        if key == "type":
            continue
        if (clean and key in needed) or draw(st.integers(0, 9)) < (9 if key in needed else 3):
            msg[key] = draw(good) if clean or draw(st.integers(0, 7)) else draw(JUNK)
    return msg


@settings(max_examples=600)
@given(st.lists(messages(), min_size=1, max_size=8), st.sampled_from([None, 7, 7]), st.booleans())
def test_the_intake_is_session_handle(msgs: list[dict[str, Any]], account: int | None, admin: bool) -> None:
    # max_open 6: 1 open and up to 8 new orders in flight reach it at times.
    a, b = World(account=account, admin=admin, max_open=6), World(account=account, admin=admin, max_open=6)
    for msg in msgs:
        frame = orjson.dumps(msg)
        through_intake(a, frame)
        b.session.handle(frame)
        assert a.state() == b.state(), msg


def test_the_intake_takes_the_usual_requests() -> None:
    w = World()
    new = {"type": "new_order", "req_id": 1, "symbol": "ESZ6", "side": "buy", "qty": 2, "price": 450_000,
           "client_order_id": 'q"\\'}
    assert through_intake(w, orjson.dumps(new))
    assert through_intake(w, orjson.dumps({"type": "cancel", "req_id": "c", "order_id": 900}))
    assert through_intake(w, orjson.dumps({"type": "cancel", "req_id": 2, "client_order_id": "x"}))
    assert through_intake(w, orjson.dumps({"type": "new_order", "symbol": "CLF7", "side": "sell", "qty": 1,
                                           "order_type": "market"}))
    assert w.session.pending == {42: ("new_order", 1, 'q"\\'), 43: ("cancel", "c", None), 44: ("cancel", 2, "x"),
                                 45: ("new_order", None, None)}
    assert w.commands._n == 4 and w.limits.in_flight[7] == 2
    # Declined, for Python to answer: not its order, over the open-order
    # limit (1 open + 2 in flight), an unknown symbol, not logged in.
    assert not w.intake.take(w.session, orjson.dumps({"type": "cancel", "order_id": 901}))
    assert not w.intake.take(w.session, orjson.dumps(new))
    assert not w.intake.take(w.session, orjson.dumps(dict(new, symbol="ZZZ")))
    nobody = World(account=None)
    assert not nobody.intake.take(nobody.session, orjson.dumps(new))
    assert w.commands._n == 4  # nothing changed by a decline


def test_the_intake_keeps_the_rate_limit() -> None:
    a, b = World(rate=0.001, burst=1), World(rate=0.001, burst=1)
    frame = orjson.dumps({"type": "cancel", "req_id": 5, "order_id": 900})
    assert through_intake(a, frame) and through_intake(a, frame)  # the second: refused, by the Intake
    b.session.handle(frame)
    b.session.handle(frame)
    assert a.state() == b.state()
    assert a.state()[-1] == [{"type": "error", "req_id": 5, "code": "rate_limited",
                              "message": "over 0.001 messages a second"}]


def test_an_intake_is_initialised_once() -> None:
    w = World()
    with pytest.raises(TypeError, match="initialised once"):
        w.intake.__init__(w.intake_tables)


def test_a_full_command_queue_is_pythons() -> None:
    w = World(capacity=1)
    cancel = orjson.dumps({"type": "cancel", "order_id": 900})
    assert w.intake.take(w.session, cancel)
    assert not w.intake.take(w.session, cancel)  # full: Session.handle waits for room

"""An instrument's order limits (``set_order_limits``): the rules and the
argument errors, run against every engine, then the Engine's batch path
(``pack_set_order_limits``) and state hash. Recovery from a snapshot with
limits set: tests/unit/test_durability.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pyengine import (
    CancelReason,
    Engine,
    InvalidArgument,
    InvalidArgumentType,
    OrderLimits,
    OrderLimitsSet,
    RejectReason,
    pack_cancel,
    pack_modify,
    pack_new_order,
    pack_set_order_limits,
)
from pyengine.enums import REJECT_MESSAGES
from pyengine.events import Accepted, Cancelled, Modified, Rejected, Trade

MAX = 2**63 - 1
QTY, NOTIONAL = RejectReason.MAX_QTY_EXCEEDED, RejectReason.MAX_NOTIONAL_EXCEEDED


def make(engine_cls: Any, **spec: Any) -> Any:
    engine = engine_cls()
    engine.add_instrument("X", **spec)
    engine.add_instrument("Y")
    return engine


def rejected(seq: int, reason: RejectReason, *, coid: str | None = None, order_id: int | None = None) -> Rejected:
    return Rejected(seq, reason, REJECT_MESSAGES[reason], coid, order_id)


def reason(events: list[Any]) -> RejectReason | None:
    """The reason of a lone Rejected event, else None."""
    return events[0].reason if len(events) == 1 and type(events[0]) is Rejected else None


# Setting and reading


def test_set_order_limits_is_a_sequenced_command_with_one_event(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.order_limits("X") == OrderLimits(0, 0)
    assert eng.set_order_limits("X", max_qty=10) == [OrderLimitsSet(1, "X", 10, 0)]
    assert eng.order_limits("X") == OrderLimits(10, 0)
    # Each call sets both: a limit left out is none.
    assert eng.set_order_limits("X", max_notional=500) == [OrderLimitsSet(2, "X", 0, 500)]
    assert eng.set_order_limits("X", max_qty=3, max_notional=MAX) == [OrderLimitsSet(3, "X", 3, MAX)]
    assert eng.order_limits("X") == OrderLimits(3, MAX)
    assert eng.order_limits("Y") == OrderLimits(0, 0)
    # Setting what is set, and clearing, take a seq and say so too.
    assert eng.set_order_limits("X", max_qty=3, max_notional=MAX) == [OrderLimitsSet(4, "X", 3, MAX)]
    assert eng.set_order_limits("X", max_qty=None, max_notional=None) == [OrderLimitsSet(5, "X", 0, 0)]
    assert eng.order_limits("X") == OrderLimits(0, 0)
    # 0 is none too: what order_limits gives can be set again as it is.
    assert eng.set_order_limits("Y", max_qty=2, max_notional=0) == [OrderLimitsSet(6, "Y", 2, 0)]
    assert eng.set_order_limits("X", **eng.order_limits("Y")._asdict()) == [OrderLimitsSet(7, "X", 2, 0)]
    assert eng.seq == 7
    eng.verify()


_ARGUMENT_ERRORS: list[tuple[str, Callable[[Any], object], type[Exception], type[Exception]]] = [
    ("max_qty negative", lambda e: e.set_order_limits("X", max_qty=-1), ValueError, InvalidArgument),
    ("max_qty too large", lambda e: e.set_order_limits("X", max_qty=2**63), ValueError, InvalidArgument),
    ("max_notional negative", lambda e: e.set_order_limits("X", max_notional=-5), ValueError, InvalidArgument),
    ("float max_qty", lambda e: e.set_order_limits("X", max_qty=5.0), TypeError, InvalidArgumentType),
    ("bool max_qty", lambda e: e.set_order_limits("X", max_qty=True), TypeError, InvalidArgumentType),
    ("str max_notional", lambda e: e.set_order_limits("X", max_notional="9"), TypeError, InvalidArgumentType),
    ("good max_qty, bad max_notional",
     lambda e: e.set_order_limits("X", max_qty=5, max_notional=-1), ValueError, InvalidArgument),
    ("unknown symbol", lambda e: e.set_order_limits("Z", max_qty=5), ValueError, InvalidArgument),
    ("unknown symbol to read", lambda e: e.order_limits("Z"), ValueError, InvalidArgument),
    ("positional limit", lambda e: e.set_order_limits("X", 5), TypeError, TypeError),
]


@pytest.mark.parametrize(
    ("call", "error", "engine_error"),
    [pytest.param(call, error, engine_error, id=name) for name, call, error, engine_error in _ARGUMENT_ERRORS],
)
def test_argument_errors_raise_and_change_nothing(
    engine_cls: Any, call: Callable[[Any], object], error: type[Exception], engine_error: type[Exception]
) -> None:
    eng = make(engine_cls)
    eng.set_order_limits("X", max_qty=7, max_notional=700)
    with pytest.raises(engine_error if engine_cls is Engine else error):
        call(eng)
    assert eng.order_limits("X") == OrderLimits(7, 700)
    assert eng.set_order_limits("Y", max_qty=1) == [OrderLimitsSet(2, "Y", 1, 0)]


# New orders


def test_a_new_order_over_max_qty_is_rejected(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.set_order_limits("X", max_qty=10)
    assert eng.submit("X", "buy", 11, 100) == [rejected(2, QTY)]
    assert eng.submit("X", "sell", 11, order_type="market") == [rejected(3, QTY)]
    assert eng.submit("X", "buy", 10, 100) == [Accepted(4, 1, "X", "buy", 100, 10, 0, None)]
    assert eng.submit("Y", "buy", 11, 100)[0] == Accepted(5, 2, "Y", "buy", 100, 11, 0, None)
    assert eng.submit("X", "sell", 10, order_type="market")[1].qty == 10  # a trade
    eng.verify()


def test_a_new_limit_orders_notional_is_held_to_max_notional(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.set_order_limits("X", max_notional=1000)
    assert eng.submit("X", "buy", 11, 91) == [rejected(2, NOTIONAL)]  # 1001
    assert eng.submit("X", "buy", 10, 100)[0].order_id == 1  # 1000: at the limit
    assert eng.submit("X", "buy", 11, 90)[0].order_id == 2  # 990
    # A market order's notional is not known: only its qty is limited.
    assert eng.submit("X", "sell", 50, order_type="market") == [
        Accepted(5, 3, "X", "sell", None, 50, 0, None),
        Trade(5, 1, "X", 100, 10, 1, 3, 0, 0, "sell", 0, 40),
        Trade(5, 2, "X", 90, 11, 2, 3, 0, 0, "sell", 0, 29),
        Cancelled(5, 3, 29, CancelReason.MARKET_REMAINDER),
    ]
    eng.verify()


def test_a_notional_past_int64_is_over_any_notional_limit(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.set_order_limits("X", max_qty=MAX, max_notional=MAX)
    assert eng.submit("X", "buy", 2**62, 2) == [rejected(2, NOTIONAL)]  # 2**63
    assert eng.submit("X", "buy", MAX, 1)[0].qty == MAX
    assert eng.submit("X", "sell", MAX, order_type="market")[0].qty == MAX


def test_max_qty_is_checked_before_max_notional(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.set_order_limits("X", max_qty=5, max_notional=100)
    assert eng.submit("X", "buy", 6, 100) == [rejected(2, QTY)]
    assert eng.submit("X", "buy", 5, 100) == [rejected(3, NOTIONAL)]


def test_limits_come_after_the_orders_own_checks(engine_cls: Any) -> None:
    eng = make(engine_cls, tick_size=5, lot_size=2, price_band=(50, 150))
    eng.set_order_limits("X", max_qty=4, max_notional=100)
    assert reason(eng.submit("X", "buy", 7, 100)) is RejectReason.OFF_LOT
    assert reason(eng.submit("X", "buy", 6, 0)) is RejectReason.BAD_PRICE
    assert reason(eng.submit("X", "buy", 6, 101)) is RejectReason.OFF_TICK
    assert reason(eng.submit("X", "buy", 6, 200)) is RejectReason.OUTSIDE_BAND
    assert reason(eng.submit("Z", "buy", 6, 100)) is RejectReason.UNKNOWN_INSTRUMENT
    eng.halt("X")
    assert reason(eng.submit("X", "buy", 6, 100)) is RejectReason.HALTED


def test_limits_come_before_duplicate_and_post_only_checks(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, client_order_id="a")
    eng.set_order_limits("X", max_qty=5, max_notional=400)
    assert eng.submit("X", "buy", 6, 99, client_order_id="a") == [rejected(3, QTY, coid="a")]
    assert eng.submit("X", "buy", 5, 100, post_only=True) == [rejected(4, NOTIONAL)]
    assert reason(eng.submit("X", "buy", 4, 100, post_only=True)) is RejectReason.POST_ONLY_WOULD_CROSS
    assert reason(eng.submit("X", "sell", 4, 99, client_order_id="a")) is RejectReason.DUPLICATE_CLIENT_ORDER_ID


# Modifies of an order the limits came down under


@pytest.fixture
def over(engine_cls: Any) -> Any:
    """Order 1: buy 10 at 100, resting; then limits of qty 4, notional 300."""
    eng = make(engine_cls)
    eng.submit("X", "buy", 10, 100)
    eng.set_order_limits("X", max_qty=4, max_notional=300)
    return eng


def test_orders_resting_over_the_limits_stay(over: Any) -> None:
    assert over.order(1).open_qty == 10
    assert over.submit("X", "sell", 3, 100)[1].qty == 3  # and trade
    over.verify()


def test_a_reduction_in_place_always_goes(over: Any) -> None:
    assert over.modify(1, 8) == [Modified(3, 1, 100, 8, True)]  # still over both
    assert over.modify(1, 5, 100) == [Modified(4, 1, 100, 5, True)]  # the price given, unchanged
    assert over.modify(1, 5) == [Modified(5, 1, 100, 5, True)]  # the same qty
    assert over.order(1).open_qty == 5


def test_a_modify_to_qty_0_cancels_over_the_limits(over: Any) -> None:
    assert over.modify(1, 0) == [Cancelled(3, 1, 10, CancelReason.USER)]


@pytest.mark.parametrize(
    ("qty", "price", "expected"),
    [
        pytest.param(11, None, QTY, id="more qty, the price kept"),
        pytest.param(None, 99, QTY, id="another price, the qty kept"),
        pytest.param(4, 99, NOTIONAL, id="both, over the notional"),
        pytest.param(5, 60, QTY, id="both, over the qty"),
    ],
)
def test_a_modify_that_moves_or_grows_is_held_to_the_limits(
    over: Any, qty: int | None, price: int | None, expected: RejectReason
) -> None:
    assert over.modify(1, qty, price) == [rejected(3, expected, order_id=1)]
    assert over.order(1).open_qty == 10 and over.order(1).price == 100
    over.verify()


def test_a_modify_that_moves_within_the_limits_goes(over: Any) -> None:
    assert over.modify(1, 4, 75) == [Modified(3, 1, 75, 4, False)]  # 300: at the limit
    assert over.modify(1, 3) == [Modified(4, 1, 75, 3, True)]
    assert over.modify(1, 4) == [Modified(5, 1, 75, 4, False)]
    assert over.modify(1, price=76) == [rejected(6, NOTIONAL, order_id=1)]


def test_a_modify_growing_at_its_price_is_held_to_max_notional(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 2, 100)
    eng.set_order_limits("X", max_notional=300)
    assert eng.modify(1, 3) == [Modified(3, 1, 100, 3, False)]  # 300
    assert eng.modify(1, 4) == [rejected(4, NOTIONAL, order_id=1)]  # 400
    assert eng.order(1).open_qty == 3


def test_a_modify_is_held_to_the_limits_before_post_only(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 4, 90, post_only=True)
    eng.submit("X", "sell", 1, 100)
    eng.set_order_limits("X", max_qty=4, max_notional=360)
    assert eng.modify(1, price=100) == [rejected(4, NOTIONAL, order_id=1)]
    assert reason(eng.modify(1, 3, 100)) is RejectReason.POST_ONLY_WOULD_CROSS
    eng.halt("X")
    assert reason(eng.modify(1, 5)) is RejectReason.HALTED


def test_a_modify_is_checked_for_lot_and_tick_before_the_limits(engine_cls: Any) -> None:
    eng = make(engine_cls, tick_size=5, lot_size=2)
    eng.submit("X", "buy", 10, 100)
    eng.set_order_limits("X", max_qty=4)
    assert reason(eng.modify(1, 11)) is RejectReason.OFF_LOT
    assert reason(eng.modify(1, 4, 101)) is RejectReason.OFF_TICK
    assert reason(eng.modify(1, 12)) is QTY


# The batch path (Engine only)


def test_the_batch_path_sets_limits_and_rejects_negative_ones() -> None:
    eng = make(Engine)
    x, y = eng.instrument_id("X"), eng.instrument_id("Y")
    cmds = [
        pack_set_order_limits(x, 5, 1000),
        pack_new_order(x, "buy", 6, 100),
        pack_new_order(x, "buy", 5, 201),
        pack_set_order_limits(y, max_notional=50, ts=7),
        pack_set_order_limits(x, -1, 0),
        pack_set_order_limits(x, 0, -1),
        pack_set_order_limits(9, 1, 1),
        pack_new_order(x, "buy", 5, 200),
        pack_modify(1, qty=6),
        pack_cancel(1),
    ]
    result = eng.process_batch(b"".join(cmds))
    assert eng.decode_events(result.events) == [
        OrderLimitsSet(1, "X", 5, 1000),
        rejected(2, QTY),
        rejected(3, NOTIONAL),
        OrderLimitsSet(4, "Y", 0, 50),
        rejected(5, RejectReason.BAD_ORDER_LIMITS),
        rejected(6, RejectReason.BAD_ORDER_LIMITS),
        rejected(7, RejectReason.UNKNOWN_INSTRUMENT),
        Accepted(8, 1, "X", "buy", 200, 5, 0, None),
        rejected(9, QTY, order_id=1),
        Cancelled(10, 1, 5, CancelReason.USER),
    ]
    assert (result.commands, result.rejected) == (10, 6)
    # A rejected setting changes nothing; 0 in a packed command is none.
    assert eng.order_limits("X") == OrderLimits(5, 1000)
    assert eng.order_limits("Y") == OrderLimits(0, 50)
    (cleared,) = eng.decode_events(eng.process_batch(pack_set_order_limits(x)).events)
    assert cleared == OrderLimitsSet(11, "X", 0, 0) and eng.order_limits("X") == OrderLimits(0, 0)
    eng.verify()


def test_the_batch_path_gives_the_events_of_the_call() -> None:
    called, batched = make(Engine), make(Engine)
    events = called.set_order_limits("Y", max_qty=3, max_notional=MAX)
    events += called.submit("Y", "sell", 4, 10)
    raw = batched.process_batch(pack_set_order_limits(1, 3, MAX) + pack_new_order(1, "sell", 4, 10)).events
    assert batched.decode_events(raw) == events == [OrderLimitsSet(1, "Y", 3, MAX), rejected(2, QTY)]
    assert called.state_hash() == batched.state_hash()


def test_pack_set_order_limits_checks_its_arguments() -> None:
    with pytest.raises(InvalidArgumentType):
        pack_set_order_limits(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        pack_set_order_limits(0, max_notional=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        pack_set_order_limits(-1, 1)
    with pytest.raises(InvalidArgument):
        pack_set_order_limits(0, 2**63)


def test_the_state_hash_covers_the_limits() -> None:
    a, b = make(Engine), make(Engine)
    a.set_order_limits("X", max_qty=5)
    b.set_order_limits("X", max_notional=5)
    assert a.state_hash() != b.state_hash()
    a.set_order_limits("X", max_notional=5)
    b.set_order_limits("X", max_notional=5)
    assert a.state_hash() == b.state_hash()

"""One test per rule of docs/semantics.md, run against every engine.

Each test builds the exact events it expects and compares whole lists, then
checks the book or order state the rule leaves behind and calls ``verify()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pyengine.enums import (
    REJECT_MESSAGES,
    CancelReason,
    RejectReason,
    SelfTradePrevention,
    Side,
)
from pyengine.events import (
    Accepted,
    BookView,
    Cancelled,
    Level,
    Modified,
    OrderState,
    Rejected,
    Trade,
)

MAX = 2**63 - 1
BUY, SELL = Side.BUY, Side.SELL


# Helpers: build an engine and the expected events


def make(engine_cls: Any, symbol: str = "X", **spec: Any) -> Any:
    engine = engine_cls()
    engine.add_instrument(symbol, **spec)
    return engine


def accepted(
    seq: int, order_id: int, side: Side, price: int | None, qty: int, *,
    account: int = 0, coid: str | None = None, symbol: str = "X",
) -> Accepted:
    return Accepted(seq, order_id, symbol, side, price, qty, account, coid)


def rejected(
    seq: int, reason: RejectReason, *, coid: str | None = None, order_id: int | None = None
) -> Rejected:
    return Rejected(seq, reason, REJECT_MESSAGES[reason], coid, order_id)


def trade(
    seq: int, trade_id: int, price: int, qty: int, *, maker: int, taker: int, side: Side,
    maker_leaves: int, taker_leaves: int, maker_account: int = 0, taker_account: int = 0,
    symbol: str = "X",
) -> Trade:
    return Trade(
        seq, trade_id, symbol, price, qty, maker, taker, maker_account, taker_account,
        side, maker_leaves, taker_leaves,
    )


def cancelled(seq: int, order_id: int, leaves: int, reason: CancelReason) -> Cancelled:
    return Cancelled(seq, order_id, leaves, reason)


def modified(seq: int, order_id: int, price: int, qty: int, kept: bool) -> Modified:
    return Modified(seq, order_id, price, qty, kept)


def book(
    engine: Any, bids: list[tuple[int, int, int]], asks: list[tuple[int, int, int]]
) -> None:
    """Assert the whole book of instrument X (depth 100)."""
    expected = BookView("X", [Level(*lvl) for lvl in bids], [Level(*lvl) for lvl in asks])
    assert engine.book("X", 100) == expected


# Instruments


def test_add_instrument_numbers_from_zero_and_takes_no_seq(engine_cls: Any) -> None:
    eng = engine_cls()
    assert eng.add_instrument("X") == 0
    assert eng.add_instrument("Y", tick_size=5, lot_size=10) == 1
    assert eng.add_instrument("Z" * 15, price_band=(1, 1), market_protection=0) == 2
    assert eng.submit("Y", "buy", 10, 5) == [accepted(1, 1, BUY, 5, 10, symbol="Y")]
    eng.verify()


@pytest.mark.parametrize(
    ("symbol", "kwargs", "error"),
    [
        ("X", {}, ValueError),  # duplicate
        ("", {}, ValueError),
        ("A" * 16, {}, ValueError),
        ("ÄB", {}, ValueError),
        ("A\n", {}, ValueError),
        (5, {}, TypeError),
        ("N", {"tick_size": 0}, ValueError),
        ("N", {"lot_size": -1}, ValueError),
        ("N", {"tick_size": 1.5}, TypeError),
        ("N", {"lot_size": True}, TypeError),
        ("N", {"price_band": (0, 5)}, ValueError),
        ("N", {"price_band": (10, 5)}, ValueError),
        ("N", {"market_protection": -1}, ValueError),
    ],
)
def test_add_instrument_validation_raises(
    engine_cls: Any, symbol: Any, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    eng = make(engine_cls)
    with pytest.raises(error):
        eng.add_instrument(symbol, **kwargs)
    assert eng.add_instrument("OK") == 1
    eng.verify()


def test_instruments_have_separate_books_and_shared_ids(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.add_instrument("Y")
    assert eng.submit("X", "sell", 5, 100, account=1) == [
        accepted(1, 1, SELL, 100, 5, account=1)
    ]
    assert eng.submit("Y", "buy", 5, 100, account=2) == [
        accepted(2, 2, BUY, 100, 5, account=2, symbol="Y")
    ]
    assert eng.submit("Y", "sell", 2, 100, account=3) == [
        accepted(3, 3, SELL, 100, 2, account=3, symbol="Y"),
        trade(3, 1, 100, 2, maker=2, taker=3, side=SELL, maker_leaves=3, taker_leaves=0,
              maker_account=2, taker_account=3, symbol="Y"),
    ]
    book(eng, [], [(100, 5, 1)])
    assert eng.book("Y", 10) == BookView("Y", [Level(100, 3, 1)], [])
    eng.verify()


# Sequence numbers and ids


def test_seq_and_ids_numbering(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", "sell", 5, 100, account=1) == [accepted(1, 1, SELL, 100, 5, account=1)]
    assert eng.submit("X", "sell", 0, 100) == [rejected(2, RejectReason.BAD_QTY)]
    assert eng.cancel(7) == [rejected(3, RejectReason.UNKNOWN_ORDER, order_id=7)]
    assert eng.submit("X", "sell", 5, 101, account=1) == [accepted(4, 2, SELL, 101, 5, account=1)]
    assert eng.submit("X", "buy", 10, 101, account=2) == [
        accepted(5, 3, BUY, 101, 10, account=2),
        trade(5, 1, 100, 5, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=5,
              maker_account=1, taker_account=2),
        trade(5, 2, 101, 5, maker=2, taker=3, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    assert eng.submit("X", "sell", 1, 90, tif="ioc") == [
        accepted(6, 4, SELL, 90, 1),
        cancelled(6, 4, 1, CancelReason.IOC),
    ]
    assert eng.submit("X", "buy", 1, 90) == [accepted(7, 5, BUY, 90, 1)]
    assert eng.submit("X", "sell", 1, 90) == [
        accepted(8, 6, SELL, 90, 1),
        trade(8, 3, 90, 1, maker=5, taker=6, side=SELL, maker_leaves=0, taker_leaves=0),
    ]
    eng.verify()


def test_events_carry_enum_members(engine_cls: Any) -> None:
    eng = make(engine_cls)
    events = [
        *eng.submit("X", "sell", 5, 100, account=1),
        *eng.submit("X", "buy", 6, 100, account=2, tif="ioc"),
        *eng.submit("X", "buy", 0, 100),
    ]
    assert [type(e) for e in events] == [Accepted, Accepted, Trade, Cancelled, Rejected]
    assert type(events[0].side) is Side and type(events[1].side) is Side
    assert type(events[2].aggressor_side) is Side
    assert type(events[3].reason) is CancelReason
    assert type(events[4].reason) is RejectReason
    eng.verify()


# New order validation


@pytest.mark.parametrize(
    ("symbol", "qty", "price", "reason"),
    [
        ("Y", 10, 100, RejectReason.UNKNOWN_INSTRUMENT),
        ("", 10, 100, RejectReason.UNKNOWN_INSTRUMENT),
        ("X", 0, 100, RejectReason.BAD_QTY),
        ("X", -10, 100, RejectReason.BAD_QTY),
        ("X", 15, 100, RejectReason.OFF_LOT),
        ("X", 10, 0, RejectReason.BAD_PRICE),
        ("X", 10, -5, RejectReason.BAD_PRICE),
        ("X", 10, 101, RejectReason.OFF_TICK),
        ("X", 10, 45, RejectReason.OUTSIDE_BAND),
        ("X", 10, 155, RejectReason.OUTSIDE_BAND),
    ],
)
def test_new_order_validation_rejects(
    engine_cls: Any, symbol: str, qty: int, price: int, reason: RejectReason
) -> None:
    eng = make(engine_cls, tick_size=5, lot_size=10, price_band=(50, 150))
    assert eng.submit(symbol, "buy", qty, price, client_order_id="k") == [
        rejected(1, reason, coid="k")
    ]
    assert eng.submit("X", "buy", 10, 50) == [accepted(2, 1, BUY, 50, 10)]
    assert eng.submit("X", "sell", 10, 150) == [accepted(3, 2, SELL, 150, 10)]
    book(eng, [(50, 10, 1)], [(150, 10, 1)])
    eng.verify()


def test_validation_order(engine_cls: Any) -> None:
    """With several checks failing, the first in the documented order wins."""
    eng = make(engine_cls, tick_size=5, lot_size=10, price_band=(50, 150))
    eng.submit("X", "sell", 10, 100, account=1, client_order_id="dup")
    cases: list[tuple[str, int, int, str | None, bool, RejectReason]] = [
        ("Y", 0, 100, None, False, RejectReason.UNKNOWN_INSTRUMENT),
        ("X", -3, 0, None, False, RejectReason.BAD_QTY),
        ("X", 3, 0, None, False, RejectReason.OFF_LOT),
        ("X", 10, -1, None, False, RejectReason.BAD_PRICE),
        ("X", 10, 151, "dup", False, RejectReason.OFF_TICK),
        ("X", 10, 160, "dup", False, RejectReason.OUTSIDE_BAND),
        ("X", 10, 100, "dup", True, RejectReason.DUPLICATE_CLIENT_ORDER_ID),
        ("X", 10, 100, None, True, RejectReason.POST_ONLY_WOULD_CROSS),
    ]
    for seq, (symbol, qty, price, coid, post_only, reason) in enumerate(cases, start=2):
        events = eng.submit(symbol, "buy", qty, price, account=1, client_order_id=coid,
                            post_only=post_only)
        assert events == [rejected(seq, reason, coid=coid)]
    book(eng, [], [(100, 10, 1)])
    eng.verify()


def test_rejected_new_order_changes_nothing(engine_cls: Any) -> None:
    eng = make(engine_cls, lot_size=10)
    eng.submit("X", "sell", 10, 100, account=1)
    assert eng.submit("X", "buy", 15, 100, account=2) == [rejected(2, RejectReason.OFF_LOT)]
    book(eng, [], [(100, 10, 1)])
    assert eng.order(2) is None
    assert eng.submit("X", "buy", 10, 99) == [accepted(3, 2, BUY, 99, 10)]
    eng.verify()


def test_reject_duplicate_client_order_id(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", "buy", 5, 90, account=1, client_order_id="a") == [
        accepted(1, 1, BUY, 90, 5, account=1, coid="a")
    ]
    assert eng.submit("X", "buy", 5, 91, account=1, client_order_id="a", tif="ioc") == [
        rejected(2, RejectReason.DUPLICATE_CLIENT_ORDER_ID, coid="a")
    ]
    assert eng.submit("X", "sell", 5, 95, account=2, client_order_id="a") == [
        accepted(3, 2, SELL, 95, 5, account=2, coid="a")
    ]
    book(eng, [(90, 5, 1)], [(95, 5, 1)])
    eng.verify()


def test_duplicate_client_order_id_is_per_account_across_instruments(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.add_instrument("Y")
    eng.submit("X", "buy", 5, 90, account=1, client_order_id="a")
    assert eng.submit("Y", "buy", 5, 90, account=1, client_order_id="a") == [
        rejected(2, RejectReason.DUPLICATE_CLIENT_ORDER_ID, coid="a")
    ]
    eng.verify()


def test_duplicate_client_order_id_only_among_open_orders(engine_cls: Any) -> None:
    eng = make(engine_cls)
    # An IOC order never rests, so its id is free again at once.
    assert eng.submit("X", "buy", 5, 90, account=1, client_order_id="a", tif="ioc") == [
        accepted(1, 1, BUY, 90, 5, account=1, coid="a"),
        cancelled(1, 1, 5, CancelReason.IOC),
    ]
    # A rejected order does not hold its id.
    assert eng.submit("X", "buy", 0, 90, account=1, client_order_id="a") == [
        rejected(2, RejectReason.BAD_QTY, coid="a")
    ]
    # Resting, then cancelled: free again.
    assert eng.submit("X", "buy", 5, 90, account=1, client_order_id="a") == [
        accepted(3, 2, BUY, 90, 5, account=1, coid="a")
    ]
    assert eng.cancel(2) == [cancelled(4, 2, 5, CancelReason.USER)]
    # Resting, then filled: free again.
    assert eng.submit("X", "buy", 5, 90, account=1, client_order_id="a") == [
        accepted(5, 3, BUY, 90, 5, account=1, coid="a")
    ]
    assert eng.submit("X", "sell", 5, 90, account=2) == [
        accepted(6, 4, SELL, 90, 5, account=2),
        trade(6, 1, 90, 5, maker=3, taker=4, side=SELL, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    assert eng.submit("X", "buy", 5, 90, account=1, client_order_id="a") == [
        accepted(7, 5, BUY, 90, 5, account=1, coid="a")
    ]
    book(eng, [(90, 5, 1)], [])
    eng.verify()


def test_post_only_would_cross_rejected(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "buy", 5, 98, account=1)
    for seq, (side, price) in enumerate([("buy", 100), ("buy", 105), ("sell", 98), ("sell", 90)],
                                        start=3):
        assert eng.submit("X", side, 5, price, account=2, post_only=True,
                          client_order_id="p") == [
            rejected(seq, RejectReason.POST_ONLY_WOULD_CROSS, coid="p")
        ]
    assert eng.submit("X", "buy", 5, 99, account=2, post_only=True) == [
        accepted(7, 3, BUY, 99, 5, account=2)
    ]
    assert eng.submit("X", "sell", 5, 100, account=2, post_only=True) == [
        accepted(8, 4, SELL, 100, 5, account=2)
    ]
    book(eng, [(99, 5, 1), (98, 5, 1)], [(100, 10, 2)])
    eng.verify()


def test_post_only_on_empty_opposite_side_rests(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", "buy", 5, 1000, post_only=True) == [accepted(1, 1, BUY, 1000, 5)]
    book(eng, [(1000, 5, 1)], [])
    eng.verify()


# Matching


def test_accepted_event_is_the_order_as_given(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", "sell", 7, 100, account=4_000_000_000, client_order_id="~ x") == [
        accepted(1, 1, SELL, 100, 7, account=4_000_000_000, coid="~ x")
    ]
    assert eng.submit("X", "buy", 3, order_type="market", tif="ioc", account=9,
                      client_order_id="m") == [
        accepted(2, 2, BUY, None, 3, account=9, coid="m"),
        trade(2, 1, 100, 3, maker=1, taker=2, side=BUY, maker_leaves=4, taker_leaves=0,
              maker_account=4_000_000_000, taker_account=9),
    ]
    eng.verify()


def test_trade_executes_at_maker_price(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    assert eng.submit("X", "buy", 10, 105, account=2) == [
        accepted(2, 2, BUY, 105, 10, account=2),
        trade(2, 1, 100, 10, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    eng.submit("X", "buy", 5, 98, account=1)
    assert eng.submit("X", "sell", 5, 90, account=2) == [
        accepted(4, 4, SELL, 90, 5, account=2),
        trade(4, 2, 98, 5, maker=3, taker=4, side=SELL, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    book(eng, [], [])
    eng.verify()


def test_price_time_priority_oldest_first(engine_cls: Any) -> None:
    eng = make(engine_cls)
    for account in (1, 2, 3):
        eng.submit("X", "sell", 5, 100, account=account)
    assert eng.submit("X", "buy", 12, 100, account=4) == [
        accepted(4, 4, BUY, 100, 12, account=4),
        trade(4, 1, 100, 5, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=1, taker_account=4),
        trade(4, 2, 100, 5, maker=2, taker=4, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=2, taker_account=4),
        trade(4, 3, 100, 2, maker=3, taker=4, side=BUY, maker_leaves=3, taker_leaves=0,
              maker_account=3, taker_account=4),
    ]
    book(eng, [], [(100, 3, 1)])
    assert eng.order(3) == OrderState(3, "X", SELL, 100, 3, 3, None, False,
                                      SelfTradePrevention.NONE)
    eng.verify()


def test_best_price_first_then_rest_at_limit(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 101, account=1)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 102, account=1)
    assert eng.submit("X", "buy", 15, 101, account=2) == [
        accepted(4, 4, BUY, 101, 15, account=2),
        trade(4, 1, 100, 5, maker=2, taker=4, side=BUY, maker_leaves=0, taker_leaves=10,
              maker_account=1, taker_account=2),
        trade(4, 2, 101, 5, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=5,
              maker_account=1, taker_account=2),
    ]
    book(eng, [(101, 5, 1)], [(102, 5, 1)])
    assert eng.order(4) == OrderState(4, "X", BUY, 101, 5, 2, None, False,
                                      SelfTradePrevention.NONE)
    eng.verify()


def test_non_crossing_limit_rests_without_event(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 101, account=1)
    assert eng.submit("X", "buy", 5, 100, account=2) == [accepted(2, 2, BUY, 100, 5, account=2)]
    book(eng, [(100, 5, 1)], [(101, 5, 1)])
    eng.verify()


def test_ioc_remainder_cancelled(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    assert eng.submit("X", "buy", 8, 100, account=2, tif="ioc") == [
        accepted(2, 2, BUY, 100, 8, account=2),
        trade(2, 1, 100, 5, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=3,
              maker_account=1, taker_account=2),
        cancelled(2, 2, 3, CancelReason.IOC),
    ]
    assert eng.submit("X", "sell", 4, 100, tif="ioc") == [
        accepted(3, 3, SELL, 100, 4),
        cancelled(3, 3, 4, CancelReason.IOC),
    ]
    book(eng, [], [])
    eng.verify()


def test_fok_all_or_nothing_no_partial_trades(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 101, account=1)
    assert eng.submit("X", "buy", 11, 101, account=2, tif="fok") == [
        accepted(3, 3, BUY, 101, 11, account=2),
        cancelled(3, 3, 11, CancelReason.FOK),
    ]
    assert eng.submit("X", "buy", 10, 100, account=2, tif="fok") == [
        accepted(4, 4, BUY, 100, 10, account=2),
        cancelled(4, 4, 10, CancelReason.FOK),
    ]
    book(eng, [], [(100, 5, 1), (101, 5, 1)])
    assert eng.submit("X", "buy", 10, 101, account=2, tif="fok") == [
        accepted(5, 5, BUY, 101, 10, account=2),
        trade(5, 1, 100, 5, maker=1, taker=5, side=BUY, maker_leaves=0, taker_leaves=5,
              maker_account=1, taker_account=2),
        trade(5, 2, 101, 5, maker=2, taker=5, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    book(eng, [], [])
    eng.verify()


def test_fok_counts_stp_cancel_oldest_makers_as_nothing(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 100, account=2)
    assert eng.submit("X", "buy", 10, 100, account=1, tif="fok", stp="cancel_oldest") == [
        accepted(3, 3, BUY, 100, 10, account=1),
        cancelled(3, 3, 10, CancelReason.FOK),
    ]
    book(eng, [], [(100, 10, 2)])
    assert eng.submit("X", "buy", 5, 100, account=1, tif="fok", stp="cancel_oldest") == [
        accepted(4, 4, BUY, 100, 5, account=1),
        cancelled(4, 1, 5, CancelReason.STP),
        trade(4, 1, 100, 5, maker=2, taker=4, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=2, taker_account=1),
    ]
    book(eng, [], [])
    eng.verify()


@pytest.mark.parametrize("stp", ["cancel_newest", "cancel_both"])
def test_fok_count_ends_at_same_account_maker(engine_cls: Any, stp: str) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=2)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 100, account=2)
    assert eng.submit("X", "buy", 10, 100, account=1, tif="fok", stp=stp) == [
        accepted(4, 4, BUY, 100, 10, account=1),
        cancelled(4, 4, 10, CancelReason.FOK),
    ]
    book(eng, [], [(100, 15, 3)])
    assert eng.submit("X", "buy", 5, 100, account=1, tif="fok", stp=stp) == [
        accepted(5, 5, BUY, 100, 5, account=1),
        trade(5, 1, 100, 5, maker=1, taker=5, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=2, taker_account=1),
    ]
    book(eng, [], [(100, 10, 2)])
    eng.verify()


def test_fok_stp_none_counts_same_account_makers(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    assert eng.submit("X", "buy", 5, 100, account=1, tif="fok") == [
        accepted(2, 2, BUY, 100, 5, account=1),
        trade(2, 1, 100, 5, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=1),
    ]
    eng.verify()


def test_market_order_never_rests(engine_cls: Any) -> None:
    eng = make(engine_cls, price_band=(90, 110))
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 110, account=1)
    assert eng.submit("X", "buy", 12, order_type="market", tif="ioc", account=2) == [
        accepted(3, 3, BUY, None, 12, account=2),
        trade(3, 1, 100, 5, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=1, taker_account=2),
        trade(3, 2, 110, 5, maker=2, taker=3, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=1, taker_account=2),
        cancelled(3, 3, 2, CancelReason.MARKET_REMAINDER),
    ]
    assert eng.submit("X", "sell", 4, order_type="market", tif="ioc") == [
        accepted(4, 4, SELL, None, 4),
        cancelled(4, 4, 4, CancelReason.MARKET_REMAINDER),
    ]
    book(eng, [], [])
    assert eng.open_orders() == []
    eng.verify()


def test_market_order_tif_defaults_to_ioc(engine_cls: Any) -> None:
    """No tif: a market order is ioc (it never rests), a limit order gtc."""
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    assert eng.submit("X", "buy", 7, order_type="market", account=2) == [
        accepted(2, 2, BUY, None, 7, account=2),
        trade(2, 1, 100, 5, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=1, taker_account=2),
        cancelled(2, 2, 2, CancelReason.MARKET_REMAINDER),
    ]
    assert eng.submit("X", "buy", 3, order_type="market", tif=None) == [
        accepted(3, 3, BUY, None, 3),
        cancelled(3, 3, 3, CancelReason.MARKET_REMAINDER),
    ]
    assert eng.submit("X", "buy", 3, 99, tif=None) == [accepted(4, 4, BUY, 99, 3)]
    book(eng, [(99, 3, 1)], [])
    eng.verify()


def test_market_fok(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", "buy", 1, order_type="market", tif="fok") == [
        accepted(1, 1, BUY, None, 1),
        cancelled(1, 1, 1, CancelReason.FOK),
    ]
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "sell", 5, 200, account=1)
    assert eng.submit("X", "buy", 11, order_type="market", tif="fok", account=2) == [
        accepted(4, 4, BUY, None, 11, account=2),
        cancelled(4, 4, 11, CancelReason.FOK),
    ]
    assert eng.submit("X", "buy", 10, order_type="market", tif="fok", account=2) == [
        accepted(5, 5, BUY, None, 10, account=2),
        trade(5, 1, 100, 5, maker=2, taker=5, side=BUY, maker_leaves=0, taker_leaves=5,
              maker_account=1, taker_account=2),
        trade(5, 2, 200, 5, maker=3, taker=5, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    eng.verify()


def test_market_protection_stops_sweep_with_reason_band(engine_cls: Any) -> None:
    eng = make(engine_cls, market_protection=2)
    for price in (100, 102, 103):
        eng.submit("X", "sell", 3, price, account=1)
    assert eng.submit("X", "buy", 10, order_type="market", tif="ioc", account=2) == [
        accepted(4, 4, BUY, None, 10, account=2),
        trade(4, 1, 100, 3, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=1, taker_account=2),
        trade(4, 2, 102, 3, maker=2, taker=4, side=BUY, maker_leaves=0, taker_leaves=4,
              maker_account=1, taker_account=2),
        cancelled(4, 4, 4, CancelReason.BAND),
    ]
    book(eng, [], [(103, 3, 1)])
    eng.verify()


def test_market_protection_sell_side(engine_cls: Any) -> None:
    eng = make(engine_cls, market_protection=2)
    for price in (100, 98, 97):
        eng.submit("X", "buy", 3, price, account=1)
    assert eng.submit("X", "sell", 10, order_type="market", tif="ioc", account=2) == [
        accepted(4, 4, SELL, None, 10, account=2),
        trade(4, 1, 100, 3, maker=1, taker=4, side=SELL, maker_leaves=0, taker_leaves=7,
              maker_account=1, taker_account=2),
        trade(4, 2, 98, 3, maker=2, taker=4, side=SELL, maker_leaves=0, taker_leaves=4,
              maker_account=1, taker_account=2),
        cancelled(4, 4, 4, CancelReason.BAND),
    ]
    book(eng, [(97, 3, 1)], [])
    eng.verify()


def test_market_protection_zero_allows_only_the_best_price(engine_cls: Any) -> None:
    eng = make(engine_cls, market_protection=0)
    eng.submit("X", "sell", 3, 100, account=1)
    eng.submit("X", "sell", 3, 100, account=1)
    eng.submit("X", "sell", 3, 101, account=1)
    assert eng.submit("X", "buy", 9, order_type="market", tif="ioc", account=2) == [
        accepted(4, 4, BUY, None, 9, account=2),
        trade(4, 1, 100, 3, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=6,
              maker_account=1, taker_account=2),
        trade(4, 2, 100, 3, maker=2, taker=4, side=BUY, maker_leaves=0, taker_leaves=3,
              maker_account=1, taker_account=2),
        cancelled(4, 4, 3, CancelReason.BAND),
    ]
    eng.verify()


def test_market_protection_exhausted_side_is_market_remainder(engine_cls: Any) -> None:
    eng = make(engine_cls, market_protection=10)
    assert eng.submit("X", "buy", 5, order_type="market", tif="ioc") == [
        accepted(1, 1, BUY, None, 5),
        cancelled(1, 1, 5, CancelReason.MARKET_REMAINDER),
    ]
    eng.submit("X", "sell", 3, 100, account=1)
    assert eng.submit("X", "buy", 5, order_type="market", tif="ioc", account=2) == [
        accepted(3, 3, BUY, None, 5, account=2),
        trade(3, 1, 100, 3, maker=2, taker=3, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=1, taker_account=2),
        cancelled(3, 3, 2, CancelReason.MARKET_REMAINDER),
    ]
    eng.verify()


def test_market_protection_limits_the_fok_check(engine_cls: Any) -> None:
    eng = make(engine_cls, market_protection=2)
    eng.submit("X", "sell", 3, 100, account=1)
    eng.submit("X", "sell", 3, 103, account=1)
    assert eng.submit("X", "buy", 6, order_type="market", tif="fok", account=2) == [
        accepted(3, 3, BUY, None, 6, account=2),
        cancelled(3, 3, 6, CancelReason.FOK),
    ]
    book(eng, [], [(100, 3, 1), (103, 3, 1)])
    eng.verify()


# Self-trade prevention


def _stp_book(engine_cls: Any) -> Any:
    """Asks at 100: order 1 (account 2), order 2 (account 1), order 3 (account 2)."""
    eng = make(engine_cls)
    for account in (2, 1, 2):
        eng.submit("X", "sell", 3, 100, account=account)
    return eng


def test_stp_cancel_newest(engine_cls: Any) -> None:
    eng = _stp_book(engine_cls)
    assert eng.submit("X", "buy", 10, 100, account=1, stp="cancel_newest") == [
        accepted(4, 4, BUY, 100, 10, account=1),
        trade(4, 1, 100, 3, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=2, taker_account=1),
        cancelled(4, 4, 7, CancelReason.STP),
    ]
    book(eng, [], [(100, 6, 2)])
    assert eng.order(2) is not None and eng.order(4) is None
    eng.verify()


def test_stp_cancel_oldest(engine_cls: Any) -> None:
    eng = _stp_book(engine_cls)
    assert eng.submit("X", "buy", 10, 100, account=1, stp="cancel_oldest") == [
        accepted(4, 4, BUY, 100, 10, account=1),
        trade(4, 1, 100, 3, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=2, taker_account=1),
        cancelled(4, 2, 3, CancelReason.STP),
        trade(4, 2, 100, 3, maker=3, taker=4, side=BUY, maker_leaves=0, taker_leaves=4,
              maker_account=2, taker_account=1),
    ]
    book(eng, [(100, 4, 1)], [])
    eng.verify()


def test_stp_cancel_both(engine_cls: Any) -> None:
    eng = _stp_book(engine_cls)
    assert eng.submit("X", "buy", 10, 100, account=1, stp="cancel_both") == [
        accepted(4, 4, BUY, 100, 10, account=1),
        trade(4, 1, 100, 3, maker=1, taker=4, side=BUY, maker_leaves=0, taker_leaves=7,
              maker_account=2, taker_account=1),
        cancelled(4, 2, 3, CancelReason.STP),
        cancelled(4, 4, 7, CancelReason.STP),
    ]
    book(eng, [], [(100, 3, 1)])
    eng.verify()


def test_stp_cancel_replaces_the_ioc_and_market_cancel(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 3, 100, account=1)
    assert eng.submit("X", "buy", 5, 100, account=1, tif="ioc", stp="cancel_newest") == [
        accepted(2, 2, BUY, 100, 5, account=1),
        cancelled(2, 2, 5, CancelReason.STP),
    ]
    assert eng.submit("X", "buy", 5, order_type="market", tif="ioc", account=1,
                      stp="cancel_both") == [
        accepted(3, 3, BUY, None, 5, account=1),
        cancelled(3, 1, 3, CancelReason.STP),
        cancelled(3, 3, 5, CancelReason.STP),
    ]
    book(eng, [], [])
    eng.verify()


def test_stp_none_allows_self_trade(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 3, 100, account=1, stp="cancel_both")
    assert eng.submit("X", "buy", 3, 100, account=1) == [
        accepted(2, 2, BUY, 100, 3, account=1),
        trade(2, 1, 100, 3, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=1),
    ]
    eng.verify()


def test_stp_ignores_other_accounts(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 3, 100, account=1)
    assert eng.submit("X", "buy", 3, 100, account=2, stp="cancel_both") == [
        accepted(2, 2, BUY, 100, 3, account=2),
        trade(2, 1, 100, 3, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    eng.verify()


# Level full


def test_level_full(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", MAX - 10, 100, account=1)
    assert eng.submit("X", "buy", 10, 100, account=2) == [accepted(2, 2, BUY, 100, 10, account=2)]
    book(eng, [(100, MAX, 2)], [])
    assert eng.submit("X", "buy", 1, 100, account=3) == [
        accepted(3, 3, BUY, 100, 1, account=3),
        cancelled(3, 3, 1, CancelReason.LEVEL_FULL),
    ]
    assert eng.submit("X", "buy", MAX, 99, account=3) == [accepted(4, 4, BUY, 99, MAX, account=3)]
    book(eng, [(100, MAX, 2), (99, MAX, 1)], [])
    assert eng.order(3) is None
    eng.verify()


# Cancel


def test_cancel_returns_open_qty(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    eng.submit("X", "buy", 4, 100, account=2)
    assert eng.cancel(1, account=1) == [cancelled(3, 1, 6, CancelReason.USER)]
    book(eng, [], [])
    assert eng.order(1) is None
    eng.verify()


def test_cancel_unknown_rejected(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    assert eng.cancel(99) == [rejected(2, RejectReason.UNKNOWN_ORDER, order_id=99)]
    assert eng.cancel(2, account=1) == [rejected(3, RejectReason.UNKNOWN_ORDER, order_id=2)]
    assert eng.cancel(client_order_id="zz", account=1) == [
        rejected(4, RejectReason.UNKNOWN_ORDER, coid="zz")
    ]
    book(eng, [], [(100, 10, 1)])
    eng.verify()


def test_cancel_finished_order_rejected(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1)
    eng.submit("X", "buy", 5, 100, account=2)  # fills order 1 and order 2
    eng.submit("X", "buy", 5, 90, tif="ioc")  # order 3: cancelled at once
    eng.submit("X", "buy", 5, 90)  # order 4
    assert eng.cancel(4) == [cancelled(5, 4, 5, CancelReason.USER)]
    for seq, order_id in enumerate([1, 2, 3, 4], start=6):
        assert eng.cancel(order_id) == [rejected(seq, RejectReason.UNKNOWN_ORDER,
                                                 order_id=order_id)]
    eng.verify()


def test_not_owner(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    assert eng.cancel(1, account=2) == [rejected(2, RejectReason.NOT_OWNER, order_id=1)]
    assert eng.modify(1, qty=5, account=2) == [rejected(3, RejectReason.NOT_OWNER, order_id=1)]
    book(eng, [], [(100, 10, 1)])
    assert eng.cancel(1, account=1) == [cancelled(4, 1, 10, CancelReason.USER)]
    eng.verify()


def test_admin_cancel_without_account(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=7)
    eng.submit("X", "sell", 10, 101, account=8)
    assert eng.cancel(1) == [cancelled(3, 1, 10, CancelReason.USER)]
    assert eng.modify(2, qty=5) == [modified(4, 2, 101, 5, True)]
    book(eng, [], [(101, 5, 1)])
    eng.verify()


def test_cancel_by_client_order_id(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1, client_order_id="c1")
    eng.submit("X", "sell", 7, 101, account=2, client_order_id="c1")
    assert eng.cancel(client_order_id="c1", account=2) == [cancelled(3, 2, 7, CancelReason.USER)]
    assert eng.cancel(client_order_id="c1", account=2) == [
        rejected(4, RejectReason.UNKNOWN_ORDER, coid="c1")
    ]
    assert eng.cancel(client_order_id="c1", account=3) == [
        rejected(5, RejectReason.UNKNOWN_ORDER, coid="c1")
    ]
    book(eng, [], [(100, 10, 1)])
    eng.verify()


# Modify


def _two_asks(engine_cls: Any) -> Any:
    """Asks at 100: order 1 (account 1, 10), then order 2 (account 2, 10)."""
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    eng.submit("X", "sell", 10, 100, account=2)
    return eng


def test_modify_qty_down_keeps_priority(engine_cls: Any) -> None:
    eng = _two_asks(engine_cls)
    assert eng.modify(1, qty=4, account=1) == [modified(3, 1, 100, 4, True)]
    assert eng.submit("X", "buy", 6, 100, account=3) == [
        accepted(4, 3, BUY, 100, 6, account=3),
        trade(4, 1, 100, 4, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=1, taker_account=3),
        trade(4, 2, 100, 2, maker=2, taker=3, side=BUY, maker_leaves=8, taker_leaves=0,
              maker_account=2, taker_account=3),
    ]
    book(eng, [], [(100, 8, 1)])
    eng.verify()


def test_modify_same_qty_and_explicit_same_price_keeps_priority(engine_cls: Any) -> None:
    eng = _two_asks(engine_cls)
    assert eng.modify(1, qty=10, price=100, account=1) == [modified(3, 1, 100, 10, True)]
    assert eng.submit("X", "buy", 10, 100, account=3) == [
        accepted(4, 3, BUY, 100, 10, account=3),
        trade(4, 1, 100, 10, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=3),
    ]
    eng.verify()


def test_modify_qty_up_loses_priority(engine_cls: Any) -> None:
    eng = _two_asks(engine_cls)
    assert eng.modify(1, qty=12, account=1) == [modified(3, 1, 100, 12, False)]
    assert eng.submit("X", "buy", 10, 100, account=3) == [
        accepted(4, 3, BUY, 100, 10, account=3),
        trade(4, 1, 100, 10, maker=2, taker=3, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=2, taker_account=3),
    ]
    book(eng, [], [(100, 12, 1)])
    assert eng.order(1) == OrderState(1, "X", SELL, 100, 12, 1, None, False,
                                      SelfTradePrevention.NONE)
    eng.verify()


def test_modify_price_change_loses_priority(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 101, account=1)
    eng.submit("X", "sell", 10, 100, account=2)
    assert eng.modify(2, qty=5, price=101, account=2) == [modified(3, 2, 101, 5, False)]
    book(eng, [], [(101, 15, 2)])
    assert eng.submit("X", "buy", 12, 101, account=3) == [
        accepted(4, 3, BUY, 101, 12, account=3),
        trade(4, 1, 101, 10, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=2,
              maker_account=1, taker_account=3),
        trade(4, 2, 101, 2, maker=2, taker=3, side=BUY, maker_leaves=3, taker_leaves=0,
              maker_account=2, taker_account=3),
    ]
    eng.verify()


def test_modify_price_change_can_trade(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 101, account=1)
    eng.submit("X", "sell", 5, 102, account=1)
    eng.submit("X", "buy", 10, 99, account=2, client_order_id="b")
    assert eng.modify(3, qty=10, price=101, account=2) == [
        modified(4, 3, 101, 10, False),
        trade(4, 1, 101, 5, maker=1, taker=3, side=BUY, maker_leaves=0, taker_leaves=5,
              maker_account=1, taker_account=2),
    ]
    book(eng, [(101, 5, 1)], [(102, 5, 1)])
    assert eng.order(3) == OrderState(3, "X", BUY, 101, 5, 2, "b", False,
                                      SelfTradePrevention.NONE)
    assert eng.modify(3, qty=5, price=102, account=2) == [
        modified(5, 3, 102, 5, False),
        trade(5, 2, 102, 5, maker=2, taker=3, side=BUY, maker_leaves=0, taker_leaves=0,
              maker_account=1, taker_account=2),
    ]
    book(eng, [], [])
    eng.verify()


def test_modify_reprice_uses_the_orders_own_stp(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 10, 99, account=1, stp="cancel_newest")
    eng.submit("X", "buy", 10, 98, account=1, stp="cancel_oldest")
    eng.submit("X", "sell", 5, 101, account=1)
    assert eng.modify(1, qty=10, price=101) == [
        modified(4, 1, 101, 10, False),
        cancelled(4, 1, 10, CancelReason.STP),
    ]
    assert eng.modify(2, qty=10, price=101) == [
        modified(5, 2, 101, 10, False),
        cancelled(5, 3, 5, CancelReason.STP),
    ]
    book(eng, [(101, 10, 1)], [])
    eng.verify()


def test_modify_zero_cancels(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 100, account=1)
    eng.submit("X", "buy", 4, 100, account=2)
    eng.submit("X", "sell", 10, 105, account=1, post_only=True)
    assert eng.modify(1, qty=0, account=1) == [cancelled(4, 1, 6, CancelReason.USER)]
    assert eng.modify(3, qty=0, price=90) == [cancelled(5, 3, 10, CancelReason.USER)]
    book(eng, [], [])
    eng.verify()


def test_post_only_modify_would_cross_rejected_unchanged(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 102, account=1)
    eng.submit("X", "buy", 5, 100, account=2, post_only=True, client_order_id="p")
    eng.submit("X", "buy", 5, 100, account=3)
    assert eng.modify(2, qty=5, price=102, account=2) == [
        rejected(4, RejectReason.POST_ONLY_WOULD_CROSS, order_id=2)
    ]
    assert eng.modify(client_order_id="p", account=2, qty=1, price=103) == [
        rejected(5, RejectReason.POST_ONLY_WOULD_CROSS, coid="p")
    ]
    assert eng.order(2) == OrderState(2, "X", BUY, 100, 5, 2, "p", True,
                                      SelfTradePrevention.NONE)
    assert eng.submit("X", "sell", 5, 100, account=4) == [
        accepted(6, 4, SELL, 100, 5, account=4),
        trade(6, 1, 100, 5, maker=2, taker=4, side=SELL, maker_leaves=0, taker_leaves=0,
              maker_account=2, taker_account=4),
    ]
    book(eng, [(100, 5, 1)], [(102, 5, 1)])
    eng.verify()


def test_post_only_modify_that_does_not_cross(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 102, account=1)
    eng.submit("X", "buy", 5, 100, account=2, post_only=True)
    assert eng.modify(2, qty=8, price=101) == [modified(3, 2, 101, 8, False)]
    assert eng.modify(2, qty=9) == [modified(4, 2, 101, 9, False)]
    assert eng.modify(2, qty=2) == [modified(5, 2, 101, 2, True)]
    book(eng, [(101, 2, 1)], [(102, 5, 1)])
    eng.verify()


@pytest.mark.parametrize(
    ("qty", "price", "reason"),
    [
        (-10, None, RejectReason.BAD_QTY),
        (15, None, RejectReason.OFF_LOT),
        (10, 0, RejectReason.BAD_PRICE),
        (10, -5, RejectReason.BAD_PRICE),
        (10, 101, RejectReason.OFF_TICK),
        (10, 45, RejectReason.OUTSIDE_BAND),
        (10, 155, RejectReason.OUTSIDE_BAND),
    ],
)
def test_modify_validation_rejects(
    engine_cls: Any, qty: int, price: int | None, reason: RejectReason
) -> None:
    eng = make(engine_cls, tick_size=5, lot_size=10, price_band=(50, 150))
    eng.submit("X", "sell", 20, 100, account=1)
    assert eng.modify(1, qty=qty, price=price, account=1) == [rejected(2, reason, order_id=1)]
    assert eng.order(1) == OrderState(1, "X", SELL, 100, 20, 1, None, False,
                                      SelfTradePrevention.NONE)
    eng.verify()


def test_modify_validation_order(engine_cls: Any) -> None:
    """unknown_order, not_owner, bad_qty, off_lot, prices, then qty 0 / in place / post-only."""
    eng = make(engine_cls, tick_size=5, lot_size=10, price_band=(50, 150))
    eng.submit("X", "sell", 20, 100, account=1)
    eng.submit("X", "buy", 20, 90, account=2, post_only=True)
    cases = [
        ({"order_id": 9, "qty": -1, "price": 1}, RejectReason.UNKNOWN_ORDER),
        ({"order_id": 1, "qty": -1, "price": 1, "account": 2}, RejectReason.NOT_OWNER),
        ({"order_id": 1, "qty": -15, "price": 1}, RejectReason.BAD_QTY),
        ({"order_id": 1, "qty": 15, "price": 1}, RejectReason.OFF_LOT),
        ({"order_id": 1, "qty": 0, "price": 0}, RejectReason.BAD_PRICE),
        ({"order_id": 1, "qty": 0, "price": 1}, RejectReason.OFF_TICK),
        ({"order_id": 1, "qty": 0, "price": 200}, RejectReason.OUTSIDE_BAND),
    ]
    for seq, (args, reason) in enumerate(cases, start=3):
        assert eng.modify(**args) == [rejected(seq, reason, order_id=args["order_id"])]
    book(eng, [(90, 20, 1)], [(100, 20, 1)])
    # For a post-only order, qty 0 and in-place changes come before the cross check.
    assert eng.modify(2, qty=10, price=90) == [modified(10, 2, 90, 10, True)]
    assert eng.modify(2, qty=0, price=100) == [cancelled(11, 2, 10, CancelReason.USER)]
    eng.verify()


def test_modify_unknown_or_finished_rejected(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1, client_order_id="s")
    eng.submit("X", "buy", 5, 100, account=2)
    assert eng.modify(1, qty=5) == [rejected(3, RejectReason.UNKNOWN_ORDER, order_id=1)]
    assert eng.modify(2, qty=5, account=2) == [rejected(4, RejectReason.UNKNOWN_ORDER, order_id=2)]
    assert eng.modify(client_order_id="s", account=1, qty=5) == [
        rejected(5, RejectReason.UNKNOWN_ORDER, coid="s")
    ]
    eng.verify()


def test_modify_by_client_order_id(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 5, 100, account=1, client_order_id="s")
    eng.submit("X", "sell", 5, 100, account=2, client_order_id="s")
    assert eng.modify(client_order_id="s", account=2, qty=3) == [modified(3, 2, 100, 3, True)]
    book(eng, [], [(100, 8, 2)])
    assert eng.order(2) == OrderState(2, "X", SELL, 100, 3, 2, "s", False,
                                      SelfTradePrevention.NONE)
    eng.verify()


def test_modify_qty_and_price_are_positional(engine_cls: Any) -> None:
    eng = _two_asks(engine_cls)
    assert eng.modify(1, 4, account=1) == [modified(3, 1, 100, 4, True)]
    assert eng.modify(2, 6, 105, account=2) == [modified(4, 2, 105, 6, False)]
    book(eng, [], [(100, 4, 1), (105, 6, 1)])
    eng.verify()


def _price_only_then_sweep(engine_cls: Any, qty: int | None) -> list[list[Any]]:
    """Order 2 partly filled (7 of 10 open), moved to 101 with ``qty``, then
    a buy sweeping 101."""
    eng = make(engine_cls)
    eng.submit("X", "sell", 10, 101, account=1)
    eng.submit("X", "sell", 10, 100, account=2, client_order_id="s")
    eng.submit("X", "buy", 3, 100, account=3)
    moved = eng.modify(2, qty, price=101, account=2)
    levels = eng.book("X", 100)
    swept = eng.submit("X", "buy", 12, 101, account=3)
    eng.verify()
    return [moved, [levels], swept]


def test_modify_price_only_keeps_the_open_qty_and_loses_priority(engine_cls: Any) -> None:
    """No qty: the open qty when the modify runs, exactly as if it were given."""
    outcome = _price_only_then_sweep(engine_cls, None)
    assert outcome == _price_only_then_sweep(engine_cls, 7)
    moved, _, swept = outcome
    assert moved == [modified(4, 2, 101, 7, False)]
    assert [(ev.maker_order_id, ev.qty) for ev in swept if type(ev) is Trade] == [(1, 10), (2, 2)]


def test_modify_price_only_by_client_order_id_can_trade(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "sell", 4, 101, account=1)
    eng.submit("X", "buy", 10, 99, account=2, client_order_id="b")
    eng.submit("X", "sell", 3, 99, account=1)
    assert eng.modify(client_order_id="b", account=2, price=101) == [
        modified(4, 2, 101, 7, False),
        trade(4, 2, 101, 4, maker=1, taker=2, side=BUY, maker_leaves=0, taker_leaves=3,
              maker_account=1, taker_account=2),
    ]
    book(eng, [(101, 3, 1)], [])
    eng.verify()


def test_modify_level_full(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", MAX - 5, 100, account=1)
    eng.submit("X", "buy", 10, 99, account=2)
    eng.submit("X", "buy", 5, 100, account=3)
    assert eng.modify(2, qty=10, price=100) == [
        modified(4, 2, 100, 10, False),
        cancelled(4, 2, 10, CancelReason.LEVEL_FULL),
    ]
    assert eng.modify(3, qty=6) == [
        modified(5, 3, 100, 6, False),
        cancelled(5, 3, 6, CancelReason.LEVEL_FULL),
    ]
    assert eng.modify(1, qty=MAX) == [modified(6, 1, 100, MAX, False)]
    book(eng, [(100, MAX, 1)], [])
    eng.verify()


# Queries


def test_book_depth_and_order(engine_cls: Any) -> None:
    eng = make(engine_cls)
    for side, qty, price in [
        ("buy", 1, 98), ("buy", 2, 99), ("buy", 3, 97), ("buy", 4, 98),
        ("sell", 5, 103), ("sell", 6, 101), ("sell", 7, 102), ("sell", 8, 103),
    ]:
        eng.submit("X", side, qty, price)
    assert eng.book("X", 2) == BookView(
        "X", [Level(99, 2, 1), Level(98, 5, 2)], [Level(101, 6, 1), Level(102, 7, 1)]
    )
    assert eng.book("X") == BookView(
        "X",
        [Level(99, 2, 1), Level(98, 5, 2), Level(97, 3, 1)],
        [Level(101, 6, 1), Level(102, 7, 1), Level(103, 13, 2)],
    )
    assert eng.book("X", 0) == BookView("X", [], [])
    eng.verify()


def test_book_unknown_symbol_raises(engine_cls: Any) -> None:
    eng = make(engine_cls)
    with pytest.raises(ValueError):
        eng.book("Y")
    eng.verify()


def test_order_and_open_orders(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 5, 99, account=3, client_order_id="q", post_only=True,
               stp="cancel_both")
    eng.submit("X", "sell", 6, 101, account=4, stp="cancel_oldest")
    eng.submit("X", "sell", 1, 99, account=5, tif="ioc")
    first = OrderState(1, "X", BUY, 99, 4, 3, "q", True, SelfTradePrevention.CANCEL_BOTH)
    second = OrderState(2, "X", SELL, 101, 6, 4, None, False, SelfTradePrevention.CANCEL_OLDEST)
    assert eng.order(1) == first
    assert eng.order(2) == second
    assert eng.order(3) is None
    assert eng.order(42) is None
    assert sorted(eng.open_orders()) == [first, second]
    assert type(eng.order(2).side) is Side
    assert type(eng.order(2).stp) is SelfTradePrevention
    eng.verify()


def test_order_by_client_order_id(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 5, 99, account=3, client_order_id="q")
    eng.submit("X", "buy", 6, 98, account=4, client_order_id="q")
    mine = OrderState(1, "X", BUY, 99, 5, 3, "q", False, SelfTradePrevention.NONE)
    assert eng.order(client_order_id="q", account=3) == mine
    assert eng.order(client_order_id="q", account=4).order_id == 2
    assert eng.order(client_order_id="q", account=5) is None
    assert eng.order(client_order_id="r", account=3) is None
    assert eng.order(1, account=3) == mine
    assert eng.order(1, account=4) is None  # another account's order
    eng.submit("X", "sell", 2, 99, account=5)
    assert eng.order(client_order_id="q", account=3).open_qty == 3
    eng.cancel(client_order_id="q", account=3)
    assert eng.order(client_order_id="q", account=3) is None
    eng.verify()


def test_order_state_names_the_open_quantity(engine_cls: Any) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 5, 99, account=3)
    eng.submit("X", "sell", 2, 99, account=4)
    state = eng.order(1)
    assert state.open_qty == 3
    assert "qty" not in OrderState._fields
    eng.verify()


# Python argument errors


_ARGUMENT_ERRORS: list[tuple[str, Callable[[Any], object], type[Exception]]] = [
    ("market gtc", lambda e: e.submit("X", "buy", 1, order_type="market", tif="gtc"), ValueError),
    ("market with price",
     lambda e: e.submit("X", "buy", 1, 100, order_type="market", tif="ioc"), ValueError),
    ("limit without price", lambda e: e.submit("X", "buy", 1), ValueError),
    ("post-only market",
     lambda e: e.submit("X", "buy", 1, order_type="market", tif="ioc", post_only=True),
     ValueError),
    ("post-only ioc", lambda e: e.submit("X", "buy", 1, 100, tif="ioc", post_only=True),
     ValueError),
    ("post-only fok", lambda e: e.submit("X", "buy", 1, 100, tif="fok", post_only=True),
     ValueError),
    ("side", lambda e: e.submit("X", "BUY", 1, 100), ValueError),
    ("side type", lambda e: e.submit("X", 0, 1, 100), TypeError),
    ("tif", lambda e: e.submit("X", "buy", 1, 100, tif="day"), ValueError),
    ("order type", lambda e: e.submit("X", "buy", 1, 100, order_type="stop"), ValueError),
    ("stp", lambda e: e.submit("X", "buy", 1, 100, stp="cancel"), ValueError),
    ("float qty", lambda e: e.submit("X", "buy", 1.0, 100), TypeError),
    ("bool qty", lambda e: e.submit("X", "buy", True, 100), TypeError),
    ("float price", lambda e: e.submit("X", "buy", 1, 100.0), TypeError),
    ("qty too large", lambda e: e.submit("X", "buy", 2**63, 100), ValueError),
    ("qty too small", lambda e: e.submit("X", "buy", -(2**63) - 1, 100), ValueError),
    ("price too large", lambda e: e.submit("X", "buy", 1, 2**63), ValueError),
    ("negative account", lambda e: e.submit("X", "buy", 1, 100, account=-1), ValueError),
    ("account too large", lambda e: e.submit("X", "buy", 1, 100, account=2**32), ValueError),
    ("account type", lambda e: e.submit("X", "buy", 1, 100, account="1"), TypeError),
    ("empty coid", lambda e: e.submit("X", "buy", 1, 100, client_order_id=""), ValueError),
    ("long coid", lambda e: e.submit("X", "buy", 1, 100, client_order_id="a" * 17), ValueError),
    ("non-ASCII coid", lambda e: e.submit("X", "buy", 1, 100, client_order_id="é"), ValueError),
    ("control coid", lambda e: e.submit("X", "buy", 1, 100, client_order_id="a\t"), ValueError),
    ("coid type", lambda e: e.submit("X", "buy", 1, 100, client_order_id=5), TypeError),
    ("symbol type", lambda e: e.submit(b"X", "buy", 1, 100), TypeError),
    ("post_only type", lambda e: e.submit("X", "buy", 1, 100, post_only=1), TypeError),
    ("cancel without target", lambda e: e.cancel(), ValueError),
    ("cancel with both targets",
     lambda e: e.cancel(1, account=1, client_order_id="a"), ValueError),
    ("cancel coid without account", lambda e: e.cancel(client_order_id="a"), ValueError),
    ("cancel order id type", lambda e: e.cancel("1"), TypeError),
    ("cancel order id 0", lambda e: e.cancel(0), ValueError),
    ("cancel order id too large", lambda e: e.cancel(2**64), ValueError),
    ("modify negative order id", lambda e: e.modify(-1, qty=1), ValueError),
    ("modify neither qty nor price", lambda e: e.modify(1), ValueError),
    ("modify neither qty nor price by coid",
     lambda e: e.modify(client_order_id="a", account=0, qty=None, price=None), ValueError),
    ("cancel account", lambda e: e.cancel(1, account=2**32), ValueError),
    ("modify without target", lambda e: e.modify(qty=1), ValueError),
    ("modify coid without account",
     lambda e: e.modify(client_order_id="a", qty=1), ValueError),
    ("modify float qty", lambda e: e.modify(1, qty=1.5), TypeError),
    ("modify qty too large", lambda e: e.modify(1, qty=2**63), ValueError),
    ("modify float price", lambda e: e.modify(1, qty=1, price=100.0), TypeError),
    ("order without target", lambda e: e.order(), ValueError),
    ("order coid without account", lambda e: e.order(client_order_id="a"), ValueError),
    ("order with both targets", lambda e: e.order(1, client_order_id="a", account=0), ValueError),
    ("order coid type", lambda e: e.order(client_order_id=1, account=0), TypeError),
    ("order account", lambda e: e.order(1, account=-1), ValueError),
]


@pytest.mark.parametrize(
    ("call", "error"),
    [pytest.param(call, error, id=name) for name, call, error in _ARGUMENT_ERRORS],
)
def test_python_argument_errors_raise(
    engine_cls: Any, call: Callable[[Any], object], error: type[Exception]
) -> None:
    eng = make(engine_cls)
    eng.submit("X", "buy", 1, 100)
    with pytest.raises(error):
        call(eng)
    # A refused call is not a command: it takes no seq and changes nothing.
    assert eng.submit("X", "buy", 1, 99) == [accepted(2, 2, BUY, 99, 1)]
    book(eng, [(100, 1, 1), (99, 1, 1)], [])
    eng.verify()


def test_enum_members_are_accepted_as_arguments(engine_cls: Any) -> None:
    eng = make(engine_cls)
    assert eng.submit("X", Side.SELL, 2, 100, stp=SelfTradePrevention.CANCEL_BOTH) == [
        accepted(1, 1, SELL, 100, 2)
    ]
    eng.verify()

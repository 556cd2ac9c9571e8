"""Events and views returned by the engine.

Events are ``typing.NamedTuple`` classes: immutable, typed, compared by value,
and cheap to build (a plain ``tuple`` underneath), which matters when one
Python call returns one event at millions of calls a second. Being tuples,
events compare by value only; code that routes events dispatches on the class
(``type(ev) is Trade``).

Field meanings are in docs/semantics.md.
"""

from __future__ import annotations

from typing import NamedTuple, Union

from .enums import CancelReason, RejectReason, SelfTradePrevention, Side, TradingState

__all__ = [
    "Accepted",
    "Rejected",
    "Trade",
    "Cancelled",
    "Modified",
    "LevelUpdate",
    "StateChanged",
    "MassCancelled",
    "MmpUpdate",
    "MmpStatus",
    "OrderLimitsSet",
    "OrderLimits",
    "Event",
    "Level",
    "BookView",
    "OrderState",
]


class Accepted(NamedTuple):
    seq: int
    order_id: int
    symbol: str
    side: Side
    price: int | None  # None for a market order
    qty: int
    account: int
    client_order_id: str | None


class Rejected(NamedTuple):
    seq: int
    reason: RejectReason
    message: str
    client_order_id: str | None
    # The target of a cancel/modify; for a new order None, or its own id on
    # an Engine made with caller_order_ids=True.
    order_id: int | None


class Trade(NamedTuple):
    seq: int
    trade_id: int
    symbol: str
    price: int
    qty: int
    maker_order_id: int
    taker_order_id: int
    maker_account: int
    taker_account: int
    aggressor_side: Side
    maker_leaves: int
    taker_leaves: int


class Cancelled(NamedTuple):
    seq: int
    order_id: int
    leaves: int
    reason: CancelReason


class Modified(NamedTuple):
    seq: int
    order_id: int
    price: int
    qty: int
    priority_kept: bool


class LevelUpdate(NamedTuple):
    """A price level changed (only from an Engine made with level_updates=True).

    Comes right after the event that changed the level; ``total_qty`` 0 means
    the level is gone. Enough to maintain an L2 book without reading it.
    """

    seq: int
    symbol: str
    side: Side
    price: int
    total_qty: int
    order_count: int


class StateChanged(NamedTuple):
    """An instrument's trading state was set (halted or resumed)."""

    seq: int
    symbol: str
    state: TradingState


class MassCancelled(NamedTuple):
    """The last event of a cancel-all: how many of the account's orders (of
    every account's, ``account`` None) it cancelled (each has its own
    ``Cancelled`` before this)."""

    seq: int
    account: int | None  # None: every account (cancel_all(all_accounts=True))
    symbol: str | None  # None: every instrument
    cancelled: int  # how many orders it cancelled
    reason: CancelReason  # USER, or DEAD_MAN when the dead-man switch fired


class MmpUpdate(NamedTuple):
    """An account's market-maker protection on an instrument, as it is after
    a set, a reset, or a trip (``tripped`` True; after the cancels it made)."""

    seq: int
    account: int
    symbol: str
    qty_limit: int  # 0: protection is off
    window: int  # in the commands' ts units; 0: until a reset
    filled: int  # quantity filled in the current window
    tripped: bool


class OrderLimitsSet(NamedTuple):
    """An instrument's order limits were set (even to what they were)."""

    seq: int
    symbol: str
    max_qty: int  # 0: none
    max_notional: int  # price x qty; 0: none


Event = Union[
    Accepted, Rejected, Trade, Cancelled, Modified, LevelUpdate, StateChanged, MassCancelled, MmpUpdate, OrderLimitsSet
]


class Level(NamedTuple):
    price: int
    total_qty: int
    order_count: int


class BookView(NamedTuple):
    """A depth snapshot: best level first on both sides."""

    symbol: str
    bids: list[Level]
    asks: list[Level]


class MmpStatus(NamedTuple):
    """An account's market-maker protection on an instrument (``Engine.mmp``)."""

    account: int
    symbol: str
    qty_limit: int
    window: int
    filled: int  # in the current window
    window_start: int  # ts of the fill that opened it
    tripped: bool


class OrderLimits(NamedTuple):
    """An instrument's order limits (``Engine.order_limits``); 0: none."""

    max_qty: int
    max_notional: int


class OrderState(NamedTuple):
    """An open (resting) order, as it is now."""

    order_id: int
    symbol: str
    side: Side
    price: int
    open_qty: int  # what is left to trade: the qty entered less fills, as modified
    account: int
    client_order_id: str | None
    post_only: bool
    stp: SelfTradePrevention

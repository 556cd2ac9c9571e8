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


Event = Union[Accepted, Rejected, Trade, Cancelled, Modified, LevelUpdate, StateChanged]


class Level(NamedTuple):
    price: int
    total_qty: int
    order_count: int


class BookView(NamedTuple):
    """A depth snapshot: best level first on both sides."""

    symbol: str
    bids: list[Level]
    asks: list[Level]


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

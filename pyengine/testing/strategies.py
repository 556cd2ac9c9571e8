"""Hypothesis strategies for instruments and engine commands.

Typical use, against ``pyengine.Engine``, ``ReferenceEngine`` or your own code
with the same API::

    from hypothesis import given, strategies as st
    from pyengine.testing import ReferenceEngine
    from pyengine.testing.strategies import (
        accepted_order_ids, apply, commands, instrument_spec_lists)

    @given(st.data())
    def test_something(data):
        specs = data.draw(instrument_spec_lists())
        engine = ReferenceEngine()
        for spec in specs:
            engine.add_instrument(**spec)
        order_ids: list[int] = []
        for command in data.draw(st.lists(commands(specs), max_size=50)):
            events = apply(engine, command, order_ids)
            order_ids.extend(accepted_order_ids(events))
            ...

The commands are built to hit the interesting cases often rather than to look
like real flow:

- few instruments, few accounts (so self-trade prevention fires), and client
  order ids from a small pool (so duplicates happen);
- limit prices clustered a few ticks around a mid that jumps between a few
  anchors, so orders cross, sweep several levels and rest on both sides;
- mostly valid values, but sometimes off-tick, off-lot, zero or negative,
  outside the band, an unknown symbol, or a quantity so large that a level
  fills up (``level_full``);
- every order type, time in force, post-only and self-trade prevention mode,
  but only argument combinations the Python API accepts (``apply`` never
  raises on a generated command, but for the order id 0 that
  ``caller_order_ids`` draws now and then for the batch path, which
  ``Engine.submit`` refuses);
- cancels and modifies that mostly address open orders (an index, newest
  first, into the engine's open orders or into ``order_ids``, the ids accepted
  so far; see ``Target``), sometimes finished or never-issued ones, by order id
  or by client order id, as the owner, as another account or as an
  administrator;
- modifies whose new qty and price are given relative to the target's current
  state (see ``QtyChange`` and ``PriceChange``), so that keeping priority,
  losing it, repricing across the book and qty 0 all happen often;
- with ``order_limits=True``, an instrument's order limits set now and then at
  the size and notional of the orders drawn (exactly those of some of them) or
  just under an open order (see ``SetOrderLimits``), so that new orders and
  modifies meet both limits, and modifies of orders the limits came down under
  reduce them (always allowed) or grow or move them (held to the limits);
- for an engine made with ``caller_order_ids=True``, new orders that bring
  their own ids: pass ``commands(specs, order_ids=caller_order_ids())``, a
  small pool, so that the id of an open order (``duplicate_order_id``), the id
  of a finished one (used again) and 0 (``bad_order_id``; ``Engine.submit``
  refuses it with ``ValueError``) all happen.

``apply`` reads the engine (``open_orders``, ``order``, ``book``) to resolve a
target and a relative modify into absolute arguments; run on two engines that
agree so far, it sends both the same call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar

from hypothesis import strategies as st

from ..enums import OrderType, SelfTradePrevention, Side, TimeInForce
from ..events import Accepted, BookView, Event, OrderState
from .reference import MAX_INT64

__all__ = [
    "CLIENT_ORDER_IDS",
    "SYMBOLS",
    "UNKNOWN_ORDER_ID",
    "UNKNOWN_SYMBOL",
    "Addressed",
    "Cancel",
    "CancelAll",
    "Command",
    "EngineAPI",
    "Modify",
    "NewOrder",
    "PriceChange",
    "QtyChange",
    "ResetMmp",
    "SetMmp",
    "SetOrderLimits",
    "SetState",
    "Target",
    "accepted_order_ids",
    "apply",
    "caller_order_ids",
    "commands",
    "instrument_spec_lists",
    "instrument_specs",
    "resolve_target",
]

SYMBOLS = ("AAA", "BBB", "CCC")
"""The symbols ``instrument_specs`` draws from."""

UNKNOWN_SYMBOL = "ZZZ"
"""A symbol the generated commands sometimes use; never one of ``SYMBOLS``."""

CLIENT_ORDER_IDS = ("a", "b", "c", "~ order 16 char~")
"""The default client order id pool: small, so duplicates happen."""

UNKNOWN_ORDER_ID = 2**62
"""The order id a ``Target`` with ``index=None`` resolves to: never issued."""

_T = TypeVar("_T")

_SYMBOLS = st.sampled_from(SYMBOLS)
_ACCOUNTS = st.integers(0, 2)
_CLIENT_ORDER_IDS = st.sampled_from(CLIENT_ORDER_IDS)


class EngineAPI(Protocol):
    """What ``apply`` needs of an engine (``pyengine.Engine`` and ``ReferenceEngine``)."""

    def submit(
        self,
        symbol: str,
        side: str,
        qty: int,
        price: int | None = ...,
        *,
        tif: str | None = ...,
        account: int = ...,
        client_order_id: str | None = ...,
        order_type: str = ...,
        post_only: bool = ...,
        stp: str = ...,
        order_id: int | None = ...,
    ) -> list[Event]: ...

    def cancel(
        self,
        order_id: int | None = ...,
        *,
        account: int | None = ...,
        client_order_id: str | None = ...,
    ) -> list[Event]: ...

    def modify(
        self,
        order_id: int | None = ...,
        qty: int | None = ...,
        price: int | None = ...,
        *,
        account: int | None = ...,
        client_order_id: str | None = ...,
    ) -> list[Event]: ...

    def halt(self, symbol: str) -> list[Event]: ...

    def resume(self, symbol: str) -> list[Event]: ...

    def cancel_all(
        self, account: int | None = ..., symbol: str | None = ..., *, all_accounts: bool = ..., dead_man: bool = ...
    ) -> list[Event]: ...

    def set_mmp(self, account: int, symbol: str, qty_limit: int, window: int = ...) -> list[Event]: ...

    def reset_mmp(self, account: int, symbol: str) -> list[Event]: ...

    def set_order_limits(
        self, symbol: str, *, max_qty: int | None = ..., max_notional: int | None = ...
    ) -> list[Event]: ...

    def book(self, symbol: str, depth: int = ...) -> BookView: ...

    def order(
        self, order_id: int | None = ..., *, account: int | None = ..., client_order_id: str | None = ...
    ) -> OrderState | None: ...

    def open_orders(self) -> list[OrderState]: ...


# Commands


@dataclass(frozen=True)
class NewOrder:
    """``engine.submit(...)`` with these arguments, as they are (``order_id``
    only if it is not None: for an engine with caller order ids)."""

    symbol: str
    side: Side
    qty: int
    price: int | None
    tif: TimeInForce
    account: int
    client_order_id: str | None
    order_type: OrderType
    post_only: bool
    stp: SelfTradePrevention
    order_id: int | None = None


@dataclass(frozen=True)
class Target:
    """Which order a cancel/modify addresses and who sends it.

    ``index`` picks the order: it counts back from the newest (0 is the newest,
    wrapping around) among the engine's open orders if ``live``, else among
    all the orders accepted so far, so it may pick a finished one; ``None``
    picks an id never issued.

    The sender is the picked order's owner if ``as_owner`` and the order is
    open, else ``account`` (``None``: an administrator).

    With ``by_client_order_id``, an open picked order that has a client order
    id is addressed as (sender, that client order id); an administrator sends
    as the owner, since that form needs an account, and any other sender
    reaches its own order with that client order id, if it has one. Otherwise
    the order is addressed by order id.
    """

    index: int | None
    live: bool
    account: int | None
    as_owner: bool
    by_client_order_id: bool


class Addressed(NamedTuple):
    """A resolved ``Target``: the arguments to send and the order they reach."""

    order_id: int | None
    account: int | None
    client_order_id: str | None
    state: OrderState | None  # the open order the arguments name, if any


class QtyChange(StrEnum):
    """A modify's new qty, relative to the target's open qty."""

    KEEP = "keep"  # no qty given: the open qty when the modify runs
    SAME = "same"  # in place if the price is kept
    HALF = "half"  # in place; off-lot if the open qty is an odd number of lots
    MINUS_ONE = "minus_one"  # in place if the lot is 1, else off-lot
    PLUS_ONE = "plus_one"  # grows (loses priority) if the lot is 1, else off-lot
    DOUBLE = "double"  # grows: loses priority
    ZERO = "zero"  # cancels
    NEGATIVE = "negative"  # bad_qty


class PriceChange(StrEnum):
    """A modify's new price, relative to the target and its book."""

    KEEP = "keep"  # no price given
    SAME = "same"  # the current price, given explicitly
    CROSS = "cross"  # the best opposite price (trades or is post_only_would_cross)
    SWEEP = "sweep"  # the worst of the best 100 opposite prices
    JOIN = "join"  # the best price of its own side
    BACK = "back"  # the worst of the best 100 prices of its own side
    OFF_TICK = "off_tick"  # one more than the current price
    ZERO = "zero"  # bad_price
    FAR = "far"  # four times the current price: often outside the band


@dataclass(frozen=True)
class Cancel:
    """``engine.cancel(...)`` of the order ``target`` resolves to."""

    target: Target


@dataclass(frozen=True)
class Modify:
    """``engine.modify(...)`` of the order ``target`` resolves to."""

    target: Target
    qty: QtyChange
    price: PriceChange


@dataclass(frozen=True)
class SetState:
    """``engine.halt(symbol)`` or ``engine.resume(symbol)``."""

    symbol: str
    halt: bool


@dataclass(frozen=True)
class CancelAll:
    """``engine.cancel_all(account, symbol, all_accounts=..., dead_man=...)``
    (symbol None: every instrument; with ``all_accounts`` the account is None)."""

    account: int | None
    symbol: str | None
    dead_man: bool
    all_accounts: bool = False


@dataclass(frozen=True)
class SetMmp:
    """``engine.set_mmp(account, symbol, qty_limit, window)``."""

    account: int
    symbol: str
    qty_limit: int
    window: int


@dataclass(frozen=True)
class ResetMmp:
    """``engine.reset_mmp(account, symbol)``."""

    account: int
    symbol: str


@dataclass(frozen=True)
class SetOrderLimits:
    """``engine.set_order_limits(symbol, max_qty=..., max_notional=...)`` (None: no limit).

    With ``under`` (an index, newest first and wrapping around, into the
    engine's open orders, as a live ``Target``'s), the limits come down just
    under that order instead, on its instrument: each limit that is not None
    becomes one less than the order's open qty or its price x open qty (at
    least 1); with no open order, ``symbol``'s limits are set as given.
    """

    symbol: str
    max_qty: int | None
    max_notional: int | None
    under: int | None = None


Command = NewOrder | Cancel | Modify | SetState | CancelAll | SetMmp | ResetMmp | SetOrderLimits


def apply(engine: EngineAPI, command: Command, order_ids: Sequence[int]) -> list[Event]:
    """Run one command on ``engine`` and return its events.

    ``order_ids`` lists the ids of the orders accepted so far, oldest first; it
    is not changed (extend it with ``accepted_order_ids(events)``).
    """
    if isinstance(command, NewOrder):
        own_id = {} if command.order_id is None else {"order_id": command.order_id}
        return engine.submit(
            command.symbol,
            command.side,
            command.qty,
            command.price,
            tif=command.tif,
            account=command.account,
            client_order_id=command.client_order_id,
            order_type=command.order_type,
            post_only=command.post_only,
            stp=command.stp,
            **own_id,
        )
    if isinstance(command, SetState):
        return engine.halt(command.symbol) if command.halt else engine.resume(command.symbol)
    if isinstance(command, CancelAll):
        return engine.cancel_all(
            command.account, command.symbol, all_accounts=command.all_accounts, dead_man=command.dead_man
        )
    if isinstance(command, SetMmp):
        return engine.set_mmp(command.account, command.symbol, command.qty_limit, command.window)
    if isinstance(command, ResetMmp):
        return engine.reset_mmp(command.account, command.symbol)
    if isinstance(command, SetOrderLimits):
        return _set_order_limits(engine, command)
    to = resolve_target(engine, command.target, order_ids)
    if isinstance(command, Cancel):
        return engine.cancel(to.order_id, account=to.account, client_order_id=to.client_order_id)
    qty = _new_qty(command.qty, to.state)
    price = _new_price(engine, command.price, to.state)
    if qty is None and price is None:
        qty = _new_qty(QtyChange.SAME, to.state)  # keeping both would be no modify
    return engine.modify(
        to.order_id, qty=qty, price=price, account=to.account, client_order_id=to.client_order_id
    )


def accepted_order_ids(events: Sequence[Event]) -> list[int]:
    """The ids of the orders a command's events accept."""
    return [event.order_id for event in events if type(event) is Accepted]


def resolve_target(engine: EngineAPI, target: Target, order_ids: Sequence[int]) -> Addressed:
    """What a cancel/modify with this target sends to ``engine`` now (see ``Target``)."""
    open_orders = engine.open_orders()
    candidates = sorted(s.order_id for s in open_orders) if target.live else order_ids
    if target.index is None or not candidates:
        order_id = UNKNOWN_ORDER_ID
    else:
        order_id = candidates[-1 - target.index % len(candidates)]
    state = engine.order(order_id)
    account = state.account if target.as_owner and state is not None else target.account
    if not target.by_client_order_id or state is None or state.client_order_id is None:
        return Addressed(order_id, account, None, state)
    sender = state.account if account is None else account
    reached = next(
        (
            s
            for s in open_orders
            if s.account == sender and s.client_order_id == state.client_order_id
        ),
        None,
    )
    return Addressed(None, sender, state.client_order_id, reached)


def _set_order_limits(engine: EngineAPI, command: SetOrderLimits) -> list[Event]:
    symbol, max_qty, max_notional = command.symbol, command.max_qty, command.max_notional
    live = sorted(engine.open_orders(), key=lambda s: s.order_id)
    if command.under is not None and live:
        state = live[-1 - command.under % len(live)]
        symbol = state.symbol
        if max_qty is not None:
            max_qty = max(1, state.open_qty - 1)
        if max_notional is not None:
            max_notional = max(1, min(state.price * state.open_qty, MAX_INT64) - 1)
    return engine.set_order_limits(symbol, max_qty=max_qty, max_notional=max_notional)


def _new_qty(change: QtyChange, state: OrderState | None) -> int | None:
    if change is QtyChange.KEEP:
        return None
    open_qty = 0 if state is None else state.open_qty
    qty = {
        QtyChange.SAME: open_qty,
        QtyChange.HALF: open_qty // 2,
        QtyChange.MINUS_ONE: open_qty - 1,
        QtyChange.PLUS_ONE: open_qty + 1,
        QtyChange.DOUBLE: open_qty * 2,
        QtyChange.ZERO: 0,
        QtyChange.NEGATIVE: -open_qty,
    }[change]
    return min(qty, MAX_INT64)


def _new_price(engine: EngineAPI, change: PriceChange, state: OrderState | None) -> int | None:
    if state is None or change is PriceChange.KEEP:
        return None
    book = engine.book(state.symbol, 100)
    own, opposite = (book.bids, book.asks) if state.side is Side.BUY else (book.asks, book.bids)
    price = {
        PriceChange.SAME: state.price,
        PriceChange.CROSS: opposite[0].price if opposite else state.price,
        PriceChange.SWEEP: opposite[-1].price if opposite else state.price,
        PriceChange.JOIN: own[0].price if own else state.price,
        PriceChange.BACK: own[-1].price if own else state.price,
        PriceChange.OFF_TICK: state.price + 1,
        PriceChange.ZERO: 0,
        PriceChange.FAR: state.price * 4,
    }[change]
    return min(price, MAX_INT64)


# Strategies


def _weighted(*choices: tuple[st.SearchStrategy[_T], int]) -> st.SearchStrategy[_T]:
    """One of the strategies, each picked with its weight (shrinks to the first)."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def _on_grid(value: int, step: int) -> int:
    return value // step * step


def _centre(spec: Mapping[str, Any]) -> int:
    """The price orders cluster around: the middle of the band, else 100 ticks."""
    tick: int = spec.get("tick_size", 1)
    band: tuple[int, int] | None = spec.get("price_band")
    if band is None:
        return 100 * tick
    return max(tick, _on_grid((band[0] + band[1]) // 2, tick))


@st.composite
def _bands(draw: st.DrawFn, tick: int) -> tuple[int, int]:
    centre = 100 * tick
    low = centre - draw(st.integers(4, 16)) * tick
    high = centre + draw(st.integers(4, 16)) * tick
    if draw(st.integers(0, 4)) == 0:
        low -= draw(st.integers(0, tick - 1))
        high += draw(st.integers(0, tick - 1))
    return (low, high)


@st.composite
def instrument_specs(draw: st.DrawFn, symbols: st.SearchStrategy[str] = _SYMBOLS) -> dict[str, Any]:
    """Keyword arguments of ``add_instrument``, symbol included.

    Small ticks and lots (1, 5, 25); a price band around 100 ticks about half
    the time (its bounds sometimes off-tick); a market protection of 0 to 3
    ticks about half the time. Use as ``engine.add_instrument(**spec)``.
    """
    tick = draw(st.sampled_from([1, 5, 25]))
    return {
        "symbol": draw(symbols),
        "tick_size": tick,
        "lot_size": draw(st.sampled_from([1, 5, 25])),
        "price_band": draw(st.none() | _bands(tick)),
        "market_protection": draw(st.none() | st.sampled_from([0, tick, 3 * tick])),
    }


def instrument_spec_lists(
    min_size: int = 1, max_size: int = 3
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of ``instrument_specs`` with distinct symbols (at most ``len(SYMBOLS)``)."""
    return st.lists(
        instrument_specs(), min_size=min_size, max_size=max_size, unique_by=lambda s: s["symbol"]
    )


def _quantities(lot: int) -> st.SearchStrategy[int]:
    normal = st.integers(1, 8).map(lambda lots: lots * lot)
    choices = [(normal, 40), (st.sampled_from([0, -lot]), 1)]
    if lot > 1:
        off_lot = st.tuples(normal, st.integers(1, lot - 1)).map(sum)
        choices.append((off_lot, 3))
    return _weighted(*choices)


def _huge_quantities(lot: int) -> st.SearchStrategy[int]:
    """Quantities so large that two of them at one price overflow the level.

    Half the maximum (rounded up to a lot, so two of them just overflow) or
    the maximum less a few lots (so it leaves room for little else).
    """
    half = -(-(2**62) // lot) * lot
    near_max = st.integers(0, 3).map(lambda lots: _on_grid(MAX_INT64, lot) - lots * lot)
    return _weighted((st.just(half), 2), (near_max, 1))


def _prices(spec: Mapping[str, Any]) -> st.SearchStrategy[int]:
    tick = spec.get("tick_size", 1)
    centre = _centre(spec)
    anchor = st.sampled_from([0, 0, -4, 4])
    ticks = st.tuples(anchor, st.integers(-4, 4)).map(sum)
    near = ticks.map(lambda n: max(tick, centre + n * tick))
    band = spec.get("price_band")
    if band is None:
        outside = st.sampled_from([centre * 1000, _on_grid(MAX_INT64, tick)])
    else:
        outside = st.sampled_from([_on_grid(band[0] - 1, tick), _on_grid(band[1], tick) + tick])
    choices = [(near, 40), (st.sampled_from([0, -tick]), 1), (outside, 2)]
    if tick > 1:
        choices.append((st.tuples(near, st.integers(1, tick - 1)).map(sum), 3))
    return _weighted(*choices)


_ORDER_KINDS: tuple[tuple[OrderType, TimeInForce, bool], ...] = (
    *[(OrderType.LIMIT, TimeInForce.GTC, False)] * 5,
    *[(OrderType.LIMIT, TimeInForce.GTC, True)] * 2,
    (OrderType.LIMIT, TimeInForce.IOC, False),
    (OrderType.LIMIT, TimeInForce.FOK, False),
    (OrderType.MARKET, TimeInForce.IOC, False),
    (OrderType.MARKET, TimeInForce.FOK, False),
)
"""(order type, tif, post-only): the combinations the Python API accepts, weighted."""


@st.composite
def _new_orders(
    draw: st.DrawFn,
    specs: Sequence[Mapping[str, Any]],
    accounts: st.SearchStrategy[int],
    client_order_ids: st.SearchStrategy[str],
    order_ids: st.SearchStrategy[int] | None,
) -> NewOrder:
    spec = draw(st.sampled_from(specs))
    symbol = draw(_weighted((st.just(spec["symbol"]), 40), (st.just(UNKNOWN_SYMBOL), 1)))
    order_type, tif, post_only = draw(st.sampled_from(_ORDER_KINDS))
    lot = spec.get("lot_size", 1)
    huge = draw(st.integers(0, 49)) == 0
    qty = draw(_huge_quantities(lot) if huge else _quantities(lot))
    price = None
    if order_type is OrderType.LIMIT:
        # Huge orders meet at the centre so that levels fill up.
        price = _centre(spec) if huge else draw(_prices(spec))
    return NewOrder(
        symbol=symbol,
        side=draw(st.sampled_from(Side)),
        qty=qty,
        price=price,
        tif=tif,
        account=draw(accounts),
        client_order_id=draw(st.none() | client_order_ids),
        order_type=order_type,
        post_only=post_only,
        stp=draw(st.sampled_from(SelfTradePrevention)),
        order_id=None if order_ids is None else draw(order_ids),
    )


@st.composite
def _targets(draw: st.DrawFn, accounts: st.SearchStrategy[int]) -> Target:
    index = draw(_weighted((st.integers(0, 3), 12), (st.integers(0, 60), 6), (st.none(), 1)))
    return Target(
        index=index,
        live=draw(st.integers(0, 4)) > 0,
        account=draw(_weighted((accounts, 3), (st.none(), 1))),
        as_owner=draw(st.integers(0, 3)) > 0,
        by_client_order_id=draw(st.integers(0, 3)) == 0,
    )


def _weighted_members(weights: Sequence[tuple[_T, int]]) -> st.SearchStrategy[_T]:
    return st.sampled_from([member for member, weight in weights for _ in range(weight)])


_QTY_WEIGHTS = (
    (QtyChange.KEEP, 2),
    (QtyChange.SAME, 3),
    (QtyChange.HALF, 2),
    (QtyChange.MINUS_ONE, 2),
    (QtyChange.PLUS_ONE, 1),
    (QtyChange.DOUBLE, 3),
    (QtyChange.ZERO, 1),
    (QtyChange.NEGATIVE, 1),
)
_PRICE_WEIGHTS = (
    (PriceChange.KEEP, 5),
    (PriceChange.SAME, 1),
    (PriceChange.CROSS, 3),
    (PriceChange.SWEEP, 1),
    (PriceChange.JOIN, 1),
    (PriceChange.BACK, 1),
    (PriceChange.OFF_TICK, 1),
    (PriceChange.ZERO, 1),
    (PriceChange.FAR, 1),
)


def caller_order_ids(pool: int = 6) -> st.SearchStrategy[int]:
    """Order ids for the new orders of an engine with caller order ids.

    Mostly 1 to ``pool``, so that a new order often brings the id of an open
    order (``duplicate_order_id``) or of a finished one (taken again); now and
    then 0 (``bad_order_id`` through the batch path; ``Engine.submit`` refuses
    it as an argument) and the largest id, ``2**64 - 1``.
    """
    return _weighted((st.integers(1, pool), 30), (st.just(0), 1), (st.just(2**64 - 1), 1))


def commands(
    specs: Sequence[Mapping[str, Any]],
    *,
    accounts: st.SearchStrategy[int] = _ACCOUNTS,
    client_order_ids: st.SearchStrategy[str] = _CLIENT_ORDER_IDS,
    order_ids: st.SearchStrategy[int] | None = None,
    account_wide: bool = False,
    order_limits: bool = False,
) -> st.SearchStrategy[Command]:
    """One command for an engine holding the instruments ``specs`` describes.

    ``specs`` are ``add_instrument`` keyword dicts (as ``instrument_specs``
    draws them; only ``symbol`` is required). About 67% new orders, 19%
    modifies, 10% cancels, 5% halts and resumes (three resumes to a halt, so
    an instrument is mostly open). With ``order_ids`` (for an engine with
    caller order ids, e.g. ``caller_order_ids()``), each new order brings an
    id drawn from it. With ``account_wide``, about one command in seven is a
    cancel-all (of one account, or a third of them of every account) or sets
    or resets market-maker protection (small limits and windows, so that it
    trips). With ``order_limits``, about one command in
    twelve sets an instrument's order limits (see ``SetOrderLimits``). Run a
    command with ``apply``.
    """
    if not specs:
        raise ValueError("commands() needs at least one instrument spec")
    specs = [dict(spec) for spec in specs]
    targets = _targets(accounts)
    cancels = targets.map(Cancel)
    modifies = st.builds(
        Modify, targets, _weighted_members(_QTY_WEIGHTS), _weighted_members(_PRICE_WEIGHTS)
    )
    states = st.builds(
        SetState, st.sampled_from([spec["symbol"] for spec in specs]), _weighted_members(((True, 1), (False, 3)))
    )
    mix: list[tuple[st.SearchStrategy[Command], int]] = [
        (_new_orders(specs, accounts, client_order_ids, order_ids), 14),
        (cancels, 2),
        (modifies, 4),
        (states, 1),
    ]
    if account_wide:
        mix.append((_account_wide(specs, accounts), 3))
    if order_limits:
        mix.append((st.sampled_from(specs).flatmap(_order_limits), 2))
    return _weighted(*mix)


def _account_wide(specs: Sequence[Mapping[str, Any]], accounts: st.SearchStrategy[int]) -> st.SearchStrategy[Command]:
    symbols = st.sampled_from([spec["symbol"] for spec in specs])
    limits = _weighted((st.integers(1, 3), 4), (st.integers(4, 40), 4), (st.just(0), 1))
    windows = _weighted((st.just(0), 2), (st.integers(1, 6), 3))
    every_account = st.builds(CancelAll, st.none(), st.none() | symbols, st.just(False), st.just(True))
    return _weighted(
        (st.builds(CancelAll, accounts, st.none() | symbols, st.booleans()), 2),
        (every_account, 1),
        (st.builds(SetMmp, accounts, symbols, limits, windows), 4),
        (st.builds(ResetMmp, accounts, symbols), 2),
    )


def _order_limits(spec: Mapping[str, Any]) -> st.SearchStrategy[SetOrderLimits]:
    """One instrument's limits cleared, or a qty limit, a notional limit or
    both: around the orders drawn (a qty of 1 to 8 lots, now and then off-lot;
    a notional exactly that of 1 to 8 lots at a price a few ticks off the
    centre; now and then the largest value, near which a notional overflows),
    a third of the time just under one of the newest open orders instead."""
    lot: int = spec.get("lot_size", 1)
    tick: int = spec.get("tick_size", 1)
    centre = _centre(spec)
    symbol = st.just(spec["symbol"])
    qtys = _weighted(
        (st.integers(1, 8).map(lambda lots: lots * lot), 5),
        (st.integers(1, 8 * lot), 1),
        (st.just(MAX_INT64), 1),
    )
    at = st.tuples(st.integers(1, 8), st.integers(-4, 4))
    notionals = _weighted(
        (at.map(lambda a: max(tick, centre + a[1] * tick) * a[0] * lot), 6),
        (st.just(MAX_INT64), 1),
    )
    under = _weighted((st.none(), 2), (st.integers(0, 3), 1))
    return _weighted(
        (st.builds(SetOrderLimits, symbol, st.none(), st.none()), 2),
        (st.builds(SetOrderLimits, symbol, qtys, st.none(), under), 2),
        (st.builds(SetOrderLimits, symbol, st.none(), notionals, under), 2),
        (st.builds(SetOrderLimits, symbol, qtys, notionals, under), 2),
    )

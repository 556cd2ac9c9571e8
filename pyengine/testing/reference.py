"""A small, obviously-correct pure-Python matcher: the model of docs/semantics.md.

``ReferenceEngine`` has the matching API of the C-backed ``pyengine.Engine``
(its commands, ``book``, ``order``, ``open_orders``, ``seq``) and produces the
same events, so property tests can run both on the same commands and compare
them event by event; the batch path, ``stats`` and ``state_hash`` are the C
engine's alone, and the model takes plain ints where ``Engine`` also takes
numpy integers (anything with ``__index__``). It is written for clarity, not
speed:

- per instrument and side, a dict ``price -> list of open orders`` (oldest
  first); the best price is ``max()``/``min()`` over the keys;
- an index ``order id -> open order`` of every resting order;
- a level's total quantity and order count are computed from its orders, never
  cached, so they cannot drift.

A taker is an ``_Order`` that is not (yet) in the book. Orders that are not
resting are forgotten: ``order()`` answers for resting orders only.

An instrument's order limits (``set_order_limits``) are state, as its trading
state is: a new order over them, or a modify that leaves more than them (other
than a mere reduction in place), is rejected; orders already resting stay.

Market-maker protection counts fills in a window on the commands' ``ts``: the
model's clock is the attribute ``now`` (the ts of the commands it runs next;
0 unless a test sets it, as the core's per-call API has ts 0), so that a test
packing the same commands with ``ts=now`` for the batch path can compare.

``ReferenceEngine(caller_order_ids=True)`` models an engine that takes each new
order's id from the caller (``submit(..., order_id=N)``). One difference from
``pyengine.Engine`` by design: there ``order_id=0`` is refused as an argument
(``ValueError``) before it reaches the core, while the model takes it as a
packed command without an id and rejects it (``bad_order_id``) as the core
does, so that it can be compared with the batch path too.

Argument errors that are not orders at all (wrong types, a market order with a
price, ...) raise ``TypeError``/``ValueError`` from the ``_check_*`` helpers at
the end of this file, before any state changes; they take no sequence number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from ..enums import (
    DEFAULT_TIF,
    REJECT_MESSAGES,
    CancelReason,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TradingState,
)
from ..events import (
    Accepted,
    BookView,
    Cancelled,
    Event,
    Level,
    MassCancelled,
    MmpStatus,
    MmpUpdate,
    Modified,
    OrderLimits,
    OrderLimitsSet,
    OrderState,
    Rejected,
    StateChanged,
    Trade,
)

__all__ = ["MAX_INT64", "ReferenceEngine"]

MAX_INT64 = 2**63 - 1
"""The largest quantity or price, and the largest total quantity of a level."""

_MIN_INT64 = -(2**63)
_MAX_ACCOUNT = 2**32 - 1
_MAX_ORDER_ID = 2**64 - 1
_MAX_SYMBOL_LEN = 15
_MAX_CLIENT_ORDER_ID_LEN = 16

_E = TypeVar("_E", bound=enum.StrEnum)

_Book = dict[int, list["_Order"]]
"""One side of one instrument: price -> open orders, oldest first."""


class _Stop(enum.Enum):
    """Why the matching loop stopped."""

    FILLED = enum.auto()  # the taker has no open qty left
    EMPTY = enum.auto()  # the opposite side is empty
    LIMIT = enum.auto()  # the best opposite level is beyond the taker's limit
    STP = enum.auto()  # self-trade prevention cancelled the taker


@dataclass
class _Instrument:
    number: int
    symbol: str
    tick_size: int
    lot_size: int
    price_band: tuple[int, int] | None
    market_protection: int | None
    halted: bool = False
    max_qty: int = 0  # order limits (set_order_limits); 0: none
    max_notional: int = 0
    bids: _Book = field(default_factory=dict)
    asks: _Book = field(default_factory=dict)

    def book(self, side: Side) -> _Book:
        return self.bids if side is Side.BUY else self.asks


@dataclass
class _Order:
    order_id: int
    instrument: _Instrument
    side: Side
    price: int | None  # None only for a market taker
    qty: int  # open quantity
    account: int
    client_order_id: str | None
    post_only: bool
    stp: SelfTradePrevention

    def state(self) -> OrderState:
        assert self.price is not None, "only resting orders have a state"
        return OrderState(
            self.order_id,
            self.instrument.symbol,
            self.side,
            self.price,
            self.qty,
            self.account,
            self.client_order_id,
            self.post_only,
            self.stp,
        )


@dataclass
class _Protection:
    """An account's market-maker protection on one instrument."""

    limit: int  # 0: off
    window: int  # 0: until a reset
    filled: int = 0  # in the current window; 0: no window open
    start: int = 0  # ts of the fill that opened it
    tripped: bool = False


class _NewOrder(NamedTuple):
    """The arguments of ``submit`` after the type checks, as enum members."""

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
    order_id: int  # the caller's id; 0 for none


class ReferenceEngine:
    """The pure-Python model of the matching engine (see docs/semantics.md)."""

    def __init__(self, *, caller_order_ids: bool = False) -> None:
        if not isinstance(caller_order_ids, bool):
            raise TypeError(f"caller_order_ids must be a bool, not {type(caller_order_ids).__name__}")
        self._caller_ids = caller_order_ids
        self._instruments: dict[str, _Instrument] = {}
        self._orders: dict[int, _Order] = {}
        self._last_seq = 0
        self._last_order_id = 0
        self._last_trade_id = 0
        self._protection: dict[tuple[int, int], _Protection] = {}  # (account, instrument number)
        self._to_trip: list[tuple[int, int]] = []  # over their limit in this command, in order
        self.now = 0
        """The ts of the commands run next: the clock of protection windows."""

    # Configuration

    @property
    def caller_order_ids(self) -> bool:
        """Whether new orders bring their ids (``submit(..., order_id=N)``)."""
        return self._caller_ids

    def add_instrument(
        self,
        symbol: str,
        *,
        tick_size: int = 1,
        lot_size: int = 1,
        price_band: tuple[int, int] | None = None,
        market_protection: int | None = None,
    ) -> int:
        """Add an instrument and return its number (0, 1, 2, ...)."""
        _check_text("symbol", symbol, _MAX_SYMBOL_LEN, lowest="!")
        if symbol in self._instruments:
            raise ValueError(f"instrument {symbol!r} already exists")
        _check_int("tick_size", tick_size, 1, MAX_INT64)
        _check_int("lot_size", lot_size, 1, MAX_INT64)
        band = _check_band(price_band)
        if market_protection is not None:
            _check_int("market_protection", market_protection, 0, MAX_INT64)
        number = len(self._instruments)
        self._instruments[symbol] = _Instrument(
            number, symbol, tick_size, lot_size, band, market_protection
        )
        return number

    # Commands

    def submit(
        self,
        symbol: str,
        side: str,
        qty: int,
        price: int | None = None,
        *,
        tif: str | None = None,
        account: int = 0,
        client_order_id: str | None = None,
        order_type: str = "limit",
        post_only: bool = False,
        stp: str = "none",
        order_id: int | None = None,
    ) -> list[Event]:
        """Process a new order and return its events."""
        new = _check_new_order(
            symbol, side, qty, price, tif, account, client_order_id, order_type, post_only, stp
        )._replace(order_id=self._check_new_order_id(order_id))
        seq = self._next_seq()
        reason = self._validate_new(new)
        if reason is not None:
            return [_rejected(seq, reason, client_order_id, new.order_id or None)]
        if self._caller_ids:
            taker_id = new.order_id
        else:
            self._last_order_id += 1
            taker_id = self._last_order_id
        inst = self._instruments[symbol]
        taker = _Order(
            taker_id,
            inst,
            new.side,
            price,
            qty,
            account,
            client_order_id,
            post_only,
            new.stp,
        )
        events: list[Event] = [
            Accepted(seq, taker.order_id, symbol, new.side, price, qty, account, client_order_id)
        ]
        limit = self._limit_of(taker)
        if new.tif is TimeInForce.FOK and not self._fok_fillable(taker, limit):
            events.append(Cancelled(seq, taker.order_id, taker.qty, CancelReason.FOK))
            return events
        stop = self._match(seq, taker, limit, events)
        self._finish_taker(seq, taker, new.tif, stop, events)
        self._trip(seq, events)
        return events

    def cancel(
        self,
        order_id: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> list[Event]:
        """Cancel an open order; ``account=None`` is an administrator."""
        _check_target(order_id, account, client_order_id)
        seq = self._next_seq()
        order = self._find_target(order_id, account, client_order_id)
        if isinstance(order, RejectReason):
            return [_rejected(seq, order, client_order_id, order_id)]
        self._remove(order)
        return [Cancelled(seq, order.order_id, order.qty, CancelReason.USER)]

    def modify(
        self,
        order_id: int | None = None,
        qty: int | None = None,
        price: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> list[Event]:
        """Change the open qty and/or the price of an open order (a qty left
        out is its open qty, a price left out its price)."""
        _check_target(order_id, account, client_order_id)
        if qty is None and price is None:
            raise ValueError("modify needs a new qty, a new price or both")
        if qty is not None:
            _check_int("qty", qty, _MIN_INT64, MAX_INT64)
        if price is not None:
            _check_int("price", price, _MIN_INT64, MAX_INT64)
        seq = self._next_seq()
        order = self._find_target(order_id, account, client_order_id)
        if isinstance(order, RejectReason):
            return [_rejected(seq, order, client_order_id, order_id)]
        assert order.price is not None
        new_price = order.price if price is None else price
        if qty is None:
            qty = order.qty
        reason = self._validate_modify(order, qty, price, new_price)
        if reason is not None:
            return [_rejected(seq, reason, client_order_id, order_id)]
        if qty == 0:
            self._remove(order)
            return [Cancelled(seq, order.order_id, order.qty, CancelReason.USER)]
        if _keeps_priority(order, qty, new_price):
            order.qty = qty
            return [Modified(seq, order.order_id, new_price, qty, True)]
        return self._reprice(seq, order, qty, new_price)

    def halt(self, symbol: str) -> list[Event]:
        """Halt an instrument: new orders and modifies are rejected."""
        return self._set_state(symbol, TradingState.HALTED)

    def resume(self, symbol: str) -> list[Event]:
        """Open a halted instrument again."""
        return self._set_state(symbol, TradingState.OPEN)

    def trading_state(self, symbol: str) -> TradingState:
        return TradingState.HALTED if self._instrument(symbol).halted else TradingState.OPEN

    def _set_state(self, symbol: str, state: TradingState) -> list[Event]:
        inst = self._instrument(symbol)
        inst.halted = state is TradingState.HALTED
        return [StateChanged(self._next_seq(), symbol, state)]

    def set_order_limits(
        self, symbol: str, *, max_qty: int | None = None, max_notional: int | None = None
    ) -> list[Event]:
        """Set an instrument's order limits (None or 0: no limit): a new
        order's qty at most ``max_qty``, a new limit order's price x qty at
        most ``max_notional``, and the same for what a modify leaves unless it
        only lowers the qty in place. Resting orders stay."""
        inst = self._instrument(symbol)
        if max_qty is not None:
            _check_int("max_qty", max_qty, 0, MAX_INT64)
        if max_notional is not None:
            _check_int("max_notional", max_notional, 0, MAX_INT64)
        inst.max_qty = 0 if max_qty is None else max_qty
        inst.max_notional = 0 if max_notional is None else max_notional
        return [OrderLimitsSet(self._next_seq(), symbol, inst.max_qty, inst.max_notional)]

    def order_limits(self, symbol: str) -> OrderLimits:
        """An instrument's order limits now (0: none)."""
        inst = self._instrument(symbol)
        return OrderLimits(inst.max_qty, inst.max_notional)

    # Account-wide commands and market-maker protection

    def cancel_all(
        self,
        account: int | None = None,
        symbol: str | None = None,
        *,
        all_accounts: bool = False,
        dead_man: bool = False,
    ) -> list[Event]:
        """Cancel every open order of ``account`` (of every account with
        ``all_accounts``, then no account and not ``dead_man``) on
        ``symbol``, or on all."""
        for name, flag in (("all_accounts", all_accounts), ("dead_man", dead_man)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
        if all_accounts and (account is not None or dead_man):
            raise ValueError("all_accounts takes no account and no dead_man")
        if not all_accounts:
            if account is None:
                raise ValueError("give an account, or all_accounts=True")
            _check_int("account", account, 0, _MAX_ACCOUNT)
        insts = list(self._instruments.values()) if symbol is None else [self._instrument(symbol)]
        seq = self._next_seq()
        reason = CancelReason.DEAD_MAN if dead_man else CancelReason.USER
        events: list[Event] = []
        for inst in insts:
            self._cancel_account(seq, inst, account, reason, events)
        events.append(MassCancelled(seq, account, symbol, len(events), reason))
        return events

    def set_mmp(self, account: int, symbol: str, qty_limit: int, window: int = 0) -> list[Event]:
        """Set (and reset) ``account``'s protection on ``symbol``; limit 0 turns it off."""
        inst = self._instrument(symbol)
        _check_int("account", account, 0, _MAX_ACCOUNT)
        _check_int("qty_limit", qty_limit, 0, MAX_INT64)
        _check_int("window", window, 0, MAX_INT64)
        seq = self._next_seq()
        key = (account, inst.number)
        if qty_limit > 0:
            self._protection[key] = _Protection(qty_limit, window)
        else:
            self._protection.pop(key, None)
        return [self._mmp_update(seq, key)]

    def reset_mmp(self, account: int, symbol: str) -> list[Event]:
        """Lift ``account``'s tripped protection on ``symbol``; a new window."""
        inst = self._instrument(symbol)
        _check_int("account", account, 0, _MAX_ACCOUNT)
        seq = self._next_seq()
        key = (account, inst.number)
        if key in self._protection:
            old = self._protection[key]
            self._protection[key] = _Protection(old.limit, old.window)
        return [self._mmp_update(seq, key)]

    def mmp(self, account: int, symbol: str) -> MmpStatus | None:
        """``account``'s protection on ``symbol``, or None."""
        p = self._protection.get((account, self._instrument(symbol).number))
        if p is None:
            return None
        return MmpStatus(account, symbol, p.limit, p.window, p.filled, p.start, p.tripped)

    def _instrument_number(self, number: int) -> _Instrument:
        return next(inst for inst in self._instruments.values() if inst.number == number)

    def _mmp_update(self, seq: int, key: tuple[int, int]) -> MmpUpdate:
        account, number = key
        p = self._protection.get(key, _Protection(0, 0))
        return MmpUpdate(seq, account, self._instrument_number(number).symbol, p.limit, p.window, p.filled, p.tripped)

    def _count_fill(self, account: int, inst: _Instrument, qty: int) -> None:
        """A fill against ``account``'s protection on ``inst``, if it has one."""
        key = (account, inst.number)
        p = self._protection.get(key)
        if p is None:
            return
        if p.filled == 0 or (p.window > 0 and self.now - p.start >= p.window):
            p.filled, p.start = 0, self.now
        p.filled = min(p.filled + qty, MAX_INT64)
        if p.filled > p.limit and not p.tripped and key not in self._to_trip:
            self._to_trip.append(key)

    def _trip(self, seq: int, events: list[Event]) -> None:
        """After a command: trip, in order, every account its fills took over its limit."""
        for key in self._to_trip:
            account, number = key
            self._protection[key].tripped = True
            self._cancel_account(seq, self._instrument_number(number), account, CancelReason.MMP, events)
            events.append(self._mmp_update(seq, key))
        self._to_trip.clear()

    def _cancel_account(
        self, seq: int, inst: _Instrument, account: int | None, reason: CancelReason, events: list[Event]
    ) -> None:
        """Cancel ``account``'s resting orders on ``inst`` (None: every
        account's): bids then asks, best price first, oldest first."""
        for side in (Side.BUY, Side.SELL):
            book = inst.book(side)
            for price in _prices_best_first(book, side):
                for order in [o for o in book[price] if account is None or o.account == account]:
                    self._remove(order)
                    events.append(Cancelled(seq, order.order_id, order.qty, reason))

    def _instrument(self, symbol: str) -> _Instrument:
        try:
            return self._instruments[symbol]
        except (KeyError, TypeError):
            if not isinstance(symbol, str):
                raise TypeError(f"symbol must be a str, not {type(symbol).__name__}") from None
            raise ValueError(f"unknown symbol {symbol!r}") from None

    # Queries

    def book(self, symbol: str, depth: int = 10) -> BookView:
        """At most ``depth`` levels per side, best first."""
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be a str, not {type(symbol).__name__}")
        _check_int("depth", depth, 0, MAX_INT64)
        inst = self._instruments.get(symbol)
        if inst is None:
            raise ValueError(f"unknown instrument {symbol!r}")
        return BookView(
            symbol, _levels(inst.bids, Side.BUY, depth), _levels(inst.asks, Side.SELL, depth)
        )

    def order(
        self,
        order_id: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> OrderState | None:
        """The state of a resting order, by id or by (account, client order
        id); None if it is not resting (or, given an account, not its)."""
        _check_target(order_id, account, client_order_id, min_order_id=0)
        if client_order_id is None:
            assert order_id is not None  # _check_target: one of the two
            order = self._orders.get(order_id)
        else:
            assert account is not None
            order = self._find_by_client_order_id(account, client_order_id)
        if order is None or (account is not None and order.account != account):
            return None
        return order.state()

    @property
    def seq(self) -> int:
        """The sequence number of the last command processed."""
        return self._last_seq

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Every resting order (of one instrument, or of all in the order
        they were added), in book order: bids best first then asks best
        first, oldest first within a level."""
        insts = self._instruments.values() if symbol is None else [self._instrument(symbol)]
        return [order.state() for inst in insts for side in (Side.BUY, Side.SELL)
                for price in _prices_best_first(inst.book(side), side) for order in inst.book(side)[price]]

    def verify(self) -> None:
        """Check the model's own invariants; raise AssertionError if one fails."""
        seen: list[int] = []
        for inst in self._instruments.values():
            for side in Side:
                for price, level in inst.book(side).items():
                    _verify_level(inst, side, price, level)
                    seen.extend(order.order_id for order in level)
            bid = _best_price(inst.bids, Side.BUY)
            ask = _best_price(inst.asks, Side.SELL)
            _require(bid is None or ask is None or bid < ask, f"{inst.symbol}: crossed book")
        _require(len(seen) == len(set(seen)), "an order is in the book twice")
        _require(set(seen) == set(self._orders), "the order index and the book disagree")
        last_id = _MAX_ORDER_ID if self._caller_ids else self._last_order_id
        for order in self._orders.values():
            _require(0 < order.order_id <= last_id, f"order id {order.order_id}")
            _require(0 <= order.account <= _MAX_ACCOUNT, f"order {order.order_id}: account")
        keys = [(o.account, o.client_order_id) for o in self._orders.values() if o.client_order_id]
        _require(len(keys) == len(set(keys)), "an account uses a client order id twice")
        tripped = {key for key, p in self._protection.items() if p.tripped}
        for order in self._orders.values():
            _require(
                (order.account, order.instrument.number) not in tripped, f"order {order.order_id}: tripped account"
            )
        _require(not self._to_trip, "protection left to trip between commands")

    # Validation

    def _check_new_order_id(self, order_id: object) -> int:
        """``submit``'s order_id: the caller's (0 for none) with caller order
        ids, where it is required; else not given."""
        if not self._caller_ids:
            if order_id is not None:
                raise ValueError("order_id is only for an engine with caller_order_ids=True")
            return 0
        if order_id is None:
            raise ValueError("an engine with caller_order_ids=True needs an order_id")
        return _check_int("order_id", order_id, 0, _MAX_ORDER_ID)

    def _validate_new(self, new: _NewOrder) -> RejectReason | None:
        """The first failing check of a new order (docs/semantics.md, Validation),
        the order limits right after check 7."""
        if self._caller_ids and new.order_id == 0:
            return RejectReason.BAD_ORDER_ID
        inst = self._instruments.get(new.symbol)
        if inst is None:
            return RejectReason.UNKNOWN_INSTRUMENT
        if inst.halted:
            return RejectReason.HALTED
        protection = self._protection.get((new.account, inst.number))
        if protection is not None and protection.tripped:
            return RejectReason.MMP
        reason = _qty_reason(inst, new.qty, allow_zero=False)
        if reason is None and new.order_type is OrderType.LIMIT:
            assert new.price is not None
            reason = _price_reason(inst, new.price)
        if reason is None:
            reason = _limits_reason(inst, new.qty, new.price)
        if reason is not None:
            return reason
        if self._caller_ids and new.order_id in self._orders:
            return RejectReason.DUPLICATE_ORDER_ID
        if new.client_order_id is not None and self._find_by_client_order_id(
            new.account, new.client_order_id
        ):
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        if new.post_only and new.price is not None and self._would_cross(inst, new.side, new.price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        return None

    def _validate_modify(
        self, order: _Order, qty: int, price: int | None, new_price: int
    ) -> RejectReason | None:
        """The first failing check of a modify of an open order (rules 3 to 9),
        the order limits first where rule 9 begins."""
        inst = order.instrument
        if inst.halted:
            return RejectReason.HALTED
        reason = _qty_reason(inst, qty, allow_zero=True)
        if reason is None and price is not None:
            reason = _price_reason(inst, price)
        if reason is not None:
            return reason
        if qty == 0 or _keeps_priority(order, qty, new_price):
            return None
        reason = _limits_reason(inst, qty, new_price)
        if reason is not None:
            return reason
        if order.post_only and self._would_cross(inst, order.side, new_price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        return None

    def _would_cross(self, inst: _Instrument, side: Side, price: int) -> bool:
        """Whether a limit at ``price`` would trade against the best opposite level."""
        best = _best_price(inst.book(_opposite(side)), _opposite(side))
        return best is not None and _within(side, best, price)

    def _find_target(
        self, order_id: int | None, account: int | None, client_order_id: str | None
    ) -> _Order | RejectReason:
        """The open order a cancel/modify addresses, or why there is none."""
        if client_order_id is not None:
            assert account is not None
            order = self._find_by_client_order_id(account, client_order_id)
        else:
            assert order_id is not None
            order = self._orders.get(order_id)
        if order is None:
            return RejectReason.UNKNOWN_ORDER
        if account is not None and order.account != account:
            return RejectReason.NOT_OWNER
        return order

    def _find_by_client_order_id(self, account: int, client_order_id: str) -> _Order | None:
        for order in self._orders.values():
            if order.account == account and order.client_order_id == client_order_id:
                return order
        return None

    # Matching

    def _limit_of(self, taker: _Order) -> int | None:
        """The worst price the taker may trade at; None means no limit."""
        if taker.price is not None:
            return taker.price
        protection = taker.instrument.market_protection
        best = _best_price(taker.instrument.book(_opposite(taker.side)), _opposite(taker.side))
        if protection is None or best is None:
            return None
        return best + protection if taker.side is Side.BUY else best - protection

    def _fok_fillable(self, taker: _Order, limit: int | None) -> bool:
        """Whether the whole qty of a FOK taker can trade within its limit now.

        A same-account maker counts as nothing under cancel_oldest (it would be
        cancelled) and ends the count under cancel_newest and cancel_both.
        """
        book = taker.instrument.book(_opposite(taker.side))
        needed = taker.qty
        for price in _prices_best_first(book, _opposite(taker.side)):
            if not _within(taker.side, price, limit):
                return False
            for maker in book[price]:
                if _self_trade(taker, maker):
                    if taker.stp is SelfTradePrevention.CANCEL_OLDEST:
                        continue
                    return False
                needed -= maker.qty
                if needed <= 0:
                    return True
        return False

    def _match(self, seq: int, taker: _Order, limit: int | None, events: list[Event]) -> _Stop:
        """Trade the taker against the opposite side, appending the events."""
        book = taker.instrument.book(_opposite(taker.side))
        while taker.qty > 0:
            best = _best_price(book, _opposite(taker.side))
            if best is None:
                return _Stop.EMPTY
            if not _within(taker.side, best, limit):
                return _Stop.LIMIT
            maker = book[best][0]
            if not _self_trade(taker, maker):
                self._trade(seq, taker, maker, events)
            elif self._prevent_self_trade(seq, taker, maker, events):
                return _Stop.STP
        return _Stop.FILLED

    def _prevent_self_trade(
        self, seq: int, taker: _Order, maker: _Order, events: list[Event]
    ) -> bool:
        """Apply the taker's STP mode to a same-account maker; True if the taker is done."""
        if taker.stp is not SelfTradePrevention.CANCEL_NEWEST:
            self._remove(maker)
            events.append(Cancelled(seq, maker.order_id, maker.qty, CancelReason.STP))
        if taker.stp is SelfTradePrevention.CANCEL_OLDEST:
            return False
        events.append(Cancelled(seq, taker.order_id, taker.qty, CancelReason.STP))
        taker.qty = 0
        return True

    def _trade(self, seq: int, taker: _Order, maker: _Order, events: list[Event]) -> None:
        assert maker.price is not None
        qty = min(taker.qty, maker.qty)
        taker.qty -= qty
        maker.qty -= qty
        if maker.qty == 0:
            self._remove(maker)
        self._last_trade_id += 1
        events.append(
            Trade(
                seq,
                self._last_trade_id,
                taker.instrument.symbol,
                maker.price,
                qty,
                maker.order_id,
                taker.order_id,
                maker.account,
                taker.account,
                taker.side,
                maker.qty,
                taker.qty,
            )
        )
        self._count_fill(taker.account, taker.instrument, qty)
        self._count_fill(maker.account, taker.instrument, qty)

    def _finish_taker(
        self, seq: int, taker: _Order, tif: TimeInForce, stop: _Stop, events: list[Event]
    ) -> None:
        """Deal with what is left of a new order after matching."""
        if stop is _Stop.FILLED or stop is _Stop.STP:
            return
        if taker.price is None:
            reason = CancelReason.BAND if stop is _Stop.LIMIT else CancelReason.MARKET_REMAINDER
            events.append(Cancelled(seq, taker.order_id, taker.qty, reason))
        elif tif is TimeInForce.IOC:
            events.append(Cancelled(seq, taker.order_id, taker.qty, CancelReason.IOC))
        else:
            assert tif is TimeInForce.GTC, "a FOK order that passed its check fills completely"
            self._rest(seq, taker, events)

    def _reprice(self, seq: int, order: _Order, qty: int, price: int) -> list[Event]:
        """Modify rule 9: leave the level, match like a new GTC limit order, rest."""
        self._remove(order)
        order.qty = qty
        order.price = price
        events: list[Event] = [Modified(seq, order.order_id, price, qty, False)]
        stop = self._match(seq, order, price, events)
        if stop is not _Stop.FILLED and stop is not _Stop.STP:
            self._rest(seq, order, events)
        self._trip(seq, events)
        return events

    # The book

    def _rest(self, seq: int, order: _Order, events: list[Event]) -> None:
        """Put an order at the back of its level, or cancel it if the level is full."""
        assert order.price is not None
        book = order.instrument.book(order.side)
        if _level_total(book.get(order.price, [])) + order.qty > MAX_INT64:
            events.append(Cancelled(seq, order.order_id, order.qty, CancelReason.LEVEL_FULL))
            return
        book.setdefault(order.price, []).append(order)
        self._orders[order.order_id] = order

    def _remove(self, order: _Order) -> None:
        """Take a resting order out of its level and out of the index."""
        assert order.price is not None
        book = order.instrument.book(order.side)
        book[order.price].remove(order)
        if not book[order.price]:
            del book[order.price]
        del self._orders[order.order_id]

    def _next_seq(self) -> int:
        self._last_seq += 1
        return self._last_seq


# Small pure helpers


def _opposite(side: Side) -> Side:
    return Side.SELL if side is Side.BUY else Side.BUY


def _best_price(book: _Book, side: Side) -> int | None:
    """The best price of one side (highest bid, lowest ask); None if it is empty."""
    if not book:
        return None
    return max(book) if side is Side.BUY else min(book)


def _prices_best_first(book: _Book, side: Side) -> list[int]:
    return sorted(book, reverse=side is Side.BUY)


def _within(taker_side: Side, maker_price: int, limit: int | None) -> bool:
    """Whether a taker with this limit (None: no limit) may trade at ``maker_price``."""
    if limit is None:
        return True
    return maker_price <= limit if taker_side is Side.BUY else maker_price >= limit


def _self_trade(taker: _Order, maker: _Order) -> bool:
    """Whether self-trade prevention applies to this maker."""
    return maker.account == taker.account and taker.stp is not SelfTradePrevention.NONE


def _keeps_priority(order: _Order, qty: int, new_price: int) -> bool:
    """Modify rule 8: same price and no more than the open qty."""
    return new_price == order.price and qty <= order.qty


def _level_total(level: list[_Order]) -> int:
    return sum(order.qty for order in level)


def _levels(book: _Book, side: Side, depth: int) -> list[Level]:
    prices = _prices_best_first(book, side)[:depth]
    return [Level(price, _level_total(book[price]), len(book[price])) for price in prices]


def _rejected(
    seq: int, reason: RejectReason, client_order_id: str | None, order_id: int | None
) -> Rejected:
    return Rejected(seq, reason, REJECT_MESSAGES[reason], client_order_id, order_id)


def _qty_reason(inst: _Instrument, qty: int, *, allow_zero: bool) -> RejectReason | None:
    if qty < 0 or (qty == 0 and not allow_zero):
        return RejectReason.BAD_QTY
    if qty % inst.lot_size != 0:
        return RejectReason.OFF_LOT
    return None


def _price_reason(inst: _Instrument, price: int) -> RejectReason | None:
    if price <= 0:
        return RejectReason.BAD_PRICE
    if price % inst.tick_size != 0:
        return RejectReason.OFF_TICK
    band = inst.price_band
    if band is not None and not band[0] <= price <= band[1]:
        return RejectReason.OUTSIDE_BAND
    return None


def _limits_reason(inst: _Instrument, qty: int, price: int | None) -> RejectReason | None:
    """The instrument's order limits on an order of ``qty`` at ``price`` (None:
    a market order, whose notional is not known: its qty only)."""
    if inst.max_qty and qty > inst.max_qty:
        return RejectReason.MAX_QTY_EXCEEDED
    if inst.max_notional and price is not None and price * qty > inst.max_notional:
        return RejectReason.MAX_NOTIONAL_EXCEEDED
    return None


def _require(condition: bool, message: str) -> None:
    """An invariant check that also runs under ``python -O``."""
    if not condition:
        raise AssertionError(message)


def _verify_level(inst: _Instrument, side: Side, price: int, level: list[_Order]) -> None:
    where = f"{inst.symbol} {side} level {price}"
    _require(bool(level), f"{where}: empty level")
    _require(_price_reason(inst, price) is None, f"{where}: a price no order may rest at")
    _require(_level_total(level) <= MAX_INT64, f"{where}: total over 2**63-1")
    for order in level:
        what = f"{where}: order {order.order_id}"
        _require(order.instrument is inst, f"{what} has another instrument")
        _require(order.side is side and order.price == price, f"{what} has another side/price")
        _require(order.qty > 0 and order.qty % inst.lot_size == 0, f"{what} has qty {order.qty}")


# Argument checks of the Python API (not market refusals: those are Rejected events)


def _check_new_order(
    symbol: object,
    side: object,
    qty: object,
    price: object,
    tif: object,
    account: object,
    client_order_id: object,
    order_type: object,
    post_only: object,
    stp: object,
) -> _NewOrder:
    """Check the types and the combination of ``submit``'s arguments."""
    if not isinstance(symbol, str):
        raise TypeError(f"symbol must be a str, not {type(symbol).__name__}")
    side_ = _check_choice("side", side, Side)
    order_type_ = _check_choice("order_type", order_type, OrderType)
    tif_ = _check_choice("tif", DEFAULT_TIF[order_type_] if tif is None else tif, TimeInForce)
    stp_ = _check_choice("stp", stp, SelfTradePrevention)
    qty_ = _check_int("qty", qty, _MIN_INT64, MAX_INT64)
    price_ = None if price is None else _check_int("price", price, _MIN_INT64, MAX_INT64)
    account_ = _check_int("account", account, 0, _MAX_ACCOUNT)
    coid = None if client_order_id is None else _check_client_order_id(client_order_id)
    if not isinstance(post_only, bool):
        raise TypeError(f"post_only must be a bool, not {type(post_only).__name__}")
    if order_type_ is OrderType.MARKET and tif_ is TimeInForce.GTC:
        raise ValueError("a market order cannot be gtc: use tif='ioc' or tif='fok'")
    if order_type_ is OrderType.MARKET and price_ is not None:
        raise ValueError("a market order has no price")
    if order_type_ is OrderType.LIMIT and price_ is None:
        raise ValueError("a limit order needs a price")
    if post_only and (order_type_ is OrderType.MARKET or tif_ is not TimeInForce.GTC):
        raise ValueError("post-only is only for gtc limit orders")
    return _NewOrder(
        symbol, side_, qty_, price_, tif_, account_, coid, order_type_, post_only, stp_, 0
    )


def _check_target(order_id: object, account: object, client_order_id: object, *, min_order_id: int = 1) -> None:
    """Check how a cancel, modify or lookup addresses its order."""
    if (order_id is None) == (client_order_id is None):
        raise ValueError("give exactly one of order_id and client_order_id")
    if order_id is not None:
        _check_int("order_id", order_id, min_order_id, _MAX_ORDER_ID)
    if account is not None:
        _check_int("account", account, 0, _MAX_ACCOUNT)
    if client_order_id is not None:
        _check_client_order_id(client_order_id)
        if account is None:
            raise ValueError("an order addressed by client_order_id needs its account")


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_choice(name: str, value: object, choices: type[_E]) -> _E:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(member.value for member in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def _check_text(name: str, value: object, max_len: int, lowest: str = " ") -> str:
    """1 to ``max_len`` characters of printable ASCII, ``lowest`` to ``~``
    (a symbol has no spaces: ``!``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= max_len or not all(lowest <= ch <= "~" for ch in value):
        raise ValueError(f"{name} must be 1 to {max_len} printable ASCII characters from {lowest!r}: {value!r}")
    return value


def _check_client_order_id(value: object) -> str:
    return _check_text("client_order_id", value, _MAX_CLIENT_ORDER_ID_LEN)


def _check_band(band: object) -> tuple[int, int] | None:
    if band is None:
        return None
    if not isinstance(band, (tuple, list)) or len(band) != 2:
        raise TypeError("price_band must be a (min_price, max_price) tuple or None")
    low = _check_int("price_band min_price", band[0], 1, MAX_INT64)
    high = _check_int("price_band max_price", band[1], 1, MAX_INT64)
    if low > high:
        raise ValueError(f"price_band min_price {low} is above max_price {high}")
    return (low, high)

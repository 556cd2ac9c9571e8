"""Conservation laws of the reference matcher over random command sequences.

A ledger follows every order through the events alone (accepted qty, modify
changes, trades, cancels) and, after every command, holds the engine to it:
the open orders and the book must be exactly what the events imply, and the
engine's own ``verify()`` must pass. The commands come from
``pyengine.testing.strategies``, the same ones the differential test uses,
order limits included: a new order's reject over them is predicted from the
ledger's own copy of the limits, and a modify that moves or grows an order
must leave it within them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from pyengine.enums import (
    REJECT_MESSAGES,
    CancelReason,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TradingState,
)
from pyengine.events import (
    Accepted,
    Cancelled,
    Event,
    Level,
    Modified,
    OrderLimits,
    OrderLimitsSet,
    Rejected,
    StateChanged,
    Trade,
)
from pyengine.testing import ReferenceEngine
from pyengine.testing.strategies import (
    Addressed,
    Cancel,
    Command,
    Modify,
    NewOrder,
    SetOrderLimits,
    SetState,
    accepted_order_ids,
    apply,
    commands,
    instrument_spec_lists,
    resolve_target,
)

DEPTH = 10**6

_MODIFY_REJECTS = frozenset(
    {
        RejectReason.UNKNOWN_ORDER,
        RejectReason.NOT_OWNER,
        RejectReason.BAD_QTY,
        RejectReason.OFF_LOT,
        RejectReason.BAD_PRICE,
        RejectReason.OFF_TICK,
        RejectReason.OUTSIDE_BAND,
        RejectReason.POST_ONLY_WOULD_CROSS,
        RejectReason.HALTED,
        RejectReason.MAX_QTY_EXCEEDED,
        RejectReason.MAX_NOTIONAL_EXCEEDED,
    }
)
_LIMIT_REJECTS = frozenset({RejectReason.MAX_QTY_EXCEEDED, RejectReason.MAX_NOTIONAL_EXCEEDED})


@dataclass
class _Tracked:
    """One accepted order as its events describe it: quantities in and out."""

    order: NewOrder
    order_id: int
    price: int | None
    accepted: int
    modified_by: int = 0  # the sum of (new qty - open qty) over its Modified events
    traded: int = 0
    cancelled: int = 0  # the leaves of its Cancelled event

    @property
    def open(self) -> int:
        """The open qty the events imply: what came in less what went out."""
        return self.accepted + self.modified_by - self.traded - self.cancelled


def _best(levels: Sequence[Level]) -> int | None:
    return levels[0].price if levels else None


def _static_reject(
    order: NewOrder, specs: Mapping[str, Mapping[str, Any]], halted: set[str]
) -> RejectReason | None:
    """Validation checks 1 to 7, straight from docs/semantics.md."""
    spec = specs.get(order.symbol)
    if spec is None:
        return RejectReason.UNKNOWN_INSTRUMENT
    if order.symbol in halted:
        return RejectReason.HALTED
    if order.qty <= 0:
        return RejectReason.BAD_QTY
    if order.qty % spec["lot_size"]:
        return RejectReason.OFF_LOT
    if order.price is None:
        return None
    if order.price <= 0:
        return RejectReason.BAD_PRICE
    if order.price % spec["tick_size"]:
        return RejectReason.OFF_TICK
    band = spec["price_band"]
    if band is not None and not band[0] <= order.price <= band[1]:
        return RejectReason.OUTSIDE_BAND
    return None


def _over_limits(limits: OrderLimits, qty: int, price: int | None) -> RejectReason | None:
    """Which order limit an order of ``qty`` at ``price`` (None: market) is over."""
    if limits.max_qty and qty > limits.max_qty:
        return RejectReason.MAX_QTY_EXCEEDED
    if limits.max_notional and price is not None and price * qty > limits.max_notional:
        return RejectReason.MAX_NOTIONAL_EXCEEDED
    return None


class _Sender:
    """An engine that notes the qty and price of each modify sent to it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.modifies: list[tuple[int | None, int | None]] = []

    def modify(self, *args: Any, qty: int | None = None, price: int | None = None, **kwargs: Any) -> list[Event]:
        self.modifies.append((qty, price))
        return self.engine.modify(*args, qty=qty, price=price, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class Ledger:
    """Runs commands on an engine and checks each command's events and effects."""

    def __init__(self, engine: Any, specs: Sequence[Mapping[str, Any]]) -> None:
        self.engine = engine
        self.specs = {spec["symbol"]: spec for spec in specs}
        self.orders: dict[int, _Tracked] = {}
        self.order_ids: list[int] = []
        self.seq = 0
        self.trades = 0
        self.halted: set[str] = set()
        self.limits = {symbol: OrderLimits(0, 0) for symbol in self.specs}

    # Running one command

    def run(self, command: Command) -> list[Event]:
        before = {symbol: self.engine.book(symbol, DEPTH) for symbol in self.specs}
        reject_ids: tuple[str | None, int | None]
        if isinstance(command, SetState):
            return self._run_set_state(command)
        if isinstance(command, SetOrderLimits):
            return self._run_set_order_limits(command)
        if isinstance(command, NewOrder):
            to = None
            expected = self._expected_new_order_reject(command, before)
            reject_ids = (command.client_order_id, None)
        else:
            to = resolve_target(self.engine, command.target, self.order_ids)
            expected = self._expected_target_reject(to, command)
            reject_ids = (to.client_order_id, to.order_id)
        target = None if to is None else self._reached(to)
        target_open = 0 if target is None else target.open
        self.seq += 1
        sender = _Sender(self.engine)
        events = apply(sender, command, self.order_ids)
        assert events, "every command produces at least one event"
        assert all(event.seq == self.seq for event in events), events
        if any(type(event) is Rejected for event in events):
            assert len(events) == 1 and events[0][3:] == reject_ids, events
            if events[0].reason in _LIMIT_REJECTS and isinstance(command, Modify):
                self._check_modify_over_limits(events[0].reason, target, sender.modifies[-1])
        if expected is not None:
            assert events == [Rejected(self.seq, expected, REJECT_MESSAGES[expected], *reject_ids)]
        elif isinstance(command, Cancel):
            assert target is not None
            assert events == [Cancelled(self.seq, target.order_id, target_open, CancelReason.USER)]
        touched: set[int] = set()
        for event in events:
            touched |= self._on_event(event, command, before)
        self._check_new_order_outcome(command, events, expected, before)
        self.order_ids.extend(accepted_order_ids(events))
        self._check_state(touched)
        self.engine.verify()
        return events

    def _run_set_state(self, command: SetState) -> list[Event]:
        """A halt or resume: one StateChanged event, and the book untouched."""
        before = {symbol: self.engine.book(symbol, DEPTH) for symbol in self.specs}
        self.seq += 1
        events = apply(self.engine, command, self.order_ids)
        state = TradingState.HALTED if command.halt else TradingState.OPEN
        assert events == [StateChanged(self.seq, command.symbol, state)]
        (self.halted.add if command.halt else self.halted.discard)(command.symbol)
        assert {symbol: self.engine.book(symbol, DEPTH) for symbol in self.specs} == before
        for symbol in self.specs:
            expected = TradingState.HALTED if symbol in self.halted else TradingState.OPEN
            assert self.engine.trading_state(symbol) is expected
        return events

    def _run_set_order_limits(self, command: SetOrderLimits) -> list[Event]:
        """One OrderLimitsSet event with what was set (as given, unless set
        under an open order), and the books untouched."""
        before = {symbol: self.engine.book(symbol, DEPTH) for symbol in self.specs}
        self.seq += 1
        events = apply(self.engine, command, self.order_ids)
        assert len(events) == 1 and type(events[0]) is OrderLimitsSet, events
        event = events[0]
        assert event.seq == self.seq and event.symbol in self.specs
        asked = (command.max_qty or 0, command.max_notional or 0)
        if command.under is None:
            assert (event.symbol, event.max_qty, event.max_notional) == (command.symbol, *asked)
        else:
            assert (event.max_qty > 0, event.max_notional > 0) == (asked[0] > 0, asked[1] > 0)
        self.limits[event.symbol] = OrderLimits(event.max_qty, event.max_notional)
        assert {symbol: self.engine.book(symbol, DEPTH) for symbol in self.specs} == before
        for symbol in self.specs:
            assert self.engine.order_limits(symbol) == self.limits[symbol]
        return events

    def _check_modify_over_limits(
        self, reason: RejectReason, target: _Tracked | None, sent: tuple[int | None, int | None]
    ) -> None:
        """A modify rejected over the order limits leaves its order more than
        them, and not only reduced in place (that is never limited)."""
        assert target is not None and target.price is not None
        qty = target.open if sent[0] is None else sent[0]
        price = target.price if sent[1] is None else sent[1]
        assert qty > 0 and not (price == target.price and qty <= target.open), "a reduction is never limited"
        assert _over_limits(self.limits[target.order.symbol], qty, price) is reason

    def _expected_new_order_reject(
        self, order: NewOrder, before: Mapping[str, Any]
    ) -> RejectReason | None:
        """The reject a new order must get, from the rules and the ledger alone."""
        reason = _static_reject(order, self.specs, self.halted)
        if reason is None:
            reason = _over_limits(self.limits[order.symbol], order.qty, order.price)
        if reason is not None:
            return reason
        if order.client_order_id is not None and self._open_order_of(
            order.account, order.client_order_id
        ):
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        if order.post_only:
            assert order.price is not None
            view = before[order.symbol]
            if order.side is Side.BUY:
                best = _best(view.asks)
                crosses = best is not None and order.price >= best
            else:
                best = _best(view.bids)
                crosses = best is not None and order.price <= best
            if crosses:
                return RejectReason.POST_ONLY_WOULD_CROSS
        return None

    def _expected_target_reject(self, to: Addressed, command: Command) -> RejectReason | None:
        """unknown_order / not_owner for a cancel or modify, halted for a modify,
        from the ledger alone."""
        target = self._reached(to)
        if target is None:
            return RejectReason.UNKNOWN_ORDER
        if to.account is not None and to.account != target.order.account:
            return RejectReason.NOT_OWNER
        if isinstance(command, Modify) and target.order.symbol in self.halted:
            return RejectReason.HALTED
        return None

    def _reached(self, to: Addressed) -> _Tracked | None:
        """The open order a cancel/modify names, as the ledger knows it."""
        if to.client_order_id is not None:
            assert to.account is not None
            return self._open_order_of(to.account, to.client_order_id)
        tracked = self.orders.get(to.order_id) if to.order_id is not None else None
        return tracked if tracked is not None and tracked.open > 0 else None

    def _open_order_of(self, account: int, client_order_id: str) -> _Tracked | None:
        for tracked in self.orders.values():
            order = tracked.order
            if tracked.open > 0 and (order.account, order.client_order_id) == (
                account,
                client_order_id,
            ):
                return tracked
        return None

    # Events

    def _on_event(self, event: Event, command: Command, before: Mapping[str, Any]) -> set[int]:
        if type(event) is Accepted:
            return self._on_accepted(event, command)
        if type(event) is Trade:
            return self._on_trade(event, before)
        if type(event) is Cancelled:
            return self._on_cancelled(event, command)
        if type(event) is Modified:
            return self._on_modified(event, command)
        assert type(event) is Rejected, event
        self._on_rejected(event, command)
        return set()

    def _on_accepted(self, event: Accepted, command: Command) -> set[int]:
        assert isinstance(command, NewOrder)
        assert event.order_id == len(self.orders) + 1, "order ids are 1, 2, 3, ..."
        assert (event.symbol, event.side, event.price, event.qty) == (
            command.symbol,
            command.side,
            command.price,
            command.qty,
        )
        assert (event.account, event.client_order_id) == (command.account, command.client_order_id)
        self.orders[event.order_id] = _Tracked(command, event.order_id, command.price, command.qty)
        return {event.order_id}

    def _on_trade(self, event: Trade, before: Mapping[str, Any]) -> set[int]:
        self.trades += 1
        assert event.trade_id == self.trades, "trade ids are 1, 2, 3, ..."
        maker, taker = self.orders[event.maker_order_id], self.orders[event.taker_order_id]
        assert maker is not taker
        assert event.symbol == maker.order.symbol == taker.order.symbol
        assert event.aggressor_side is taker.order.side and maker.order.side is not taker.order.side
        assert (event.maker_account, event.taker_account) == (
            maker.order.account,
            taker.order.account,
        )
        assert 0 < event.qty <= min(maker.open, taker.open)
        assert event.price == maker.price, "trades happen at the maker's price"
        self._check_taker_limit(event, taker, before)
        assert not taker.order.post_only, "a post-only order never takes liquidity"
        if maker.order.account == taker.order.account:
            assert taker.order.stp is SelfTradePrevention.NONE, "self-trade prevention missed"
        for tracked in (maker, taker):
            tracked.traded += event.qty
        assert (event.maker_leaves, event.taker_leaves) == (maker.open, taker.open)
        return {maker.order_id, taker.order_id}

    def _check_taker_limit(self, event: Trade, taker: _Tracked, before: Mapping[str, Any]) -> None:
        buy = taker.order.side is Side.BUY
        if taker.price is not None:
            assert event.price <= taker.price if buy else event.price >= taker.price
            return
        protection = self.specs[taker.order.symbol]["market_protection"]
        if protection is not None:
            view = before[taker.order.symbol]
            best = _best(view.asks if buy else view.bids)
            assert best is not None
            assert event.price <= best + protection if buy else event.price >= best - protection

    def _on_cancelled(self, event: Cancelled, command: Command) -> set[int]:
        tracked = self.orders[event.order_id]
        assert event.leaves == tracked.open > 0, "a cancel reports the open qty it removes"
        order = tracked.order
        market = order.order_type is OrderType.MARKET
        expected_kind = {
            CancelReason.USER: not isinstance(command, NewOrder),
            CancelReason.IOC: not market and order.tif is TimeInForce.IOC,
            CancelReason.FOK: order.tif is TimeInForce.FOK,
            CancelReason.MARKET_REMAINDER: market,
            CancelReason.BAND: market and self.specs[order.symbol]["market_protection"] is not None,
            CancelReason.STP: True,
            CancelReason.LEVEL_FULL: not market and order.tif is TimeInForce.GTC,
        }[event.reason]
        assert expected_kind, f"{event.reason} cannot cancel {order}"
        tracked.cancelled += event.leaves
        return {event.order_id}

    def _on_modified(self, event: Modified, command: Command) -> set[int]:
        assert isinstance(command, Modify)
        tracked = self.orders[event.order_id]
        assert tracked.open > 0 and event.qty > 0
        same_place = event.price == tracked.price and event.qty <= tracked.open
        assert event.priority_kept == same_place
        if not same_place:
            assert _over_limits(self.limits[tracked.order.symbol], event.qty, event.price) is None, event
        tracked.modified_by += event.qty - tracked.open
        tracked.price = event.price
        return {event.order_id}

    def _on_rejected(self, event: Rejected, command: Command) -> None:
        assert event.message == REJECT_MESSAGES[event.reason]
        if isinstance(command, Modify):
            assert event.reason in _MODIFY_REJECTS, event

    def _check_new_order_outcome(
        self,
        command: Command,
        events: list[Event],
        expected_reject: RejectReason | None,
        before: Mapping[str, Any],
    ) -> None:
        if not isinstance(command, NewOrder) or expected_reject is not None:
            return
        assert type(events[0]) is Accepted, f"{command} should have been accepted: {events}"
        tracked = self.orders[events[0].order_id]
        if command.tif is TimeInForce.FOK:
            fok = Cancelled(self.seq, tracked.order_id, command.qty, CancelReason.FOK)
            assert events[1:] == [fok] or tracked.traded == command.qty, events
        if command.order_type is OrderType.MARKET or command.tif is not TimeInForce.GTC:
            assert tracked.open == 0, "only GTC limit orders rest"
        last = events[-1]
        if type(last) is Cancelled and last.order_id == tracked.order_id:
            self._check_remainder_reason(command, last.reason, before)

    def _check_remainder_reason(
        self, order: NewOrder, reason: CancelReason, before: Mapping[str, Any]
    ) -> None:
        """Why the rest of a taker was cancelled agrees with the book it left."""
        buy = order.side is Side.BUY
        view_before, view_after = before[order.symbol], self.engine.book(order.symbol, 1)
        best_after = _best(view_after.asks if buy else view_after.bids)
        if reason is CancelReason.MARKET_REMAINDER:
            assert best_after is None, "market_remainder only when the opposite side is empty"
        elif reason is CancelReason.BAND:
            protection = self.specs[order.symbol]["market_protection"]
            best_before = _best(view_before.asks if buy else view_before.bids)
            assert best_after is not None and best_before is not None
            limit = best_before + protection if buy else best_before - protection
            assert best_after > limit if buy else best_after < limit
        elif reason is CancelReason.IOC and best_after is not None:
            assert order.price is not None
            assert best_after > order.price if buy else best_after < order.price

    # State

    def _check_state(self, touched: set[int]) -> None:
        """The engine's open orders and books are exactly what the events imply."""
        resting = {state.order_id: state for state in self.engine.open_orders()}
        expected = {oid for oid, t in self.orders.items() if t.open > 0}
        assert set(resting) == expected
        for order_id in touched:
            tracked = self.orders[order_id]
            state = self.engine.order(order_id)
            resting_qty = 0 if state is None else state.open_qty
            assert tracked.accepted + tracked.modified_by == (
                tracked.traded + tracked.cancelled + resting_qty
            ), f"order {order_id}: accepted + modified != traded + cancelled + resting"
            if state is None:
                continue
            order = tracked.order
            assert state == resting[order_id]
            assert (state.symbol, state.side, state.price) == (
                order.symbol,
                order.side,
                tracked.price,
            )
            assert (state.account, state.client_order_id) == (order.account, order.client_order_id)
            assert (state.post_only, state.stp) == (order.post_only, order.stp)
        for symbol in self.specs:
            self._check_book(symbol, [s for s in resting.values() if s.symbol == symbol])
        assert sum(t.traded for t in self.orders.values() if t.order.side is Side.BUY) == sum(
            t.traded for t in self.orders.values() if t.order.side is Side.SELL
        ), "every trade has a buyer and a seller for the same qty"

    def _check_book(self, symbol: str, resting: list[Any]) -> None:
        view = self.engine.book(symbol, DEPTH)
        for side, levels in ((Side.BUY, view.bids), (Side.SELL, view.asks)):
            totals: Counter[int] = Counter()
            counts: Counter[int] = Counter()
            for state in resting:
                if state.side is side:
                    totals[state.price] += state.open_qty
                    counts[state.price] += 1
            expected = [Level(p, totals[p], counts[p]) for p in sorted(totals)]
            assert levels == (expected[::-1] if side is Side.BUY else expected)
        if view.bids and view.asks:
            assert view.bids[0].price < view.asks[0].price, "the book is crossed"


class ReferenceMachine(RuleBasedStateMachine):
    """Random instruments, then random commands, checked by the ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger: Ledger | None = None

    @initialize(specs=instrument_spec_lists())
    def add_instruments(self, specs: list[dict[str, Any]]) -> None:
        engine = ReferenceEngine()
        for number, spec in enumerate(specs):
            assert engine.add_instrument(**spec) == number
        self.ledger = Ledger(engine, specs)

    @rule(data=st.data())
    def command(self, data: st.DataObject) -> None:
        assert self.ledger is not None
        specs = list(self.ledger.specs.values())
        self.ledger.run(data.draw(commands(specs, order_limits=True), label="command"))

    @invariant()
    def verified(self) -> None:
        if self.ledger is not None:
            self.ledger.engine.verify()


ReferenceMachine.TestCase.settings = settings(
    settings(),
    stateful_step_count=60,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReferenceMachine = ReferenceMachine.TestCase


_OUTCOMES = frozenset(
    {
        *(
            f"Cancelled:{reason}"
            for reason in ("user", "ioc", "fok", "market_remainder", "band", "stp", "level_full")
        ),
        *(
            f"Rejected:{reason}"
            for reason in (
                "unknown_instrument",
                "bad_qty",
                "off_lot",
                "bad_price",
                "off_tick",
                "outside_band",
                "duplicate_client_order_id",
                "post_only_would_cross",
                "unknown_order",
                "not_owner",
                "halted",
                "max_qty_exceeded",
                "max_notional_exceeded",
            )
        ),
        "StateChanged:halted",
        "StateChanged:open",
        "Modified:True",
        "Modified:False",
        "Modified:True:over_limits",
        "Modify:max_qty_exceeded",
        "Modify:max_notional_exceeded",
        "Trade:same_account",
        "Trade:sweep",
    }
)
"""Every cancel reason and every reject reason of docs/semantics.md but those of
the batch path, a few kinds of trade, and the order limits': a modify over each
and one that reduces an order left over them in place."""


def _outcomes(engine: ReferenceEngine, command: Command, events: list[Event]) -> set[str]:
    found = set()
    for event in events:
        if isinstance(event, Cancelled | Rejected):
            found.add(f"{type(event).__name__}:{event.reason}")
            if isinstance(command, Modify) and event.reason in _LIMIT_REJECTS:
                found.add(f"Modify:{event.reason}")
        elif isinstance(event, Modified):
            found.add(f"Modified:{event.priority_kept}")
            state = engine.order(event.order_id)
            if event.priority_kept and state is not None:
                if _over_limits(engine.order_limits(state.symbol), event.qty, event.price):
                    found.add("Modified:True:over_limits")
        elif isinstance(event, Trade) and event.maker_account == event.taker_account:
            found.add("Trade:same_account")
        elif isinstance(event, StateChanged):
            found.add(f"StateChanged:{event.state}")
    prices = {event.price for event in events if type(event) is Trade}
    if len(prices) > 1:
        found.add("Trade:sweep")
    return found


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Command]]:
    specs = draw(instrument_spec_lists())
    return specs, draw(st.lists(commands(specs, order_limits=draw(st.booleans())), min_size=40, max_size=60))


def test_strategies_reach_every_rule() -> None:
    """The strategies reach every cancel and reject reason, order limits' included.

    A search over scenarios (instruments and 40-60 commands each, half of
    them setting order limits, which make some other outcomes rarer) that
    stops once the scenarios run so far have produced every outcome between
    them. Over 25 seeds it stopped after 38 to 402 scenarios; the budget of 2,000
    keeps the test from hanging on the order in which a version of Hypothesis
    tries examples. It fails, naming what was never reached, when a strategy
    cannot get there.
    """
    seen: set[str] = set()

    def all_reached(scenario: tuple[list[dict[str, Any]], list[Command]]) -> bool:
        specs, scenario_commands = scenario
        engine = ReferenceEngine()
        for spec in specs:
            engine.add_instrument(**spec)
        order_ids: list[int] = []
        for command in scenario_commands:
            events = apply(engine, command, order_ids)
            order_ids.extend(accepted_order_ids(events))
            seen.update(_outcomes(engine, command, events))
        return seen >= _OUTCOMES

    budget = settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate])
    try:
        find(_scenarios(), all_reached, settings=budget, random=Random(20261203))
    except NoSuchExample:
        raise AssertionError(f"never reached: {sorted(_OUTCOMES - seen)}") from None

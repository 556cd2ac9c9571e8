"""The C engine against the pure-Python reference matcher.

A Hypothesis state machine drives ``pyengine.Engine`` and ``ReferenceEngine``
with the same random command sequences (several instruments and accounts,
every order type, cancels and modifies, order limits set and cleared) and
requires identical events after every command, identical books, open orders
and order limits, and both engines' invariants.
Two more properties: the batch path gives exactly the events of the one-call
path, and the engine is deterministic.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyengine import Engine, pack_cancel, pack_modify, pack_new_order, pack_set_order_limits, pack_set_state
from pyengine.events import Event
from pyengine.testing import ReferenceEngine
from pyengine.testing.strategies import (
    accepted_order_ids,
    apply,
    commands,
    instrument_spec_lists,
)


class EngineMatchesReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.reference = ReferenceEngine()
        self.specs: list[dict[str, Any]] = []
        self.order_ids: list[int] = []

    @initialize(specs=instrument_spec_lists())
    def add_instruments(self, specs: list[dict[str, Any]]) -> None:
        self.specs = specs
        for spec in specs:
            assert self.engine.add_instrument(**spec) == self.reference.add_instrument(**spec)

    @rule(data=st.data())
    def run_command(self, data: st.DataObject) -> None:
        command = data.draw(commands(self.specs, order_limits=True), label="command")
        expected = apply(self.reference, command, self.order_ids)
        got = apply(self.engine, command, self.order_ids)
        assert got == expected
        # Same classes too: tuples of equal fields would compare equal.
        assert [type(e) for e in got] == [type(e) for e in expected]
        self.order_ids.extend(accepted_order_ids(expected))

    @invariant()
    def same_state(self) -> None:
        for spec in self.specs:
            depth = 1000
            assert self.engine.book(spec["symbol"], depth) == self.reference.book(spec["symbol"], depth)
            assert self.engine.order_limits(spec["symbol"]) == self.reference.order_limits(spec["symbol"])
        assert self.engine.open_orders() == self.reference.open_orders()
        assert self.engine.seq == self.reference.seq == self.engine.stats().commands

    @invariant()
    def invariants_hold(self) -> None:
        self.engine.verify()
        self.reference.verify()


EngineMatchesReference.TestCase.settings = settings(stateful_step_count=60)
TestEngineMatchesReference = EngineMatchesReference.TestCase


class Recorder:
    """An engine wrapper that records each call as a packed command."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.packed: list[bytes] = []

    def submit(self, symbol: str, side: str, qty: int, price: int | None = None, **kw: Any) -> list[Event]:
        inst = self.engine.instrument_id(symbol) if symbol in {i.symbol for i in self.engine.instruments} else 2**32 - 1
        self.packed.append(pack_new_order(inst, side, qty, price, **kw))
        return self.engine.submit(symbol, side, qty, price, **kw)

    def cancel(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self.packed.append(pack_cancel(order_id, **kw))
        return self.engine.cancel(order_id, **kw)

    def modify(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self.packed.append(pack_modify(order_id, **kw))
        return self.engine.modify(order_id, **kw)

    def halt(self, symbol: str) -> list[Event]:
        self.packed.append(pack_set_state(self.engine.instrument_id(symbol), "halted"))
        return self.engine.halt(symbol)

    def resume(self, symbol: str) -> list[Event]:
        self.packed.append(pack_set_state(self.engine.instrument_id(symbol), "open"))
        return self.engine.resume(symbol)

    def set_order_limits(
        self, symbol: str, *, max_qty: int | None = None, max_notional: int | None = None
    ) -> list[Event]:
        self.packed.append(pack_set_order_limits(self.engine.instrument_id(symbol), max_qty or 0, max_notional or 0))
        return self.engine.set_order_limits(symbol, max_qty=max_qty, max_notional=max_notional)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def run_sequence(engine: Any, specs: list[dict[str, Any]], cmds: list[Any]) -> list[Event]:
    for spec in specs:
        engine.add_instrument(**spec)
    events: list[Event] = []
    order_ids: list[int] = []
    for command in cmds:
        evs = apply(engine, command, order_ids)
        order_ids.extend(accepted_order_ids(evs))
        events.extend(evs)
    return events


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Any]]:
    specs = draw(instrument_spec_lists())
    return specs, draw(st.lists(commands(specs, order_limits=True), max_size=80))


@given(scenarios())
def test_batch_path_gives_the_same_events(scenario: tuple[list[dict[str, Any]], list[Any]]) -> None:
    specs, cmds = scenario
    recorder = Recorder(Engine())
    one_by_one = run_sequence(recorder, specs, cmds)
    batched = Engine()
    for spec in specs:
        batched.add_instrument(**spec)
    result = batched.process_batch(b"".join(recorder.packed))
    assert batched.decode_events(result.events) == one_by_one
    assert result.commands == len(recorder.packed) == batched.seq
    assert result.event_count == len(one_by_one)
    assert result.trades == sum(type(e).__name__ == "Trade" for e in one_by_one)
    assert result.rejected == sum(type(e).__name__ == "Rejected" for e in one_by_one)
    assert batched.open_orders() == recorder.engine.open_orders()
    batched.verify()


@given(scenarios())
def test_same_commands_give_the_same_events(scenario: tuple[list[dict[str, Any]], list[Any]]) -> None:
    specs, cmds = scenario
    first = run_sequence(Engine(), specs, cmds)
    second = run_sequence(Engine(), specs, cmds)
    assert first == second
    assert [type(e) for e in first] == [type(e) for e in second]


@given(scenarios())
def test_level_updates_rebuild_the_book(scenario: tuple[list[dict[str, Any]], list[Any]]) -> None:
    """With level_updates, LevelUpdate events alone rebuild every book, and
    without them the event stream is exactly that of a plain engine."""
    from pyengine import LevelUpdate

    specs, cmds = scenario
    plain = Engine()
    md = Engine(level_updates=True)
    for spec in specs:
        plain.add_instrument(**spec)
        md.add_instrument(**spec)
    books: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    order_ids: list[int] = []
    for command in cmds:
        expected = apply(plain, command, order_ids)
        got = apply(md, command, order_ids)
        order_ids.extend(accepted_order_ids(expected))
        assert [e for e in got if type(e) is not LevelUpdate] == expected
        for ev in got:
            if type(ev) is LevelUpdate:
                levels = books.setdefault((ev.symbol, ev.side), {})
                if ev.total_qty:
                    levels[ev.price] = (ev.total_qty, ev.order_count)
                else:
                    assert ev.order_count == 0
                    levels.pop(ev.price)
        for spec in specs:
            view = md.book(spec["symbol"], 10_000)
            for side, levels in (("buy", view.bids), ("sell", view.asks)):
                rebuilt = books.get((spec["symbol"], side), {})
                assert {lv.price: (lv.total_qty, lv.order_count) for lv in levels} == rebuilt

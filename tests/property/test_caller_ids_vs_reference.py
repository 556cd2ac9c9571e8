"""Caller-chosen order ids: the C engine against the reference model.

An Engine made with ``caller_order_ids=True`` and a ``ReferenceEngine`` in
the same mode run the same random commands, whose new orders draw their ids
from a small pool (``caller_order_ids()``): the id of an open order
(``duplicate_order_id``), of a finished one (taken again) and 0 all happen.
Once through the per-call API (where 0 is an argument error) and once through
the batch path (where it is ``bad_order_id``); order limits are set now and then.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyengine import Engine, pack_cancel, pack_modify, pack_new_order, pack_set_order_limits, pack_set_state
from pyengine.events import Event
from pyengine.testing import ReferenceEngine
from pyengine.testing.strategies import (
    NewOrder,
    accepted_order_ids,
    apply,
    caller_order_ids,
    commands,
    instrument_spec_lists,
)


class CallerIdsMatchReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(caller_order_ids=True)
        self.reference = ReferenceEngine(caller_order_ids=True)
        self.specs: list[dict[str, Any]] = []
        self.order_ids: list[int] = []

    @initialize(specs=instrument_spec_lists())
    def add_instruments(self, specs: list[dict[str, Any]]) -> None:
        self.specs = specs
        for spec in specs:
            assert self.engine.add_instrument(**spec) == self.reference.add_instrument(**spec)

    @rule(data=st.data())
    def run_command(self, data: st.DataObject) -> None:
        command = data.draw(commands(self.specs, order_ids=caller_order_ids(), order_limits=True), label="command")
        if isinstance(command, NewOrder) and command.order_id == 0:
            # Not an id: the per-call API refuses it before the core.
            with pytest.raises(ValueError, match="order_id=0 is out of range"):
                apply(self.engine, command, self.order_ids)
            return
        expected = apply(self.reference, command, self.order_ids)
        got = apply(self.engine, command, self.order_ids)
        assert got == expected
        assert [type(e) for e in got] == [type(e) for e in expected]
        self.order_ids.extend(accepted_order_ids(expected))

    @invariant()
    def same_state(self) -> None:
        for spec in self.specs:
            assert self.engine.book(spec["symbol"], 1000) == self.reference.book(spec["symbol"], 1000)
            assert self.engine.order_limits(spec["symbol"]) == self.reference.order_limits(spec["symbol"])
        assert self.engine.open_orders() == self.reference.open_orders()
        assert self.engine.seq == self.reference.seq == self.engine.stats().commands

    @invariant()
    def invariants_hold(self) -> None:
        self.engine.verify()
        self.reference.verify()


CallerIdsMatchReference.TestCase.settings = settings(max_examples=30, stateful_step_count=40)
TestCallerIdsMatchReference = CallerIdsMatchReference.TestCase


class PackingReference:
    """The reference model, packing each call it runs as a batch command."""

    def __init__(self) -> None:
        self.model = ReferenceEngine(caller_order_ids=True)
        self.numbers: dict[str, int] = {}
        self.packed: list[bytes] = []

    def add_instrument(self, symbol: str, **spec: Any) -> int:
        self.numbers[symbol] = self.model.add_instrument(symbol, **spec)
        return self.numbers[symbol]

    def submit(self, symbol: str, side: str, qty: int, price: int | None = None, **kw: Any) -> list[Event]:
        self.packed.append(pack_new_order(self.numbers.get(symbol, 2**32 - 1), side, qty, price, **kw))
        return self.model.submit(symbol, side, qty, price, **kw)

    def cancel(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self.packed.append(pack_cancel(order_id, **kw))
        return self.model.cancel(order_id, **kw)

    def modify(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self.packed.append(pack_modify(order_id, **kw))
        return self.model.modify(order_id, **kw)

    def halt(self, symbol: str) -> list[Event]:
        self.packed.append(pack_set_state(self.numbers[symbol], "halted"))
        return self.model.halt(symbol)

    def resume(self, symbol: str) -> list[Event]:
        self.packed.append(pack_set_state(self.numbers[symbol], "open"))
        return self.model.resume(symbol)

    def set_order_limits(
        self, symbol: str, *, max_qty: int | None = None, max_notional: int | None = None
    ) -> list[Event]:
        self.packed.append(pack_set_order_limits(self.numbers[symbol], max_qty or 0, max_notional or 0))
        return self.model.set_order_limits(symbol, max_qty=max_qty, max_notional=max_notional)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Any]]:
    specs = draw(instrument_spec_lists())
    return specs, draw(st.lists(commands(specs, order_ids=caller_order_ids(), order_limits=True), max_size=80))


@settings(max_examples=100)
@given(scenarios())
def test_the_batch_path_matches_the_model(scenario: tuple[list[dict[str, Any]], list[Any]]) -> None:
    specs, cmds = scenario
    model = PackingReference()
    batched = Engine(caller_order_ids=True)
    for spec in specs:
        assert model.add_instrument(**spec) == batched.add_instrument(**spec)
    expected: list[Event] = []
    order_ids: list[int] = []
    for command in cmds:
        events = apply(model, command, order_ids)
        order_ids.extend(accepted_order_ids(events))
        expected.extend(events)
    result = batched.process_batch(b"".join(model.packed))
    got = batched.decode_events(result.events)
    assert got == expected
    assert [type(e) for e in got] == [type(e) for e in expected]
    assert result.commands == len(model.packed) == batched.seq == model.seq
    assert batched.open_orders() == model.open_orders()
    batched.verify()
    model.verify()

"""Cancel-all and market-maker protection: the C engine against the model.

The state machine of test_engine_vs_reference.py, with the account-wide
commands and order limits in the mix (``commands(..., account_wide=True,
order_limits=True)``): identical events after every command, identical
books, limits and protection, both engines' invariants (a tripped
account rests nothing). The per-call API's commands have ts 0, so there a
protection window lasts until a reset; the batch differential below gives
each command a ts from a clock that moves on, so windows open and close, and
compares the batch path's events with the model run on the same clock.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyengine import (
    Engine,
    pack_cancel,
    pack_cancel_all,
    pack_modify,
    pack_new_order,
    pack_reset_mmp,
    pack_set_mmp,
    pack_set_order_limits,
    pack_set_state,
)
from pyengine.events import Event
from pyengine.testing import ReferenceEngine
from pyengine.testing.strategies import accepted_order_ids, apply, commands, instrument_spec_lists


def _examples(n: int) -> int:
    """`n` examples under the default ``ci`` profile (100), scaled to the loaded one."""
    loaded: int = settings().max_examples
    return max(1, n * loaded // 100)


class ProtectionMatchesReference(RuleBasedStateMachine):
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
        command = data.draw(commands(self.specs, account_wide=True, order_limits=True), label="command")
        expected = apply(self.reference, command, self.order_ids)
        got = apply(self.engine, command, self.order_ids)
        assert got == expected
        assert [type(e) for e in got] == [type(e) for e in expected]
        self.order_ids.extend(accepted_order_ids(expected))

    @invariant()
    def same_state(self) -> None:
        for spec in self.specs:
            symbol = spec["symbol"]
            assert self.engine.book(symbol, 1000) == self.reference.book(symbol, 1000)
            assert self.engine.order_limits(symbol) == self.reference.order_limits(symbol)
            for account in range(3):
                assert self.engine.mmp(account, symbol) == self.reference.mmp(account, symbol)
        assert self.engine.open_orders() == self.reference.open_orders()
        assert self.engine.seq == self.reference.seq

    @invariant()
    def invariants_hold(self) -> None:
        self.engine.verify()
        self.reference.verify()


ProtectionMatchesReference.TestCase.settings = settings(stateful_step_count=60, max_examples=_examples(35))
TestProtectionMatchesReference = ProtectionMatchesReference.TestCase


class ClockedPacker:
    """The model, packing each call it runs as a batch command stamped with
    the model's clock (``now``), which the test moves between commands."""

    def __init__(self) -> None:
        self.model = ReferenceEngine()
        self.numbers: dict[str, int] = {}
        self.packed: list[bytes] = []

    def add_instrument(self, symbol: str, **spec: Any) -> int:
        self.numbers[symbol] = self.model.add_instrument(symbol, **spec)
        return self.numbers[symbol]

    def _pack(self, record: bytes) -> None:
        self.packed.append(record)

    def submit(self, symbol: str, side: str, qty: int, price: int | None = None, **kw: Any) -> list[Event]:
        self._pack(pack_new_order(self.numbers.get(symbol, 2**32 - 1), side, qty, price, ts=self.model.now, **kw))
        return self.model.submit(symbol, side, qty, price, **kw)

    def cancel(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self._pack(pack_cancel(order_id, ts=self.model.now, **kw))
        return self.model.cancel(order_id, **kw)

    def modify(self, order_id: int | None = None, **kw: Any) -> list[Event]:
        self._pack(pack_modify(order_id, ts=self.model.now, **kw))
        return self.model.modify(order_id, **kw)

    def halt(self, symbol: str) -> list[Event]:
        self._pack(pack_set_state(self.numbers[symbol], "halted", ts=self.model.now))
        return self.model.halt(symbol)

    def resume(self, symbol: str) -> list[Event]:
        self._pack(pack_set_state(self.numbers[symbol], "open", ts=self.model.now))
        return self.model.resume(symbol)

    def cancel_all(
        self,
        account: int | None = None,
        symbol: str | None = None,
        *,
        all_accounts: bool = False,
        dead_man: bool = False,
    ) -> list[Event]:
        number = None if symbol is None else self.numbers[symbol]
        self._pack(pack_cancel_all(account, number, all_accounts=all_accounts, dead_man=dead_man, ts=self.model.now))
        return self.model.cancel_all(account, symbol, all_accounts=all_accounts, dead_man=dead_man)

    def set_mmp(self, account: int, symbol: str, qty_limit: int, window: int = 0) -> list[Event]:
        self._pack(pack_set_mmp(account=account, instrument=self.numbers[symbol], qty_limit=qty_limit, window=window,
                                ts=self.model.now))
        return self.model.set_mmp(account, symbol, qty_limit, window)

    def reset_mmp(self, account: int, symbol: str) -> list[Event]:
        self._pack(pack_reset_mmp(account=account, instrument=self.numbers[symbol], ts=self.model.now))
        return self.model.reset_mmp(account, symbol)

    def set_order_limits(
        self, symbol: str, *, max_qty: int | None = None, max_notional: int | None = None
    ) -> list[Event]:
        self._pack(pack_set_order_limits(self.numbers[symbol], max_qty or 0, max_notional or 0, ts=self.model.now))
        return self.model.set_order_limits(symbol, max_qty=max_qty, max_notional=max_notional)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@settings(max_examples=_examples(30), suppress_health_check=[HealthCheck.too_slow])
@given(instrument_spec_lists(), st.data())
def test_the_batch_path_with_a_moving_clock_matches_the_model(specs: list[dict[str, Any]], data: st.DataObject) -> None:
    """60 commands, as many as a run of the state machine above (fewer seldom
    trip protection), each a tick of 0 to 3 after the one before."""
    packer = ClockedPacker()
    batched = Engine()
    for spec in specs:
        assert packer.add_instrument(**spec) == batched.add_instrument(**spec)
    expected: list[Event] = []
    order_ids: list[int] = []
    for _ in range(60):
        command = data.draw(commands(specs, account_wide=True, order_limits=True), label="command")
        packer.model.now += data.draw(st.integers(0, 3), label="tick")
        events = apply(packer, command, order_ids)
        order_ids.extend(accepted_order_ids(events))
        expected.extend(events)
    result = batched.process_batch(b"".join(packer.packed))
    assert batched.decode_events(result.events) == expected
    assert batched.open_orders() == packer.model.open_orders()
    for spec in specs:
        assert batched.order_limits(spec["symbol"]) == packer.model.order_limits(spec["symbol"])
        for account in range(3):
            assert batched.mmp(account, spec["symbol"]) == packer.model.mmp(account, spec["symbol"])
    batched.verify()
    packer.model.verify()

"""Engines whose new orders bring their own ids (``caller_order_ids=True``):
the arguments, the events, the two reject reasons and where they come in the
order of checks, through the per-call API, the batch path and the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import pyengine
from pyengine import (
    Accepted,
    Cancelled,
    Engine,
    Modified,
    Rejected,
    RejectReason,
    Trade,
    pack_new_order,
)
from pyengine.enums import REJECT_MESSAGES
from pyengine.testing import ReferenceEngine

BIG = 2**64 - 1


@pytest.fixture(params=[Engine, ReferenceEngine], ids=["engine", "reference"])
def eng(request: pytest.FixtureRequest) -> Any:
    e = request.param(caller_order_ids=True)
    e.add_instrument("A", tick_size=5, lot_size=2)
    return e


def test_the_mode_is_read_back() -> None:
    assert Engine(caller_order_ids=True).caller_order_ids is True
    assert Engine().caller_order_ids is False
    assert ReferenceEngine(caller_order_ids=True).caller_order_ids is True
    assert ReferenceEngine().caller_order_ids is False


@pytest.mark.parametrize("cls", [Engine, ReferenceEngine])
def test_the_mode_is_a_bool(cls: Any) -> None:
    with pytest.raises(TypeError, match="caller_order_ids must be a bool, not int"):
        cls(caller_order_ids=1)


def test_the_ids_are_the_callers(eng: Any) -> None:
    assert eng.submit("A", "buy", 4, 100, account=1, order_id=BIG) == [
        Accepted(1, BIG, "A", "buy", 100, 4, 1, None)
    ]
    got = eng.submit("A", "sell", 2, 100, account=2, order_id=7)
    assert got[0] == Accepted(2, 7, "A", "sell", 100, 2, 2, None)
    assert type(got[1]) is Trade and (got[1].maker_order_id, got[1].taker_order_id) == (BIG, 7)
    assert eng.order(BIG).open_qty == 2 and eng.order(7) is None
    assert eng.modify(BIG, qty=6, price=95, account=1) == [Modified(3, BIG, 95, 6, False)]
    assert eng.cancel(BIG, account=1) == [Cancelled(4, BIG, 6, "user")]
    eng.verify()


def test_an_open_orders_id_is_refused_a_finished_ones_is_taken(eng: Any) -> None:
    eng.submit("A", "buy", 4, 100, order_id=3)
    assert eng.submit("A", "buy", 2, 90, client_order_id="c", order_id=3) == [
        Rejected(2, RejectReason.DUPLICATE_ORDER_ID, "order id is in use by an open order", "c", 3)
    ]
    eng.cancel(3)
    assert eng.submit("A", "sell", 2, 110, order_id=3)[0].order_id == 3
    # An order that never rests (ioc) leaves its id free at once.
    assert [type(e) for e in eng.submit("A", "buy", 2, 105, tif="ioc", order_id=4)] == [Accepted, Cancelled]
    assert type(eng.submit("A", "buy", 2, 105, order_id=4)[0]) is Accepted
    assert eng.seq == 6
    eng.verify()


def test_a_rejected_new_order_carries_its_id(eng: Any) -> None:
    (ev,) = eng.submit("A", "buy", 3, 100, order_id=12)
    assert (ev.reason, ev.order_id) == (RejectReason.OFF_LOT, 12)
    (ev,) = eng.submit("Z", "buy", 2, 100, order_id=13)
    assert (ev.reason, ev.order_id) == (RejectReason.UNKNOWN_INSTRUMENT, 13)


def test_the_checks_run_in_the_cores_order(eng: Any) -> None:
    """Unknown instrument, halted, qty and price come before duplicate_order_id,
    which comes before duplicate_client_order_id and post_only_would_cross."""
    eng.submit("A", "buy", 2, 100, account=1, client_order_id="c", order_id=1)
    eng.submit("A", "sell", 2, 110, account=1, order_id=2)
    assert eng.submit("A", "buy", 3, 100, order_id=1)[0].reason == RejectReason.OFF_LOT
    assert eng.submit("A", "buy", 2, 101, order_id=1)[0].reason == RejectReason.OFF_TICK
    assert eng.submit("Z", "buy", 2, 100, order_id=1)[0].reason == RejectReason.UNKNOWN_INSTRUMENT
    crossing = eng.submit("A", "buy", 2, 110, account=1, client_order_id="c", post_only=True, order_id=2)
    assert crossing[0].reason == RejectReason.DUPLICATE_ORDER_ID
    crossing = eng.submit("A", "buy", 2, 110, account=1, client_order_id="c", post_only=True, order_id=5)
    assert crossing[0].reason == RejectReason.DUPLICATE_CLIENT_ORDER_ID
    eng.halt("A")
    assert eng.submit("A", "buy", 2, 100, order_id=1)[0].reason == RejectReason.HALTED


def test_the_engine_takes_every_documented_id_form() -> None:
    eng = Engine(caller_order_ids=True)
    eng.add_instrument("A")
    assert eng.submit("A", "buy", 1, 10, order_id=np.uint64(BIG))[0].order_id == BIG
    assert type(eng.submit("A", "buy", 1, 10, order_id=np.int64(5))[0].order_id) is int
    assert eng.submit(symbol="A", side="sell", qty=1, order_type="market", order_id=6)[0].order_id == 6
    assert eng.cancel(np.uint64(5))[0].order_id == 5


def unshaped(record: bytes) -> bytes:
    """A NEW record with a tif that does not exist: no order at all."""
    cmd = np.frombuffer(record, dtype=pyengine.COMMAND_DTYPE).copy()
    cmd["tif"] = 99
    return cmd.tobytes()


def test_a_packed_new_order_brings_its_id() -> None:
    eng, plain = Engine(caller_order_ids=True), Engine()
    for e in (eng, plain):
        e.add_instrument("A")
    cmds = (
        pack_new_order(0, "buy", 1, 10, order_id=BIG)
        + pack_new_order(0, "buy", 1, 10, order_id=BIG)
        + pack_new_order(0, "buy", 1, 10)  # no id
        + pack_new_order(7, "buy", 1, 10, order_id=0)  # no id, and no instrument 7
        + unshaped(pack_new_order(0, "buy", 1, 10, order_id=BIG))
    )
    got = eng.decode_events(eng.process_batch(cmds).events)
    assert got[0] == Accepted(1, BIG, "A", "buy", 10, 1, 0, None)
    assert [(e.reason, e.order_id) for e in got[1:]] == [
        (RejectReason.DUPLICATE_ORDER_ID, BIG),
        (RejectReason.BAD_ORDER_ID, None),
        (RejectReason.BAD_ORDER_ID, None),
        (RejectReason.BAD_TIF, BIG),  # the order's shape is checked first
    ]
    # An engine that numbers its orders ignores a packed id.
    got = plain.decode_events(plain.process_batch(cmds[: 2 * len(cmds) // 5]).events)
    assert [e.order_id for e in got] == [1, 2]


def test_the_model_rejects_a_new_order_without_an_id() -> None:
    """0 is a packed command's 'no id': the model rejects it as the core does,
    before any other check (Engine.submit refuses it as an argument)."""
    model = ReferenceEngine(caller_order_ids=True)
    model.add_instrument("A")
    assert model.submit("Z", "buy", 0, 10, order_id=0) == [
        Rejected(1, RejectReason.BAD_ORDER_ID, REJECT_MESSAGES[RejectReason.BAD_ORDER_ID], None, None)
    ]


# ---- argument errors ---------------------------------------------------------


def engine(caller: bool) -> Engine:
    e = Engine(caller_order_ids=caller)
    e.add_instrument("A")
    return e


@pytest.mark.parametrize(
    ("caller", "kwargs", "error", "message"),
    [
        (True, {}, ValueError, r"takes its order ids from the caller \(caller_order_ids=True\): give order_id"),
        (True, {"order_id": None}, ValueError, "give order_id"),
        (True, {"order_id": 0}, ValueError, r"order_id=0 is out of range \[1, 18446744073709551615\]"),
        (True, {"order_id": 2**64}, ValueError, "order_id=18446744073709551616 is out of range"),
        (True, {"order_id": -1}, ValueError, "order_id=-1 is out of range"),
        (True, {"order_id": 1.0}, TypeError, "order_id must be an int, not float"),
        (True, {"order_id": True}, TypeError, "order_id must be an int, not bool"),
        (True, {"order_id": "1"}, TypeError, "order_id must be an int, not str"),
        (False, {"order_id": 1}, ValueError, "order_id is only for an Engine made with caller_order_ids=True"),
        (False, {"order_id": 0}, ValueError, "order_id is only for an Engine made with caller_order_ids=True"),
    ],
)
def test_a_wrong_order_id_raises(caller: bool, kwargs: dict[str, Any], error: type, message: str) -> None:
    eng = engine(caller)
    with pytest.raises(error, match=message):
        eng.submit("A", "buy", 1, 10, **kwargs)
    assert eng.seq == 0


@pytest.mark.parametrize(
    ("caller", "kwargs", "error"),
    [
        (True, {}, ValueError),
        (True, {"order_id": -1}, ValueError),
        (True, {"order_id": 1.0}, TypeError),
        (False, {"order_id": 1}, ValueError),
    ],
)
def test_the_model_raises_the_same_kinds(caller: bool, kwargs: dict[str, Any], error: type) -> None:
    model = ReferenceEngine(caller_order_ids=caller)
    model.add_instrument("A")
    with pytest.raises(error, match="order_id"):
        model.submit("A", "buy", 1, 10, **kwargs)
    assert model.seq == 0


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, r"order_id=-1 is out of range \[0, 18446744073709551615\]"),
        (2**64, ValueError, "order_id=18446744073709551616 is out of range"),
        (1.5, TypeError, "order_id must be an int, not float"),
    ],
)
def test_pack_new_order_checks_the_id(value: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        pack_new_order(0, "buy", 1, 10, order_id=value)

"""Engine.submit and Engine.cancel in C (pyengine._calls) against their
Python implementations (Engine._submit / Engine._cancel).

The C half serves plainly typed calls and forwards everything else to the
Python methods, which are the reference: for any arguments at all, both must
give the same events, or raise the same error, and leave the same state.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine import Accepted, Engine, LevelUpdate, Side, Trade
from pyengine._calls import Core
from pyengine._ffi import ffi, lib
from pyengine.errors import ConcurrentUseError

SYMBOLS = ("A", "B")


def twin_engines(level_updates: bool = False) -> tuple[Engine, Engine]:
    pair = []
    for _ in range(2):
        e = Engine(level_updates=level_updates)
        e.add_instrument("A", tick_size=5, lot_size=2)
        e.add_instrument("B", tick_size=1, lot_size=1, price_band=(50, 150), market_protection=10)
        pair.append(e)
    return pair[0], pair[1]


def outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return ("events", call(*args, **kwargs))
    except Exception as exc:  # the very errors are compared
        return ("raised", type(exc), str(exc))


def mostly(valid: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """`valid` seven times in eight, else `odd`."""
    return st.integers(0, 7).flatmap(lambda i: odd if i == 0 else valid)


# Wrong values of every kind the checks must catch, and edge integers.
odd_ints = st.one_of(
    st.integers(-3, 41),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64, 2**32 - 1, 2**32]),
    st.builds(np.int64, st.integers(0, 40)),
    st.sampled_from([True, 1.0, "3", None]),
)
# Mostly orders the market takes: A has tick 5 and lot 2, B has a band.
quantities = mostly(st.integers(1, 12).map(lambda n: 2 * n), odd_ints)
prices = mostly(st.integers(18, 22).map(lambda n: 5 * n), st.one_of(st.none(), odd_ints))
accounts = mostly(st.integers(0, 3), odd_ints)
choices = {
    "tif": mostly(st.sampled_from(["gtc", "ioc", "fok"]), st.sampled_from(["GTC", "day", 1, None])),
    "order_type": mostly(st.sampled_from(["limit", "limit", "market"]), st.sampled_from(["stop", None])),
    "stp": mostly(
        st.sampled_from(["none", "cancel_newest", "cancel_oldest", "cancel_both"]), st.just("all")
    ),
    "client_order_id": mostly(st.none(), st.sampled_from(["c1", "c2", "", "x" * 17, 5])),
    "post_only": mostly(st.booleans(), st.sampled_from([1, None])),
}


@st.composite
def submit_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    symbol = draw(mostly(st.sampled_from(SYMBOLS), st.sampled_from(["Z", b"A", 3])))
    side = draw(mostly(st.sampled_from(["buy", "sell"]), st.sampled_from([Side.BUY, Side.SELL, "BUY", 1])))
    args: list[Any] = [symbol, side, draw(quantities)]
    kwargs: dict[str, Any] = {}
    order_type = draw(choices["order_type"])
    if order_type != "limit":
        kwargs["order_type"] = order_type
    if order_type == "market" and draw(st.integers(0, 7)):
        tif = draw(st.sampled_from(["ioc", None, "absent"]))
        if tif != "absent":
            kwargs["tif"] = tif
    elif draw(st.booleans()):
        args.append(draw(prices))
    else:
        kwargs["price"] = draw(prices)
    kwargs["account"] = draw(accounts)
    for name, values in choices.items():
        if name not in kwargs and draw(st.integers(0, 3)) == 0:
            kwargs[name] = draw(values)
    if draw(st.integers(0, 20)) == 0:
        kwargs[draw(st.sampled_from(["qty", "symbol", "bogus"]))] = 1
    if draw(st.integers(0, 20)) == 0:
        args.append("extra")
    return tuple(args), kwargs


@st.composite
def cancel_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    order_id = draw(mostly(st.integers(1, 12), odd_ints))
    kwargs: dict[str, Any] = {}
    args: tuple = (order_id,)
    if draw(st.integers(0, 4)) == 0:
        args, kwargs["order_id"] = (), order_id
    if draw(st.integers(0, 5)):
        kwargs["account"] = draw(accounts)
    if draw(st.integers(0, 4)) == 0:
        kwargs["client_order_id"] = draw(choices["client_order_id"])
    return args, kwargs


operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), submit_args()),
        st.tuples(st.just("submit"), submit_args()),
        st.tuples(st.just("cancel"), cancel_args()),
    ),
    max_size=60,
)


@pytest.mark.parametrize("level_updates", [False, True])
@given(ops=operations)
def test_c_and_python_paths_agree(level_updates: bool, ops: list) -> None:
    c_side, py_side = twin_engines(level_updates)
    for name, (args, kwargs) in ops:
        got = outcome(getattr(c_side, name), *args, **kwargs)
        want = outcome(getattr(py_side, f"_{name}"), *args, **kwargs)
        assert got == want, (name, args, kwargs)
        if got[0] == "events":
            assert [type(ev) for ev in got[1]] == [type(ev) for ev in want[1]]
        assert c_side.seq == py_side.seq == c_side._seq
    assert c_side.state_hash() == py_side.state_hash()
    c_side.verify()


def test_the_c_path_serves_plain_calls_without_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain calls never reach the Python methods; others always do."""
    eng, _ = twin_engines()
    forwarded: list[str] = []
    for name in ("_submit", "_cancel"):
        real = getattr(Engine, name)
        monkeypatch.setattr(
            Engine, name, lambda self, *a, _real=real, _name=name, **k: forwarded.append(_name) or _real(self, *a, **k)
        )
    oid = eng.submit("A", "buy", 4, 100, account=1)[0].order_id
    eng.submit("A", "sell", 2, order_type="market", tif="ioc", account=2)
    eng.submit("A", "sell", 2, 105, post_only=True, stp="cancel_both", account=2)
    eng.submit(symbol="A", side="sell", qty=2, price=200)
    eng.cancel(oid, account=1)
    eng.cancel(oid, account=1)  # a Rejected
    eng.submit("A", "buy", 2, 100, tif=None, account=2)
    eng.submit("A", "sell", 2, order_type="market", account=1)  # ioc by default
    assert forwarded == []
    eng.submit("A", "buy", np.int64(2), 100)
    eng.submit("A", "buy", 2, 100, client_order_id="c1")
    eng.cancel(oid)  # as an administrator
    eng.cancel(client_order_id="c1", account=0)
    assert forwarded == ["_submit", "_submit", "_cancel", "_cancel"]


def test_keywords_not_interned_are_served() -> None:
    eng, _ = twin_engines()
    key = "".join(["acc", "ount"])  # an equal string, not the interned one
    ev = eng.submit("A", "buy", 2, 100, **{key: 3})[0]
    assert type(ev) is Accepted and ev.account == 3
    assert eng.cancel(ev.order_id, **{key: 3})[0].leaves == 2


def test_wrong_calls_raise_like_python_methods() -> None:
    eng, _ = twin_engines()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        eng.submit("A", "buy", 2, 100, bogus=1)
    with pytest.raises(TypeError, match="multiple values for argument 'qty'"):
        eng.submit("A", "buy", 2, qty=3)
    with pytest.raises(TypeError, match="positional"):
        eng.submit("A", "buy", 2, 100, "gtc")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'qty'"):
        eng.submit("A", "buy")
    assert eng.seq == 0


def test_trades_sweeping_past_the_sink_are_decoded_in_c() -> None:
    """More events than the Python sink holds: read from the engine's buffer."""
    c_side, py_side = twin_engines(level_updates=True)
    for e in (c_side, py_side):
        for i in range(80):
            e.submit("B", "sell", 1, 60 + i, account=1)
    got = c_side.submit("B", "buy", 100, 150, tif="ioc", account=2)
    want = py_side._submit("B", "buy", 100, 150, tif="ioc", account=2)
    assert got == want
    assert sum(type(ev) is Trade for ev in got) == 80
    assert sum(type(ev) is LevelUpdate for ev in got) == 80


def test_a_call_made_during_a_call_is_refused() -> None:
    """Event objects are built while the engine's buffer is still read; code
    that runs in between (a garbage collection's callbacks) must not enter."""
    eng, _ = twin_engines()
    seen: list[Any] = []

    def during_collection(phase: str, info: dict) -> None:
        if phase == "start" and eng._busy:
            try:
                eng.submit("A", "buy", 2, 100)
            except ConcurrentUseError as exc:
                seen.append(exc)

    gc.callbacks.append(during_collection)
    old = gc.get_threshold()
    gc.set_threshold(1)  # collect on nearly every allocation
    try:
        for i in range(50):
            eng.submit("A", "sell", 2, 100 + 5 * (i % 3), account=1)
        evs = eng.submit("A", "buy", 100, 200, tif="ioc", account=2)
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(during_collection)
    assert seen, "no collection ran inside a call"
    assert sum(ev.qty for ev in evs if type(ev) is Trade) == 100
    assert eng.seq == 51
    eng.verify()


def test_attach_checks_its_arguments() -> None:
    core = Core()
    api = int(ffi.cast("uintptr_t", lib.eng_api()))
    with pytest.raises(ValueError, match="_attach"):
        core._attach(1, api, ())
    with pytest.raises(ValueError, match="_attach"):
        core._attach(0, api, ())
    with pytest.raises(TypeError):
        core._attach(1, api)
    # Unattached, every call goes to the Python methods, which Core lacks.
    with pytest.raises(AttributeError, match="_submit"):
        core.submit("A", "buy", 1, 1)

"""The per-call verbs of Engine in C (pyengine._calls, csrc/binding/calls.c).

The C half takes every valid call, in every documented form, and hands any
other to the Python method of the same name with a leading underscore, which
raises the error. For any arguments at all:

- the Engine and the reference model (``pyengine.testing.ReferenceEngine``)
  give equal results, or both raise an error of the same kind (setting order
  limits, a Python method, among them: they hold the orders to the limits);
- a second Engine with level updates on gives the events that the batch path
  gives for the same command packed with ``pack_*`` and decoded in Python: the
  C and the Python decoders agree on every event type.
"""

from __future__ import annotations

import gc
import textwrap
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine import (
    Accepted,
    Engine,
    LevelUpdate,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
    pack_cancel,
    pack_modify,
    pack_new_order,
    pack_set_order_limits,
)
from pyengine._calls import Core
from pyengine._ffi import ffi, lib
from pyengine.engine import _CALL_TABLES
from pyengine.enums import OrderType
from pyengine.errors import ConcurrentUseError, EngineClosed
from pyengine.testing import ReferenceEngine

from .conftest import run_python

SYMBOLS = ("A", "B")
VERBS = ("submit", "cancel", "modify", "order", "book")


def add_instruments(e: Any) -> Any:
    e.add_instrument("A", tick_size=5, lot_size=2)
    e.add_instrument("B", tick_size=1, lot_size=1, price_band=(50, 150), market_protection=10)
    return e


def outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return ("result", call(*args, **kwargs))
    except TypeError:
        return ("raised", TypeError)
    except ValueError:
        return ("raised", ValueError)


def plain(value: Any) -> Any:
    """numpy integers as ints: the reference model takes ints only."""
    return int(value) if isinstance(value, np.integer) else value


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
accounts = mostly(st.integers(0, 3), st.one_of(odd_ints, st.builds(np.uint32, st.integers(0, 3))))
order_ids = mostly(st.integers(1, 12), st.one_of(odd_ints, st.builds(np.uint64, st.integers(1, 12))))
coids = mostly(st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["", "x" * 17, "\u00e9", "a\x01", 5]))
choices = {
    "tif": mostly(
        st.sampled_from(["gtc", "ioc", "fok", TimeInForce.GTC, TimeInForce.IOC]),
        st.sampled_from(["GTC", "day", 1, None]),
    ),
    "order_type": mostly(
        st.sampled_from(["limit", "limit", "market", OrderType.LIMIT]), st.sampled_from(["stop", None])
    ),
    "stp": mostly(
        st.sampled_from(["none", "cancel_newest", "cancel_oldest", "cancel_both", SelfTradePrevention.CANCEL_BOTH]),
        st.sampled_from(["all", None]),
    ),
    "client_order_id": st.one_of(st.none(), coids),
    "post_only": mostly(st.booleans(), st.sampled_from([1, None])),
}


@st.composite
def submit_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    symbol = draw(mostly(st.sampled_from(SYMBOLS), st.sampled_from(["Z", b"A", 3])))
    side = draw(mostly(st.sampled_from(["buy", "sell", Side.BUY, Side.SELL]), st.sampled_from(["BUY", 1])))
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
def target_args(draw: st.DrawFn) -> tuple[list, dict]:
    """How cancel, modify and order address an order, rightly or not."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        order_id = draw(order_ids)
        if draw(st.integers(0, 4)) == 0:
            kwargs["order_id"] = order_id
        else:
            args.append(order_id)
    if draw(st.integers(0, 5)):
        kwargs["account"] = draw(accounts)
    if not args and "order_id" not in kwargs or draw(st.integers(0, 9)) == 0:
        kwargs["client_order_id"] = draw(coids)
    return args, kwargs


@st.composite
def cancel_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    args, kwargs = draw(target_args())
    return tuple(args), kwargs


@st.composite
def modify_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    args, kwargs = draw(target_args())
    qty = draw(st.one_of(st.none(), quantities, st.just(0)))
    price = draw(st.one_of(st.none(), prices))
    if args and draw(st.booleans()):
        args += [qty, price]
    else:
        kwargs.update({k: v for k, v in (("qty", qty), ("price", price)) if v is not None or draw(st.booleans())})
    return tuple(args), kwargs


@st.composite
def limits_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    """set_order_limits: around A's orders (2 to 24 at 90 to 110), or wrong."""
    symbol = draw(mostly(st.sampled_from(SYMBOLS), st.sampled_from(["Z", b"A", 3])))
    valid = {"max_qty": st.integers(2, 24), "max_notional": st.integers(2, 26).map(lambda n: 100 * n)}
    kwargs = {name: draw(mostly(values, st.one_of(st.none(), odd_ints))) for name, values in valid.items()}
    kwargs = {name: value for name, value in kwargs.items() if draw(st.integers(0, 3))}
    args = (symbol, draw(odd_ints)) if draw(st.integers(0, 20)) == 0 else (symbol,)
    return args, kwargs


@st.composite
def book_args(draw: st.DrawFn) -> tuple[tuple, dict]:
    symbol = draw(mostly(st.sampled_from(SYMBOLS), st.sampled_from(["Z", b"A", 3])))
    if draw(st.booleans()):
        return (symbol,), {}
    return (symbol,), {"depth": draw(mostly(st.integers(0, 3), odd_ints))}


operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), submit_args()),
        st.tuples(st.just("submit"), submit_args()),
        st.tuples(st.just("submit"), submit_args()),
        st.tuples(st.just("cancel"), cancel_args()),
        st.tuples(st.just("modify"), modify_args()),
        st.tuples(st.just("order"), cancel_args()),
        st.tuples(st.just("book"), book_args()),
        st.tuples(st.just("set_order_limits"), limits_args()),
    ),
    max_size=60,
)


def packed(eng: Engine, name: str, args: tuple, kwargs: dict) -> bytes:
    """The command of a call that ran, packed for the batch path."""
    if name == "submit":
        symbol, *rest = args
        kwargs = {k: v for k, v in kwargs.items() if k != "symbol"}
        if symbol not in eng._symbols:
            return pack_new_order(lib.eng_instrument_count(eng._ptr) + 7, *rest, **kwargs)
        return pack_new_order(eng.instrument_id(symbol), *rest, **kwargs)
    if name == "set_order_limits":
        (symbol,) = args
        limits = (kwargs.get("max_qty") or 0, kwargs.get("max_notional") or 0)
        return pack_set_order_limits(eng.instrument_id(symbol), *limits)
    return (pack_cancel if name == "cancel" else pack_modify)(*args, **kwargs)


@given(ops=operations)
def test_every_call_agrees_with_the_model_and_the_batch_path(ops: list) -> None:
    eng, model = add_instruments(Engine()), add_instruments(ReferenceEngine())
    with_levels, batched = add_instruments(Engine(level_updates=True)), add_instruments(Engine(level_updates=True))
    for name, (args, kwargs) in ops:
        got = outcome(getattr(eng, name), *args, **kwargs)
        want = outcome(getattr(model, name), *map(plain, args), **{k: plain(v) for k, v in kwargs.items()})
        assert got == want, (name, args, kwargs)
        if got[0] == "result" and name in ("submit", "cancel", "modify", "set_order_limits"):
            assert [type(ev) for ev in got[1]] == [type(ev) for ev in want[1]]
            events = getattr(with_levels, name)(*args, **kwargs)
            raw = batched.process_batch(packed(batched, name, args, kwargs)).events
            assert events == batched.decode_events(raw), (name, args, kwargs)
        assert eng.seq == model.seq
    assert eng.open_orders() == model.open_orders()
    assert [eng.open_orders(s) for s in SYMBOLS] == [model.open_orders(s) for s in SYMBOLS]
    assert [eng.order_limits(s) for s in SYMBOLS] == [model.order_limits(s) for s in SYMBOLS]
    assert with_levels.state_hash() == batched.state_hash() == eng.state_hash()
    eng.verify()


def test_every_documented_form_runs_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """No valid call reaches the Python methods; each wrong one does, once."""
    eng = add_instruments(Engine())
    handed: list[str] = []
    for verb in VERBS:
        real = getattr(Engine, f"_{verb}")
        monkeypatch.setattr(
            Engine, f"_{verb}", lambda self, *a, _real=real, _v=verb, **k: handed.append(_v) or _real(self, *a, **k)
        )
    eng.submit("A", "buy", 4, 100, account=1)
    eng.submit("A", "sell", 2, order_type="market", tif="ioc", account=2)
    eng.submit("A", "sell", 2, 105, post_only=True, stp="cancel_both", account=2)
    eng.submit(symbol="A", side="sell", qty=2, price=200)
    eng.submit("A", Side.BUY, 2, 90, tif=TimeInForce.GTC, stp=SelfTradePrevention.CANCEL_OLDEST, account=1)
    eng.submit("A", "buy", np.int64(2), np.int32(95), account=np.uint32(1), client_order_id="c1")
    eng.submit("A", "sell", 2, order_type=OrderType.MARKET, account=1)  # ioc by default
    eng.submit("Z", "buy", 2, 100)  # a Rejected: unknown instrument
    oid = eng.submit("A", "buy", 4, 50, account=1)[0].order_id
    eng.modify(oid, 2)
    eng.modify(oid, price=95, account=1)
    eng.modify(client_order_id="c1", account=1, qty=np.int64(4))
    assert eng.order(oid) is not None and eng.order(np.uint64(oid), account=1) is not None
    assert eng.order(client_order_id="c1", account=1) is not None and eng.order(0) is None
    assert eng.book("A").bids and eng.book("A", depth=np.int64(1)).bids and eng.book("A", 0).bids == []
    eng.cancel(oid, account=1)
    eng.cancel(oid, account=1)  # a Rejected
    eng.cancel(client_order_id="c1", account=1)
    eng.cancel(np.uint64(oid))  # as an administrator
    assert handed == []
    wrong = [
        ("submit", lambda: eng.submit("A", "buy", 2.0, 100)),
        ("submit", lambda: eng.submit("A", "buy", 2, 100, account=None)),
        ("cancel", lambda: eng.cancel()),
        ("cancel", lambda: eng.cancel(client_order_id="c1")),
        ("modify", lambda: eng.modify(oid)),
        ("order", lambda: eng.order(oid, client_order_id="c1", account=1)),
        ("book", lambda: eng.book("Z")),
    ]
    for verb, call in wrong:
        with pytest.raises((TypeError, ValueError)):
            call()
        assert handed.pop() == verb and handed == []


def test_every_documented_form_with_caller_order_ids_runs_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with an Engine whose new orders bring their ids."""
    eng = add_instruments(Engine(caller_order_ids=True))
    handed: list[str] = []
    for verb in VERBS:
        real = getattr(Engine, f"_{verb}")
        monkeypatch.setattr(
            Engine, f"_{verb}", lambda self, *a, _real=real, _v=verb, **k: handed.append(_v) or _real(self, *a, **k)
        )
    assert eng.submit("A", "buy", 4, 100, account=1, order_id=2**64 - 1)[0].order_id == 2**64 - 1
    assert eng.submit("A", "buy", 4, 100, order_id=2**64 - 1)[0].order_id == 2**64 - 1  # a Rejected
    eng.submit("A", "sell", 2, order_type="market", tif="ioc", account=2, order_id=5)
    eng.submit("A", "sell", 2, 105, post_only=True, stp="cancel_both", account=2, order_id=6)
    eng.submit(symbol="A", side="sell", qty=2, price=200, order_id=np.uint64(7))
    eng.submit("A", Side.BUY, np.int64(2), 90, tif=TimeInForce.GTC, account=1, client_order_id="c1", order_id=8)
    eng.submit("Z", "buy", 2, 100, order_id=9)  # a Rejected: unknown instrument
    eng.modify(8, 4)
    eng.modify(client_order_id="c1", account=1, price=95)
    assert eng.order(8) is not None and eng.order(np.uint64(8), account=1) is not None
    assert eng.cancel(8, account=1)[0].order_id == 8
    eng.cancel(np.uint64(6))
    assert handed == []
    for call in (
        lambda: eng.submit("A", "buy", 2, 100),
        lambda: eng.submit("A", "buy", 2, 100, order_id=0),
        lambda: eng.submit("A", "buy", 2, 100, order_id=1.0),
    ):
        with pytest.raises((TypeError, ValueError)):
            call()
        assert handed.pop() == "submit" and handed == []
    default = add_instruments(Engine())
    with pytest.raises(ValueError, match="only for an Engine made with caller_order_ids=True"):
        default.submit("A", "buy", 2, 100, order_id=1)
    assert handed.pop() == "submit" and handed == []
    assert default.submit("A", "buy", 2, 100, order_id=None)[0].order_id == 1
    assert handed == []


def test_keywords_not_interned_are_served_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = add_instruments(Engine())
    monkeypatch.setattr(Engine, "_submit", None)
    monkeypatch.setattr(Engine, "_cancel", None)
    key = "".join(["acc", "ount"])  # an equal string, not the interned one
    ev = eng.submit("A", "buy", 2, 100, **{key: 3})[0]
    assert type(ev) is Accepted and ev.account == 3
    assert eng.cancel(ev.order_id, **{key: 3})[0].leaves == 2


def test_wrong_calls_raise_like_python_methods() -> None:
    eng = add_instruments(Engine())
    # Each names the method called, as Python's own do.
    with pytest.raises(TypeError, match=r"^Engine\.submit\(\) got an unexpected keyword argument 'bogus'"):
        eng.submit("A", "buy", 2, 100, bogus=1)
    with pytest.raises(TypeError, match=r"^Engine\.submit\(\) got multiple values for argument 'qty'"):
        eng.submit("A", "buy", 2, qty=3)
    with pytest.raises(TypeError, match=r"^Engine\.submit\(\) takes from 4 to 5 positional"):
        eng.submit("A", "buy", 2, 100, "gtc")
    with pytest.raises(TypeError, match=r"^Engine\.submit\(\) missing 1 required positional argument: 'qty'"):
        eng.submit("A", "buy")
    for verb, args in (("cancel", (1, 2)), ("modify", (1, 2, 3, 4)), ("order", (1, 2)), ("book", ("A", 1, 2))):
        with pytest.raises(TypeError, match=rf"^Engine\.{verb}\(\) takes"):
            getattr(eng, verb)(*args)
    with pytest.raises(TypeError, match="account must be an int, not NoneType"):
        eng.submit("A", "buy", 2, 100, account=None)
    with pytest.raises(ValueError, match="a market order has no price"):
        eng.submit("A", "buy", 2, 100, order_type="market")
    with pytest.raises(ValueError, match="give an order_id or a client_order_id"):
        eng.modify(qty=2)
    assert eng.seq == 0
    eng.close()
    closed = {"submit": ("A", "buy", 2, 100), "cancel": (1,), "modify": (1, 2), "order": (1,), "book": ("A",)}
    for verb, args in closed.items():
        with pytest.raises(EngineClosed):
            getattr(eng, verb)(*args)


def test_a_sweep_past_any_buffer_is_decoded_in_c() -> None:
    eng, model = add_instruments(Engine(level_updates=True)), add_instruments(Engine())
    for e in (eng, model):
        for i in range(80):
            e.submit("B", "sell", 1, 60 + i, account=1)
    got = eng.submit("B", "buy", 100, 150, tif="ioc", account=2, client_order_id="sweep")
    assert sum(type(ev) is Trade for ev in got) == 80
    assert sum(type(ev) is LevelUpdate for ev in got) == 80
    assert got[0].client_order_id == "sweep"
    assert [ev for ev in got if type(ev) is not LevelUpdate] == model.submit(
        "B", "buy", 100, 150, tif="ioc", account=2, client_order_id="sweep"
    )


def test_a_call_made_during_a_call_is_refused() -> None:
    """Event objects are built while the engine's buffer is still read; code
    that runs in between (a garbage collection's callbacks) must not enter."""
    eng = add_instruments(Engine())
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
    with pytest.raises(TypeError, match="_attach takes"):
        core._attach(1, api)
    tables = {f"t{i}": None for i in range(len(_CALL_TABLES) + 2)}
    with pytest.raises(ValueError, match="not an engine"):
        core._attach(0, api, **tables)
    with pytest.raises(ValueError, match="table symbols is missing"):
        core._attach(1, api, **tables)
    # Unattached, as closed, every verb is refused.
    for verb in (lambda: core.submit("A", "buy", 1, 1), lambda: core.cancel(1), lambda: core.book("A")):
        with pytest.raises(RuntimeError, match="the Engine is not attached"):
            verb()


class Closing:
    """An int whose __index__ tries to close the engine it is passed to."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng

    def __index__(self) -> int:
        self.eng.close()
        return 5


@pytest.mark.parametrize("verb", VERBS)
def test_user_code_run_by_a_call_finds_the_engine_in_use(verb: str) -> None:
    eng = add_instruments(Engine())
    odd = Closing(eng)
    call = {
        "submit": lambda: eng.submit("B", "buy", odd, 100),
        "cancel": lambda: eng.cancel(odd),
        "modify": lambda: eng.modify(1, qty=odd),
        "order": lambda: eng.order(odd),
        "book": lambda: eng.book("A", depth=odd),
    }[verb]
    with pytest.raises(ConcurrentUseError):
        call()
    assert eng.seq == 0 and eng.book("A").bids == []  # still open, nothing ran


@pytest.mark.parametrize("meddle", ["eng._detach()", "eng._release(); eng._detach()", "attach_again()"])
def test_user_code_run_by_a_call_cannot_take_the_engine_from_it(meddle: str) -> None:
    """__index__ of an argument detaches the C half from the engine, lets go
    of the call's hold first, or attaches the C half again: refused, and the
    call raises the error. Run apart: the call went on without an engine and
    crashed."""
    proc = run_python(textwrap.dedent("""
        from pyengine import Engine
        from pyengine._ffi import ffi
        from pyengine.engine import _API, _CALL_TABLES

        eng = Engine()
        eng.add_instrument("A")

        def attach_again():
            address = int(ffi.cast("uintptr_t", eng._ptr))
            eng._attach(address, _API, symbols=eng._symbols, names=eng._names, **_CALL_TABLES)

        class Meddling:
            def __index__(self):
                MEDDLE
                return 5

        try:
            eng.submit("A", "buy", Meddling(), 100)
        except RuntimeError as exc:
            print(exc)
        print(eng.seq, eng._busy, eng.submit("A", "buy", 5, 100)[0].qty)
    """).replace("MEDDLE", meddle))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["the Engine is in use by a call", "0 False 5"]


class Failing(Exception):
    pass


def test_errors_of_user_code_stand_and_nothing_runs() -> None:
    class BadIndex:
        def __index__(self) -> int:
            raise Failing("__index__")

    class BadHash(str):
        def __hash__(self) -> int:
            raise Failing("__hash__")

    eng = add_instruments(Engine())
    with pytest.raises(Failing, match="__index__"):
        eng.submit("A", "buy", BadIndex(), 100)
    with pytest.raises(Failing, match="__hash__"):
        eng.submit(BadHash("A"), "buy", 2, 100)
    with pytest.raises(Failing, match="__index__"):
        eng.cancel(1, account=BadIndex())
    assert eng.seq == 0


def test_a_client_order_id_comes_back_as_a_plain_str() -> None:
    class Text(str):
        pass

    eng = add_instruments(Engine())
    rested = eng.submit("A", "buy", 2, 100, client_order_id=Text("r"))[0]
    traded = eng.submit("A", "sell", 2, 100, client_order_id=Text("t"))[0]
    assert type(rested.client_order_id) is str and type(traded.client_order_id) is str

"""The Python binding of the C core: tables in step with C, lifetime, the
concurrency guard, the fast paths agreeing with the event buffer, errors."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import pyengine
from pyengine import (
    Accepted,
    CancelReason,
    Cancelled,
    ConcurrentUseError,
    DuplicateSymbol,
    Engine,
    EngineClosed,
    EngineError,
    InvalidArgument,
    InvalidArgumentType,
    Modified,
    RejectReason,
    Rejected,
    Side,
    Trade,
)
from pyengine import batch
from pyengine._codes import CANCEL_BY_CODE, REJECT_BY_CODE
from pyengine._ffi import ffi, lib
from pyengine.enums import REJECT_MESSAGES


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.add_instrument("ESZ6", tick_size=25, lot_size=1)
    e.add_instrument("BTCUSD", tick_size=1, lot_size=10, price_band=(1000, 2000), market_protection=50)
    return e


def c_name(fn, code: int) -> str:
    return ffi.string(fn(code)).decode()


def test_reject_reasons_match_the_c_table() -> None:
    names = {c_name(lib.eng_err_name, c) for c in range(lib.ENG_ERR__COUNT)}
    assert {str(r) for r in RejectReason} <= names
    for code, reason in enumerate(REJECT_BY_CODE):
        if reason is not None:
            assert str(reason) == c_name(lib.eng_err_name, code)
            assert REJECT_MESSAGES[reason] == c_name(lib.eng_strerror, code)


def test_cancel_reasons_match_the_c_table() -> None:
    assert [str(r) for r in CANCEL_BY_CODE] == [str(r) for r in CancelReason]
    for code, reason in enumerate(CANCEL_BY_CODE):
        assert str(reason) == c_name(lib.eng_cancel_reason_name, code)


def test_every_code_of_the_header_has_a_batch_member() -> None:
    """The batch enums take their values from the header: a code added in C
    without a member here is the drift left to catch."""
    families = {  # enum: (prefix of its codes, prefixes of other codes under it)
        batch.CommandType: ("ENG_CMD_", ("ENG_CMD_F_",)),
        batch.StateCode: ("ENG_STATE_", ()),
        batch.StpCode: ("ENG_STP_", ()),
        batch.CommandFlag: ("ENG_CMD_F_", ()),
        batch.EventType: ("ENG_EV_", ("ENG_EV_F_",)),
    }
    for enum_class, (prefix, others) in families.items():
        in_c = {
            name.removeprefix(prefix)
            for name in dir(lib)
            if name.startswith(prefix) and "__" not in name and not name.startswith(others)
        }
        assert in_c == {m.name for m in enum_class}, enum_class
        for member in enum_class:
            assert member == getattr(lib, prefix + member.name), member
    assert len(batch.CommandType) == lib.ENG_CMD__COUNT - 1


def test_struct_layouts_match_the_packed_formats() -> None:
    """The struct formats must put each field where C does."""
    cmd = ffi.new("struct eng_cmd *")
    cmd.type, cmd.side, cmd.instrument, cmd.account = 1, 2, 3, 4
    cmd.order_id, cmd.price, cmd.qty, cmd.ts = 5, -6, 7, 8
    cmd.coid = b"abc"
    fields = batch.COMMAND_STRUCT.unpack(bytes(ffi.buffer(cmd)))
    assert fields == (1, 2, 0, 0, 0, 0, 0, 3, 4, 5, -6, 7, 8, b"abc".ljust(16, b"\0"))
    ev = ffi.new("struct eng_event *")
    ev.type, ev.side, ev.reason, ev.flags, ev.instrument = 1, 2, 3, 4, 5
    ev.seq, ev.order_id, ev.maker_order_id, ev.trade_id = 6, 7, 8, 9
    ev.price, ev.qty, ev.leaves, ev.maker_leaves = -10, 11, 12, 13
    ev.account, ev.maker_account, ev.coid = 14, 15, b"z"
    assert batch.EVENT_STRUCT.unpack(bytes(ffi.buffer(ev))) == (
        1, 2, 3, 4, 5, 6, 7, 8, 9, -10, 11, 12, 13, 14, 15, b"z".ljust(16, b"\0"))


def test_events_are_typed_and_immutable(eng: Engine) -> None:
    (acc,) = eng.submit("ESZ6", "buy", 10, 4500, account=7, client_order_id="c1")
    assert acc == Accepted(1, 1, "ESZ6", Side.BUY, 4500, 10, 7, "c1")
    assert type(acc) is Accepted and acc.side is Side.BUY
    with pytest.raises(AttributeError):
        acc.qty = 5  # type: ignore[misc]
    assert acc._asdict()["client_order_id"] == "c1"


def test_fast_paths_agree_with_the_event_buffer(eng: Engine) -> None:
    """Fast results are built in Python from the arguments; the same outcome
    read back from the engine's buffer must be identical."""
    (fast,) = eng.submit("ESZ6", "buy", 10, 4500, account=7)
    (via_buffer,) = eng.submit("ESZ6", "buy", 10, 4500, account=7, client_order_id="x", stp="cancel_both")
    assert fast[2:7] == via_buffer[2:7] and via_buffer.client_order_id == "x"
    (c1,) = eng.cancel(fast.order_id, account=7)
    (c2,) = eng.cancel(client_order_id="x", account=7)
    assert c1 == Cancelled(3, fast.order_id, 10, CancelReason.USER)
    assert c2 == Cancelled(4, via_buffer.order_id, 10, CancelReason.USER)
    (r1,) = eng.cancel(fast.order_id, account=7)
    (r2,) = eng.cancel(fast.order_id)  # administrator form: general path
    assert r1.reason is r2.reason is RejectReason.UNKNOWN_ORDER
    assert (r1.seq, r2.seq) == (5, 6)
    assert eng.seq == 6


def test_seq_mirror_stays_in_step_with_the_engine(eng: Engine) -> None:
    ids = []
    for i in range(300):
        if i % 4 == 1:
            evs = eng.cancel(ids[i // 2], account=i % 3)
        elif i % 7 == 2:
            evs = eng.modify(ids[i // 3], qty=2)
        else:
            evs = eng.submit("ESZ6", "buy" if i % 3 else "sell", 1 + i % 4, 4500 + 25 * (i % 5), account=i % 3)
            ids += [e.order_id for e in evs if type(e) is Accepted]
        assert {e.seq for e in evs} == {i + 1} == {eng.seq}
    assert eng.seq == eng.stats().commands == 300


def test_many_events_beyond_the_sink(eng: Engine) -> None:
    for _ in range(100):
        eng.submit("ESZ6", "sell", 1, 4500, account=1)
    evs = eng.submit("ESZ6", "buy", 100, 4500, account=2)
    assert len(evs) == 101
    assert [type(e) for e in evs] == [Accepted] + [Trade] * 100
    assert [e.trade_id for e in evs[1:]] == list(range(1, 101))
    assert evs[-1].taker_leaves == 0
    eng.verify()


def test_market_price_is_none_and_modify_events(eng: Engine) -> None:
    eng.submit("ESZ6", "sell", 5, 4500, account=1)
    evs = eng.submit("ESZ6", "buy", 2, order_type="market", tif="ioc", account=2)
    assert evs[0].price is None
    (oid,) = [e.order_id for e in eng.submit("ESZ6", "buy", 5, 4400, account=2) if type(e) is Accepted]
    assert eng.modify(oid, qty=3, account=2) == [Modified(eng.seq, oid, 4400, 3, True)]
    assert eng.modify(oid, qty=3, price=4425, account=2) == [Modified(eng.seq, oid, 4425, 3, False)]
    assert eng.order(oid).price == 4425


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(symbol=1), InvalidArgumentType),
        (dict(side="long"), InvalidArgument),
        (dict(side=None), InvalidArgumentType),
        (dict(qty=1.5), InvalidArgumentType),
        (dict(qty=True), InvalidArgumentType),
        (dict(qty=2**63), InvalidArgument),
        (dict(price=2**64), InvalidArgument),
        (dict(price="4500"), InvalidArgumentType),
        (dict(account=-1), InvalidArgument),
        (dict(account=2**32), InvalidArgument),
        (dict(tif="day"), InvalidArgument),
        (dict(stp="maybe"), InvalidArgument),
        (dict(order_type="stop"), InvalidArgument),
        (dict(order_type="market"), InvalidArgument),  # with a price
        (dict(order_type="market", price=None, tif="gtc"), InvalidArgument),
        (dict(price=None), InvalidArgument),
        (dict(post_only=True, tif="ioc"), InvalidArgument),
        (dict(post_only=1), InvalidArgumentType),
        (dict(client_order_id=""), InvalidArgument),
        (dict(client_order_id="x" * 17), InvalidArgument),
        (dict(client_order_id="caf\u00e9"), InvalidArgument),
        (dict(client_order_id="a\nb"), InvalidArgument),
        (dict(client_order_id=7), InvalidArgumentType),
    ],
)
def test_submit_argument_errors(eng: Engine, kwargs: dict, exc: type) -> None:
    args = dict(symbol="ESZ6", side="buy", qty=1, price=4500)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        eng.submit(**args)
    assert isinstance(info.value, EngineError)
    assert eng.seq == 0  # nothing reached the engine


def test_numpy_integers_and_enum_members_are_accepted(eng: Engine) -> None:
    np = pytest.importorskip("numpy")
    (acc,) = eng.submit("ESZ6", Side.BUY, np.int64(3), np.int32(4500), account=np.uint8(2), tif=pyengine.TimeInForce.GTC)
    assert acc.qty == 3 and type(acc.qty) is int and type(acc.price) is int and type(acc.account) is int


def test_cancel_and_modify_argument_errors(eng: Engine) -> None:
    with pytest.raises(InvalidArgument):
        eng.cancel()
    with pytest.raises(InvalidArgument):
        eng.cancel(1, client_order_id="a", account=1)
    with pytest.raises(InvalidArgument):
        eng.cancel(client_order_id="a")  # needs the account
    with pytest.raises(InvalidArgument):
        eng.cancel(0)
    with pytest.raises(InvalidArgumentType):
        eng.cancel("1")
    with pytest.raises(InvalidArgument):
        eng.modify(1, qty=2**63)
    with pytest.raises(InvalidArgumentType):
        eng.modify(1, qty=1, price=1.0)
    assert eng.seq == 0


def test_add_instrument_errors(eng: Engine) -> None:
    with pytest.raises(DuplicateSymbol):
        eng.add_instrument("ESZ6")
    for bad in ("", "x" * 16, "a b", "\u00e9"):
        with pytest.raises(InvalidArgument):
            eng.add_instrument(bad)
    with pytest.raises(InvalidArgument):
        eng.add_instrument("T1", tick_size=0)
    with pytest.raises(InvalidArgument):
        eng.add_instrument("T2", price_band=(10, 5))
    with pytest.raises(InvalidArgumentType):
        eng.add_instrument("T3", price_band=(1, 5, 9))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        eng.add_instrument("T4", market_protection=-1)
    assert [i.symbol for i in eng.instruments] == ["ESZ6", "BTCUSD"]
    assert eng.instruments[1].price_band == (1000, 2000)
    assert eng.instrument_id("BTCUSD") == 1
    with pytest.raises(InvalidArgument):
        eng.instrument_id("NOPE")


def test_unknown_symbol_is_a_market_reject(eng: Engine) -> None:
    assert eng.submit("NOPE", "buy", 1, 100) == [
        Rejected(1, RejectReason.UNKNOWN_INSTRUMENT, "unknown instrument", None, None)
    ]
    with pytest.raises(InvalidArgument):
        eng.book("NOPE")


def test_close_and_context_manager() -> None:
    with Engine() as e:
        e.add_instrument("A")
        e.submit("A", "buy", 1, 1)
    for call in (
        lambda: e.submit("A", "buy", 1, 1),
        lambda: e.submit("A", "buy", 1, 1, tif="ioc"),
        lambda: e.cancel(1, account=0),
        lambda: e.cancel(1),
        lambda: e.modify(1, qty=1),
        lambda: e.book("A"),
        lambda: e.verify(),
        lambda: e.process_batch(b""),
    ):
        with pytest.raises(EngineClosed):
            call()
    e.close()  # twice is fine
    assert "closed" in repr(e)


def test_engine_is_collected() -> None:
    e = Engine()
    e.add_instrument("A")
    e.submit("A", "buy", 1, 1)
    ref = weakref.ref(e)
    del e
    gc.collect()
    assert ref() is None


def test_concurrent_use_raises(eng: Engine) -> None:
    """While one thread is inside an Engine call, every call from another
    thread raises ConcurrentUseError instead of racing it in C."""
    inside = threading.Event()
    release = threading.Event()

    def occupy() -> None:
        # Hold the engine the way a long call does: every public method holds
        # it on entry and lets go on the way out.
        assert eng._hold() == 0
        inside.set()
        release.wait(5)
        eng._release()

    t = threading.Thread(target=occupy)
    t.start()
    assert inside.wait(5)
    try:
        for call in (
            lambda: eng.submit("ESZ6", "buy", 1, 4500),
            lambda: eng.submit("ESZ6", "buy", 1, 4500, tif="ioc"),
            lambda: eng.cancel(1, account=1),
            lambda: eng.modify(1, qty=1),
            lambda: eng.process_batch(b""),
        ):
            with pytest.raises(ConcurrentUseError):
                call()
    finally:
        release.set()
        t.join()
    assert eng.seq == 0
    eng.submit("ESZ6", "buy", 1, 4500)  # usable again
    assert eng.seq == 1


def test_verify_raises_with_the_core_reason(eng: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """C tests corrupt books and check eng_verify finds it; here: a failing
    eng_verify becomes InvariantError carrying its reason."""
    eng.verify()

    class CorruptLib:
        ENG_OK = lib.ENG_OK

        @staticmethod
        def eng_verify(ptr: object, why: object, n: int) -> int:
            ffi.memmove(why, b"book: crossed (best bid >= best ask)\0", 37)
            return lib.ENG_CORRUPT

        def __getattr__(self, name: str) -> object:
            return getattr(lib, name)

    monkeypatch.setattr(pyengine.engine, "lib", CorruptLib())
    with pytest.raises(pyengine.InvariantError, match="crossed"):
        eng.verify()

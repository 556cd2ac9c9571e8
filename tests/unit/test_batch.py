"""The batch path: packed commands in, packed events out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from inspect import Parameter
from typing import Any

import pytest

import pyengine
from pyengine import (
    Accepted,
    CancelReason,
    Cancelled,
    Engine,
    InvalidArgument,
    InvalidArgumentType,
    Modified,
    Rejected,
    RejectReason,
    Trade,
    TradingState,
    pack_cancel,
    pack_modify,
    pack_new_order,
)
from pyengine.batch import (
    COMMAND_STRUCT,
    BatchResult,
    CommandType,
    EventType,
    OrderTypeCode,
    SideCode,
    StateCode,
    TifCode,
)

from .test_api import params

KEYWORD_ONLY = Parameter.KEYWORD_ONLY


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.add_instrument("A", tick_size=5)
    e.add_instrument("B")
    return e


def cross(eng: Engine) -> bytes:
    a = eng.instrument_id("A")
    return (
        pack_new_order(a, "sell", 5, 100, account=1)
        + pack_new_order(a, "sell", 5, 105, account=1, client_order_id="s2")
        + pack_new_order(a, "buy", 7, 105, account=2)
        + pack_cancel(2, account=1)
        + pack_modify(1, qty=3, account=1)
    )


def test_batch_events_and_counts(eng: Engine) -> None:
    result = eng.process_batch(cross(eng))
    events = eng.decode_events(result.events)
    assert [type(e) for e in events] == [Accepted, Accepted, Accepted, Trade, Trade, Cancelled, Rejected]
    assert events[3].price == 100 and events[4].price == 105
    assert events[5] == Cancelled(4, 2, 3, CancelReason.USER)
    assert events[6].reason is RejectReason.UNKNOWN_ORDER  # order 1 was filled
    assert result[1:] == (5, 7, 3, 1, 2, 1, 0)
    assert eng.seq == 5
    eng.verify()


def test_buffer_kinds_give_the_same_result(eng: Engine) -> None:
    raw = cross(eng)
    outs = []
    for buf in (raw, bytearray(raw), memoryview(raw)):
        e = Engine()
        e.add_instrument("A", tick_size=5)
        outs.append(bytes(e.process_batch(buf).events))
    assert outs[0] == outs[1] == outs[2]


def test_commands_at_an_unaligned_address_give_the_same_result(eng: Engine) -> None:
    """The core reads the records in place as 8-byte-aligned structs: a buffer
    at an odd address (a slice of a file read after a header) is run from an
    aligned copy, not read misaligned (undefined behaviour, which the
    sanitized build of the tests stops on)."""
    raw = cross(eng)
    want = bytes(eng.process_batch(raw).events)
    for shift in (1, 4):
        e = Engine()
        e.add_instrument("A", tick_size=5)
        result = e.process_batch(memoryview(bytes(shift) + raw)[shift:])
        assert (result.commands, bytes(result.events)) == (5, want)


def test_out_buffer_is_reused(eng: Engine) -> None:
    out = bytearray(b"junk" * 100)
    result = eng.process_batch(cross(eng), out=out)
    assert result.events is out
    assert len(out) == 7 * pyengine.batch.EVENT_SIZE
    first = bytes(out)
    e2 = Engine()
    e2.add_instrument("A", tick_size=5)
    assert bytes(e2.process_batch(cross(e2)).events) == first
    with pytest.raises(InvalidArgumentType):
        eng.process_batch(b"", out=memoryview(bytearray(10)))  # type: ignore[arg-type]


def test_out_buffer_grows_for_large_batches(eng: Engine) -> None:
    a = eng.instrument_id("A")
    cmds = b"".join(pack_new_order(a, "buy", 1, 100 + 5 * (i % 10), account=1) for i in range(10_000))
    out = bytearray()
    result = eng.process_batch(cmds, out=out)
    assert result.accepted == 10_000
    assert len(eng.decode_events(out)) == 10_000


def test_counts_only(eng: Engine) -> None:
    result = eng.process_batch(cross(eng), collect_events=False)
    assert len(result.events) == 0
    assert (result.commands, result.event_count, result.trades) == (5, 7, 2)


def test_numpy_commands_and_events(eng: Engine) -> None:
    np = pytest.importorskip("numpy")
    cmds = np.zeros(3, dtype=pyengine.COMMAND_DTYPE)
    assert cmds.itemsize == 64 and pyengine.EVENT_DTYPE.itemsize == 96
    cmds["type"] = CommandType.NEW
    cmds["side"] = [SideCode.SELL, SideCode.SELL, SideCode.BUY]
    cmds["order_type"] = OrderTypeCode.LIMIT
    cmds["tif"] = TifCode.GTC
    cmds["instrument"] = eng.instrument_id("A")
    cmds["price"] = [100, 105, 105]
    cmds["qty"] = [5, 5, 7]
    cmds["coid"][2] = b"x9"
    result = eng.process_batch(cmds)
    events = np.frombuffer(result.events, dtype=pyengine.EVENT_DTYPE)
    trades = events[events["type"] == EventType.TRADE]
    assert trades["price"].tolist() == [100, 105]
    assert trades["qty"].tolist() == [5, 2]
    assert events["coid"][2] == b"x9"
    # The same as packing by hand.
    e2 = Engine()
    e2.add_instrument("A", tick_size=5)
    assert bytes(e2.process_batch(cmds.tobytes()).events) == bytes(result.events)


def test_malformed_records_are_rejected_not_raised(eng: Engine) -> None:
    bad = [
        COMMAND_STRUCT.pack(9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b""),  # type
        COMMAND_STRUCT.pack(1, 3, 1, 1, 0, 0, 0, 0, 0, 0, 100, 1, 0, b""),  # side
        COMMAND_STRUCT.pack(1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, b""),  # market gtc
        COMMAND_STRUCT.pack(1, 1, 1, 1, 7, 0, 0, 0, 0, 0, 100, 1, 0, b""),  # stp
        COMMAND_STRUCT.pack(1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 100, 1, 0, b""),  # reserved
        COMMAND_STRUCT.pack(1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 100, 1, 0, b"\xff"),  # coid
    ]
    events = eng.decode_events(eng.process_batch(b"".join(bad)).events)
    assert [e.reason for e in events] == [
        RejectReason.BAD_COMMAND,
        RejectReason.BAD_SIDE,
        RejectReason.BAD_TIF,
        RejectReason.BAD_STP,
        RejectReason.BAD_COMMAND,
        RejectReason.BAD_CLIENT_ORDER_ID,
    ]
    assert events[-1].client_order_id == "\\xff"
    eng.verify()


def test_bad_buffers_raise(eng: Engine) -> None:
    with pytest.raises(InvalidArgument):
        eng.process_batch(b"x" * 63)
    with pytest.raises(InvalidArgumentType):
        eng.process_batch("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        eng.process_batch(memoryview(bytes(128))[::2])
    with pytest.raises(InvalidArgument):
        eng.decode_events(b"x" * 95)
    assert eng.seq == 0


def test_pack_helpers_check_arguments(eng: Engine) -> None:
    with pytest.raises(InvalidArgument):
        pack_new_order(0, "buy", 1, None)
    with pytest.raises(InvalidArgument):
        pack_new_order(0, "buy", 1, 10, order_type="market")
    with pytest.raises(InvalidArgumentType):
        pack_new_order(0, "buy", 1.0, 10)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        pack_cancel()
    with pytest.raises(InvalidArgument):
        pack_cancel(client_order_id="a")
    with pytest.raises(InvalidArgument):
        pack_modify(1, qty=-(2**63) - 1)


def test_pack_new_order_tif_follows_the_order_type() -> None:
    assert pack_new_order(0, "buy", 1, order_type="market") == pack_new_order(
        0, "buy", 1, order_type="market", tif="ioc"
    )
    assert pack_new_order(0, "buy", 1, 10, tif=None) == pack_new_order(0, "buy", 1, 10, tif="gtc")
    with pytest.raises(InvalidArgument, match="cannot be gtc"):
        pack_new_order(0, "buy", 1, order_type="market", tif="gtc")


def test_pack_modify_keeps_the_open_qty_when_none_is_given(eng: Engine) -> None:
    a = eng.instrument_id("A")
    assert pack_modify(1, 3, 105) == pack_modify(1, qty=3, price=105)
    cmds = (
        pack_new_order(a, "sell", 10, 100, account=1)
        + pack_new_order(a, "buy", 4, 100, account=2)
        + pack_modify(1, price=105, account=1)
    )
    events = eng.decode_events(eng.process_batch(cmds).events)
    assert events[-1] == Modified(3, 1, 105, 6, False)
    assert eng.order(1).price == 105
    with pytest.raises(InvalidArgument, match="a new qty, a new price or both"):
        pack_modify(1)


def test_batch_and_single_calls_interleave(eng: Engine) -> None:
    """Sequence numbers and ids continue across both paths."""
    (first,) = eng.submit("A", "buy", 1, 100, account=1)
    result = eng.process_batch(pack_new_order(0, "buy", 1, 100, account=1))
    (batched,) = eng.decode_events(result.events)
    (last,) = eng.submit("A", "buy", 1, 100, account=1)
    assert (first.seq, batched.seq, last.seq) == (1, 2, 3)
    assert (first.order_id, batched.order_id, last.order_id) == (1, 2, 3)


def unknown_cancels(n: int) -> bytes:
    """`n` cancels of orders that do not exist: one Rejected event each."""
    return b"".join(pack_cancel(1_000_000 + i, account=1) for i in range(n))


def test_out_with_a_view_alive_is_refused_before_any_command_runs(eng: Engine) -> None:
    """A numpy array of the last batch's events keeps `out` from changing
    size: the next batch into it raises at once, running nothing."""
    np = pytest.importorskip("numpy")
    out = bytearray()
    eng.process_batch(pack_new_order(0, "sell", 5, 100, account=1), out=out)
    last = np.frombuffer(out, dtype=pyengine.EVENT_DTYPE)
    with pytest.raises(pyengine.EngineError) as info:
        eng.process_batch(pack_new_order(0, "buy", 5, 100, account=2), out=out)
    assert isinstance(info.value, pyengine.EngineBufferError) and isinstance(info.value, BufferError)
    assert info.value.partial is None
    assert eng.seq == 1 and eng.stats().trades == 0
    assert last["order_id"].tolist() == [1]
    del last
    assert eng.process_batch(pack_new_order(0, "buy", 5, 100, account=2), out=out).trades == 1


def test_out_made_unresizable_during_the_batch_keeps_what_ran() -> None:
    """A view of `out` made while the batch runs (here by a profile function
    at the second chunk's call into C): the error carries every command that
    ran and all their events."""
    eng = Engine()
    eng.add_instrument("A")
    n = 5000  # two chunks of process_batch(out=...)
    out = bytearray()
    views: list[memoryview] = []
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "eng_process_batch":
            calls.append(arg.__name__)
            if len(calls) == 2:
                views.append(memoryview(out))

    sys.setprofile(profile)
    try:
        with pytest.raises(pyengine.EngineError) as info:
            eng.process_batch(unknown_cancels(n), out=out)
    finally:
        sys.setprofile(None)
    err = info.value
    assert isinstance(err, pyengine.EngineBufferError) and isinstance(err, BufferError)
    assert len(calls) == 2 and eng.seq == n
    partial = err.partial
    assert isinstance(partial, BatchResult)
    assert (partial.commands, partial.event_count, partial.rejected) == (n, n, n)
    events = eng.decode_events(partial.events)
    assert [ev.seq for ev in events] == list(range(1, n + 1))
    assert all(ev.reason is RejectReason.UNKNOWN_ORDER for ev in events)


def test_out_that_cannot_grow_for_lack_of_memory_keeps_what_ran(failing_realloc: Any) -> None:
    """Out of memory growing `out` (reallocs of 512 KiB or more fail; the
    engine's own buffer, 4096 events of a chunk, stays under that): an
    EngineMemoryError whose partial holds the commands that ran and their
    events, and the engine goes on."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pathlib import Path
        from pyengine import Engine, EngineMemoryError, pack_cancel

        eng = Engine()
        eng.add_instrument("A")
        n = 8192  # two chunks of 4096 Rejected events: 384 KiB each
        cmds = b"".join(pack_cancel(1_000_000 + i, account=1) for i in range(n))
        out = bytearray()
        Path(sys.argv[1]).touch()
        try:
            eng.process_batch(cmds, out=out)
        except EngineMemoryError as exc:
            Path(sys.argv[1]).unlink()
            p = exc.partial
            events = eng.decode_events(p.events)
            print(p.commands, p.event_count, p.rejected, eng.seq, [e.seq for e in events] == list(range(1, n + 1)))
        print(eng.process_batch(cmds[:64 * 10], out=out).rejected, len(out) // 96)
    """), str(failing_realloc.flag)], env=failing_realloc.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["8192 8192 8192 8192 True", "10 10"]


def test_pack_set_mmp_and_reset_mmp_take_their_arguments_by_keyword(eng: Engine) -> None:
    """Engine.set_mmp's names in its order, the instrument by number, by
    keyword only: these two ints once came in the other order, and a call
    by position is refused rather than read the new way."""
    packed = params(pyengine.batch.pack_set_mmp, drop=("ts",))
    assert [(name, kind) for name, kind, _ in packed] == [
        ("account", KEYWORD_ONLY), ("instrument", KEYWORD_ONLY), ("qty_limit", KEYWORD_ONLY), ("window", KEYWORD_ONLY)]
    assert [name for name, _, _ in params(Engine.set_mmp)] == ["account", "symbol", "qty_limit", "window"]
    assert [name for name, _, _ in params(pyengine.batch.pack_reset_mmp, drop=("ts",))] == ["account", "instrument"]
    with pytest.raises(TypeError):
        pyengine.batch.pack_set_mmp(0, 1, 10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        pyengine.batch.pack_reset_mmp(0, 1)  # type: ignore[misc]
    b = eng.instrument_id("B")
    model = Engine()
    model.add_instrument("A", tick_size=5)
    model.add_instrument("B")
    cmds = pyengine.batch.pack_set_mmp(account=7, instrument=b, qty_limit=10, window=5) + pyengine.batch.pack_reset_mmp(
        account=7, instrument=b)
    assert eng.decode_events(eng.process_batch(cmds).events) == model.set_mmp(7, "B", 10, 5) + model.reset_mmp(7, "B")


def test_decode_events_takes_numpy_event_arrays(eng: Engine) -> None:
    """len() of a numpy array counts its records: the events are counted in bytes."""
    np = pytest.importorskip("numpy")
    raw = eng.process_batch(cross(eng)).events
    events = np.frombuffer(raw, dtype=pyengine.EVENT_DTYPE)
    trades = events[events["type"] == EventType.TRADE]
    assert eng.decode_events(events) == eng.decode_events(raw)
    assert eng.decode_events(trades) == [ev for ev in eng.decode_events(raw) if type(ev) is Trade]
    with pytest.raises(InvalidArgument, match="contiguous"):
        eng.decode_events(events[::2])


def test_decode_events_raises_the_engines_errors(eng: Engine) -> None:
    other = Engine()
    for symbol in ("A", "B", "C"):
        other.add_instrument(symbol)
    theirs = other.process_batch(pack_new_order(2, "buy", 1, 5)).events
    with pytest.raises(InvalidArgument, match="not an event record"):
        eng.decode_events(bytes(96))
    with pytest.raises(InvalidArgument, match="not its events"):
        eng.decode_events(theirs)
    with pytest.raises(InvalidArgumentType, match="buffer protocol, not str"):
        eng.decode_events("x" * 96)
    with pytest.raises(InvalidArgument, match="fewer than 2 records"):
        pyengine.batch.decode_events(bytes(96), ["A"], [], [], count=2)
    # The module's function checks its buffer and count as the engine's does.
    with pytest.raises(InvalidArgument, match="whole number of 96-byte records"):
        pyengine.batch.decode_events(bytes(50), ["A"], [], [])
    with pytest.raises(InvalidArgument, match=r"count=-1 is out of range"):
        pyengine.batch.decode_events(bytes(96), ["A"], [], [], count=-1)
    with pytest.raises(InvalidArgumentType, match="count must be an int, not float"):
        pyengine.batch.decode_events(bytes(96), ["A"], [], [], count=1.5)  # type: ignore[arg-type]
    assert pyengine.batch.decode_events(bytes(200), ["A"], [], [], count=0) == []  # a buffer longer than count


def test_decode_events_refuses_a_state_the_engine_never_writes(eng: Engine) -> None:
    """A StateChanged record's state is 0 (open) or 1 (halted); any other,
    negative ones included, is not an event of this engine."""
    from pyengine._cengine import ffi

    halted = bytearray(eng.process_batch(pyengine.batch.pack_set_state(0, "halted")).events)
    assert [type(ev).__name__ for ev in eng.decode_events(halted)] == ["StateChanged"]
    at = ffi.offsetof("struct eng_event", "qty")
    for state in (-1, -2, 2):
        halted[at : at + 8] = state.to_bytes(8, "little", signed=True)
        with pytest.raises(InvalidArgument, match="not its events"):
            eng.decode_events(halted)


def test_decode_events_refuses_a_side_the_engine_never_writes() -> None:
    """An Accepted, Trade or LevelUpdate record's side is 1 (buy) or 2
    (sell); any other, 0 (no side) included, is not an event of this engine."""
    from pyengine._cengine import ffi

    eng = Engine(level_updates=True)
    eng.add_instrument("X")
    raw = eng.process_batch(pack_new_order(0, "sell", 5, 100, account=1) + pack_new_order(0, "buy", 5, 100, account=2))
    events = eng.decode_events(raw.events)
    assert [type(ev).__name__ for ev in events] == ["Accepted", "LevelUpdate", "Accepted", "Trade", "LevelUpdate"]
    at = ffi.offsetof("struct eng_event", "side")
    size = pyengine.batch.EVENT_SIZE
    for i, event in enumerate(events):
        record = bytearray(raw.events[i * size : (i + 1) * size])
        assert eng.decode_events(record) == [event]
        for side in (0, 3):
            record[at] = side
            with pytest.raises(InvalidArgument, match="not its events"):
                eng.decode_events(record)


def test_decode_events_refuses_a_cancel_or_modify_of_an_instrument_the_engine_lacks() -> None:
    """Cancelled and Modified show no symbol, but their records name the
    order's instrument, which must be one of the engine's as any other's."""
    from pyengine._cengine import ffi

    eng = Engine()
    for symbol in ("X", "Y"):
        eng.add_instrument(symbol)
    raw = eng.process_batch(pack_new_order(1, "sell", 5, 100, account=1) + pyengine.batch.pack_modify(1, qty=9)
                            + pyengine.batch.pack_cancel(1))
    events = eng.decode_events(raw.events)
    assert [type(ev).__name__ for ev in events] == ["Accepted", "Modified", "Cancelled"]
    at = ffi.offsetof("struct eng_event", "instrument")
    size = pyengine.batch.EVENT_SIZE
    for i in (1, 2):
        record = bytearray(raw.events[i * size : (i + 1) * size])
        assert eng.decode_events(record) == [events[i]]
        record[at : at + 4] = (2).to_bytes(4, "little")
        with pytest.raises(InvalidArgument, match="not its events"):
            eng.decode_events(record)


def test_pack_set_state_takes_the_state_or_its_code(eng: Engine) -> None:
    """A TradingState, its str, or the record's code (docs/batch.md: 0 open, 1 halted)."""
    halted = pyengine.batch.pack_set_state(0, TradingState.HALTED)
    assert pyengine.batch.pack_set_state(0, "halted") == halted
    assert pyengine.batch.pack_set_state(0, StateCode.HALTED) == halted
    assert pyengine.batch.pack_set_state(0, 1) == halted
    assert pyengine.batch.pack_set_state(0, 0) == pyengine.batch.pack_set_state(0, "open")
    for bad, error in [("paused", InvalidArgument), (2, InvalidArgument), (True, InvalidArgumentType),
                       (None, InvalidArgumentType)]:
        with pytest.raises(error, match="state"):
            pyengine.batch.pack_set_state(0, bad)  # type: ignore[arg-type]
    assert eng.decode_events(eng.process_batch(halted).events)[0].state is TradingState.HALTED


def test_collect_events_is_a_bool(eng: Engine) -> None:
    with pytest.raises(InvalidArgumentType, match="collect_events must be a bool"):
        eng.process_batch(cross(eng), collect_events="no")  # type: ignore[arg-type]
    assert eng.seq == 0


def test_an_out_buffer_with_no_events_to_keep_is_refused(eng: Engine) -> None:
    out = bytearray(b"kept")
    with pytest.raises(InvalidArgument, match="collect_events=False keeps none"):
        eng.process_batch(cross(eng), collect_events=False, out=out)
    assert eng.seq == 0 and out == b"kept"  # nothing ran


def test_instruments_hold_plain_ints(eng: Engine) -> None:
    np = pytest.importorskip("numpy")
    eng.add_instrument("N", tick_size=np.int64(5), lot_size=np.int32(2), price_band=(np.int64(10), np.int64(90)),
                       market_protection=np.int64(7))
    inst = eng.instruments[-1]
    assert inst == (2, "N", 5, 2, (10, 90), 7)
    assert [type(v) for v in (inst.tick_size, inst.lot_size, *inst.price_band, inst.market_protection)] == [int] * 5

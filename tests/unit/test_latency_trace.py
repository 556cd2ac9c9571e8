"""The breakdown's arithmetic (pyengine/server/latency_trace.py): each stage
between its two points, nearest-rank percentiles of the sorted times; and
LatencyTrace (csrc/binding/trace.c) in a server that is not started, the
engine thread's events written by hand: a traced order's stamps, a batch's
stamps arriving later, records lost (a batch unstamped, a session gone)."""

from __future__ import annotations

import gc
import socket
import time
from array import array
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine._ffi import ffi, lib
from pyengine._server import LatencyTrace, Ledger, stage_times
from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.latency_trace import STAGES, CollectorPauses, breakdown, percentile
from pyengine.server.session import Session

from .conftest import add_session

POINTS = LatencyTrace(Ledger(), 1).points


def test_the_stages_join_the_points_end_to_end() -> None:
    assert POINTS == ("read", "intake", "pushed", "taken", "published", "popped", "routed", "written")
    steps = STAGES[:-1]
    assert [a for _, a, _ in steps] == list(POINTS[:-1])
    assert [b for _, _, b in steps] == list(POINTS[1:])
    assert STAGES[-1] == ("total", POINTS[0], POINTS[-1])


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert [percentile(list(range(1, n + 1)), 99.9) for n in (1000, 2000, 7000)] == [999, 1998, 6993]
    assert percentile([7], 99) == 7
    assert percentile([1, 2], 50) == 1


def test_breakdown_of_records() -> None:
    # Record r: each point 1000 * (r + 1) ns after the one before.
    records = array("q")
    for r in range(10):
        records.extend(1_000_000 + i * 1000 * (r + 1) for i in range(len(POINTS)))
    figures = {f.stage: f for f in breakdown(records.tobytes(), POINTS)}
    assert list(figures) == [s for s, _, _ in STAGES]
    engine = figures["engine"]
    assert (engine.count, engine.min_us, engine.p50_us, engine.p90_us, engine.p99_us, engine.p999_us,
            engine.max_us) == (10, 1.0, 5.0, 9.0, 10.0, 10.0, 10.0)
    assert figures["total"].max_us == 70.0
    assert breakdown(b"", POINTS) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-(2**40), 2**40), min_size=4, max_size=4), max_size=60),
       st.integers(0, 3), st.integers(0, 3))
def test_stage_times_are_the_differences_sorted(rows: list[list[int]], start: int, end: int) -> None:
    records = array("q", [v for row in rows for v in row]).tobytes()
    assert array("q", stage_times(records, 4, start, end)).tolist() == sorted(r[end] - r[start] for r in rows)


def test_stage_times_refuses_what_is_not_records() -> None:
    with pytest.raises(ValueError, match="whole records"):
        stage_times(b"\0" * 24, 4, 0, 1)
    with pytest.raises(ValueError, match="< width"):
        stage_times(b"", 4, 0, 4)
    with pytest.raises(ValueError, match="< width"):
        stage_times(b"", 2**61, 0, 1)  # a record's size past the address space


# ---- LatencyTrace (csrc/binding/trace.c) in a real server, not started -------------

class Traced:
    """A server tracing every new order, one logged-in session over a
    socketpair; the engine thread's part played by hand."""

    def __init__(self) -> None:
        self.server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1, trace_latency=1))
        assert self.server.trace is not None
        self.trace = self.server.trace
        self.socks = socket.socketpair()
        self.session = add_session(self.server, self.socks[0], 1)
        self.session.link.login(7, False)
        self.router = self.server.dispatcher._router
        self.events = ffi.new("struct runner_event[]", 4)

    def order(self, price: int, session: Session | None = None) -> int:
        """A new order (of `session`, by default the rig's) read and taken,
        its record pushed: its tag."""
        self.trace.read()
        assert self.server.intake.take((session or self.session).link, orjson.dumps(
            {"type": "new_order", "req_id": price, "symbol": "ESZ6", "side": "buy", "qty": 1, "price": price})) is None
        buf = self.server.commands.buffer
        recs = ffi.from_buffer("struct runner_cmd[]", buf)
        tag = int(recs[buf.queued - 1].tag)
        assert buf.push()  # into the (idle) engine thread's ring, stamped by the buffer
        return tag

    def answer(self, tag: int, seq: int, batch: tuple[int, int] | None) -> None:
        """The engine's ack of `tag`'s order as command `seq`, then (given)
        the stamps of the batch of seqs batch[0]..batch[1]; routed, written."""
        self.answer_all([(tag, seq)], batch)

    def answer_all(self, acks: list[tuple[int, int]], batch: tuple[int, int] | None) -> None:
        """answer() of several (tag, seq) acks, routed together and written in one flush."""
        taken = time.monotonic_ns()
        for i, (tag, seq) in enumerate(acks):
            ack = self.events[i]
            ffi.memmove(ffi.addressof(ack), b"\0" * ffi.sizeof("struct runner_event"),
                        ffi.sizeof("struct runner_event"))
            ack.tag = tag
            ack.ev.type, ack.ev.side, ack.ev.instrument, ack.ev.account = lib.ENG_EV_ACCEPTED, lib.ENG_BUY, 0, 7
            ack.ev.order_id, ack.ev.price, ack.ev.qty, ack.ev.seq = 1000 + seq, 400_000, 1, seq
        n = len(acks)
        if batch is not None:
            stamp = self.events[n]
            stamp.tag = 0
            stamp.ev.type, stamp.ev.order_id, stamp.ev.seq = lib.RUNNER_EV_BATCH, batch[0], batch[1]
            stamp.ev.price, stamp.ev.qty, stamp.ev.leaves = taken, time.monotonic_ns(), 1
            n += 1
        self.router.route(ffi.buffer(self.events), n)
        self.server.flush_sessions()

    def close(self) -> None:
        self.server.stop()
        for s in self.socks:
            s.close()


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.close()


def test_a_traced_order_has_every_stamp_in_order(traced: Traced) -> None:
    tag = traced.order(400_000)
    assert (traced.trace.traced, traced.trace.completed) == (1, 0)
    traced.answer(tag, seq=1, batch=(1, 1))
    assert (traced.trace.traced, traced.trace.completed, traced.trace.lost) == (1, 1, 0)
    stamps = array("q", traced.trace.records())
    assert len(stamps) == len(POINTS)
    assert list(stamps) == sorted(stamps) and stamps[0] > 0


def test_each_session_is_written_at_its_own_send(traced: Traced) -> None:
    # Two sessions answered in one flush: the first's answer is written by
    # its send, before the second's, not at the flush's end with it.
    socks = socket.socketpair()
    try:
        other = add_session(traced.server, socks[0], 2)
        other.link.login(7, False)
        first, second = traced.order(400_000), traced.order(400_025, other)
        traced.answer_all([(first, 1), (second, 2)], batch=(1, 2))
        assert (traced.trace.completed, traced.trace.lost) == (2, 0)
        records = array("q", traced.trace.records())
        written = POINTS.index("written")
        stamps = [records[i * len(POINTS):(i + 1) * len(POINTS)] for i in range(2)]
        assert all(list(r) == sorted(r) for r in stamps)
        assert sorted(r[written] for r in stamps) == [r[written] for r in stamps]  # finished as written
        assert stamps[0][written] < stamps[1][written]
        assert b'"order_id":1001' in traced.socks[1].recv(4096) and b'"order_id":1002' in socks[1].recv(4096)
    finally:
        for s in socks:
            s.close()


def test_the_batch_stamps_may_come_in_a_later_poll(traced: Traced) -> None:
    tag = traced.order(400_000)
    traced.answer(tag, seq=1, batch=None)  # routed and written; the batch's stamps not yet seen
    assert traced.trace.completed == 0
    traced.answer(0, seq=2, batch=(1, 2))  # an ack for nobody, then the stamps of seqs 1 and 2
    assert (traced.trace.completed, traced.trace.lost) == (1, 0)


def test_an_order_whose_batch_went_by_unstamped_is_lost(traced: Traced) -> None:
    tag = traced.order(400_000)
    traced.answer(tag, seq=5, batch=(6, 6))
    assert (traced.trace.traced, traced.trace.completed, traced.trace.lost) == (1, 0, 1)
    assert traced.trace.records() == b""


def test_an_order_whose_session_closed_before_its_answer_is_lost(traced: Traced) -> None:
    tag = traced.order(400_000)
    traced.session.link.close()  # what Session.close does to it
    traced.answer(tag, seq=1, batch=(1, 1))  # the ack goes to Python's late path: nothing is written
    assert (traced.trace.traced, traced.trace.completed, traced.trace.lost) == (1, 0, 1)
    assert traced.trace.records() == b""


def test_one_in_every(traced: Traced) -> None:
    trace = LatencyTrace(Ledger(), 3)
    assert trace.every == 3 and trace.traced == 0
    with pytest.raises(ValueError, match="has one already"):
        LatencyTrace(traced.server.ledger, 1)
    for every in (0, 2**32):  # not cut to 32 bits
        with pytest.raises(ValueError, match=r"every in \[1, 2\*\*32\)"):
            LatencyTrace(Ledger(), every)
    with pytest.raises(OverflowError):
        LatencyTrace(Ledger(), 2**64 + 5)  # nor to 64


def test_collector_pauses_count_each_collection_while_started() -> None:
    pauses = CollectorPauses()
    was = gc.isenabled()
    gc.disable()  # the collections below alone
    try:
        gc.collect(0)  # not started yet
        pauses.start()
        pauses.start()  # once is enough: each collection counts once
        gc.collect(0)
        gc.collect(0)
        gc.collect(2)
        pauses.stop()
        pauses.stop()
        gc.collect(0)  # stopped
    finally:
        if was:
            gc.enable()
    young, middle, full = pauses.generations
    assert (young.collections, middle.collections, full.collections) == (2, 0, 1)
    assert middle.total_ns == middle.longest_ns == 0
    for g in (young, full):
        assert 0 < g.longest_ns <= g.total_ns

"""The Poller (csrc/binding/poller.c): the sessions' sockets read in the
hub a loop turn at a time, the turn's commands pushed to the engine
thread's input ring in one go, what is Python's handed to the session's
reader greenlet. A real server (not started, its Poller read by the hub),
real sessions reading real socketpairs, a real (idle) engine thread's ring."""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import gevent
import orjson
import pytest

from pyengine._server import CommandBuffer, Inbox, Link, Poller
from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.protocol import FrameError, encode

from .conftest import add_session


def new_order(req_id: int) -> bytes:
    return encode({"type": "new_order", "req_id": req_id, "symbol": "ESZ6", "side": "buy", "qty": 1,
                   "price": 400_000 + req_id})


class Sessions:
    """Logged-in sessions of a server that is not started, their readers
    running in greenlets, the hub reading its Poller."""

    def __init__(self, n: int, **config: Any) -> None:
        self.server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1, **config))
        self.pairs = [socket.socketpair() for _ in range(n)]
        self.sessions = []
        for sid, (ours, _) in enumerate(self.pairs, 1):
            ours.setblocking(False)
            s = add_session(self.server, ours, sid)
            s.link.login(sid, False)
            self.sessions.append(s)
        self.server.start_reading()
        self.greenlets = [gevent.spawn(s.reader) for s in self.sessions]
        gevent.sleep(0.02)  # each reader has its socket watched

    def send(self, i: int, data: bytes) -> None:
        self.pairs[i][1].sendall(data)

    def close(self) -> None:
        gevent.killall(self.greenlets)
        self.server.stop()
        for pair in self.pairs:
            for s in pair:
                s.close()


@pytest.fixture
def two() -> Iterator[Sessions]:
    s = Sessions(2)
    yield s
    s.close()


def test_one_turn_reads_every_ready_socket_and_pushes_once(two: Sessions) -> None:
    poller, engine, buf = two.server.poller, two.server.engine, two.server.commands.buffer
    assert poller.watched == 2
    turns, reads, pushes = poller.turns, poller.reads, buf.pushes
    two.send(0, new_order(1))
    two.send(1, new_order(2) + new_order(3))
    gevent.sleep(0.05)
    assert poller.turns == turns + 1 and poller.reads == reads + 2  # both sockets in one turn
    assert buf.queued == 0 and buf.pushes == pushes + 1  # pushed at the turn's end, in one ring operation ...
    assert engine.stats()["in_queued"] == 3  # ... into the ring, where the idle engine thread leaves them
    tags = [list(s.link.pending()) for s in two.sessions]
    assert tags == [[1], [1, 2]]  # each session's request numbers, in order
    assert poller.watched == 2  # nothing was handed over


def test_a_request_for_python_is_handed_over_and_the_socket_watched_again(two: Sessions) -> None:
    poller = two.server.poller
    two.send(0, encode({"type": "ping", "req_id": 7}) + new_order(8))
    gevent.sleep(0.05)
    # The reader carried the ping out and the order behind it, and watches again.
    assert poller.watched == 2
    assert [req_id for _, req_id, _ in two.sessions[0].link.pending().values()] == [8]
    two.pairs[0][1].settimeout(5)
    assert orjson.loads(two.pairs[0][1].recv(1 << 16)[4:]) == {"type": "pong", "req_id": 7}
    two.send(0, new_order(9))
    gevent.sleep(0.05)
    assert [req_id for _, req_id, _ in two.sessions[0].link.pending().values()] == [8, 9]


def test_a_read_that_held_the_loop_is_carried_out_by_the_reader_and_the_socket_watched_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyengine.server.app.HOLD", 1e-12)  # the Intake's drains: a frame each
    s = Sessions(2)
    try:
        s.send(0, new_order(1) + new_order(2) + new_order(3))
        s.send(1, new_order(4))
        gevent.sleep(0.05)
        # The Poller carried out the first and handed the rest to the reader,
        # which carried them out a drain at a time, the loop turning between.
        assert s.server.poller.watched == 2
        pending = [[req_id for _, req_id, _ in x.link.pending().values()] for x in s.sessions]
        assert pending == [[1, 2, 3], [4]]
        s.send(0, new_order(5))
        gevent.sleep(0.05)
        assert [req_id for _, req_id, _ in s.sessions[0].link.pending().values()] == [1, 2, 3, 5]
    finally:
        s.close()


def test_the_peer_closing_ends_the_session(two: Sessions) -> None:
    two.pairs[0][1].shutdown(socket.SHUT_WR)
    gevent.sleep(0.05)
    assert two.sessions[0].closed and two.sessions[0].close_reason == "peer_closed"
    assert two.greenlets[0].dead and two.greenlets[0].exception is None
    assert two.server.poller.watched == 1 and not two.sessions[1].closed


def test_a_stream_cut_inside_a_frame_is_answered_with_the_error(two: Sessions) -> None:
    two.send(0, new_order(1)[:10])
    two.pairs[0][1].shutdown(socket.SHUT_WR)
    gevent.sleep(0.05)
    assert two.sessions[0].close_reason == "truncated_frame"
    two.pairs[0][1].settimeout(5)
    reply = orjson.loads(two.pairs[0][1].recv(1 << 16)[4:])
    assert reply["type"] == "error" and reply["code"] == "truncated_frame"


def test_a_broken_header_is_raised_in_the_reader(two: Sessions) -> None:
    two.send(0, b"\xff\xff\xff\xff")  # a length over the frame limit
    gevent.sleep(0.05)
    assert two.sessions[0].closed and two.sessions[0].close_reason == "frame_too_large"
    assert two.server.poller.watched == 1


def test_a_session_closed_in_the_hub_is_dropped_unread(two: Sessions) -> None:
    poller = two.server.poller
    two.send(0, new_order(1))
    two.send(1, new_order(2))
    two.sessions[0].close("idle_timeout")  # in the hub, its reader not run yet: still watched
    assert poller.watched == 2
    reads = poller.reads
    poller.turn()  # as the hub would, before the reader runs
    assert poller.reads == reads + 1 and poller.watched == 1  # the other socket alone was read
    assert not two.sessions[0].link.pending() and len(two.sessions[1].link.pending()) == 1
    gevent.sleep(0.02)
    assert two.greenlets[0].dead and two.greenlets[0].exception is None


def test_a_close_that_fails_still_ends_the_reader(two: Sessions) -> None:
    def broken() -> None:
        raise RuntimeError("a bug in the last flush")

    session = two.sessions[0]
    session.flush = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="last flush"):
        session.close("idle_timeout")
    gevent.sleep(0.02)
    assert two.greenlets[0].dead and two.server.poller.watched == 1  # not left waiting, its socket unwatched


def test_a_read_stamps_the_session_as_active(two: Sessions) -> None:
    before = [s.last_active for s in two.sessions]
    assert 0 < before[0] <= before[1] <= time.monotonic()  # at first: when each began
    gevent.sleep(0.02)
    sent = time.monotonic()
    two.send(0, new_order(1))
    gevent.sleep(0.05)
    assert sent <= two.sessions[0].last_active <= time.monotonic()
    assert two.sessions[1].last_active == before[1]  # not read


def test_a_turn_whose_commands_do_not_fit_leaves_the_rest_to_the_flusher() -> None:
    s = Sessions(1, in_capacity=4)
    try:
        flusher = gevent.spawn(s.server._flusher)
        s.send(0, b"".join(new_order(i) for i in range(10)))
        gevent.sleep(0.05)
        buf = s.server.commands.buffer
        # Four went in; the flusher waits for the (idle) engine thread to make room.
        assert s.server.engine.stats()["in_queued"] == 4 and buf.queued == 10 and buf.sent == 4 and buf.held
        s.server.engine.start()
        gevent.sleep(0.2)
        assert buf.queued == 0 and not buf.held and s.server.engine.stats()["commands"] == 10
        flusher.kill()
    finally:
        s.close()


def test_watching_is_checked(two: Sessions) -> None:
    server, session = two.server, two.sessions[0]
    poller = Poller(server.intake, server)  # one of its own: the hub reads the server's
    inbox = Inbox(1024, FrameError)
    with pytest.raises(ValueError, match="the Link is watched already"):
        poller.watch(session.link, inbox)  # by the server's Poller
    mine = Link(8, None, 0, 0, fd=two.pairs[0][0].fileno())
    poller.watch(mine, inbox)
    with pytest.raises(ValueError, match="the Link is watched already"):
        poller.watch(mine, Inbox(1024, FrameError))
    with pytest.raises(ValueError, match="descriptor .* is watched already"):
        poller.watch(Link(7, None, 0, 0, fd=two.pairs[0][0].fileno()), inbox)
    with pytest.raises(ValueError, match="unwatch it first"):
        mine.forget_socket()  # the Poller knows it by its descriptor
    with pytest.raises(ValueError, match="no socket"):
        poller.watch(Link(9, None, 0, 0), inbox)
    with pytest.raises(TypeError):
        poller.watch(Link.__new__(Link), inbox)  # not initialised
    with pytest.raises(TypeError):
        poller.watch(session.link, None)  # type: ignore[arg-type]
    assert not poller.unwatch(Link(9, None, 0, 0, fd=two.pairs[1][0].fileno()))  # not watched
    closed = Link(9, None, 0, 0, fd=two.pairs[1][0].fileno())
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        poller.watch(closed, inbox)
    with pytest.raises(TypeError):
        Poller(None, server)  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="handed"):
        Poller(server.intake, object())  # type: ignore[arg-type]  # no PollerEvents methods
    assert poller.watched == 1 and poller.unwatch(mine) and poller.watched == 0
    poller.watch(mine, inbox)
    fd = poller.fileno()
    poller.close()  # lets go of what it watched
    assert poller.watched == 0 and not poller.unwatch(mine)
    mine.forget_socket()  # watched no more
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventpoll]"
    poller.turn()  # nothing
    with pytest.raises(ValueError, match="closed"):
        poller.watch(Link(6, None, 0, 0, fd=two.pairs[1][0].fileno()), inbox)
    with pytest.raises(ValueError, match="closed"):
        poller.fileno()


def test_a_poller_let_go_while_watching_lets_go_of_its_sessions(two: Sessions) -> None:
    server, link = two.server, Link(8, None, 0, 0, fd=two.pairs[0][0].fileno())
    poller = Poller(server.intake, server)
    poller.watch(link, Inbox(1024, FrameError))
    held = sys.getrefcount(link)
    del poller
    gc.collect()
    assert sys.getrefcount(link) == held - 1
    link.forget_socket()  # watched no more


def test_a_command_buffer_pushes_only_when_attached() -> None:
    buf = CommandBuffer(4)
    assert buf.push()  # nothing to push: attached or not
    assert buf.reserve() == 0
    with pytest.raises(ValueError, match="no runner"):
        buf.push()
    with pytest.raises(ValueError, match="no runner"):
        buf.submit()
    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    try:
        server.engine.feed(buf, server.ledger)
        buf.held = True
        assert not buf.push() and buf.queued == 1  # a waiting flush holds them
        buf.held = False
        assert buf.push() and buf.queued == 0 and buf.pushes == 1
    finally:
        server.stop()  # the engine thread closes: it detaches what it feeds
    assert buf.reserve() == 0
    with pytest.raises(ValueError, match="no runner"):
        buf.push()


# ---- spinning: the loop polls for a while after a read ---------------------------


def wait_until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.001)


def test_spin_for_is_checked(two: Sessions) -> None:
    poller = two.server.poller
    with pytest.raises(ValueError, match="ns must be >= 0, not -1"):
        poller.spin_for(-1, print)
    for ns, switch in ((1000, None), (0, print), (1000, 42)):
        with pytest.raises(TypeError, match="switch is a callable, or None with ns 0"):
            poller.spin_for(ns, switch)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"spin_for takes \(ns, switch\)"):
        poller.spin_for("1000", print)  # type: ignore[arg-type]
    assert not poller.spinning


def test_a_turn_that_reads_starts_spinning_and_a_quiet_while_stops_it(two: Sessions) -> None:
    poller, calls = two.server.poller, []
    poller.spin_for(300_000_000, calls.append)  # 300 ms
    poller.spin()
    assert calls == [] and poller.spins == 0  # nothing read yet: nothing to spin for
    two.send(0, new_order(1))
    wait_until(lambda: poller.reads == 1)
    assert calls == [True] and poller.spinning
    poller.spin()
    assert poller.spins == 1 and calls == [True]  # within the time: it yields the CPU, and goes on
    two.send(1, new_order(2))
    wait_until(lambda: poller.reads == 2)
    assert calls == [True]  # spinning already
    time.sleep(0.31)  # the hub too: no turn meanwhile
    poller.spin()
    assert calls == [True, False] and not poller.spinning and poller.spins == 1
    poller.spin()
    assert calls == [True, False]  # the watcher's last call after the stop: nothing
    two.send(0, new_order(3))
    wait_until(lambda: poller.reads == 3)
    assert calls == [True, False, True]
    poller.spin_for(0, None)
    assert calls == [True, False, True, False] and not poller.spinning  # stopped first
    two.send(0, new_order(4))
    wait_until(lambda: poller.reads == 4)
    assert calls == [True, False, True, False]  # off: no switch called


def test_a_switch_that_fails_goes_to_turn_failed_and_is_tried_again(
        two: Sessions, caplog: pytest.LogCaptureFixture) -> None:
    poller, calls = two.server.poller, []

    def switch(on: bool) -> None:
        calls.append(on)
        if len(calls) == 1:
            raise RuntimeError("no watcher")

    poller.spin_for(300_000_000, switch)
    two.send(0, new_order(1))
    wait_until(lambda: poller.reads == 1)
    assert calls == [True] and not poller.spinning
    assert "turn_failed" in caplog.text and "no watcher" in caplog.text
    two.send(0, new_order(2))
    wait_until(lambda: poller.reads == 2)
    assert calls == [True, True] and poller.spinning
    poller.spin_for(0, None)


def test_a_switch_that_fails_to_stop_is_called_again_and_the_cpu_yielded_meanwhile(
        two: Sessions, caplog: pytest.LogCaptureFixture) -> None:
    poller, calls = two.server.poller, []

    def switch(on: bool) -> None:
        calls.append(on)
        if calls == [True, False]:
            raise RuntimeError("cannot stop")

    poller.spin_for(1000, switch)  # 1 µs: over at once
    two.send(0, new_order(1))
    wait_until(lambda: poller.reads == 1)
    time.sleep(0.001)
    spins = poller.spins
    poller.spin()
    assert calls == [True, False] and poller.spinning and poller.spins == spins + 1  # still on, yet not hot
    assert "cannot stop" in caplog.text
    poller.spin()
    assert calls == [True, False, False] and not poller.spinning
    poller.spin_for(0, None)


def test_spin_for_while_spinning_stops_with_the_old_switch_first(two: Sessions) -> None:
    poller, old, new = two.server.poller, [], []
    poller.spin_for(300_000_000, old.append)
    two.send(0, new_order(1))
    wait_until(lambda: poller.reads == 1)
    assert old == [True] and poller.spinning
    poller.spin_for(300_000_000, new.append)
    assert old == [True, False] and new == [] and not poller.spinning
    two.send(0, new_order(2))
    wait_until(lambda: poller.reads == 2)
    assert new == [True] and old == [True, False]
    poller.spin_for(0, None)
    assert new == [True, False] and not poller.spinning


def test_a_spinning_server_polls_after_a_read_then_sleeps_again() -> None:
    """--server-spin-us: after a read the hub keeps polling (an idle
    watcher calling Poller.spin), then stops once that long passed with
    nothing read, and sleeps in epoll_wait again."""
    s = Sessions(1, server_spin_us=100_000)
    try:
        poller = s.server.poller
        gevent.sleep(0.05)
        assert not poller.spinning and poller.spins == 0
        s.send(0, new_order(1))
        wait_until(lambda: poller.spins > 0)  # the hub polled, yielding between polls
        wait_until(lambda: not poller.spinning)  # 100 ms with nothing read
        assert not s.server._spin_watcher.active
        stopped = poller.spins
        gevent.sleep(0.05)
        assert poller.spins == stopped  # the idle watcher is stopped: the hub sleeps
        s.send(0, new_order(2))
        wait_until(lambda: poller.spins > stopped)
        assert poller.reads == 2
    finally:
        s.close()
    assert not poller.spinning  # the server's stop turned it off

"""Session.reader (pyengine/server/session.py): the server's Poller reads a
readable socket and drains its frames in the hub, and hands the reader
greenlet what may wait -- a request that is Python's, an error to raise --
keeping the session's requests in the order they came. A real server (not
started, its Poller read by the hub), real sessions reading real
socketpairs in the real hub."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from typing import Any

import gevent
import orjson
import pytest

from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.protocol import encode

from .conftest import add_session

NEW = {"type": "new_order", "symbol": "ESZ6", "side": "buy", "qty": 1, "price": 400_000}


class Reader:
    """One logged-in session whose reader runs in a greenlet."""

    def __init__(self) -> None:
        self.server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.session = add_session(self.server, self.ours, 1)
        self.session.link.login(1, False)
        self.greenlet: gevent.Greenlet[..., Any] | None = None

    def start(self) -> None:
        self.server.start_reading()
        self.greenlet = gevent.spawn(self.session.reader)
        gevent.sleep(0.02)

    def send(self, *messages: dict[str, Any]) -> None:
        """The messages in one write, then a moment for the hub."""
        self.theirs.sendall(b"".join(encode(m) for m in messages))
        gevent.sleep(0.05)

    def close(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill()
        self.server.stop()
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def reader() -> Iterator[Reader]:
    r = Reader()
    yield r
    r.close()


def test_a_request_for_python_keeps_its_place_among_the_orders(reader: Reader) -> None:
    # The engine thread is not running: each order taken stays pending.
    pending = reader.session.link.pending
    taken_at_the_ping: list[list[Any]] = []
    request = reader.server.request

    def record(session: Any, message: Any) -> None:
        taken_at_the_ping.append([req_id for _, req_id, _ in pending().values()])
        request(session, message)

    reader.server.request = record  # type: ignore[method-assign]
    reader.start()
    reader.send(dict(NEW, req_id=1), {"type": "ping", "req_id": 2}, dict(NEW, req_id=3), dict(NEW, req_id=4))
    # The ping was carried out after the first order and before the two behind it.
    assert taken_at_the_ping == [[1]]
    assert sorted(req_id for _, req_id, _ in pending().values()) == [1, 3, 4]
    reader.server.flush_sessions()
    assert orjson.loads(reader.theirs.recv(1 << 16)[4:]) == {"type": "pong", "req_id": 2}
    # And the reader goes on reading.
    reader.send(dict(NEW, req_id=5))
    assert len(pending()) == 4 and not reader.session.closed


def test_an_error_in_the_hub_ends_the_reader_greenlet_with_it(reader: Reader) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in a reply")

    watched_when_handed: list[int] = []
    handed = reader.session.handed

    def record(value: Any) -> None:
        watched_when_handed.append(reader.server.poller.watched)
        handed(value)

    reader.session.error = broken  # type: ignore[method-assign]
    reader.session.handed = record  # type: ignore[method-assign]
    reader.start()
    reader.send(dict(NEW, req_id=1, side="sideways"))  # refused in the Poller's turn: the reply raises
    assert reader.greenlet is not None and reader.greenlet.dead
    assert isinstance(reader.greenlet.exception, RuntimeError)
    assert watched_when_handed == [0]  # its socket was read no more before the reader had it


def test_a_session_closed_elsewhere_ends_its_reader(reader: Reader) -> None:
    reader.start()
    assert reader.greenlet is not None and not reader.greenlet.dead
    reader.session.close("idle_timeout")
    gevent.sleep(0.02)
    assert reader.greenlet.dead and reader.greenlet.exception is None


@pytest.mark.parametrize(("error", "reason"), [
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "peer_unreachable"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "recv_failed:ConnectionResetError"),
])
def test_a_read_that_fails_closes_the_session_saying_why(reader: Reader, error: OSError, reason: str) -> None:
    # What the Poller hands over when the socket's read fails (PyErr_SetFromErrno):
    # ETIMEDOUT when the kernel gave up on the peer (TCP keepalive unanswered).
    reader.start()
    reader.session.handed(error)
    gevent.sleep(0.02)
    assert reader.session.closed and reader.session.close_reason == reason
    assert reader.greenlet is not None and reader.greenlet.dead and reader.greenlet.exception is None


def test_a_failure_at_the_turns_end_is_logged_and_reading_goes_on(reader: Reader,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(what: int) -> None:
        raise RuntimeError("a bug in seeing to a full socket")

    reader.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader.session.flushed = broken  # type: ignore[method-assign]
    reader.start()
    reader.session.send(b"\0\0\0\1x" * 200_000)  # more than the socket takes: the turn's flush reports it
    reader.send({"type": "ping", "req_id": 1})  # a turn: the ping handed over, then the flush
    assert any(r.message == "turn_failed" and "full socket" in str(r.exc_info[1]) for r in caplog.records)
    reader.send(dict(NEW, req_id=2))  # the next turn still reads
    assert [req_id for _, req_id, _ in reader.session.link.pending().values()] == [2]
    assert reader.greenlet is not None and not reader.greenlet.dead
    reader.session.link.drop_output()  # the stop would wait for it


def test_every_session_a_flush_reports_is_told_even_if_one_fails() -> None:
    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    pairs = [socket.socketpair() for _ in range(2)]
    told: list[int] = []
    try:
        sessions = []
        for sid, (ours, _) in enumerate(pairs, 1):
            ours.setblocking(False)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sessions.append(add_session(server, ours, sid))

        def failing(what: int) -> None:
            raise RuntimeError("a bug in one session's handling")

        sessions[0].flushed = failing  # type: ignore[method-assign]
        sessions[1].flushed = lambda what: told.append(what)  # type: ignore[method-assign]
        for s in sessions:
            s.send(b"\0\0\0\1x" * 200_000)  # more than the socket takes: each is reported
        with pytest.raises(RuntimeError, match="one session's"):
            server.flush_sessions()
        assert len(told) == 1  # the second was told all the same
        for s in sessions:
            s.link.drop_output()  # the stop would wait for it
    finally:
        server.stop()
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_the_writer_sends_what_a_full_socket_did_not_take(reader: Reader) -> None:
    reader.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = gevent.spawn(reader.session.writer)
    frames = [encode({"type": "pong", "req_id": i, "pad": "x" * 1000}) for i in range(300)]
    for f in frames:
        reader.session.send(f)
    reader.server.flush_sessions()  # the socket takes part; the rest is the writer's
    assert reader.session.link.writing
    reader.theirs.setblocking(False)
    got = b""
    deadline = time.monotonic() + 10  # a writer never woken: the bytes stop coming
    while len(got) < sum(map(len, frames)) and time.monotonic() < deadline:  # the client reads as the writer sends
        gevent.sleep(0.001)
        try:
            got += reader.theirs.recv(1 << 16)
        except BlockingIOError:
            pass
    assert got == b"".join(frames)
    assert reader.session.unsent == 0 and not reader.session.link.writing and not writer.dead
    writer.kill()

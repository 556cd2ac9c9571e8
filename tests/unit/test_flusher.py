"""A server-wide flush that fails (pyengine/server/app.py): Server._flusher,
the greenlet that pushes what a full input ring left over and then flushes
every session, logs the failure and goes on, for without it the commands of
a later full ring would wait for traffic that may never come; and
Server.flush_sessions, when Ledger.flush runs out of memory building its
report, logs it and leaves the report to the next flush; and the greenlets
that cancel the orders of closed sessions log what fails in them. A real
server (not started) in the real hub."""

from __future__ import annotations

import logging
import socket

import gevent
import pytest

from pyengine.server.app import Server
from pyengine.server.config import ServerConfig


def test_the_flusher_outlives_a_flush_that_fails(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    flushes: list[int] = []

    def flush_sessions() -> None:
        flushes.append(len(flushes))
        if len(flushes) == 1:
            raise MemoryError("the report of the flush")

    server.flush_sessions = flush_sessions  # type: ignore[method-assign]
    flusher = gevent.spawn(server._flusher)
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(2):
                server._flush_wanted.set()  # as a turn whose commands did not all fit in the ring
                gevent.sleep(0.05)
        assert flushes == [0, 1] and not flusher.dead
        (failed,) = [r for r in caplog.records if r.getMessage() == "flush_failed"]
        assert failed.exc_info is not None and failed.exc_info[0] is MemoryError
    finally:
        flusher.kill()
        server.stop()


def test_a_flush_whose_report_runs_out_of_memory_is_logged_and_given_by_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    """Server.flush_sessions when Ledger.flush cannot build its report: no
    error reaches its caller (a reader, the dispatcher, a loop callback,
    none of which it concerns), and the next flush wakes the writer of the
    session whose socket was full."""
    import _testcapi  # CPython's own test module: a build without it fails here, not skips

    from pyengine.server.protocol import encode

    from .conftest import add_session

    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        session = add_session(server, ours, 1)
        session.send(encode({"type": "pong", "req_id": "x" * (1 << 20)}))  # more than the socket takes at once
        with caplog.at_level(logging.ERROR):
            _testcapi.set_nomemory(0, 1)  # the flush's first allocation, its report's list, fails
            try:
                server.flush_sessions()
            finally:
                _testcapi.remove_mem_hooks()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["flush_report_failed"]
        assert session.link.writing and not session._wake.is_set()  # written as far as it goes; nobody told yet
        server.flush_sessions()
        assert session._wake.is_set()  # the writer wakes
        session.link.drop_output()  # the stop would wait for it to drain
    finally:
        server.stop()
        ours.close()
        theirs.close()


@pytest.mark.parametrize("canceller", ["server", "dispatcher"])
def test_a_cancel_in_a_greenlet_of_its_own_that_fails_is_logged(caplog: pytest.LogCaptureFixture,
                                                                canceller: str) -> None:
    """The cancels of a closed session's orders (Server._cancel_on_disconnect)
    and of orders acked after their session closed (Dispatcher._cancel_orphans)
    run in greenlets of their own, where an exception would only be printed
    by gevent: it is logged, with how many orders it concerned."""
    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))

    def failing(order_id: int) -> None:
        raise RuntimeError(f"cannot cancel {order_id}")

    server.cancel_order = failing  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="pyengine"):
            if canceller == "server":
                gevent.spawn(server._cancel_on_disconnect, 3, [7, 8]).join(timeout=5)
                event = "cancel_on_disconnect_failed"
            else:
                dispatcher = server.dispatcher
                dispatcher._cod = [7, 8]
                # As if the Ledger held both (the canceller skips orders nobody owns any more).
                dispatcher.ledger = type("Owning", (), {"owner": staticmethod(lambda oid: 1)})()  # type: ignore[assignment]
                gevent.spawn(dispatcher._cancel_orphans).join(timeout=5)
                event = "cancel_orphans_failed"
        (failed,) = [r for r in caplog.records if r.getMessage() == event]
        assert failed.exc_info is not None and failed.exc_info[0] is RuntimeError
        assert failed.__dict__["kv"]["orders"] == 2
    finally:
        server.stop()

"""Server._flusher (pyengine/server/app.py), the greenlet that pushes what a
full input ring left over and then flushes every session: a flush that
fails is logged and the greenlet goes on, for without it the commands of a
later full ring would wait for traffic that may never come. A real server
(not started) in the real hub; the failure is injected into its flush."""

from __future__ import annotations

import logging

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

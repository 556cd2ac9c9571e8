"""Session.reader's choice between pushing at once and at the turn's end
(pyengine/server/session.py, Server.flush_now): the last ready reader of a
turn of the event loop flushes at once, a reader with others still to run
in the same turn leaves it to the turn's end, and a loop that cannot count
its ready watchers always leaves it to the turn's end. A real server (not
started), real sessions reading real socketpairs in the real hub."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.protocol import encode

from .conftest import add_session


class Readers:
    """Two logged-in sessions whose readers run in greenlets; each flush
    the server is asked for is recorded, then done."""

    def __init__(self) -> None:
        self.server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
        self.calls: list[str] = []
        now, soon = self.server.flush_now, self.server.flush_soon
        self.server.flush_now = lambda: (self.calls.append("now"), now())[1]  # type: ignore[method-assign]
        self.server.flush_soon = lambda: (self.calls.append("soon"), soon())[1]  # type: ignore[method-assign]
        self.pairs = [socket.socketpair() for _ in range(2)]
        self.sessions = []
        for sid, (ours, _) in enumerate(self.pairs, 1):
            ours.setblocking(False)
            s = add_session(self.server, ours, sid)
            s.link.login(sid, False)
            self.sessions.append(s)
        self.greenlets: list[gevent.Greenlet[..., Any]] = []

    def start(self) -> None:
        self.greenlets = [gevent.spawn(s.reader) for s in self.sessions]
        gevent.sleep(0.05)  # each reader waits on its socket

    def send(self, *which: int) -> None:
        """A new order on each of these sessions' sockets at once, then a
        moment for the hub to run the readers they wake."""
        for i in which:
            self.pairs[i][1].sendall(encode({"type": "new_order", "req_id": i, "symbol": "ESZ6", "side": "buy",
                                            "qty": 1, "price": 400_000 + i}))
        gevent.sleep(0.05)

    def close(self) -> None:
        gevent.killall(self.greenlets)
        self.server.stop()
        for pair in self.pairs:
            for s in pair:
                s.close()


@pytest.fixture
def readers() -> Iterator[Readers]:
    r = Readers()
    yield r
    r.close()


@pytest.mark.skipif(not hasattr(gevent.get_hub().loop, "pendingcnt"), reason="gevent's libuv loop: no pendingcnt")
def test_the_last_reader_of_a_turn_flushes_at_once(readers: Readers) -> None:
    readers.start()
    readers.send(0)  # one reader in its turn: the last one
    assert readers.calls == ["now"]
    readers.calls.clear()
    readers.send(0, 1)  # both sockets ready in one turn: the first leaves it to the turn's end
    assert readers.calls == ["soon", "now"]
    assert readers.server.commands.buffer.queued == readers.server.commands.buffer.sent  # all pushed


def test_a_loop_that_cannot_count_its_ready_watchers_flushes_at_the_turns_end(readers: Readers) -> None:
    class Uncounted:
        """The hub's loop without pendingcnt (as gevent's libuv loop)."""

        def __init__(self, loop: Any) -> None:
            self._loop = loop

        def __getattr__(self, name: str) -> Any:
            if name == "pendingcnt":
                raise AttributeError(name)
            return getattr(self._loop, name)

    class Hub:
        def __init__(self, hub: Any) -> None:
            self._hub = hub
            self.loop = Uncounted(hub.loop)

        def wait(self, watcher: Any) -> Any:
            return self._hub.wait(watcher)

    real = readers.server.hub
    readers.server.hub = Hub(real)  # type: ignore[assignment]
    readers.start()
    readers.server.hub = real
    readers.send(0)
    readers.send(0, 1)
    assert readers.calls == ["soon", "soon", "soon"]
    assert readers.server.commands.buffer.queued == readers.server.commands.buffer.sent

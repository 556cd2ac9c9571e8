"""The hub taking the engine thread's answers itself: Router.route_ready
(csrc/binding/route.c) takes a batch from the output ring through the
runner's function table and routes it; Poller.after_push
(csrc/binding/poller.c) runs at the end of each turn, between the push and
the write; the Dispatcher (pyengine/server/dispatch.py) routes there while
its greenlet waits, so answers the engine thread gave during the turn go
out with the turn's output. A real server (not started), a real engine
thread, real sockets."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import orjson
import pytest

from pyengine._server import Inbox, Router
from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.dispatch import Dispatcher
from pyengine.server.protocol import FrameError, encode

from .conftest import add_session


class Rig:
    """A server that is not started, one logged-in session over a
    socketpair, its engine thread running."""

    def __init__(self, **config: Any) -> None:
        self.server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1, **config))
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.theirs.settimeout(5)
        self.received = b""  # bytes of a frame not whole yet
        self.session = add_session(self.server, self.ours, 1)
        self.session.link.login(1, False)
        self.router = self.server.dispatcher._router
        self.fd = self.server.engine.fd
        self.server.engine.start()

    def order(self, req_id: int, side: str = "buy", price: int = 400_000) -> None:
        """A new order taken and pushed to the engine thread, as a turn does."""
        message = {"type": "new_order", "req_id": req_id, "symbol": "ESZ6", "side": side, "qty": 1, "price": price}
        assert self.server.intake.take(self.session.link, orjson.dumps(message)) is None
        assert self.server.commands.buffer.push()

    def orders(self, n: int) -> None:
        """`n` new orders (req_id 0, 1, ...) on 50 price levels, pushed a
        thousand or so at a time."""
        buf = self.server.commands.buffer
        for i in range(n):
            message = {"type": "new_order", "req_id": i, "symbol": "ESZ6", "side": "buy", "qty": 1,
                       "price": 400_000 - i % 50 * 25}
            assert self.server.intake.take(self.session.link, orjson.dumps(message)) is None
            if buf.queued == 1024:
                assert buf.push()
        assert buf.push()

    def woken(self, timeout: float = 5.0) -> bool:
        """The engine thread's wake-up of its consumer is pending."""
        return bool(select.select([self.fd], [], [], timeout)[0])

    def answered(self, events: int) -> None:
        """Wait (in this OS thread, the hub not running) until the engine
        thread has published `events` events."""
        deadline = time.monotonic() + 5
        while self.server.engine.stats()["out_queued"] < events:
            assert time.monotonic() < deadline, "the engine thread did not answer"
            time.sleep(0.001)

    def replies_within(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The frames received by now, letting the hub run until there is one."""
        deadline = time.monotonic() + timeout
        while not (got := self.replies()):
            assert time.monotonic() < deadline, "nothing came"
            gevent.sleep(0.005)
        return got

    def replies(self) -> list[dict[str, Any]]:
        """The whole frames the session's peer has received by now."""
        self.theirs.setblocking(False)
        try:
            while chunk := self.theirs.recv(65536):
                self.received += chunk
        except BlockingIOError:
            pass
        finally:
            self.theirs.settimeout(5)
        out, pos, data = [], 0, self.received
        while pos + 4 <= len(data) and (end := pos + 4 + int.from_bytes(data[pos:pos + 4], "big")) <= len(data):
            out.append(orjson.loads(data[pos + 4:end]))
            pos = end
        self.received = data[pos:]
        return out

    def close(self) -> None:
        self.server.stop()
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_route_ready_routes_what_the_engine_answered_and_takes_its_wake_up(rig: Rig) -> None:
    assert rig.router.route_ready() == 0  # nothing yet: the wake-up armed ...
    assert rig.router.journal_error == 0
    rig.order(1)
    assert rig.woken()  # ... so the engine thread's answer wakes the consumer
    assert rig.router.route_ready() == 2  # the ack, and the level it joined
    rig.server.flush_sessions()
    (ack,) = rig.replies()
    assert ack["type"] == "ack" and ack["req_id"] == 1
    assert rig.router.route_ready() == 0
    assert not rig.woken(0)  # the wake-up taken with the last look: no loop turn for events taken already


def test_route_ready_takes_a_batch_at_a_time(rig: Rig) -> None:
    n = 5000  # more than the 4096 events a batch takes
    rig.orders(n)
    rig.answered(2 * n)  # each an ack and the change of its level
    assert [rig.router.route_ready() for _ in range(4)] == [4096, 4096, 2 * n - 8192, 0]
    assert rig.router.orders == n
    rig.session.link.drop_output()  # read by no one: the server's stop would wait for it to be sent


def test_route_ready_flushes_the_market_data_only_when_it_changed(rig: Rig) -> None:
    flushes: list[int] = []
    md = rig.server.marketdata
    rig.server.engine.drain_into(rig.router, lambda: (flushes.append(1), md.flush()))
    rig.order(1)
    rig.answered(2)  # the ack and its level
    assert rig.router.route_ready() == 2
    assert flushes == []  # nobody subscribed: nothing gathered, no call
    md.subscribe(rig.session, 0, None)
    rig.order(2, price=400_025)
    rig.answered(2)
    assert rig.router.route_ready() == 2
    assert flushes == [1]
    rig.server.flush_sessions()
    kinds = [m["type"] for m in rig.replies()]
    assert kinds.count("book_update") == 1 and kinds.index("ack") < kinds.index("book_update")


def test_route_ready_is_refused_inside_its_own_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Python that the routing calls (here the reject's) must not route
    # again: the events it took would overwrite the batch being routed.
    refused: list[str] = []
    rejected = Dispatcher.rejected

    def nested(self: Dispatcher, *args: Any) -> None:
        with pytest.raises(RuntimeError, match="from the Python its own routing calls") as info:
            self._router.route_ready()
        refused.append(str(info.value))
        rejected(self, *args)

    monkeypatch.setattr(Dispatcher, "rejected", nested)  # before the Router binds it
    r = Rig()
    try:
        r.order(1, price=25)  # outside ESZ6's price band: the engine rejects it
        r.order(2)
        r.answered(3)  # the reject, the ack and its level
        assert r.router.route_ready() == 3
        assert len(refused) == 1
        assert r.router.route_ready() == 0  # and routing goes on as before
        r.server.flush_sessions()
        assert [(m["type"], m["req_id"]) for m in r.replies()] == [("reject", 1), ("ack", 2)]
    finally:
        r.close()


def test_route_ready_needs_a_runner() -> None:
    r = Rig()
    router = r.router
    r.close()  # closing the engine thread detaches its Router: the runner is freed
    with pytest.raises(ValueError, match="attached to no runner"):
        router.route_ready()
    with pytest.raises(ValueError, match="attached to no runner"):
        _ = router.journal_error
    with pytest.raises(TypeError, match="attach takes"):
        router.attach(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="attach takes"):
        router.attach(1, 2, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a runner"):
        router.attach(0, 0, print)
    with pytest.raises(ValueError, match="attached to no runner"):
        router.route_ready()  # none of them attached it


def test_a_router_not_initialised_cannot_attach() -> None:
    with pytest.raises(ValueError, match="not initialised"):
        Router.__new__(Router).attach(1, 1, print)


# ---- Poller.after_push ------------------------------------------------------------

def test_after_push_runs_between_the_push_and_the_write(rig: Rig) -> None:
    poller, buf = rig.server.poller, rig.server.commands.buffer
    seen: list[tuple[int, int]] = []

    def after_push() -> None:
        seen.append((buf.queued, buf.pushes))
        rig.session.send(encode({"type": "note"}))  # queued here: written by this turn

    poller.after_push = after_push
    assert poller.after_push is after_push
    pushes = buf.pushes
    poller.watch(rig.session.link, Inbox(rig.server.config.max_frame, FrameError))
    rig.theirs.sendall(encode({"type": "new_order", "req_id": 1, "symbol": "ESZ6", "side": "buy", "qty": 1,
                               "price": 400_000}))
    assert select.select([poller.fileno()], [], [], 5)[0]
    poller.turn()
    assert seen == [(0, pushes + 1)]  # the command pushed before
    assert {"type": "note"} in rig.replies()  # written by the turn itself: no other flush ran
    poller.after_push = None
    poller.turn()
    assert poller.after_push is None and len(seen) == 1
    poller.unwatch(rig.session.link)


def test_after_push_is_a_callable_or_none(rig: Rig) -> None:
    with pytest.raises(TypeError, match="callable or None"):
        rig.server.poller.after_push = 42  # type: ignore[assignment]
    assert rig.server.poller.after_push is None


def test_what_after_push_raises_goes_to_turn_failed(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    poller = rig.server.poller
    calls: list[int] = []

    def after_push() -> None:
        calls.append(1)
        poller.after_push = None  # it may let go of itself
        raise RuntimeError("after the push")

    poller.after_push = after_push
    with caplog.at_level(logging.ERROR, logger="pyengine"):
        poller.turn()
    assert calls == [1] and poller.after_push is None
    (failed,) = [r for r in caplog.records if r.getMessage() == "turn_failed"]
    assert failed.exc_info is not None and failed.exc_info[0] is RuntimeError


# ---- the Dispatcher routing in the Poller's turns ---------------------------------

class Running:
    """The rig's server with its dispatcher greenlet running (the hub routes
    while it waits)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.greenlet = gevent.spawn(rig.server.dispatcher.run)
        rig.server._greenlets.append(self.greenlet)  # Server.stop joins it
        gevent.sleep(0.01)
        assert rig.server.poller.after_push == rig.server.dispatcher._in_turn

    def stop(self) -> None:
        self.rig.server.stop()
        assert self.greenlet.dead and self.greenlet.successful()
        assert self.rig.server.poller.after_push is None  # the greenlet took over for good


def test_answers_ready_at_the_end_of_a_turn_go_out_with_it(rig: Rig) -> None:
    running = Running(rig)
    rig.order(1)
    rig.answered(2)  # the engine thread answered; the hub has not run since
    rig.server.poller.turn()  # no socket ready: the push, after_push, the write
    (ack,) = rig.replies()
    assert ack["type"] == "ack" and ack["req_id"] == 1
    assert not rig.woken(0)  # its wake-up taken: the hub is not woken for it
    running.stop()


def test_a_turn_writes_each_full_batch_before_taking_the_next(rig: Rig) -> None:
    running = Running(rig)
    flushes: list[int] = []
    flush_sessions = rig.server.flush_sessions

    def counted() -> None:
        flushes.append(rig.router.orders)
        flush_sessions()

    rig.server.flush_sessions = counted  # type: ignore[method-assign]
    n = 5000  # 10,000 events: two full batches and a part
    rig.orders(n)
    rig.answered(2 * n)
    writer = gevent.spawn(rig.session.writer)  # what the socket does not take at once
    rig.server.poller.turn()
    assert flushes == [2048, 4096]  # after each full batch; the Poller writes the rest itself
    acks: list[int] = []
    while len(acks) < n:
        acks += [m["req_id"] for m in rig.replies_within() if m["type"] == "ack"]
    assert acks == list(range(n))
    rig.server.flush_sessions = flush_sessions  # type: ignore[method-assign]
    running.stop()
    writer.join(timeout=5)


def test_answers_that_come_after_the_turn_are_routed_on_the_wake_up(rig: Rig) -> None:
    running = Running(rig)
    rig.server.poller.turn()  # nothing there: the wake-up armed
    rig.order(1)
    (ack,) = rig.replies_within()  # the hub: the engine thread's wake-up, _on_events
    assert ack["type"] == "ack" and ack["req_id"] == 1
    running.stop()


def test_an_order_accepted_after_its_session_closed_is_cancelled(rig: Rig) -> None:
    """Cancel-on-disconnect for an order still in flight when its session
    closed (Dispatcher.accepted_late): cancelled even when no other event
    follows."""
    running = Running(rig)
    rig.order(1)
    rig.session.close("peer_closed")  # before the ack is routed
    rig.answered(2)
    rig.server.poller.turn()  # routes the ack: accepted late, its cancel left to a greenlet of its own
    assert rig.server.ledger.owned(None) == [(1, 0)]  # (order id, instrument)
    deadline = time.monotonic() + 5
    while rig.server.ledger.owned(None):  # cancelled, and its owner forgotten as the cancel is routed
        assert time.monotonic() < deadline, "the order of the closed session was not cancelled"
        gevent.sleep(0.01)
    assert rig.server.engine.stats()["commands"] == 2
    running.stop()


def test_routing_goes_on_while_the_cancel_of_a_late_order_waits(rig: Rig) -> None:
    """Queueing the cancel may wait for room in the command buffer: the
    answers of everyone else are routed meanwhile."""
    running = Running(rig)
    room = gevent.event.Event()
    cancel_order = rig.server.cancel_order

    def waiting_cancel(order_id: int) -> None:
        room.wait()  # as CommandQueue.add does while the buffer is full
        cancel_order(order_id)

    rig.server.cancel_order = waiting_cancel  # type: ignore[method-assign]
    other = Rig.__new__(Rig)  # a second session of the same server
    other.server, other.router, other.fd, other.received = rig.server, rig.router, rig.fd, b""
    other.ours, other.theirs = socket.socketpair()
    other.ours.setblocking(False)
    other.session = add_session(rig.server, other.ours, 2)
    other.session.link.login(2, False)
    try:
        rig.order(1)
        rig.session.close("peer_closed")
        rig.answered(2)
        rig.server.poller.turn()  # the late ack: its cancel waits for room
        gevent.sleep(0.01)
        other.order(2, side="sell", price=400_100)
        (ack,) = other.replies_within()  # routed all the same
        assert ack["type"] == "ack" and ack["req_id"] == 2
        assert rig.server.ledger.owner(1) is not None  # not cancelled yet
        room.set()
        deadline = time.monotonic() + 5
        while rig.server.ledger.owner(1) is not None:
            assert time.monotonic() < deadline, "the late order was not cancelled"
            gevent.sleep(0.01)
    finally:
        room.set()
        rig.server.cancel_order = cancel_order  # type: ignore[method-assign]
        other.ours.close()
        other.theirs.close()
    running.stop()

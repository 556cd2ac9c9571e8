"""One client connection: its socket, its reader and writer greenlets.

The server's Poller (csrc/binding/poller.c) reads the socket in the hub
itself, in one call for every socket ready in a turn of the event loop:
into the session's Inbox (csrc/binding/inbox.c, which splits the stream
into frames), the frames carried out there by the server's Intake
(csrc/binding/intake.c): each decoded once, the per-order requests carried
out in C, the rest given back, decoded, for Python (requests.py), which
the reader greenlet carries out: they may wait. No Python runs per frame
unless the frame is Python's. Its output is queued in C too and written at
the server's flush points (csrc/binding/outbox.c); the writer greenlet
sends only what a full socket did not take. A session whose unsent output
passes ``max_unsent`` is disconnected rather than buffered without end (the
rest of a frame queued while nothing else waited does not count: one large
reply is not slow reading).

What the session holds for its orders -- its account, its pending requests,
its rate limit, the orders it owns, its unsent output -- is its ``link`` (a
``pyengine._server.Link``), which the C side keeps.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any, Protocol

import gevent
from gevent.event import Event

from .._server import OUT_SLOW, OUT_WAIT, Inbox, Intake, LatencyTrace, Ledger, Link, Poller
from ..log import Throttle
from .commands import CommandQueue
from .config import ServerConfig
from .protocol import FrameError, encode

__all__ = ["CHANGE_LINES", "Session", "SessionHost"]

_NOTHING = object()  # the reader was woken with nothing handed over
# Seconds a session's input may hold the loop before it turns: its requests
# carried out in Python, and the Intake's drain of its frames (turn_after).
HOLD = 0.0002
_NEXT_TURN = 1e-6  # a sleep over 0 resumes after the loop's next turn; 0 may resume before it polls
# Log lines a second, at most, for each kind of setting a session changes
# (its market-maker protection, its dead-man switch, a trading state).
CHANGE_LINES = 10


def _failure(where: str, exc: OSError) -> str:
    """The close reason of a connection whose `where` ("recv", "send") failed
    with `exc`. ETIMEDOUT: the kernel gave up on the peer (keepalive probes
    or retransmissions unanswered: pyengine/_keepalive.py), its machine or
    the network gone."""
    return "peer_unreachable" if exc.errno == errno.ETIMEDOUT else f"{where}_failed:{exc.__class__.__name__}"


class SessionHost(Protocol):
    """What a session needs of its server."""

    config: ServerConfig
    hub: Any  # gevent's Hub
    intake: Intake
    poller: Poller
    commands: CommandQueue
    ledger: Ledger
    trace: LatencyTrace | None  # --trace-latency (latency_trace.py), or None

    def flush_soon(self) -> None: ...

    def session_closed(self, session: Session) -> None: ...

    def request(self, session: Session, message: Any) -> None:
        """A decoded message the Intake leaves to Python."""


class Session:
    def __init__(self, server: SessionHost, sock: socket.socket, peer: str, sid: int) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.sid = sid
        self.cancel_on_disconnect = True
        self.closed = False
        self._fd = sock.fileno()
        self._wake = Event()  # the writer's
        self._turn = Event()  # the reader's: the Poller handed something over, or the session closed
        self._handed: Any = _NOTHING
        self._inbox = Inbox(server.config.max_frame, FrameError)
        self.close_reason = ""
        self.change_lines = Throttle(lines=CHANGE_LINES)  # the settings it changes (Requests._changed)
        limits = server.config.limits
        self.link = Link(sid, self, limits.rate, limits.burst, fd=self._fd, max_unsent=server.config.max_unsent)
        self._queue = server.ledger.send

    @property
    def last_active(self) -> float:
        """When the socket last gave bytes or its end (time.monotonic()'s
        clock; at first, when the session began)."""
        return float(self.link.last_read)

    @property
    def account(self) -> int | None:
        """The account logged in as, or None."""
        return self.link.account

    # ---- output ------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a frame; it goes out at the next flush point (the end of the
        dispatcher's batch or of the reader's), in one write with the rest
        (csrc/binding/outbox.c)."""
        if not self.closed:
            self._queue(self.link, frame)

    @property
    def unsent(self) -> int:
        """Bytes queued for the client and not sent yet."""
        return int(self.link.unsent)

    def reply(self, message: dict[str, Any]) -> None:
        self.send(encode(message))

    def error(self, code: str, message: str, req_id: Any = None, extra: dict[str, Any] | None = None) -> None:
        self.reply({"type": "error", "req_id": req_id, "code": code, "message": message, **(extra or {})})

    def flush(self) -> None:
        """Write what is queued now, without blocking (the server's flush
        writes every session's; this one, a closing session's last words).
        What the socket does not take goes to the writer greenlet."""
        if self.link.writing:
            return  # the writer has it
        try:
            left = self.link.write()
        except OSError as exc:
            self._send_failed(exc)
            return
        if left:
            self._wake.set()

    def flushed(self, what: int) -> None:
        """What the server's flush (Ledger.flush) reported of this session:
        its socket was full, its unsent output is over the limit, or the
        send failed (an errno)."""
        if what == OUT_WAIT:
            self._wake.set()
        elif what == OUT_SLOW:
            self.close("slow_reader")
        else:
            self._send_failed(OSError(what, os.strerror(what)))  # the errno's subclass: BrokenPipeError, ...

    def _send_failed(self, exc: OSError) -> None:
        self.close(_failure("send", exc))

    def writer(self) -> None:
        """Sends what a flush could not: waits until the socket drains, sends
        what it takes, until nothing is left."""
        hub, link = self.server.hub, self.link
        writable = hub.loop.io(self._fd, 2)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while link.unsent:
                    hub.wait(writable)
                    try:
                        link.write()
                    except OSError as exc:
                        self._send_failed(exc)
                        return
                if self.closed:
                    return
        finally:
            writable.close()

    # ---- input -------------------------------------------------------------

    def _drain(self, until: float) -> None:
        """Have the Intake carry out the frames in the inbox; carry out here
        the requests it gives back (Python's: they may wait). Not once the
        session has closed, as it may while a request waits: what is left
        is dropped, as the Poller drops a closed session's unread bytes (its
        cancel-on-disconnect is decided, and its Link may be forgotten).

        A read holds thousands of small requests, and an ``orders`` or a
        ``subscribe`` may answer megabytes: once the answers queued pass
        ``max_unsent``, or it is `until` (time.monotonic()), or the Intake's
        drain has held the loop ``HOLD`` (True), the loop turns before the
        next (the answers go out, a slow reader is found and closed, the
        other sessions are served), and then holds it for ``HOLD`` more at
        most."""
        server, link, inbox = self.server, self.link, self._inbox
        drain = server.intake.drain
        max_unsent = server.config.max_unsent
        while not self.closed and (left := drain(link, inbox)) is not None:
            if left is False:  # the command buffer is full: wait for the engine thread
                server.commands.make_room()
                continue
            if left is True or link.unsent > max_unsent or time.monotonic() >= until:
                self._let_the_loop_turn()
                until = time.monotonic() + HOLD
            if left is not True and not self.closed:  # else closed while the loop turned: dropped with the rest
                server.request(self, left[0])

    def _let_the_loop_turn(self) -> None:
        self.server.flush_soon()
        gevent.sleep(_NEXT_TURN)

    def reader(self) -> None:
        """Carries the session's input until it ends. The server's Poller
        reads the socket in the hub and carries out its frames (no greenlet
        switch, no Python per order); this greenlet takes over only for what
        the Poller hands over -- a request that is Python's, a full command
        buffer, the rest of a read that has held the loop for ``HOLD``, the
        end of the stream, an error to raise -- and then lets the Poller have
        the socket again."""
        poller = self.server.poller
        try:
            while not self.closed:
                poller.watch(self.link, self._inbox)
                self._turn.wait()
                self._turn.clear()
                poller.unwatch(self.link)
                handed, self._handed = self._handed, _NOTHING
                if handed is _NOTHING:
                    continue  # woken by close()
                if isinstance(handed, BaseException):
                    raise handed
                if handed is None:  # the peer closed its side
                    self._inbox.close()  # a frame cut short raises
                    self.close("peer_closed")
                    return
                self._carry_out(handed)
        except FrameError as exc:
            self.server.commands.flush()
            self.error(exc.code, str(exc))
            self.close(exc.code)
        except OSError as exc:
            self.close(_failure("recv", exc))
        finally:
            poller.unwatch(self.link)

    def handed(self, value: Any) -> None:
        """In the hub, from the Poller (PollerEvents.handed): the reader
        greenlet takes `value` over (see seam.py)."""
        self._handed = value
        self._turn.set()

    def _carry_out(self, left: Any) -> None:
        """In the reader greenlet: what stopped the drain, then the rest."""
        server = self.server
        if self.closed:
            return
        if left is True:  # the Poller's drain held the loop for HOLD: the other sessions' turn first
            self._let_the_loop_turn()
        until = time.monotonic() + HOLD
        if left is False:  # the command buffer is full: wait for the engine thread
            server.commands.make_room()
        elif left is not True:
            server.request(self, left[0])
        self._drain(until)
        server.flush_soon()

    # ---- end ---------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Stop the session; its writer sends what is queued, then ends. With
        cancel-on-disconnect, its open orders are cancelled."""
        if self.closed:
            return
        self.closed = True
        self.link.close()
        self.close_reason = reason
        gone = reason in ("slow_reader", "peer_unreachable")
        try:
            if gone:
                self.link.drop_output()  # it would not read them anyway
            else:
                self.flush()  # what is queued (an error saying why) still goes out
        finally:
            # Whatever happened: the Poller drops a closed session's socket
            # unread, and only this wakes its reader.
            self._wake.set()
            self._turn.set()  # the reader greenlet ends
        self.server.session_closed(self)
        try:
            # A slow reader's (or a gone peer's) writer may be blocked in sendall
            # on a full socket: shutting the write side too ends that at once.
            self.sock.shutdown(socket.SHUT_RDWR if gone else socket.SHUT_RD)
        except OSError:
            pass

"""Market data on NATS subjects, for any number of readers with no session on the engine.

The shard's leader publishes every market-data message of an instrument
(``trade``, ``book_update``, ``trading_state``: the JSON of docs/protocol.md,
with the instrument's market-data ``seq``) on ``pyengine.md.<symbol>``, and
answers requests on ``pyengine.md.<symbol>.snapshot`` with a
``book_snapshot`` whose ``seq`` is that of the last message before it.
Each message and snapshot also carries the leader's ``term``: a new leader
numbers its messages from its own count, which may be the one after the
last a reader took from the old leader, so the seq alone does not tell a
reader that the messages now follow another book. A leader also publishes
a ``heartbeat`` (``symbol``, ``term``, and the ``seq`` of the instrument's
last message: it takes no seq of its own) when it takes over, and once it
published nothing of that instrument for about ``HEARTBEAT_EVERY`` seconds
(its last turn of ``HEARTBEAT_TURNS`` may come up to a turn early), then
each such second. A reader takes each message
by these rules, in order (docs/cluster.md): a ``term`` below its
snapshot's is a deposed leader's, passed over; a ``term`` above it (a new
leader) sends it for a snapshot; a ``seq`` at or below the last it took
(what a snapshot covered, or a heartbeat of nothing new) is passed over; a
heartbeat, or a ``seq`` not the one after the last (a lost message), sends
it for a snapshot; the rest it applies.

A ``SymbolFeed`` stands in for a subscribed session in the server's
MarketData: its ``send`` takes the frame the sessions get and hands the
body to the NATS thread, which publishes it; nothing waits for NATS.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..log import fields
from .bridge import LoopThread

__all__ = ["HEARTBEAT_EVERY", "HEARTBEAT_TURNS", "SymbolFeed", "md_subject", "snapshot_subject", "serve_snapshots"]

log = logging.getLogger("pyengine.cluster")

HEARTBEAT_EVERY = 1.0  # seconds of quiet before a heartbeat (looked at HEARTBEAT_TURNS times as often)
HEARTBEAT_TURNS = 4  # turns of HEARTBEAT_EVERY / HEARTBEAT_TURNS with nothing sent before a heartbeat


def md_subject(symbol: str) -> str:
    return f"pyengine.md.{symbol}"


def snapshot_subject(symbol: str) -> str:
    return f"pyengine.md.{symbol}.snapshot"


class SymbolFeed:
    """One instrument's subscriber that publishes on NATS (gevent thread).

    What it is sent is handed to the NATS thread in batches: a message sent
    while no publishing task is pending wakes that thread, and one task
    publishes what is queued when it starts, in order. A wake-up and a task
    for each message cost the leader more CPU than the publishing itself.
    A snapshot's reply goes through the same queue (``send_to``), so it is
    published after every message sent before it. Every message gets the
    leader's `term`."""

    def __init__(self, loop: LoopThread, nc: NATS, symbol: str, term: int) -> None:
        self._loop = loop
        self._nc = nc
        self._subject = md_subject(symbol)
        self.symbol = symbol
        self.term = term
        self._term = b',"term":%d}' % term
        # (subject, body): appended here, taken there, safe across the two threads
        self._pending: deque[tuple[str, bytes]] = deque()
        self._woken = False
        self._quiet = 0  # heartbeat turns since the last message or heartbeat

    def send(self, frame: bytes) -> None:
        # The body without its length prefix, the term spliced in before its closing brace.
        self._quiet = 0
        self.send_to(self._subject, bytes(frame[4:-1]) + self._term)

    def heartbeat(self, seq: int, *, always: bool = False) -> None:
        """One turn (each HEARTBEAT_EVERY / HEARTBEAT_TURNS seconds): a
        heartbeat saying that `seq` is the instrument's last message, when
        nothing was sent for HEARTBEAT_TURNS turns (or `always`)."""
        self._quiet += 1
        if always or self._quiet >= HEARTBEAT_TURNS:
            self._quiet = 0
            self.send_to(self._subject, orjson.dumps(
                {"type": "heartbeat", "symbol": self.symbol, "seq": seq, "term": self.term}))

    def send_to(self, subject: str, body: bytes) -> None:
        """Publish `body` on `subject` after everything sent before it."""
        self._pending.append((subject, body))
        if not self._woken:
            self._woken = True
            self._loop.call_soon(self._start_publishing)

    def _start_publishing(self) -> None:
        self._loop.loop.create_task(self._publish_pending())

    async def _publish_pending(self) -> None:
        # Cleared before the queue is read: a message queued from now on
        # wakes the thread again (or is among those taken below). What is
        # queued meanwhile waits for the next task: the loop's other work
        # (lease, log appends) runs in between. That task may run while a
        # publish of this one waits for room in the client's buffer, and
        # take what this one counted: it stops at an empty queue.
        self._woken = False
        pending = self._pending
        for _ in range(len(pending)):
            if not pending:
                break
            subject, body = pending.popleft()
            try:
                await self._nc.publish(subject, body)
            except Exception as exc:  # that message is lost; the rest still go
                log.warning("md_publish_failed", extra=fields(subject=subject, error=type(exc).__name__))


async def serve_snapshots(nc: NATS, symbols: list[str], snapshot: Callable[[str, str], None]) -> list[Subscription]:
    """Answer snapshot requests for `symbols`: ``snapshot(symbol, reply_to)``
    must (on whatever thread it hands the work to) have the reply published
    on the subject `reply_to`, after the market data it covers
    (``SymbolFeed.send_to``). Returns the subscriptions (to unsubscribe)."""
    subs: list[Subscription] = []
    for symbol in symbols:
        async def on_request(msg: Msg, symbol: str = symbol) -> None:
            if msg.reply:
                snapshot(symbol, msg.reply)

        subs.append(await nc.subscribe(snapshot_subject(symbol), cb=on_request))
    return subs

"""Market data on NATS subjects, for any number of readers with no session on the engine.

The shard's leader publishes every market-data message of an instrument
(``trade``, ``book_update``, ``trading_state``: the JSON of docs/protocol.md,
with the instrument's market-data ``seq``) on ``pyengine.md.<symbol>``, and
answers requests on ``pyengine.md.<symbol>.snapshot`` with a
``book_snapshot`` whose ``seq`` is that of the last message before it. A
reader that sees a ``seq`` that is not the one after the last (a lost
message, or a new leader after a failover, whose numbering is its own)
asks for a snapshot and goes on from it.

A ``SymbolFeed`` stands in for a subscribed session in the server's
MarketData: its ``send`` takes the frame the sessions get and hands the
body to the NATS thread, which publishes it; nothing waits for NATS.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..log import fields
from .bridge import LoopThread

__all__ = ["SymbolFeed", "md_subject", "snapshot_subject", "serve_snapshots"]

log = logging.getLogger("pyengine.cluster")


def md_subject(symbol: str) -> str:
    return f"pyengine.md.{symbol}"


def snapshot_subject(symbol: str) -> str:
    return f"pyengine.md.{symbol}.snapshot"


class SymbolFeed:
    """One instrument's subscriber that publishes on NATS (gevent thread).

    What it is sent is handed to the NATS thread in batches: the first
    message after a batch went out wakes that thread, one task publishes
    every message queued by then, in order. A wake-up and a task for each
    message cost the leader more CPU than the publishing itself."""

    def __init__(self, loop: LoopThread, nc: NATS, symbol: str) -> None:
        self._loop = loop
        self._nc = nc
        self._subject = md_subject(symbol)
        self.symbol = symbol
        self._pending: deque[bytes] = deque()  # append here, popleft there: safe across the two threads
        self._woken = False

    def send(self, frame: bytes) -> None:
        self._pending.append(bytes(frame[4:]))  # the body, without its length prefix
        if not self._woken:
            self._woken = True
            self._loop.call_soon(self._start_publishing)

    def _start_publishing(self) -> None:
        self._loop.loop.create_task(self._publish_pending())

    async def _publish_pending(self) -> None:
        # Cleared before the queue is read: a message queued from now on
        # wakes the thread again, or is published below.
        self._woken = False
        pending = self._pending
        while pending:
            body = pending.popleft()
            try:
                await self._nc.publish(self._subject, body)
            except nats.errors.Error as exc:
                log.warning("md_publish_failed", extra=fields(subject=self._subject, error=type(exc).__name__))


async def serve_snapshots(nc: NATS, symbols: list[str],
                          snapshot: Callable[[str, Callable[[bytes], None]], None]) -> list[Subscription]:
    """Answer snapshot requests for `symbols`: ``snapshot(symbol, reply)``
    must (on whatever thread it hands the work to) call ``reply(json)`` once.
    Returns the subscriptions (to unsubscribe)."""
    loop = asyncio.get_running_loop()
    subs: list[Subscription] = []
    for symbol in symbols:
        async def on_request(msg: Msg, symbol: str = symbol) -> None:
            if not msg.reply:
                return
            done: asyncio.Future[bytes] = loop.create_future()

            def reply(body: bytes) -> None:
                loop.call_soon_threadsafe(done.set_result, body)

            snapshot(symbol, reply)
            await nc.publish(msg.reply, await done)

        subs.append(await nc.subscribe(snapshot_subject(symbol), cb=on_request))
    return subs

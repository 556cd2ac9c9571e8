"""A shard's replicated log on JetStream: names, message layout, appends.

One stream per shard, ``PYENGINE_<shard>`` on subject ``pyengine.log.<shard>``,
replicated on ``replicas`` NATS servers. Each message is one group of
sequenced commands: the body is a run of sealed ``struct jnl_record``s (the
journal's record, 88 bytes, CRC-32C; a state-hash checkpoint is a record
too), and headers say who wrote it. A new leader's first message is a
``term`` message with no records: it fences every older leader.

Appends carry ``Nats-Expected-Last-Sequence``: JetStream stores a message
only when the stream's last message is the one the writer last saw, so a
leader that was deposed (paused, partitioned) can never append after its
successor. Each message also carries a ``Nats-Msg-Id`` derived from its
position, so a retry of a message that was stored after all (a timeout with
an unknown outcome) is recognised as a duplicate and answered with the
message's sequence, never stored twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from .._ffi import ffi
from ..log import fields

__all__ = ["RECORD_SIZE", "KV_BUCKET", "SNAPSHOT_BUCKET", "Fenced", "LogMessage", "check_name", "stream_name",
           "log_subject", "lease_key", "node_key", "DIRECTORY", "ensure_stream", "append", "Appender", "message_of",
           "KIND_RECORDS", "KIND_TERM"]

log = logging.getLogger("pyengine.cluster")

RECORD_SIZE = ffi.sizeof("struct jnl_record")
KV_BUCKET = "pyengine"  # lease.<shard>: who leads it; node.<shard>.<node>: where each node listens
SNAPSHOT_BUCKET = "pyengine-snapshots"  # object store: <shard>/<seq>-<stream seq>

H_NODE, H_TERM, H_KIND, H_LAST = "Pyengine-Node", "Pyengine-Term", "Pyengine-Kind", "Pyengine-Last-Seq"
KIND_RECORDS, KIND_TERM = "records", "term"
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expected-last-sequence check
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What an append may meet while the NATS cluster elects a leader, loses a
# server or reconnects: the message may or may not be stored; send it again.
_TRANSIENT = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError, nats.js.errors.ServerError,
)


class Fenced(Exception):
    """Another node appended to the log: this one no longer leads it."""


def check_name(what: str, name: str) -> str:
    """Shard and node names become parts of NATS subjects and stream names."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a {what} name is 1-64 letters, digits, '_' or '-', not {name!r}")
    return name


def stream_name(shard: str) -> str:
    return f"PYENGINE_{shard}"


def log_subject(shard: str) -> str:
    return f"pyengine.log.{shard}"


def lease_key(shard: str) -> str:
    return f"lease.{shard}"


def node_key(shard: str, node: str) -> str:
    return f"node.{shard}.{node}"


DIRECTORY = ">"  # every key of the bucket: the leases and the nodes


@dataclass(frozen=True)
class LogMessage:
    """One message of a shard's log."""

    stream_seq: int
    kind: str
    node: str
    term: int
    last_seq: int  # the engine seq of its last record (a term message: of the log before it)
    body: bytes

    @property
    def records(self) -> int:
        return len(self.body) // RECORD_SIZE


def message_of(stream_seq: int, headers: dict[str, str] | None, data: bytes) -> LogMessage:
    h = headers or {}
    return LogMessage(stream_seq, h.get(H_KIND, KIND_RECORDS), h.get(H_NODE, ""), int(h.get(H_TERM, 0)),
                      int(h.get(H_LAST, 0)), data)


async def ensure_stream(js: JetStreamContext, shard: str, replicas: int) -> None:
    """Create the shard's stream, or check the one there: replicas are fixed
    at creation (a stream made with other settings is left as it is)."""
    config = StreamConfig(
        name=stream_name(shard), subjects=[log_subject(shard)], num_replicas=replicas,
        storage=StorageType.FILE, retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
        duplicate_window=120.0, allow_direct=True,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != 10058:  # "already in use with a different configuration"
            raise
        info = await js.stream_info(stream_name(shard))
        log.warning("stream_config_differs", extra=fields(
            stream=stream_name(shard), replicas=info.config.num_replicas, wanted=replicas))


def _headers(shard: str, node: str, term: int, expected: int, kind: str, last_seq: int) -> dict[str, str]:
    return {
        "Nats-Expected-Last-Sequence": str(expected),
        "Nats-Msg-Id": f"{shard}.{term}.{expected + 1}",
        H_NODE: node, H_TERM: str(term), H_KIND: kind, H_LAST: str(last_seq),
    }


async def _publish(js: JetStreamContext, shard: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """One attempt: the stream seq, or Fenced, or a _TRANSIENT error (try again)."""
    try:
        ack = await js.publish(log_subject(shard), body, timeout=timeout, stream=stream_name(shard), headers=headers)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            raise Fenced(f"the log moved past {headers['Nats-Expected-Last-Sequence']} ({exc.description})") from None
        raise
    return int(ack.seq)


async def append(js: JetStreamContext, shard: str, *, node: str, term: int, expected: int, kind: str,
                 body: bytes, last_seq: int, still_leader: Callable[[], bool], timeout: float = 1.0) -> int:
    """Append one message after stream message `expected`; returns its
    stream sequence. Raises Fenced when the log has moved on without us, or
    when `still_leader()` turns false before the message is known stored.
    What failed without an answer (timeouts, no quorum, a server lost) is
    sent again, with the same id, after a pause."""
    headers = _headers(shard, node, term, expected, kind, last_seq)
    pause = 0.02
    while True:
        if not still_leader():
            raise Fenced(f"the lease ran out before message {expected + 1} was known stored")
        try:
            return await _publish(js, shard, body, headers, timeout)
        except _TRANSIENT as exc:
            log.warning("append_retry", extra=fields(shard=shard, expected=expected, error=type(exc).__name__,
                                                     pause_s=pause))
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


@dataclass
class _Pending:
    expected: int  # the stream seq of the message before it
    headers: dict[str, str]
    body: bytes
    last_seq: int
    attempt: asyncio.Future[int] | None = None


class _Acks:
    """Publishes to the log with their acknowledgements on an inbox of our
    own: each message's future always resolves, with its stream seq, Fenced,
    another error, or a _TRANSIENT one (no answer in time, no quorum).
    (nats-py's publish_async leaves a future waiting for ever when JetStream
    answers with an error, and a request per message costs more.)"""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout
        self.prefix = nc.new_inbox()
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._next = 0
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.prefix + ".*", cb=self._answer)

    def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        self._next += 1
        token = str(self._next)
        fut: asyncio.Future[int] = loop.create_future()
        self._waiting[token] = fut
        timer = loop.call_later(self.timeout, self._expire, token)
        fut.add_done_callback(lambda _: timer.cancel())
        loop.create_task(self._send(subject, body, headers, token))
        return fut

    async def _send(self, subject: str, body: bytes, headers: dict[str, str], token: str) -> None:
        try:
            await self.nc.publish(subject, body, reply=f"{self.prefix}.{token}", headers=headers)
        except _TRANSIENT as exc:
            self._resolve(token, exc)

    def _expire(self, token: str) -> None:
        self._resolve(token, nats.errors.TimeoutError())

    def _resolve(self, token: str, outcome: int | BaseException) -> None:
        fut = self._waiting.pop(token, None)
        if fut is None or fut.done():
            return
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    async def _answer(self, msg: Any) -> None:
        token = msg.subject[len(self.prefix) + 1:]
        if msg.headers and msg.headers.get("Status") == "503":
            self._resolve(token, nats.js.errors.NoStreamResponseError())
            return
        reply = json.loads(msg.data)
        error = reply.get("error")
        if error is None:
            self._resolve(token, int(reply["seq"]))
        elif error.get("err_code") == _WRONG_LAST_SEQUENCE:
            self._resolve(token, Fenced(f"the log moved on ({error.get('description')})"))
        elif error.get("code") == 503:
            self._resolve(token, nats.js.errors.ServiceUnavailableError(**error))
        else:
            self._resolve(token, nats.js.errors.APIError(**error))

    async def stop(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass


class Appender:
    """The leader's appends, pipelined: up to `window` messages in flight at
    once, each fenced on the one before it (JetStream checks the expected
    last sequence against what it has accepted so far, in flight included).

    ``on_stored(stream_seq, last_seq)`` is called for each message in order,
    once it and every message before it are stored. When an attempt fails
    without an answer, the messages after it fail their fence too (their
    predecessor is missing): every message from it on is sent again, in
    order, with the same ids and fences; a stored one comes back as a
    duplicate with its sequence. A fence failing for the first message not
    yet stored means another node appended: Fenced, and nothing more."""

    def __init__(self, nc: NATS, shard: str, *, node: str, term: int, after: int,
                 still_leader: Callable[[], bool], on_stored: Callable[[int, int], None], window: int = 4,
                 timeout: float = 1.0) -> None:
        self.shard, self.node, self.term = shard, node, term
        self.still_leader = still_leader
        self.on_stored = on_stored
        self.window = window
        self.sent = after  # the stream seq the last message sent will have
        self.failed: Fenced | None = None
        self._acks = _Acks(nc, timeout)
        self._inflight: collections.deque[_Pending] = collections.deque()
        self._moved = asyncio.Event()  # the head of the queue changed
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._acks.start()
        self._pump = asyncio.get_running_loop().create_task(self._settle(), name="append-settle")

    async def append(self, kind: str, body: bytes, last_seq: int) -> None:
        """Send a message; waits only while `window` are in flight."""
        while len(self._inflight) >= self.window and self.failed is None:
            self._moved.clear()
            await self._moved.wait()
        if self.failed is not None:
            raise self.failed
        p = _Pending(self.sent, _headers(self.shard, self.node, self.term, self.sent, kind, last_seq), body, last_seq)
        self.sent += 1
        self._send(p)
        self._inflight.append(p)
        self._moved.set()

    def _send(self, p: _Pending) -> None:
        p.attempt = self._acks.publish(log_subject(self.shard), p.body, p.headers)

    async def _settle(self) -> None:
        pause = 0.02
        try:
            while True:
                while not self._inflight:
                    self._moved.clear()
                    await self._moved.wait()
                head = self._inflight[0]
                assert head.attempt is not None
                try:
                    stored = await head.attempt
                except _TRANSIENT as exc:
                    log.warning("append_retry", extra=fields(shard=self.shard, expected=head.expected,
                                                             error=type(exc).__name__, pause_s=pause))
                    await asyncio.gather(*(p.attempt for p in self._inflight if p.attempt), return_exceptions=True)
                    if not self.still_leader():
                        raise Fenced(f"the lease ran out before message {head.expected + 1} was known stored") \
                            from None
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.25)
                    for p in self._inflight:
                        self._send(p)
                    continue
                pause = 0.02
                self._inflight.popleft()
                self._moved.set()
                self.on_stored(stored, head.last_seq)
        except Fenced as exc:
            self.failed = exc
        except Exception as exc:  # noqa: BLE001 - any other answer: stop appending, say why
            self.failed = Fenced(f"an append failed: {type(exc).__name__}: {exc}")
        self._moved.set()

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self._acks.stop()

"""A shard's replicated log on JetStream: names, message layout, appends.

One stream per shard, ``PYENGINE_<shard>`` on subject ``pyengine.log.<shard>``,
replicated on ``replicas`` NATS servers. Each message is one group of
sequenced commands: the body is a run of sealed ``struct jnl_record``s (the
journal's record, 88 bytes, CRC-32C; a state-hash checkpoint is a record
too), and headers say who wrote it. A new leader's first message is a
``term`` message with no records: it fences every older leader. A
``switches`` message holds the shard's armed dead-man switches, all of them
(JSON, account -> seconds): the leader appends one whenever they change,
and again after each snapshot's position while any is armed, so that a
node reading the log from any snapshot it may start from finds them.

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
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import orjson
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext

from .._ffi import ffi
from ..log import Throttle, fields
from ..switch_table import switches_body, switches_of

__all__ = ["RECORD_SIZE", "KV_BUCKET", "SNAPSHOT_BUCKET", "Fenced", "LogMessage", "check_name", "stream_name",
           "log_subject", "lease_key", "node_key", "DIRECTORY", "ensure_stream", "append", "TermOrder", "message_of",
           "KIND_RECORDS", "KIND_TERM", "KIND_SWITCHES", "switches_body", "switches_of", "LOG_ID", "log_identity",
           "led", "led_info", "led_stream_info", "NoLeaderYet"]

log = logging.getLogger("pyengine.cluster")

RECORD_SIZE = ffi.sizeof("struct jnl_record")
KV_BUCKET = "pyengine"  # lease.<shard>: who leads it; node.<shard>.<node>: where each node listens
SNAPSHOT_BUCKET = "pyengine-snapshots"  # object store: <shard>/<seq>-<stream seq>-<term> (snapshots.py)
LOG_ID = "pyengine_log"  # the stream's metadata key of its identity (log_identity)

H_NODE, H_TERM, H_KIND, H_LAST = "Pyengine-Node", "Pyengine-Term", "Pyengine-Kind", "Pyengine-Last-Seq"
KIND_RECORDS, KIND_TERM, KIND_SWITCHES = "records", "term", "switches"
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expected-last-sequence check
_DUPLICATE_IN_FLIGHT = 10158  # "duplicate message id is in process": our earlier attempt may yet land
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RETRY_LINE_EVERY = 5.0  # seconds between an append's append_retry lines after its first
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


def log_identity(info: StreamInfo) -> str:
    """Which log the shard's stream holds, told apart from one made before
    or after it under the same name: the time JetStream created the stream
    (UTC, to the microsecond), as ensure_stream writes it into the stream's
    metadata, which a restore from a backup keeps (its creation time is the
    restore's). A stream made by hand has none yet: its creation time."""
    stamped = (info.config.metadata or {}).get(LOG_ID)
    if stamped:
        return stamped
    if info.created is None:
        raise RuntimeError(f"stream {info.config.name} has no creation time")
    return info.created.strftime("%Y%m%dT%H%M%S%fZ")


def led(info: StreamInfo) -> bool:
    """Whether `info` came from the stream's leader: while its replicas elect
    one, any of them answers with its own state, which may lack the last
    messages stored."""
    return info.cluster is None or bool(info.cluster.leader)


class NoLeaderYet(Exception):
    """The shard's stream answered without a leader, or is not whole yet
    (link.patiently waits)."""


async def led_stream_info(js: JetStreamContext, shard: str) -> StreamInfo:
    """The shard's stream as its leader has it; NoLeaderYet while it has none."""
    return await led_info(js, stream_name(shard), f"the log of shard {shard}")


async def led_info(js: JetStreamContext, stream: str, what: str = "") -> StreamInfo:
    """The stream `stream` (`what` it is) as its leader has it; NoLeaderYet
    while it has none."""
    info = await js.stream_info(stream)
    if not led(info):
        raise NoLeaderYet(f"{what or 'the stream ' + stream} has no leader")
    return info


async def ensure_stream(js: JetStreamContext, shard: str, replicas: int) -> str:
    """Create the shard's stream, or check the one there (replicas are fixed
    at creation: a stream made with other settings is left as it is), write
    its identity into its metadata if it has none, and return it."""
    name = stream_name(shard)
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(
            name=name, subjects=[log_subject(shard)], num_replicas=replicas,
            storage=StorageType.FILE, retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
            duplicate_window=120.0, allow_direct=True,
        )
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # "already in use with a different configuration": made meanwhile
                raise
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                # In use, yet not found: a restore of it is under way (`nats stream restore`), and it
                # answers nothing until its last chunk.
                raise NoLeaderYet(f"the log of shard {shard} is being restored") from None
    if info.config.num_replicas != replicas:
        log.warning("stream_config_differs", extra=fields(stream=name, replicas=info.config.num_replicas,
                                                          wanted=replicas))
    if not (info.config.metadata or {}).get(LOG_ID):
        # Every node that does this at once writes the same: the creation time.
        info.config.metadata = {**(info.config.metadata or {}), LOG_ID: log_identity(info)}
        info = await js.update_stream(info.config)
    return log_identity(info)


def _headers(shard: str, node: str, term: int, expected: int, kind: str, last_seq: int) -> dict[str, str]:
    return {
        "Nats-Expected-Last-Sequence": str(expected),
        "Nats-Msg-Id": f"{shard}.{term}.{expected + 1}",
        H_NODE: node, H_TERM: str(term), H_KIND: kind, H_LAST: str(last_seq),
    }


async def append(js: JetStreamContext, shard: str, *, node: str, term: int, expected: int, kind: str,
                 body: bytes, last_seq: int, still_leader: Callable[[], bool], timeout: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> int:
    """Append one message after stream message `expected`; returns its
    stream sequence. Raises Fenced when the log has moved on without us, or
    when `still_leader()` turns false before the message is known stored.
    What failed without an answer (timeouts, no quorum, a server lost, our
    own earlier attempt still in flight) is sent again, with the same id,
    after a pause (up to 0.25 s): the first retry is logged (append_retry),
    then one retry every RETRY_LINE_EVERY seconds of `clock` at most, with
    the retries left out since the line before (held_back); a message stored
    after retries says how many in all (append_stored).

    One message at a time: the next is sent only once this one is stored.
    With several in flight, a fence names a position, not a message: a
    paused leader's second message, fenced on its first, would find the
    position taken by its successor's term message and be stored after it."""
    headers = _headers(shard, node, term, expected, kind, last_seq)
    pause = 0.02
    lines, retries, started = Throttle(RETRY_LINE_EVERY, clock), 0, clock()
    while True:
        if not still_leader():
            raise Fenced(f"the lease ran out before message {expected + 1} was known stored")
        try:
            ack = await js.publish(log_subject(shard), body, timeout=timeout, stream=stream_name(shard),
                                   headers=headers)
            if ack.seq != expected + 1:
                raise Fenced(f"message {expected + 1} was stored as {ack.seq}")
            if retries:
                log.info("append_stored", extra=fields(shard=shard, expected=expected, retries=retries,
                                                       waited_s=round(clock() - started, 3)))
            return int(ack.seq)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise Fenced(f"the log moved past {expected} ({exc.description})") from None
            if exc.err_code != _DUPLICATE_IN_FLIGHT and not isinstance(exc, _TRANSIENT):
                raise
            error = type(exc).__name__
        except _TRANSIENT as exc:
            error = type(exc).__name__
        retries += 1
        if (held := lines.allow()) is not None:
            log.warning("append_retry", extra=fields(shard=shard, expected=expected, error=error, pause_s=pause,
                                                     held_back=held))
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


class TermOrder:
    """The rule every reader of a log applies: terms only grow. A message of
    an older term after a newer one is a stale leader's and is passed over
    (its leader, deposed by then, acknowledged none of it), by every replica
    and every audit alike, so they stay equal."""

    def __init__(self) -> None:
        self.highest = 0

    def stale(self, m: LogMessage) -> bool:
        if m.term < self.highest:
            log.error("stale_message_skipped", extra=fields(at=m.stream_seq, term=m.term, node=m.node,
                                                            highest_term=self.highest))
            return True
        self.highest = m.term
        return False

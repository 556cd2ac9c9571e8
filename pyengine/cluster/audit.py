"""Read a shard's log back, and rebuild the engine it describes.

The log is the truth of a shard: every command a leader acknowledged is in
it, in order, under the term of the leader that appended it. ``read_log``
reads it message by message (from the first the stream still holds),
``replay`` runs its commands through a fresh ``pyengine.Engine`` and
returns its events: what every replica must have done. The cluster tests
hold the nodes to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nats
from nats.js.client import JetStreamContext

from ..batch import BatchResult
from ..engine import Engine
from .shardlog import KIND_RECORDS, RECORD_SIZE, LogMessage, TermOrder, message_of, stream_name

__all__ = ["LogRecord", "read_log", "records_of", "replay", "fetch_log"]

_RECORD = struct.Struct("<IIQq")  # len, crc, seq, ts: the head of a struct jnl_record
_CHECKPOINT = 129  # RUNNER_CTL_STATE_HASH


@dataclass(frozen=True)
class LogRecord:
    stream_seq: int  # the message it came in
    term: int
    node: str
    seq: int  # the engine's sequence number of the command
    checkpoint: bool  # a state-hash checkpoint, not a command
    command: bytes  # the 64-byte struct eng_cmd


def records_of(m: LogMessage) -> list[LogRecord]:
    out = []
    for off in range(0, len(m.body) - RECORD_SIZE + 1, RECORD_SIZE):
        _, _, seq, _ = _RECORD.unpack_from(m.body, off)
        command = m.body[off + _RECORD.size: off + RECORD_SIZE]
        out.append(LogRecord(m.stream_seq, m.term, m.node, seq, command[0] == _CHECKPOINT, command))
    return out


async def read_log(js: JetStreamContext, shard: str) -> list[LogMessage]:
    """Every message the shard's stream holds, in order."""
    info = await js.stream_info(stream_name(shard))
    out = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(stream_name(shard), seq)  # from the stream's leader, never a lagging copy
            out.append(message_of(raw.seq or seq, raw.headers, raw.data or b""))
    return out


async def fetch_log(urls: list[str], shard: str) -> list[LogMessage]:
    nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=3)
    try:
        return await read_log(nc.jetstream(timeout=5.0), shard)
    finally:
        await nc.close()


def replay(messages: list[LogMessage], engine: Engine) -> BatchResult:
    """Run the log's commands through `engine` (with the shard's instruments,
    in order, and nothing else yet), passing over a stale leader's messages
    as every replica does; its events are the shard's events. The log must
    be whole: one whose first messages were purged (the snapshots cover
    them) is refused, as an empty engine cannot take up from its middle."""
    if messages and messages[0].stream_seq != 1:
        raise ValueError(f"the log starts at message {messages[0].stream_seq}: the ones before were purged "
                         "(snapshots cover them), and a replay needs them all")
    terms = TermOrder()
    commands = b"".join(r.command for m in messages if not terms.stale(m) and m.kind == KIND_RECORDS
                        for r in records_of(m) if not r.checkpoint)
    return engine.process_batch(commands)

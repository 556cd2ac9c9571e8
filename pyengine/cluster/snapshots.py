"""Shard snapshots in the JetStream object store, where any node can fetch them.

A snapshot is the engine's whole state after command ``seq`` (the format of
``eng_snapshot_serialize``), stored as ``<shard>/<seq>-<stream seq>-<term>``:
the last message of the shard's log that it covers (a node that loads it
reads the log from the message after) and the term of the leader that took
it (the highest term of those messages). Its description, ``log <id>``,
says which log it was taken of (shardlog.log_identity): a log lost and made
again numbers its messages from 1 again, and only that tells its snapshots
from those of the log before it. The leader stores
one whenever it takes one; once a new one is stored, the log before the
previous one's position is purged and older snapshots are deleted, so a
follower a little behind still finds its messages, and a new node finds a
snapshot and the log after it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js.api import ObjectInfo, ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from ..log import fields
from .shardlog import SNAPSHOT_BUCKET, log_identity, stream_name

__all__ = ["SnapshotRef", "Unreadable", "open_store", "listed", "of_the_log", "fetch", "store", "prune", "set_aside",
           "LOST", "UNREADABLE"]

log = logging.getLogger("pyengine.cluster")

_NAME = re.compile(r"(\d{20})-(\d{20})-(\d{10})$")
_DESCRIPTION = re.compile(r"log (\S+)")
LOST = ".lost"  # <shard>.lost/<name>: a snapshot of what a log lost (set_aside), kept out of the way
UNREADABLE = ".unreadable"  # <shard>.lost/<name>.unreadable: one damaged in the store (Unreadable)
STORE_RETRY_WAIT = 0.25  # seconds between puts of a snapshot that no server took (store)


@dataclass(frozen=True)
class SnapshotRef:
    shard: str
    seq: int  # the engine's state after this command
    stream_seq: int  # ... which is the state after this message of the log
    term: int  # the highest term of the messages up to it
    log_id: str  # the log's (shardlog.log_identity); "" for one stored before snapshots said
    size: int = 0  # bytes, as listed

    @property
    def name(self) -> str:
        return f"{self.shard}/{self.seq:020d}-{self.stream_seq:020d}-{self.term:010d}"

    @property
    def meta(self) -> ObjectMeta:
        return ObjectMeta(name=self.name, description=f"log {self.log_id}" if self.log_id else None)


async def open_store(js: JetStreamContext, replicas: int) -> ObjectStore:
    try:
        return await js.object_store(SNAPSHOT_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_object_store(
            SNAPSHOT_BUCKET, config=ObjectStoreConfig(replicas=replicas, storage=StorageType.FILE))


async def listed(obs: ObjectStore, shard: str) -> list[SnapshotRef]:
    """The shard's snapshots, oldest first."""
    try:
        infos = await obs.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    refs = []
    for info in infos:
        head, _, tail = info.name.partition("/")
        m = _NAME.fullmatch(tail)
        if head == shard and m:
            of = _DESCRIPTION.fullmatch(info.description or "")
            refs.append(SnapshotRef(shard, int(m.group(1)), int(m.group(2)), int(m.group(3)), of[1] if of else "",
                                    info.size or 0))
    return sorted(refs, key=lambda r: r.seq)


def of_the_log(ref: SnapshotRef, log_id: str, log_end: int) -> bool:
    """Whether `ref` was taken of the log `log_id`, whose last message is
    `log_end` (read after `ref` was listed: a snapshot is stored once the
    messages it covers are): it says so (one stored before snapshots said
    is taken at its word), and it reaches no further than the log (a log
    restored from an older backup keeps its identity, not the messages after
    the backup)."""
    return ref.log_id in (log_id, "") and ref.stream_seq <= log_end


class Unreadable(Exception):
    """A snapshot damaged in the store: its chunks do not make its digest,
    or do not all come while it is still there."""


async def _read(obs: ObjectStore, ref: SnapshotRef, into: io.BufferedIOBase, patience: float) -> ObjectInfo:
    """Read `ref`'s chunks into `into`, checked against its digest; its
    info. An object deleted once the read began leaves it waiting for chunks
    that are gone: after `patience` seconds and one more per 5 MB, a
    NotFoundError if it is gone, Unreadable if it is still there."""
    limit = patience + ref.size / 5e6
    try:
        return (await asyncio.wait_for(obs.get(ref.name, writeinto=into), timeout=limit)).info
    except nats.js.errors.DigestMismatchError:
        raise Unreadable("its chunks do not make its digest") from None
    except nats.errors.TimeoutError:
        raise  # a request of the read went unanswered: JetStream is slow, the object may be whole
    except asyncio.TimeoutError:
        await obs.get_info(ref.name)
        raise Unreadable(f"its chunks did not all come within {limit:g} s") from None


async def fetch(obs: ObjectStore, ref: SnapshotRef, directory: Path, patience: float = 30.0) -> Path:
    """Download `ref` into `directory` (checked against its digest); returns
    the file. Raises NotFoundError when it was deleted (a prune) before its
    download ended, Unreadable when it is damaged in the store (_read)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"snapshot-{ref.seq:020d}.snap"
    partial = path.with_suffix(".part")
    with open(partial, "wb") as f:
        await _read(obs, ref, f, patience)
    os.replace(partial, path)
    return path


async def store(obs: ObjectStore, ref: SnapshotRef, data: bytes, patience: float = 5.0,
                still_wanted: Callable[[], bool] = lambda: True) -> bool:
    """Put `ref` into the store; True once stored. A chunk that no server
    took (no responders: the store's stream between leaders, or its subjects'
    interest not yet at the server we are on) fails the put, which takes back
    the chunks it sent: the put is made again, every STORE_RETRY_WAIT seconds
    for about `patience` seconds, while still_wanted() (a leader's: while it
    leads; False once it is not, nothing stored). Any other failure is
    raised: a put that timed out may yet be stored, and one whose taking back
    failed raises what that met (its chunks stay, unnamed)."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            await obs.put(ref.name, data, meta=ref.meta)
            break
        except nats.js.errors.NoStreamResponseError as exc:
            if asyncio.get_running_loop().time() + STORE_RETRY_WAIT > deadline:
                raise
            log.warning("snapshot_store_retry", extra=fields(name=ref.name, error=type(exc).__name__))
            await asyncio.sleep(STORE_RETRY_WAIT)
        if not still_wanted():
            return False
    log.info("snapshot_stored", extra=fields(name=ref.name, bytes=len(data)))
    return True


async def set_aside(obs: ObjectStore, refs: list[SnapshotRef], patience: float = 30.0) -> list[SnapshotRef]:
    """Move snapshots that are not of the log there is (of_the_log: of a log
    since lost or made again, or past the end of one cut back) to
    ``<shard>.lost/``: `prune` goes by the log there is, and the state they
    hold stays for an operator to look at. Each is copied, then deleted: a
    move cut short is done again, and one that another node made meanwhile
    is passed over. One damaged in the store (Unreadable) is moved as the
    bytes that came, named ``<name>.unreadable`` (`snapshot_unreadable`, at
    error level): it blocks nothing. Returns those moved."""
    moved = []
    for ref in refs:
        kept_as = f"{ref.shard}{LOST}/{ref.name.partition('/')[2]}"
        held = io.BytesIO()
        try:
            try:
                info = await _read(obs, ref, held, patience)
            except Unreadable as exc:
                info = await obs.get_info(ref.name)
                kept_as += UNREADABLE
                log.error("snapshot_unreadable", extra=fields(shard=ref.shard, name=ref.name, reason=str(exc),
                                                              kept_as=kept_as, bytes=held.tell(), expected=info.size))
            await obs.put(kept_as, held.getvalue(), meta=ObjectMeta(description=info.description))
            await obs.delete(ref.name)
        except nats.js.errors.NotFoundError:
            continue
        moved.append(ref)
    return moved


async def prune(js: JetStreamContext, obs: ObjectStore, shard: str, log_id: str) -> None:
    """Keep the two newest snapshots of the log `log_id` and the log from the
    older one's position on, if the shard's stream still holds that log (a
    leader that stores a snapshot as its log is lost and made again purges
    nothing of the new one) up to the newer one's position (nor of a log
    cut back before it)."""
    refs = [ref for ref in await listed(obs, shard) if ref.log_id in (log_id, "")]
    if len(refs) < 2:
        return
    keep_from = refs[-2].stream_seq + 1
    info = await js.stream_info(stream_name(shard))
    if log_identity(info) != log_id:
        log.warning("prune_passed_over", extra=fields(shard=shard, log=log_id, reason="the log was made again"))
        return
    if info.state.last_seq < refs[-1].stream_seq:
        log.warning("prune_passed_over", extra=fields(shard=shard, log=log_id,
                                                      reason="the log ends before the newest snapshot's position"))
        return
    await js.purge_stream(stream_name(shard), seq=keep_from)
    for ref in refs[:-2]:
        try:
            await obs.delete(ref.name)
        except nats.js.errors.NotFoundError:
            pass
    log.info("log_pruned", extra=fields(shard=shard, first_kept=keep_from, snapshots_deleted=len(refs) - 2))

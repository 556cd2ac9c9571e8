"""One node of a shard: it follows the shard's log, and leads it while it holds the lease.

Runs on the NATS loop thread (bridge.LoopThread) and meets the rest of the
server in two places only: the engine's runner (the replication stage of
csrc/replication.c: records out, ``runner_repl_done`` in) and the gevent
thread, through a ``ReplicaHost`` whose methods are posted to a mailbox.

Following: an ordered consumer delivers the log from the message after the
one applied last; each message's records go to ``host.apply_log`` in order.

Taking over: when the lease has expired by this node's clock and the node
has every message of the log, it takes the lease (term + 1) and appends a
``term`` message after the last message it applied. If the old leader got a
message in first, that append is fenced: the node reads the messages it is
missing and tries again, holding the lease (a fence with nothing to read,
a log that ends before the messages the node applied, makes it stop
instead). Once the term message is stored, no older leader can ever append
again, and the host opens for orders.

Leading: commands come out of the runner as sealed records, go into the log
in groups (one message per group, each appended once the one before it is
stored, fenced on it) and their events are released once JetStream
acknowledges the message, which means a quorum of NATS servers stored it. The lease is renewed every
``ttl / 4``; a leader that loses it, or finds the log moved on without it,
stops at once (``host.lost_leadership``): the server closes its sessions and
starts again as a follower, rebuilding its engine from the log.

The armed dead-man switches go into the log too (``share_switches``, a
``switches`` message each time they change, shardlog.py): a new leader is
given the ones the log holds with its promotion, and arms them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, RawStreamMsg, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from .._ffi import ffi, lib
from ..log import Throttle, fields
from . import snapshots
from .config import ClusterConfig
from .lease import Lease, LeaseValue
from .link import Link, not_yet, patiently
from .shardlog import DIRECTORY, KIND_RECORDS, KIND_SWITCHES, KIND_TERM, RECORD_SIZE, RETRY_LINE_EVERY, Fenced, \
    LogMessage, TermOrder, append, lease_key, led, log_identity, log_subject, message_of, node_key, stream_name, \
    switches_body, switches_of

if TYPE_CHECKING:
    from .._cengine import struct_runner

__all__ = ["Replica", "ReplicaHost", "Position", "FOLLOWING", "LEADING", "STOPPED"]

log = logging.getLogger("pyengine.cluster")

FOLLOWING, LEADING, STOPPED = "follower", "leader", "stopped"
_MAX_RECORDS = 8192  # records in one message: 720 KB, under NATS's default 1 MB payload
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)
_SET_ASIDE_WAIT = 10.0  # seconds a new leader's snapshot waits for the snapshots its term replaces to go
_PRUNE_PATIENCE = 5.0  # seconds a prune is asked again while JetStream is not ready
_PRUNE_RETRY_WAIT = 0.25  # seconds between its tries
_SHORT_LOG_GRACE = 1.0  # seconds a log must look cut back, on every look, before the node starts again


@dataclass
class Position:
    """How far a node's engine is in the log."""

    stream_seq: int  # the last message applied (0: none)
    next_seq: int  # the engine seq the next command will have
    term: int = 0  # the highest term among the messages applied
    log_id: str = ""  # which log (shardlog.log_identity): the snapshots this node takes are of it


class ReplicaHost(Protocol):
    """The server's side; each call arrives on the gevent thread, in order."""

    def apply_log(self, body: bytes) -> None: ...

    def promoted(self, term: int, switches: dict[int, float]) -> None: ...

    def lost_leadership(self, reason: str) -> None: ...

    def snapshot_stored(self, seq: int, name: str | None) -> None: ...


class Replica:
    def __init__(self, cluster: ClusterConfig, link: Link, runner: struct_runner, host: ReplicaHost, position: Position,
                 address: str, instruments: tuple[str, ...]) -> None:
        self.cluster = cluster
        self.link = link
        self.runner = runner
        self.host = host
        self.shard, self.node = cluster.shard, cluster.node
        self.address = address
        self.instruments = instruments
        self.lease = Lease(link.kv, cluster.shard, cluster.node, cluster.lease_ttl)
        self.role = FOLLOWING
        self.applied = position.stream_seq  # the last log message applied (or appended, leading)
        self.next_seq = position.next_seq
        self.log_id = position.log_id
        self.stream_seq = position.stream_seq  # the log's last message, as last heard
        self.terms = TermOrder()
        self.terms.highest = position.term
        self.diverged = False  # a state-hash check failed: never lead
        self.switches: dict[int, float] = {}  # the armed dead-man switches, as the log has them: account -> seconds
        self.directory: dict[str, LeaseValue] = {}  # shard -> its lease as last seen (its leader)
        self.nodes: dict[str, dict[str, str]] = {}  # shard -> node -> the address it listens on
        self.directory_read = False  # the bucket's entries as they were when the watch began are all in
        self._sub: JetStreamContext.PushSubscription | None = None
        self._took_lease = False  # from here on a subscription to the log is dropped: a leader has none
        self._replaced_set_aside = asyncio.Event()  # leading: the snapshots this term replaces are out of the way
        # Message `applied` as this node applied or appended it: (term, node, last engine seq); None for one
        # applied before it started (its snapshot's).
        self._applied_as: tuple[int, str, int] | None = None
        # When the log first looked to end before `applied`, and message `applied` then (_track_stream).
        self._short_since: float | None = None
        self._short_mark: tuple[int, tuple[int, str, int] | None] = (0, None)
        self._ready = asyncio.Event()  # leading: records or switches to append
        self._switches_wanted: dict[int, float] | None = None  # leading: the switches to append next
        self._switches_stored: list[Callable[[], None]] = []  # called once they are
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []

    # ---- status (read from any thread) ---------------------------------------

    def status(self) -> dict[str, Any]:
        lease = self.lease.value
        directory, nodes = dict(self.directory), {k: dict(v) for k, v in list(self.nodes.items())}
        return {
            "node": self.node,
            "shard": self.shard,
            "role": self.role,
            "term": self.lease.term,
            "leader": lease.address if lease and not self.lease.expired() else None,
            "leader_node": lease.node if lease else None,
            "applied_seq": self.next_seq - 1,
            "applied_stream_seq": self.applied,
            "stream_seq": max(self.stream_seq, self.applied),
            "lag": max(0, self.stream_seq - self.applied),
            "diverged": self.diverged,
            "dead_man_armed": len(self.switches),
            # Empty until the directory is read whole: a part would send a client looking for a symbol astray.
            "shards": {shard: {"leader": v.address, "leader_node": v.node, "term": v.term,
                               "instruments": list(v.instruments), "nodes": dict(sorted(nodes.get(shard, {}).items()))}
                       for shard, v in sorted(directory.items())} if self.directory_read else {},
        }

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await patiently("this node's entry", lambda: self.link.kv.put(
            node_key(self.shard, self.node), json.dumps({"address": self.address}).encode()))
        self._tasks = [
            self._spawn(self._watch_directory(), "directory-watch"),
            self._spawn(self._campaign(), "campaign"),
            self._spawn(self._track_stream(), "stream-info"),
        ]
        await self._follow()

    async def stop(self) -> None:
        self.role = STOPPED
        for task in self._tasks + self._leader_tasks:
            task.cancel()
        await self._unfollow()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the replica's; one that fails unexpectedly stops the
        replica (the node starts again) rather than leave it half working."""
        task = asyncio.get_running_loop().create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.error("replica_task_failed", extra=fields(task=name, error=f"{type(exc).__name__}: {exc}"))
                self._lose(f"its {name} task failed: {type(exc).__name__}")

        task.add_done_callback(done)
        return task

    def _lose(self, reason: str) -> None:
        """Leading (or following) no longer holds: stop everything; the host restarts."""
        if self.role == STOPPED:
            return
        was = self.role
        self.role = STOPPED
        log.error("replica_restarts", extra=fields(node=self.node, shard=self.shard, was=was, reason=reason))
        for task in self._leader_tasks:
            task.cancel()
        self.host.lost_leadership(reason)

    # ---- following ---------------------------------------------------------------

    async def _follow(self) -> None:
        async def on_message(msg: Msg) -> None:
            if self.role != FOLLOWING or self._sub is not sub:
                return
            self._take(message_of(msg.metadata.sequence.stream, msg.headers, msg.data))

        sub = None
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.applied + 1)
        # At start-up, as the node's entry: a JetStream slow to answer (a busy
        # machine, a peer starting) is waited for, not taken for a failure.
        sub = await patiently("following the shard's log", lambda: self.link.js.subscribe(
            log_subject(self.shard), stream=stream_name(self.shard), cb=on_message, ordered_consumer=True,
            idle_heartbeat=1.0, config=config))
        if self._took_lease or self.role != FOLLOWING:
            # Made while the campaign took the lease (start() follows as it
            # campaigns) or the replica stopped: _unfollow has been and gone.
            await self._drop(sub)
            return
        self._sub = sub

    async def _unfollow(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._drop(sub)

    @staticmethod
    async def _drop(sub: JetStreamContext.PushSubscription) -> None:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass

    def _take(self, m: LogMessage) -> None:
        """Apply the next message of the log (in order; repeats are passed over)."""
        if m.stream_seq <= self.applied:
            return
        if m.stream_seq != self.applied + 1:
            # The log starts later than we need (purged under us): only a
            # newer snapshot can help; restarting fetches one.
            self._lose(f"the log jumps from message {self.applied} to {m.stream_seq}")
            return
        if not self.terms.stale(m):
            if m.kind == KIND_RECORDS and m.body:
                self.host.apply_log(m.body)
                self.next_seq = max(self.next_seq, m.last_seq + 1)
            elif m.kind == KIND_TERM:
                log.info("term_started", extra=fields(shard=self.shard, term=m.term, leader=m.node, at=m.stream_seq))
            elif m.kind == KIND_SWITCHES:
                try:
                    self.switches = switches_of(m.body)
                except ValueError as exc:  # orjson's errors are ValueErrors too
                    log.error("switches_unreadable", extra=fields(shard=self.shard, at=m.stream_seq, error=str(exc)))
        self.applied = m.stream_seq
        self._applied_as = (m.term, m.node, m.last_seq)
        self.stream_seq = max(self.stream_seq, m.stream_seq)

    async def _track_stream(self) -> None:
        """The log's last message, for lag and catching up; a log that is
        no longer this node's, or ends before the messages it applied (cut
        back: restored from an older backup, or lost by a NATS server that
        had not written it out) on every look its leader answers for
        _SHORT_LOG_GRACE seconds, makes the node start again from it. While
        a backup of the log is restored in its place, its leader can answer
        for a few milliseconds with a log partly restored: one look is not
        enough. Meanwhile, a leader stores no snapshot (_store_snapshot); and
        a log that looks whole again must still hold, at the last position
        this node had applied then, the message it applied (a log cut back
        and written again past it by a new leader does not)."""
        while True:
            try:
                applied = self.applied  # before the question: the answer's log has every message applied by then
                info = await self.link.js.stream_info(stream_name(self.shard))
                if self._same_log(info) and led(info):  # a replica without the leader may lack the last messages
                    if info.state.last_seq < applied:
                        now = time.monotonic()
                        if self._short_since is None:
                            self._short_since, self._short_mark = now, (applied, self._applied_as)
                        elif now - self._short_since >= _SHORT_LOG_GRACE:
                            self._lose(f"the log ends at message {info.state.last_seq}, before message {applied}, "
                                       f"the last this node applied")
                    elif self._short_since is not None and await self._still_holds_the_mark():
                        self._short_since = None
                    self.stream_seq = max(self.stream_seq, info.state.last_seq)
            except _NATS_ERRORS:
                pass
            await asyncio.sleep(0.5)

    async def _still_holds_the_mark(self) -> bool:
        """Whether the log holds, at the position marked when it first looked
        short, the message this node had applied there (True when it cannot
        tell: a message applied before the node started). A message gone
        or another there makes the node start again."""
        seq, applied_as = self._short_mark
        if applied_as is None:
            return True
        try:
            raw = await self.link.js.get_msg(stream_name(self.shard), seq)
            m = message_of(raw.seq or seq, raw.headers, raw.data or b"")
            there: tuple[int, str, int] | None = (m.term, m.node, m.last_seq)
        except nats.js.errors.NotFoundError:
            there = None
        if there != applied_as:
            self._lose(f"the log was cut back before message {seq}, the last this node applied, and written again")
            return False
        return True

    def _same_log(self, info: StreamInfo) -> bool:
        """Whether the shard's stream is still the log this node's state is
        of; a log lost and made again is not, however far it has grown (its
        numbering starts again): the node starts again from it."""
        made = log_identity(info)
        if self.log_id and made != self.log_id:
            self._lose(f"the log was made again (at {made}; this node's state is of the log made at {self.log_id})")
            return False
        return True

    async def _still_our_log(self) -> bool:
        """_same_log, asked now; when JetStream does not answer, the stream
        tracker asks again within 0.5 s."""
        try:
            return self._same_log(await self.link.js.stream_info(stream_name(self.shard)))
        except _NATS_ERRORS:
            return True

    async def _caught_up(self) -> bool:
        try:
            info = await self.link.js.stream_info(stream_name(self.shard))
        except _NATS_ERRORS:
            return False
        if not self._same_log(info) or not led(info):  # a replica without the leader may lack the last messages
            return False
        self.stream_seq = max(self.stream_seq, info.state.last_seq)
        return self.applied >= info.state.last_seq

    async def _read_missing(self) -> None:
        """Apply the messages after `applied` up to the log's end, one by one
        (from the stream's leader: a lagging replica could lack them)."""
        while True:  # the leader's answer; none while its replicas elect one
            if self.role != FOLLOWING:
                return
            try:
                if led(info := await self.link.js.stream_info(stream_name(self.shard))):
                    break
            except _NATS_ERRORS:
                pass
            await asyncio.sleep(0.1)
        if not self._same_log(info):
            return
        for seq in range(self.applied + 1, info.state.last_seq + 1):
            raw = await self._leader_copy(seq)
            if raw is None:
                return
            self._take(message_of(raw.seq or seq, raw.headers, raw.data or b""))

    async def _leader_copy(self, seq: int) -> RawStreamMsg | None:
        """Message `seq` of the log from the stream's leader, asked for again
        while JetStream does not answer (an election, a busy machine); None
        once the replica no longer follows. A message gone (purged) raises."""
        lines = Throttle(RETRY_LINE_EVERY)
        while self.role == FOLLOWING:
            try:
                return await self.link.js.get_msg(stream_name(self.shard), seq)
            except _NATS_ERRORS as exc:
                if not not_yet(exc):
                    raise
                if (held := lines.allow()) is not None:
                    log.warning("read_missing_retry", extra=fields(shard=self.shard, seq=seq,
                                                                   error=type(exc).__name__, held_back=held))
            await asyncio.sleep(0.1)
        return None

    # ---- the lease and taking over -------------------------------------------------

    async def _watch_directory(self) -> None:
        """Every shard's lease and nodes: this shard's lease decides who leads
        it; all of them make the directory clients route by."""
        while True:
            watcher = None
            try:
                watcher = await self.link.kv.watch(DIRECTORY)
                async for entry in watcher:
                    if entry is None:  # the end of the current values
                        self.directory_read = True
                    else:
                        self._directory_entry(entry)
            except _NATS_ERRORS as exc:
                log.warning("directory_watch_restart", extra=fields(error=type(exc).__name__))
            finally:
                if watcher is not None:
                    try:
                        await watcher.stop()
                    except _NATS_ERRORS:
                        pass
            await asyncio.sleep(0.1)

    def _directory_entry(self, entry: KeyValue.Entry) -> None:
        data = entry.value if entry.operation is None else None  # None, or empty: deleted
        kind, _, rest = entry.key.partition(".")
        try:
            if kind == "lease":
                value = LeaseValue.decode(data) if data else None
                if entry.key == lease_key(self.shard):
                    if entry.revision is None:  # a watched entry has one (its message's stream sequence)
                        raise ValueError("an entry without a revision")
                    self.lease.observe(entry.revision, value)
                    if self.role == LEADING and not self.lease.holding():
                        self._lose(f"the lease is now {value.node if value else 'gone'}'s")
                if value is not None:
                    self.directory[rest] = value
            elif kind == "node" and data:
                shard, _, node = rest.partition(".")
                self.nodes.setdefault(shard, {})[node] = json.loads(data)["address"]
        # What json.loads and LeaseValue.decode raise on any bytes (a term of
        # 1e400 is an infinite float: OverflowError; a deep nesting: RecursionError).
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            log.warning("directory_entry_unreadable", extra=fields(key=entry.key, error=f"{type(exc).__name__}: {exc}"))

    async def _campaign(self) -> None:
        # The role is looked at again after every wait: a replica stopped or
        # lost meanwhile (stop, _lose) takes no lease and leads nothing.
        period = self.cluster.lease_ttl / 8
        while self.role == FOLLOWING:
            await asyncio.sleep(period)
            if self.diverged or not self.lease.expired() or not await self._caught_up():
                continue
            # Looked at again after the wait: a node that was paused (a stall,
            # SIGSTOP) finds the lease expired by what it saw before, and its
            # watch may deliver the leader's renewal meanwhile, on whose
            # revision a take would succeed.
            if self.role != FOLLOWING or self.diverged or not self.lease.expired():
                continue
            if await self.lease.acquire(self.address, self.instruments, above=self.terms.highest):
                if self.role == FOLLOWING:  # else the lease it took runs out unused
                    await self._take_over()
                return

    def _taking_over(self) -> bool:
        return self.role == FOLLOWING and self.lease.holding()

    def _leading(self) -> bool:
        """Leading, and the lease not run out (role changes only once the renewal notices)."""
        return self.role == LEADING and self.lease.holding()

    def _storing(self) -> bool:
        """Leading, on a log that does not look cut back: a snapshot may be stored."""
        return self._leading() and self._short_since is None

    async def _take_over(self) -> None:
        """Holding the lease: fence every older leader with a term message
        after the last message applied, then lead. A replica stopped or lost
        meanwhile (no longer FOLLOWING) appends nothing more and leads nothing."""
        term = self.lease.term
        log.info("lease_taken", extra=fields(shard=self.shard, node=self.node, term=term, after=self.applied))
        self._leader_tasks = [self._spawn(self._renew(), "lease-renew")]  # from now: taking over takes a while
        self._took_lease = True
        await self._unfollow()
        while True:
            if self.role != FOLLOWING:
                return
            try:
                stored = await append(
                    self.link.js, self.shard, node=self.node, term=term, expected=self.applied, kind=KIND_TERM,
                    body=b"", last_seq=self.next_seq - 1, still_leader=self._taking_over)
            except Fenced:
                if self.role != FOLLOWING:
                    return
                if not self.lease.holding():
                    self._lose("the lease ran out while taking over")
                    return
                before = self.applied
                await self._read_missing()  # the old leader's last messages got in first
                if self.applied == before and self.role == FOLLOWING:
                    # Nothing after `applied` to read, yet the log is not at
                    # it: it ends before the messages this node applied (it
                    # was lost, or made again). Appending again would only be
                    # fenced again, at once and forever.
                    self._lose(f"the log does not go on from message {before}, the last this node applied")
                    return
                continue
            if self.role != FOLLOWING or not await self._still_our_log():
                return
            if not self.lease.holding():
                self._lose("the lease ran out while taking over")
                return
            self.applied = self.stream_seq = stored
            self._applied_as = (term, self.node, self.next_seq - 1)
            self.terms.highest = term
            break
        self.role = LEADING
        log.info("leading", extra=fields(shard=self.shard, node=self.node, term=term, at=self.applied,
                                         seq=self.next_seq - 1))
        self.host.promoted(term, dict(self.switches))
        self._leader_tasks += [self._spawn(self._replicate(), "replicate"),
                               self._spawn(self._set_aside_replaced(term, self.applied), "set-aside")]

    async def _set_aside_replaced(self, term: int, term_message: int) -> None:
        """Snapshots of this log of an older term at or past this term's
        first message are of messages since lost (cut back: a NATS server
        that had not written them out), which this term replaces: once the
        log grows past them they would pass for its own, and rank first in a
        prune (their engine seqs are higher). They go out of the way, as at a
        start; this leader's own snapshots wait for that (_store_snapshot)."""
        while True:
            try:
                refs = await snapshots.listed(self.link.snapshots, self.shard)
                replaced = [r for r in refs if r.log_id in (self.log_id, "") and r.stream_seq >= term_message
                            and r.term < term]
                if replaced:
                    moved = await snapshots.set_aside(self.link.snapshots, replaced)
                    log.error("snapshots_set_aside", extra=fields(
                        shard=self.shard, log=self.log_id, replaced_from=term_message, set_aside=len(moved),
                        snapshots=" ".join(ref.name for ref in moved), kept_as=f"{self.shard}{snapshots.LOST}/"))
                self._replaced_set_aside.set()
                return
            except _NATS_ERRORS as exc:
                log.warning("set_aside_retry", extra=fields(shard=self.shard, error=type(exc).__name__))
                await asyncio.sleep(1.0)

    # ---- leading -------------------------------------------------------------------

    async def _renew(self) -> None:
        # Attempts start a period apart, the next at once after one that took
        # longer: one that waited the bucket's whole timeout (about a period)
        # and failed leaves the next still well inside the deadline.
        period = self.cluster.lease_ttl / 4
        loop = asyncio.get_running_loop()
        due = loop.time() + period
        while self.role != STOPPED:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = loop.time() + period
            if not await self.lease.renew():
                self._lose("the lease could not be renewed in time")
                return

    def share_switches(self, switches: dict[int, float], stored: Callable[[], None]) -> None:
        """Leading (on the loop thread): append `switches`, the armed
        dead-man switches as they are now, then call stored(). Changes that
        come before the append go in one message, the last of them."""
        self._switches_wanted = switches
        self._switches_stored.append(stored)
        self._ready.set()

    async def _append_wanted_switches(self) -> None:
        switches, told = self._switches_wanted, self._switches_stored
        assert switches is not None
        self._switches_wanted, self._switches_stored = None, []
        await self._append_switches(switches)
        for tell in told:
            tell()

    async def _append_switches(self, switches: dict[int, float]) -> None:
        await self._append(KIND_SWITCHES, switches_body(switches), self.next_seq - 1,
                           "the switches could be taken as stored")
        self.switches = switches

    async def _append(self, kind: str, body: bytes, last_seq: int, then: str) -> None:
        """Append a message after the last one, as the leader: stored on a
        quorum, it counts only while the lease still holds (a leader that
        woke up too late acknowledges nothing); else Fenced, saying what
        had not happened yet (`then`)."""
        stored = await append(self.link.js, self.shard, node=self.node, term=self.lease.term, expected=self.applied,
                              kind=kind, body=body, last_seq=last_seq, still_leader=self.lease.holding)
        if self.role != LEADING or not self.lease.holding():
            raise Fenced(f"the lease ran out before {then}")
        self.applied = self.stream_seq = stored
        self._applied_as = (self.lease.term, self.node, last_seq)

    async def _replicate(self) -> None:
        """Records out of the runner, into the log, one message at a time
        (whatever gathers meanwhile goes in the next), and their events out;
        the switches between them when they change."""
        loop = asyncio.get_running_loop()
        fd = lib.runner_repl_fd(self.runner)
        ready = self._ready
        loop.add_reader(fd, ready.set)
        records = ffi.new("struct jnl_record[]", _MAX_RECORDS)
        snap = ffi.new("struct runner_snapshot *")
        try:
            while self.role == LEADING:
                n = lib.runner_repl_take(self.runner, records, _MAX_RECORDS, snap)
                if snap.buf != ffi.NULL:
                    data = bytes(ffi.buffer(snap.buf, snap.len))
                    lib.eng_free_buffer(snap.buf)
                    # Every record before it is stored: it is the state after message `applied`.
                    ref = snapshots.SnapshotRef(self.shard, int(snap.seq), self.applied, self.lease.term, self.log_id)
                    if self.switches:
                        # A node that starts from it reads the log after it: the switches go there again,
                        # before the snapshot is stored (a prune, after it, may take the message before).
                        await self._append_switches(dict(self.switches))
                    self._tasks.append(self._spawn(self._store_snapshot(ref, data), "snapshot"))
                    continue
                if n == 0:
                    if self._switches_wanted is not None:
                        await self._append_wanted_switches()
                        continue
                    await ready.wait()
                    ready.clear()
                    try:
                        os.read(fd, 8)
                    except BlockingIOError:
                        pass
                    continue
                last = int(records[n - 1].seq)
                await self._append(KIND_RECORDS, bytes(ffi.buffer(records, n * RECORD_SIZE)), last,
                                   "a message's events could be released")
                self.next_seq = last + 1
                lib.runner_repl_done(self.runner, last)
                if self._switches_wanted is not None:  # between two of records: changes cannot hold up the orders
                    await self._append_wanted_switches()
        except Fenced as exc:
            self._lose(str(exc))
        finally:
            loop.remove_reader(fd)

    async def _prune(self) -> None:
        """Prune the log and the store after a snapshot stored, asked again
        while JetStream is not ready (a timeout on a busy machine) and this
        node leads, for _PRUNE_PATIENCE seconds. A prune left undone fails
        nothing: the snapshot is stored, and the next one prunes."""
        deadline = time.monotonic() + _PRUNE_PATIENCE
        while self._storing():
            try:
                await snapshots.prune(self.link.js, self.link.snapshots, self.shard, self.log_id)
                return
            except _NATS_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
                if not not_yet(exc) or time.monotonic() + _PRUNE_RETRY_WAIT > deadline:
                    log.warning("prune_failed", extra=fields(shard=self.shard, error=error))
                    return
                log.warning("prune_retry", extra=fields(shard=self.shard, error=error))
                await asyncio.sleep(_PRUNE_RETRY_WAIT)

    async def _store_snapshot(self, ref: snapshots.SnapshotRef, data: bytes) -> None:
        started = time.monotonic()
        name = None
        try:
            # A leader deposed meanwhile stores nothing, or prunes nothing
            # after its upload: what the snapshot covers may since have been
            # lost. One whose term's replaced snapshots are still in the
            # store waits for them to go (a prune would rank them first).
            if self.role == LEADING:
                try:
                    await asyncio.wait_for(self._replaced_set_aside.wait(), _SET_ASIDE_WAIT)
                except asyncio.TimeoutError:
                    pass
            # Nor does one whose log looks cut back (_track_stream): the
            # snapshot may cover messages lost, and a prune would purge the
            # log up to an older snapshot of them.
            stored = self._storing() and self._replaced_set_aside.is_set() and await snapshots.store(
                self.link.snapshots, ref, data, still_wanted=self._storing)
            if stored and self._leading():
                name = ref.name
                await self._prune()  # not while the log looks cut back
                log.info("snapshot_done", extra=fields(seq=ref.seq, seconds=round(time.monotonic() - started, 3)))
            else:
                reason = ("no longer leading" if not self._leading() else "the log looks cut back"
                          if self._short_since is not None else "older snapshots not yet set aside")
                log.warning("snapshot_dropped", extra=fields(seq=ref.seq, reason=reason))
        except _NATS_ERRORS as exc:
            log.error("snapshot_store_failed", extra=fields(name=ref.name, error=f"{type(exc).__name__}: {exc}"))
        finally:
            lib.runner_repl_snapshot_done(self.runner, ref.seq)
            self.host.snapshot_stored(ref.seq, name)

"""Cluster mode, the server's side of it (docs/cluster.md).

Before the engine thread exists, ``prepare`` connects to NATS on a thread of
its own and builds this node's engine from the newest snapshot of the log
the shard's stream holds (or empty). Once the server runs, the shard's ``Replica`` (on that thread)
follows the log and calls back here, on the gevent thread, through a
mailbox: records to apply, promotion, the loss of leadership.

- Applying the log: the records go into the engine thread's input ring as
  they are (``runner_submit_log`` checks their checksums and sequence); when
  the ring is full the rest waits here and goes in a moment later.
- Promotion: orders are taken only once every record of the log before the
  promotion is in the ring, so a session's first command is sequenced after
  all of them; the dead-man switches the log holds are armed again. A
  leader writes a state-hash checkpoint into the log every
  ``checkpoint_interval`` in which commands came or a snapshot was taken,
  and a snapshot every ``snapshot_every`` commands.
- Losing leadership: the server stops and starts again in the same process
  image (``os.execv``) as a follower, so nothing of the old term survives.
  So does a node whose state can no longer be trusted: a log it cannot
  apply, or one of the replica's calls here failing (logged with its
  traceback); its replica stops at once, and what the replica posted
  before (a promotion) is not acted on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVarTuple

import gevent
import nats.js.errors
import orjson

from .._ffi import ffi, lib
from .._server import Ledger
from ..cluster import snapshots
from ..cluster.bridge import LoopThread, Mailbox
from ..cluster.config import ClusterConfig
from ..cluster.link import Link, connect, patiently
from ..cluster.mdfeed import HEARTBEAT_EVERY, HEARTBEAT_TURNS, SymbolFeed, serve_snapshots
from ..cluster.replica import STOPPED, Position, Replica
from ..cluster.shardlog import RECORD_SIZE, SNAPSHOT_BUCKET, led_stream_info, log_identity
from ..durability import InstrumentsDiffer, RecoveryError, SnapshotUnusable, load_snapshot, new_engine
from ..log import fields

from .commands import CommandQueue
from .config import ServerConfig
from .engine_thread import EngineThread
from .marketdata import MarketData


_PREPARE_ATTEMPTS = 3


class _MovedOn(Exception):
    """The snapshot chosen to start from is no longer of use: deleted, or
    the log purged past it (or restored alone from a backup)."""


class ClusterHost(Protocol):
    """What a cluster node needs of its server."""

    config: ServerConfig
    engine: EngineThread
    marketdata: MarketData
    commands: CommandQueue
    ledger: Ledger

    def rejoin(self, reason: str) -> None: ...

    def set_order_limits(self, current: list[tuple[int, int]] | None) -> None: ...

    def rearm_switches(self, switches: dict[int, float]) -> None: ...

__all__ = ["ClusterNode", "LOG_TAG", "STATE_HASH_COMMAND"]

log = logging.getLogger("pyengine.server")

LOG_TAG = 0  # commands from the log belong to no session
STATE_HASH_COMMAND = lib.RUNNER_CTL_STATE_HASH

Ts = TypeVarTuple("Ts")


class ClusterNode:
    def __init__(self, cluster: ClusterConfig, data_dir: str | None) -> None:
        self.cluster = cluster
        self.loop = LoopThread(f"pyengine-nats-{cluster.node}")
        self.link: Link | None = None
        self.replica: Replica | None = None
        self.server: ClusterHost | None = None
        self.mailbox: Mailbox | None = None
        self.leading = False
        self.checkpoint: tuple[int, int] | None = None  # (seq, hash) of the last checkpoint or check
        self.checks_failed = 0
        self._data_dir = data_dir  # where a snapshot is downloaded to be loaded (None: the system's temporary dir)
        self._position = Position(0, 1)
        self._backlog: collections.deque[memoryview] = collections.deque()
        self._pump_scheduled = False
        self._closed = False
        self._failed: str | None = None  # why this node's state can no longer be trusted (_give_up)
        self._promotion: tuple[int, dict[int, float]] | None = None  # (term, switches), while the backlog drains
        self._greenlets: list[gevent.Greenlet[..., Any]] = []
        self._next_seq = ffi.new("uint64_t *")
        self._taken = ffi.new("size_t *")
        self._snapshot_replies: dict[int, list[Callable[[str | None], None]]] = {}
        self._stored: dict[int, str | None] = {}  # the last snapshots stored: seq -> where

    # ---- before the engine thread ----------------------------------------------

    def prepare(self, specs: list[Any]) -> Any:
        """Connect, and return this node's engine (``struct eng *``, the
        caller's): the newest snapshot of the log the shard's stream holds,
        or empty. A store that moves on meanwhile (the leader stores two
        snapshots and prunes) is looked at again, a few times."""
        self.loop.start()
        self.link = self.loop.run(connect(self.cluster))
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._engine_of_the_log(specs)
            except _MovedOn as exc:
                if attempt == _PREPARE_ATTEMPTS:
                    raise RecoveryError(str(exc)) from None
                log.warning("snapshot_moved_on", extra=fields(shard=self.cluster.shard, attempt=attempt,
                                                               detail=str(exc)))

    def _engine_of_the_log(self, specs: list[Any]) -> Any:
        link, shard = self.link, self.cluster.shard
        assert link is not None
        # The snapshots first, then the log's end: a snapshot is stored once
        # the messages it covers are, so every one listed that is of this
        # log ends within it, however far the leader went meanwhile.
        refs = self.loop.run(patiently("the snapshots", lambda: snapshots.listed(link.snapshots, shard)))
        info = self.loop.run(patiently("the shard's log", lambda: led_stream_info(link.js, shard)))
        first = info.state.first_seq if info.state.messages else info.state.last_seq + 1
        this_log, end = log_identity(info), info.state.last_seq
        ours = [r for r in refs if snapshots.of_the_log(r, this_log, end)]
        lost = [r for r in refs if r not in ours]
        if lost:
            # Of a log since lost, made again or cut back: the node starts
            # from the log there is (what was lost, its state with it), and
            # they go out of the way of the log's own.
            moved = self.loop.run(patiently("the snapshots of what the log lost",
                                            lambda: snapshots.set_aside(link.snapshots, lost)))
            log.error("snapshots_set_aside", extra=fields(
                shard=shard, log=this_log, log_ends=end, set_aside=len(moved),
                snapshots=" ".join(ref.name for ref in moved), kept_as=f"{shard}{snapshots.LOST}/"))
        # The newest snapshot that can be read; one damaged in the store is
        # passed over for the one before (_load).
        ref, eng, position, unreadable = None, None, Position(0, 1, log_id=this_log), []
        for candidate in reversed(ours):
            if (loaded := self._load(candidate, specs)) is None:
                unreadable.append(candidate.name)
                continue
            ref, (eng, seq) = candidate, loaded
            position = Position(ref.stream_seq, seq + 1, ref.term, this_log)
            break
        if eng is None:
            eng = new_engine(specs, level_events=True)
        if first > position.stream_seq + 1:
            lib.eng_destroy(eng)
            raise _MovedOn(
                f"the log of shard {shard} starts at message {first}, and no snapshot of it reaches message "
                f"{first - 1}" + (f" (the newest read, {ref.name}, reaches message {ref.stream_seq})" if ref else "")
                + (f"; these do not load: {', '.join(unreadable)} (snapshot_unreadable or snapshot_unusable in the "
                   f"log says why): restore the snapshots ({SNAPSHOT_BUCKET}) from a backup, or, for one that failed "
                   "for want of memory, start with more" if unreadable else
                   f": a log restored from a backup needs the snapshots ({SNAPSHOT_BUCKET}) restored with it"))
        self._position = position
        log.info("cluster_state", extra=fields(shard=shard, node=self.cluster.node, snapshot=ref.name if ref else None,
                                               seq=position.next_seq - 1, log_from=position.stream_seq + 1,
                                               log_to=info.state.last_seq))
        return eng

    def _load(self, ref: snapshots.SnapshotRef, specs: list[Any]) -> tuple[Any, int] | None:
        """The engine that snapshot `ref` holds, and its seq; None when it
        is damaged in the store (snapshots.Unreadable) or the engine cannot
        load it (SnapshotUnusable, as a data directory's snapshot): the
        caller takes the one before, which the log still reaches (a prune
        keeps the log from the older of the two newest snapshots on)."""
        link = self.link
        assert link is not None
        # Loaded, the engine holds it all: the download goes (a node that
        # restarts at every lost lead would otherwise keep one each time).
        if self._data_dir is not None:
            Path(self._data_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pyengine-snap-", dir=self._data_dir) as cache:
            try:
                path = self.loop.run(patiently(f"snapshot {ref.name}",
                                               lambda: snapshots.fetch(link.snapshots, ref, Path(cache))))
            except snapshots.Unreadable as exc:
                log.error("snapshot_unreadable", extra=fields(shard=ref.shard, name=ref.name, reason=str(exc)))
                return None
            except (nats.js.errors.NotFoundError, asyncio.TimeoutError):
                raise _MovedOn(f"snapshot {ref.name} was deleted as it was fetched") from None
            try:
                return load_snapshot(path, specs, level_events=True)
            except SnapshotUnusable as exc:
                log.error("snapshot_unusable", extra=fields(shard=ref.shard, name=ref.name, error=exc.reason))
                return None
            except InstrumentsDiffer as exc:  # a configuration to fix, not a snapshot to pass over
                raise RecoveryError(f"snapshot {ref.name} of shard {ref.shard}: {exc.difference}: give this node "
                                    "the shard's [[instruments]], as its other nodes have them") from None

    # ---- running ------------------------------------------------------------------

    def start(self, server: ClusterHost, address: str) -> None:
        assert self.link is not None
        self.server = server
        self.mailbox = Mailbox()
        self.mailbox.start()
        self._next_seq[0] = self._position.next_seq
        self.replica = Replica(self.cluster, self.link, server.engine.runner, _Posted(self, self.mailbox),
                               self._position, address, tuple(server.engine.symbols))
        self.loop.run(self.replica.start())

    @property
    def role(self) -> str:
        return self.replica.role if self.replica is not None else "starting"

    def when_stored(self, seq: int, reply: Callable[[str | None], None]) -> None:
        """Call reply(name) once the snapshot at `seq` is in the object store
        (None: storing it failed): an admin's snapshot request waits for it."""
        if seq in self._stored:
            reply(self._stored[seq])
        else:
            self._snapshot_replies.setdefault(seq, []).append(reply)

    def snapshot_stored(self, seq: int, name: str | None) -> None:
        where = f"{SNAPSHOT_BUCKET}/{name}" if name else None
        self._stored[seq] = where  # for a request whose answer is routed after this
        while len(self._stored) > 16:
            del self._stored[next(iter(self._stored))]
        for reply in self._snapshot_replies.pop(seq, []):
            reply(where)

    def leader_address(self) -> str | None:
        """Where order entry goes now, when known."""
        return self.replica.status()["leader"] if self.replica is not None else None

    def status(self) -> dict[str, Any]:
        st = self.replica.status() if self.replica is not None else {}
        st["role"] = "leader" if self.leading else ("stopped" if st.get("role") == STOPPED else "follower")
        cp = self.checkpoint
        st["checkpoint"] = {"seq": cp[0], "hash": f"{cp[1]:016x}"} if cp else None
        st["checks_failed"] = self.checks_failed
        return st

    def close(self) -> None:
        self._closed = True  # a pump still scheduled does nothing: the runner goes next
        for g in self._greenlets:
            g.kill(block=False)
        if self.replica is not None:
            try:
                self.loop.run(self.replica.stop(), timeout=5)
            except Exception:
                log.exception("replica_stop_failed")
        if self.link is not None:
            try:
                self.loop.run(self.link.close(), timeout=5)
            except Exception:
                log.exception("nats_close_failed")
        self.loop.stop()
        if self.mailbox is not None:
            self.mailbox.close()

    # ---- the replica's calls (gevent thread) ----------------------------------------

    def apply_log(self, body: bytes) -> None:
        if self._failed is not None:
            return  # what follows what it could not apply cannot go in either: it starts again
        if len(body) % RECORD_SIZE:
            self._fatal(f"a log message of {len(body)} bytes is not whole records")
            return
        self._backlog.append(memoryview(body))
        self._pump()

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._closed or self._failed is not None:
            return
        assert self.server is not None
        runner = self.server.engine.runner
        while self._backlog:
            body = self._backlog[0]
            n = len(body) // RECORD_SIZE
            rc = lib.runner_submit_log(runner, ffi.from_buffer("struct jnl_record[]", body), n, LOG_TAG,
                                       self._taken, self._next_seq)
            if rc != lib.ENG_OK:
                self._fatal(f"the log holds a damaged or out-of-sequence record before seq {self._next_seq[0]}")
                return
            taken = int(self._taken[0])
            if taken < n:
                # The engine thread's input ring is full: the rest in a moment.
                self._backlog[0] = body[taken * RECORD_SIZE:]
                if not self._pump_scheduled:
                    self._pump_scheduled = True
                    gevent.spawn_later(0.0005, self.guarded, self._pump)  # it may open for orders
                return
            self._backlog.popleft()
        if self._promotion is not None:
            self._open(*self._promotion)

    def promoted(self, term: int, switches: dict[int, float]) -> None:
        if self._failed is not None or self._closed:
            # Posted before the replica was stopped: the state it would lead from is not to be trusted.
            log.warning("promotion_ignored", extra=fields(term=term, why=self._failed or "closing"))
            return
        self._promotion = (term, switches)
        if not self._backlog:
            self._open(term, switches)

    def _open(self, term: int, switches: dict[int, float]) -> None:
        self._promotion = None
        assert self.server is not None
        # The order ids of the log's last commands may not be routed yet, and
        # their clients know them from the last leader: all are taken as known
        # until they are.
        self.server.ledger.catch_up(int(self._next_seq[0]) - 1)
        # The order limits of this node's configuration: the first commands of its term, before any session's.
        self.server.set_order_limits(None)
        # The switches the last leader had armed, each given its whole time again from now: the renewals its
        # clients sent it are not in the log, and those sent meanwhile reached nobody.
        self.server.rearm_switches(switches)
        self.leading = True
        log.info("taking_orders", extra=fields(shard=self.cluster.shard, node=self.cluster.node, term=term,
                                               seq=int(self._next_seq[0]) - 1))
        self._publish_market_data(term)
        if self.cluster.checkpoint_interval > 0:
            self._greenlets.append(gevent.spawn(self._checkpoints))
        if self.server.config.snapshot_every:
            self._greenlets.append(gevent.spawn(self._snapshots, self.server.config.snapshot_every))

    def _publish_market_data(self, term: int) -> None:
        """The leader publishes every instrument's market data on NATS too,
        and answers snapshot requests there (cluster/mdfeed.py), each with
        its term; a heartbeat now and while an instrument is quiet."""
        assert self.server is not None and self.link is not None and self.mailbox is not None
        md, mailbox = self.server.marketdata, self.mailbox
        symbols = list(self.server.engine.symbols)
        feeds = {symbol: SymbolFeed(self.loop, self.link.nc, symbol, term) for symbol in symbols}
        for inst, symbol in enumerate(symbols):
            md.subscribers[inst].add(feeds[symbol])
        self._greenlets.append(gevent.spawn(self._heartbeats, list(feeds.values())))

        def snapshot(symbol: str, reply_to: str) -> None:  # on the NATS thread
            def take() -> None:  # on the gevent thread
                try:
                    md.flush()  # what is gathered goes out first: the snapshot follows it
                    book = md.snapshot(symbols.index(symbol), None)
                    del book["req_id"]
                    book["term"] = term
                except Exception as exc:  # the asker is told, whatever it was
                    book = {"type": "error", "code": "snapshot_failed", "message": f"{type(exc).__name__}: {exc}"}
                feeds[symbol].send_to(reply_to, orjson.dumps(book))  # behind the feed's messages
            mailbox.post(take)

        self.loop.submit(serve_snapshots(self.link.nc, symbols, snapshot))

    def share_switches(self, switches: dict[int, float], stored: Callable[[], None]) -> None:
        """Leading: put `switches`, the armed dead-man switches, into the log,
        then call stored() (on the gevent thread); never called if the lead
        is lost first."""
        assert self.replica is not None and self.mailbox is not None
        mailbox = self.mailbox
        self.loop.call_soon(self.replica.share_switches, switches, lambda: mailbox.post(stored))

    def lost_leadership(self, reason: str) -> None:
        self.leading = False
        self._promotion = None  # a lead lost before the backlog drained is not taken up after it
        assert self.server is not None
        self.server.rejoin(reason)

    def _fatal(self, why: str) -> None:
        log.error("log_unusable", extra=fields(shard=self.cluster.shard, node=self.cluster.node, why=why))
        self._give_up(why)

    def guarded(self, call: Callable[[*Ts], None], *args: *Ts) -> None:
        """call(*args), a call of the replica's that changes this node's
        state: one that fails leaves the state half changed (records not
        applied, a lead half taken), so the node gives up."""
        try:
            call(*args)
        except Exception as exc:
            name = getattr(call, "__name__", repr(call))
            log.exception("replica_call_failed", extra=fields(call=name))
            self._give_up(f"{name} failed: {type(exc).__name__}: {exc}")

    def _give_up(self, why: str) -> None:
        """This node's state can no longer be trusted: it takes no more
        orders, its replica stops now (it neither leads nor campaigns while
        the server stops), and the server starts again as a follower."""
        if self._failed is None:
            self._failed = why
        self.leading = False
        if self.replica is not None:
            self.replica.diverged = True
            if not self._closed:
                self.loop.submit(self.replica.stop())
        assert self.server is not None
        self.server.rejoin(why)

    # ---- the leader's checkpoints and snapshots ---------------------------------------

    def _control(self, command: int) -> None:
        assert self.server is not None
        self.server.commands.add(command, LOG_TAG)
        self.server.commands.flush()

    def _heartbeats(self, feeds: list[SymbolFeed]) -> None:
        """Each instrument's heartbeat on NATS: at once (a reader learns of
        the new term), then once it was quiet for about HEARTBEAT_EVERY
        seconds (up to a turn less)."""
        assert self.server is not None
        md = self.server.marketdata
        always = True
        while self.leading:
            for inst, feed in enumerate(feeds):
                feed.heartbeat(md.seq[inst], always=always)
            always = False
            gevent.sleep(HEARTBEAT_EVERY / HEARTBEAT_TURNS)

    def _checkpoints(self) -> None:
        """A checkpoint each checkpoint_interval in which commands came or a
        snapshot was taken: an idle shard's log does not grow (nor does a
        backup of it go stale while it is taken), its last checkpoint still
        covers its state, and a node that starts from the newest snapshot
        finds one after it in the log."""
        assert self.server is not None
        engine = self.server.engine
        snapshots = None
        while self.leading:
            gevent.sleep(self.cluster.checkpoint_interval)
            st = engine.stats()  # its seq: the engine's, which control commands take none of
            covered = self.checkpoint[0] if self.checkpoint is not None else None
            if self.leading and (st["seq"] != covered or st["snapshots"] != snapshots):
                snapshots = st["snapshots"]
                self._control(STATE_HASH_COMMAND)

    def _snapshots(self, every: int) -> None:
        assert self.server is not None
        engine = self.server.engine
        last = engine.stats()["commands"]
        while self.leading:
            gevent.sleep(1.0)
            now = engine.stats()["commands"]
            if now - last >= every:
                last = now
                self._control(lib.RUNNER_CTL_SNAPSHOT)

    def state_hash(self, seq: int, value: int, checked: bool, expected: int) -> None:
        """A RUNNER_EV_STATE_HASH from the engine thread."""
        self.checkpoint = (seq, value)
        if not checked:
            log.debug("checkpoint", extra=fields(seq=seq, hash=f"{value:016x}"))
        elif value == expected:
            log.debug("state_hash_checked", extra=fields(seq=seq, hash=f"{value:016x}"))
        else:
            self.checks_failed += 1
            if self.replica is not None:
                self.replica.diverged = True
            log.error("state_diverged", extra=fields(shard=self.cluster.shard, node=self.cluster.node, seq=seq,
                                                     hash=f"{value:016x}", leader_hash=f"{expected:016x}"))


class _Posted:
    """The ReplicaHost the replica sees: each call goes to the gevent thread."""

    def __init__(self, node: ClusterNode, mailbox: Mailbox) -> None:
        self._node = node
        self._mailbox = mailbox

    def apply_log(self, body: bytes) -> None:
        self._mailbox.post(self._node.guarded, self._node.apply_log, body)

    def promoted(self, term: int, switches: dict[int, float]) -> None:
        self._mailbox.post(self._node.guarded, self._node.promoted, term, switches)

    def lost_leadership(self, reason: str) -> None:
        self._mailbox.post(self._node.guarded, self._node.lost_leadership, reason)

    def snapshot_stored(self, seq: int, name: str | None) -> None:
        self._mailbox.post(self._node.snapshot_stored, seq, name)


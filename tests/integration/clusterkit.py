"""What the cluster tests share: a shard's nodes as real server processes on a
real 3-server NATS cluster, and the checks every failure test makes.

The invariants (docs/cluster.md), checked against the shard's log read back
from JetStream and replayed through a fresh Engine:
- nothing acknowledged is lost: every ack a client got is an Accepted event
  of the replay, at the same seq, with the same order id and client order id;
- no seq was acknowledged twice with different content (and no order id was
  handed out twice);
- the followers' state hashes equal the leader's, and the replay's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyengine import Accepted, Engine
from pyengine.client import Client, ConnectionClosed, ServerError
from pyengine.cluster.audit import fetch_log, replay
from pyengine.cluster.shardlog import KIND_TERM, SNAPSHOT_BUCKET, LogMessage, append
from pyengine.server.config import DEFAULT_INSTRUMENTS

SHARDS = {"a": ("ESZ6", "NQZ6"), "b": ("CLF7", "BTC-PERP")}


def cluster_config(urls: list[str], *, lease_ttl: float = 1.0, snapshot_every: int = 0,
                   shards: dict[str, tuple[str, ...]] = SHARDS, instruments: str = "") -> str:
    """A node's configuration; `instruments`: [[instruments]] tables, if not the default ones."""
    lines = [
        "[durability]", f"snapshot_every = {snapshot_every}", "",
        "[cluster]", f"nats = {list(urls)!r}".replace("'", '"'), f"lease_ttl = {lease_ttl}",
        "checkpoint_interval = 0.3", "", "[cluster.instruments]",
    ]
    lines += [f"{name} = {list(symbols)!r}".replace("'", '"') for name, symbols in shards.items()]
    return "\n".join(lines) + "\n" + instruments


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    """check()'s first truthy result; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ConnectionClosed, ServerError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"no {what} within {timeout:g} s (last: {last!r})")


def wait_for_value(what: str, get: Callable[[], Any], want: Any, timeout: float = 30.0) -> None:
    """wait_for() of get() == want; on a timeout, says what get() gave last."""
    seen: list[Any] = []

    def check() -> bool:
        seen[:] = [get()]
        return bool(seen[0] == want)

    try:
        wait_for(what, check, timeout)
    except AssertionError as exc:
        last = f"; it was {seen[0]!r}, not {want!r}" if seen else ""
        raise AssertionError(f"{exc}{last}") from None


def status(node: Any) -> dict[str, Any]:
    with Client("127.0.0.1", node.port, timeout=5) as c:
        return c.request(c.status(), timeout=5)


def address(node: Any) -> str:
    return f"127.0.0.1:{node.port}"


def leader_among(nodes: list[Any], timeout: float = 30.0) -> Any:
    """The one node that leads (and takes orders), once there is one."""
    def one() -> Any:
        leaders = [n for n in nodes if n.proc.poll() is None and status(n)["role"] == "leader"]
        return leaders[0] if len(leaders) == 1 else None
    return wait_for("leader", one, timeout)


def settled(nodes: list[Any], timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every node has applied the same seq and written or checked
    a checkpoint there with the same hash; returns that checkpoint."""
    def same() -> dict[str, Any] | None:
        sts = [status(n) for n in nodes]
        points = {(s["applied_seq"], (s["checkpoint"] or {}).get("seq"), (s["checkpoint"] or {}).get("hash"))
                  for s in sts}
        if len(points) == 1:
            seq, cp_seq, cp_hash = points.pop()
            if cp_seq == seq and all(s["checks_failed"] == 0 and s["lag"] == 0 for s in sts):
                return {"seq": seq, "hash": cp_hash}
        return None
    return wait_for("agreement of every node's state hash", same, timeout)


def the_log(urls: list[str], shard: str) -> list[LogMessage]:
    return asyncio.run(fetch_log(urls, shard))


def replayed(messages: list[LogMessage], shard: str) -> tuple[Engine, list[Any]]:
    engine = Engine(level_updates=True)
    for inst in DEFAULT_INSTRUMENTS:
        if inst.symbol in SHARDS[shard]:
            engine.add_instrument(inst.symbol, tick_size=inst.tick_size, lot_size=inst.lot_size,
                                  price_band=inst.price_band, market_protection=inst.market_protection)
    result = replay(messages, engine)
    return engine, engine.decode_events(result.events)


@dataclass
class Trader:
    """A client in a thread: orders one after another, recording every answer.
    A lost connection leaves its order's fate open (``unknown``); the next
    order reconnects (to the new leader) and logs in again."""

    addresses: list[str]
    account: int
    symbol: str = "ESZ6"
    acks: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = Client(self.addresses, timeout=5, find_leader_for=30)
        client.login(self.account, cancel_on_disconnect=False)
        n = 0
        while not self.stop.is_set():
            n += 1
            coid = f"t{self.account}-{n}"
            side = "buy" if n % 2 else "sell"
            price = 450_000 + 25 * (n % 7) * (1 if side == "sell" else -1)
            try:
                reply = client.request(client.new_order(self.symbol, side, 1 + n % 3, price, client_order_id=coid),
                                       timeout=10)
            except (ConnectionClosed, OSError, TimeoutError):
                self.unknown.append(coid)
                time.sleep(0.05)
                continue
            except ServerError as exc:
                self.errors.append(f"{coid}: {exc}")
                continue
            if reply["type"] == "ack":
                self.acks.append(reply)
            else:
                self.errors.append(f"{coid}: {reply}")
        client.close()


def check_acks_against_the_log(traders: list[Trader], events: list[Any]) -> None:
    """Every ack is the log's Accepted event at its seq; no seq or order id twice."""
    accepted = {e.seq: e for e in events if isinstance(e, Accepted)}
    acks = [a for t in traders for a in t.acks]
    seqs = [a["seq"] for a in acks]
    ids = [a["order_id"] for a in acks]
    assert len(set(seqs)) == len(seqs), "a seq was acknowledged twice"
    assert len(set(ids)) == len(ids), "an order id was handed out twice"
    for a in acks:
        e = accepted.get(a["seq"])
        assert e is not None, f"acknowledged but not in the log: {a}"
        assert (e.order_id, e.client_order_id, e.qty) == (a["order_id"], a["client_order_id"], a["qty"]), (e, a)
    seen = sorted({e.seq for e in events})
    assert seen == list(range(1, len(seen) + 1)), "the log's seqs have a gap"


async def term_messages(js: Any, shard: str, count: int) -> None:
    """`count` term messages (terms 1, 2, ...) of a leader that came and
    went, on the shard's empty log."""
    for term in range(1, count + 1):
        await append(js, shard, node="gone", term=term, expected=term - 1, kind=KIND_TERM, body=b"", last_seq=0,
                     still_leader=lambda: True)


async def damage_snapshot(js: Any, name: str) -> None:
    """One chunk more for snapshot `name` in the object store's stream, as a
    store damaged: its chunks no longer make its digest."""
    info = await (await js.object_store(SNAPSHOT_BUCKET)).get_info(name)
    await js.publish(f"$O.{SNAPSHOT_BUCKET}.C.{info.nuid}", DAMAGE, stream=f"OBJ_{SNAPSHOT_BUCKET}")


DAMAGE = b"damage"  # the chunk damage_snapshot adds

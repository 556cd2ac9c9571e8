"""kill -9 the server while eight clients send orders; restart it on the same
data directory; nothing any client saw acknowledged may be missing.

Three crashes at random points, on one data directory (snapshots every 500
commands, segments kept so the journal can be replayed from seq 1). After
each restart:

- every ack, fill and cancel a client received is in the journal, with the
  same order id, seq, trade id, price and quantity: an in-process Engine fed
  the journal (replay_journal) produced exactly those events;
- every acknowledged order is resting, filled or cancelled in that Engine,
  never gone;
- the restarted server's books (its market-data snapshots) are that
  Engine's books level for level, each account gets back its open orders,
  and numbering resumes after the last journaled command.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pyengine import Accepted, Cancelled, Trade
from pyengine.client import Client, ConnectionClosed
from pyengine.durability import replay_journal

from .conftest import RunningServer

CLIENTS = 8
WINDOW = 16  # requests in flight per client
SYMBOLS = {"ESZ6": (450_000, 25), "CLF7": (7_000, 1)}  # mid, tick
CONFIG = """
[durability]
snapshot_every = 500
keep_segments = true
"""


class Seen:
    """What one client was told before the crash."""

    def __init__(self) -> None:
        self.acks: dict[int, dict[str, Any]] = {}  # order id -> ack
        self.fills: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []


def trade(port: int, k: int, seed: int, seen: Seen) -> None:
    rng = random.Random(seed * 100 + k)
    open_ids: list[int] = []
    try:
        with Client("127.0.0.1", port, timeout=10) as c:
            c.login(k + 1, cancel_on_disconnect=False)
            in_flight = 0
            while True:
                while in_flight < WINDOW:
                    if open_ids and rng.random() < 0.2:
                        c.cancel(order_id=open_ids.pop(rng.randrange(len(open_ids))))
                    else:
                        symbol = rng.choice(list(SYMBOLS))
                        mid, tick = SYMBOLS[symbol]
                        side = rng.choice(("buy", "sell"))
                        off = rng.randrange(-2, 8) * tick
                        c.new_order(symbol, side, rng.randrange(1, 10), mid - off if side == "buy" else mid + off)
                    in_flight += 1
                m = c.recv()
                typ = m["type"]
                if typ == "ack":
                    seen.acks[m["order_id"]] = m
                    open_ids.append(m["order_id"])
                elif typ == "fill":
                    seen.fills.append(m)
                elif typ == "cancelled":
                    seen.cancels.append(m)
                elif typ not in ("reject",):
                    raise AssertionError(f"unexpected message {m}")
                if m.get("req_id") is not None:
                    in_flight -= 1
    except (ConnectionClosed, ConnectionError, OSError):
        return  # the server is gone


def crash_while_trading(srv: RunningServer, seed: int) -> list[Seen]:
    seen = [Seen() for _ in range(CLIENTS)]
    threads = [threading.Thread(target=trade, args=(srv.port, k, seed, seen[k])) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(random.Random(seed).uniform(0.3, 1.5))
    srv.kill()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return seen


def check_against_journal(srv: RunningServer, data: Path, seen: list[Seen]) -> None:
    eng, result = replay_journal(data)
    eng.verify()
    events = eng.decode_events(result.events)
    accepted = {e.order_id: e for e in events if type(e) is Accepted}
    trades = {e.trade_id: e for e in events if type(e) is Trade}
    cancelled = {e.order_id: e for e in events if type(e) is Cancelled}
    filled: dict[int, int] = defaultdict(int)
    for t in trades.values():
        filled[t.maker_order_id] += t.qty
        filled[t.taker_order_id] += t.qty

    acks = fills = 0
    for k, s in enumerate(seen):
        for oid, ack in s.acks.items():
            a = accepted.get(oid)
            assert a is not None, f"acknowledged order {oid} of client {k} is not in the journal"
            assert (a.seq, a.symbol, a.side.value, a.price, a.qty, a.account) == (
                ack["seq"], ack["symbol"], ack["side"], ack["price"], ack["qty"], k + 1)
            rest = eng.order(oid)
            if oid in cancelled:
                assert rest is None
            elif rest is not None:
                assert rest.open_qty == a.qty - filled[oid]
            else:
                assert filled[oid] == a.qty, f"order {oid}: acknowledged, not resting, not filled, not cancelled"
            acks += 1
        for f in s.fills:
            t = trades.get(f["trade_id"])
            assert t is not None, f"fill {f} is not in the journal"
            assert (t.price, t.qty, t.seq) == (f["price"], f["qty"], f["seq"])
            assert f["order_id"] in (t.maker_order_id, t.taker_order_id)
            fills += 1
        for c in s.cancels:
            assert c["order_id"] in cancelled and cancelled[c["order_id"]].seq == c["seq"]
    assert acks > 0 and fills > 0, "the crash came before any trading: nothing was checked"
    print(f"checked {acks} acks, {fills} fills, {len(accepted)} orders in the journal")

    recovered = srv.wait_log(r"event=recovered ")
    assert f"seq={eng.seq} " in recovered
    open_by_account: dict[int, int] = defaultdict(int)
    for o in eng.open_orders():
        open_by_account[o.account] += 1
    with Client("127.0.0.1", srv.port) as c:
        for symbol in SYMBOLS:
            snap = c.request(c.subscribe(symbol))
            book = eng.book(symbol, depth=10_000)
            assert snap["bids"] == [list(lv) for lv in book.bids]
            assert snap["asks"] == [list(lv) for lv in book.asks]
        for k in range(CLIENTS):
            with Client("127.0.0.1", srv.port) as other:
                assert other.login(k + 1, cancel_on_disconnect=False)["claimed_orders"] == open_by_account[k + 1]
        c.login(99)
        ack = c.request(c.new_order("CLF7", "buy", 1, 1_000))
        assert ack["seq"] == eng.seq + 1
        assert ack["order_id"] > max(accepted)
        c.request(c.cancel(order_id=ack["order_id"]))


def test_kill_9_loses_nothing_acknowledged(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(CONFIG, "--data-dir", str(data))
    for seed in range(3):
        seen = crash_while_trading(srv, seed)
        srv = server_factory(CONFIG, "--data-dir", str(data))
        check_against_journal(srv, data, seen)
    line = srv.wait_log(r"event=recovered ")
    assert int(re.search(r"snapshot_seq=(\d+)", line).group(1)) > 0  # type: ignore[union-attr]

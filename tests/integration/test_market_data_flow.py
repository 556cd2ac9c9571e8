"""Market data under a random flow: subscribers that apply their snapshot and
every update after it hold the engine's book, whatever the order flow did
(sweeps, modifies, self-trade prevention, mass cancels, cancel-on-disconnect,
market-maker protection, halts) and whenever they (re)subscribed."""

from __future__ import annotations

import random
import socket
import threading
from collections import defaultdict
from typing import Any

from pyengine.client import Client

from .conftest import RunningServer

ES, NQ = "ESZ6", "NQZ6"
MID = {ES: 450_000, NQ: 1_800_000}
TICK = 25
STEPS = 3000  # per trader

Book = dict[str, dict[int, tuple[int, int]]]


def levels(snap: dict[str, Any]) -> Book:
    return {"buy": {p: (q, n) for p, q, n in snap["bids"]}, "sell": {p: (q, n) for p, q, n in snap["asks"]}}


class Reader:
    """A subscriber that rebuilds books from snapshot + updates, checking
    the seq of every message; unsubscribes and subscribes again now and then,
    and asks for a second snapshot while subscribed, which must be the book
    it rebuilt, at the seq it reached. It sends orders of its own too."""

    def __init__(self, server: RunningServer, symbols: list[str], seed: int) -> None:
        self.c = server.client()
        self.rng = random.Random(seed)
        self.symbols = symbols
        self.books: dict[str, Book] = {}
        self.seq: dict[str, int] = {}
        self.state: dict[str, str] = {}
        self.subscribed: dict[str, bool] = {}
        self.errors: list[str] = []
        self.pending: dict[int, tuple[str, str]] = {}  # req_id -> (kind, symbol)

    def subscribe(self, symbol: str) -> None:
        self.pending[self.c.subscribe(symbol)] = ("subscribe", symbol)

    def unsubscribe(self, symbol: str) -> None:
        self.pending[self.c.unsubscribe(symbol)] = ("unsubscribe", symbol)

    def take(self, m: dict[str, Any]) -> None:
        rid = m.get("req_id")
        if m["type"] in ("ack", "reject", "fill", "cancelled"):
            return  # its own orders'
        if rid is not None and rid in self.pending:
            kind, symbol = self.pending.pop(rid)
            if kind == "subscribe":
                assert m["type"] == "book_snapshot", m
                if self.subscribed.get(symbol) and (self.seq[symbol], self.books[symbol]) != (m["seq"], levels(m)):
                    self.errors.append(f"{symbol}: at seq {self.seq[symbol]} the book rebuilt is not the snapshot "
                                       f"at seq {m['seq']}")
                self.books[symbol] = levels(m)
                self.seq[symbol] = m["seq"]
                self.state[symbol] = m["state"]
                self.subscribed[symbol] = True
            else:
                assert m["type"] == "unsubscribed", m
                self.subscribed[symbol] = False
                self.books.pop(symbol, None)
            return
        if m["type"] not in ("trade", "book_update", "trading_state"):
            self.errors.append(f"unexpected {m}")
            return
        symbol = m["symbol"]
        if not self.subscribed.get(symbol):
            return  # sent before the unsubscribe took effect
        if m["seq"] != self.seq[symbol] + 1:
            self.errors.append(f"{symbol}: seq {m['seq']} after {self.seq[symbol]}")
        self.seq[symbol] = m["seq"]
        if m["type"] == "book_update":
            book = self.books[symbol]
            for side, price, qty, count in m["changes"]:
                if (qty == 0) != (count == 0):
                    self.errors.append(f"{symbol}: level {side} {price} qty {qty} count {count}")
                if qty:
                    book[side][price] = (qty, count)
                else:  # a level may come and go within one update: gone, whether or not it was seen
                    book[side].pop(price, None)
            if book["buy"] and book["sell"] and max(book["buy"]) >= min(book["sell"]):
                self.errors.append(f"{symbol}: crossed book at seq {m['seq']}")
        elif m["type"] == "trading_state":
            self.state[symbol] = m["state"]

    def poll(self, timeout: float) -> None:
        try:
            while True:
                self.take(self.c.recv(timeout=timeout))
                timeout = 0
        except (TimeoutError, socket.timeout):
            pass

    def churn(self) -> None:
        """Now and then, unsubscribe from or (re)subscribe to a symbol."""
        if len(self.pending) > 3 or self.rng.random() > 0.2:
            return
        symbol = self.rng.choice(self.symbols)
        if self.rng.random() < 0.3:  # an order of its own just before: its update comes after the snapshot
            self.c.new_order(symbol, self.rng.choice(["buy", "sell"]), self.rng.randint(1, 5),
                             MID[symbol] + TICK * self.rng.randint(-6, 6))
        asked = [kind for kind, sym in self.pending.values() if sym == symbol]
        if asked[-1] == "subscribe" if asked else self.subscribed.get(symbol):
            if self.rng.random() < 0.5:
                self.unsubscribe(symbol)
            else:
                self.subscribe(symbol)  # a second snapshot, in the middle of the stream
        else:
            self.subscribe(symbol)


class Trader:
    def __init__(self, server: RunningServer, account: int, seed: int) -> None:
        self.server = server
        self.account = account
        self.rng = random.Random(seed)
        self.c = self._connect()
        self.coids: list[str] = []
        self.n = 0

    def _connect(self) -> Client:
        c = self.server.client()
        c.login(self.account, cancel_on_disconnect=True)
        return c

    def drain(self) -> None:
        try:
            while True:
                self.c.recv(timeout=0)
        except (TimeoutError, socket.timeout):
            pass

    def step(self) -> None:
        rng, c = self.rng, self.c
        symbol = rng.choice([ES, ES, NQ])
        r = rng.random()
        self.n += 1
        side = rng.choice(["buy", "sell"])
        price = MID[symbol] + TICK * rng.randint(-6, 6)
        if r < 0.45:
            coid = f"{self.account}-{self.n}"
            self.coids.append(coid)
            tif = rng.choice(["gtc", "gtc", "gtc", "ioc", "fok"])
            c.new_order(symbol, side, rng.randint(1, 8), price, tif=tif, client_order_id=coid,
                        post_only=tif == "gtc" and rng.random() < 0.1,
                        stp=rng.choice(["none", "none", "cancel_newest", "cancel_oldest", "cancel_both"]))
        elif r < 0.52:
            c.new_order(symbol, side, rng.randint(1, 30), order_type="market",
                        tif=rng.choice(["ioc", "fok"]), stp=rng.choice(["none", "cancel_oldest"]))
        elif r < 0.72 and self.coids:
            coid = rng.choice(self.coids[-30:])
            kind = rng.random()
            if kind < 0.4:
                c.send({"type": "modify", "req_id": None, "client_order_id": coid, "qty": rng.randint(0, 8)})
            elif kind < 0.7:
                c.send({"type": "modify", "req_id": None, "client_order_id": coid, "price": price})
            else:
                c.send({"type": "modify", "req_id": None, "client_order_id": coid, "price": price,
                        "qty": rng.randint(1, 8)})
        elif r < 0.85 and self.coids:
            c.cancel(client_order_id=rng.choice(self.coids[-30:]))
        elif r < 0.88:
            c.mass_cancel(rng.choice([None, ES, NQ]))
        elif r < 0.91:
            c.set_mmp(symbol, rng.randint(5, 40), rng.choice([0, 200]))
        elif r < 0.93:
            c.reset_mmp(symbol)
        elif r < 0.933:
            c.halt(symbol)
        elif r < 0.97:
            c.resume(symbol)
        elif r < 0.98:
            self.c.close()  # cancel-on-disconnect
            self.c = self._connect()
        self.drain()


def test_subscribers_rebuild_the_engines_book_under_random_flow(server: RunningServer) -> None:
    symbols = [ES, NQ]
    readers = [Reader(server, symbols, seed) for seed in range(3)]
    for i, r in enumerate(readers):
        r.c.login(20 + i)
    for r in readers:
        for s in symbols:
            r.subscribe(s)
    traders = [Trader(server, account, 100 + account) for account in (1, 2, 3)]
    failures: list[BaseException] = []

    def trade(t: Trader) -> None:
        try:
            for i in range(STEPS):
                if i % 50 == 0:
                    t.c.request(t.c.ping())
                t.step()
            t.c.request(t.c.ping())  # everything it sent is answered
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=trade, args=(t,)) for t in traders]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        for r in readers:
            r.poll(0.002)
            r.churn()
    for th in threads:
        th.join()
    assert not failures, failures
    with server.client() as admin:
        admin.login(9)
        for s in symbols:
            admin.request(admin.resume(s))
    # Quiet: every reader takes everything up to now (a ping's pong after it), then subscribes again where
    # it is not subscribed, and takes that too.
    for again in (False, True):
        for r in readers:
            for s in symbols:
                if again and not r.subscribed.get(s):
                    r.subscribe(s)
            rid = r.c.ping()
            while True:
                m = r.c.recv(timeout=10)
                if m.get("req_id") == rid and m["type"] == "pong":
                    break
                r.take(m)
    errors = [e for r in readers for e in r.errors]
    assert not errors, errors[:20]
    with server.client() as fresh:
        for s in symbols:
            snap = fresh.request(fresh.subscribe(s))
            truth = levels(snap)
            for i, r in enumerate(readers):
                assert r.books[s] == truth, f"reader {i}, {s}"
                assert r.seq[s] == snap["seq"], f"reader {i}, {s}"
                assert r.state[s] == snap["state"]
    # The snapshot against the open orders themselves.
    agg: dict[str, dict[str, dict[int, list[int]]]] = {s: {"buy": defaultdict(lambda: [0, 0]),
                                                          "sell": defaultdict(lambda: [0, 0])} for s in symbols}
    for account in (1, 2, 3, 20, 21, 22):
        with server.client() as c:
            c.login(account, cancel_on_disconnect=False)
            for o in c.open_orders():
                if o["symbol"] in agg and o["price"] is not None:
                    lv = agg[o["symbol"]][o["side"]][o["price"]]
                    lv[0] += o["open_qty"]
                    lv[1] += 1
    for s in symbols:
        want = {side: {p: tuple(v) for p, v in agg[s][side].items()} for side in ("buy", "sell")}
        assert readers[0].books[s] == want, s
    for r in readers:
        r.c.close()
    for t in traders:
        t.c.close()

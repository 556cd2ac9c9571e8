"""Eight clients send a few thousand random orders at once; the fills they
receive are exactly the trades of an in-process Engine fed the same commands
in the order the server sequenced them (the seq of each direct reply)."""

from __future__ import annotations

import random
import threading
from typing import Any

from pyengine import Engine, Trade
from pyengine.client import Client
from pyengine.server.config import DEFAULT_INSTRUMENTS

from .conftest import RunningServer

CLIENTS = 8
COMMANDS = 500
SYMBOLS = ("ESZ6", "CLF7")
MID = {"ESZ6": 450_000, "CLF7": 7_000}
TICK = {"ESZ6": 25, "CLF7": 1}


def client_commands(k: int) -> list[dict[str, Any]]:
    """Random commands of client k; cancels and modifies address its own
    earlier orders by client order id, so they can be sent without waiting."""
    rng = random.Random(1000 + k)
    cmds: list[dict[str, Any]] = []
    coids: list[tuple[str, str]] = []
    for i in range(COMMANDS):
        r = rng.random()
        if r < 0.7 or not coids:
            symbol = rng.choice(SYMBOLS)
            coid = f"k{k}-{i}"
            msg = {"type": "new_order", "symbol": symbol, "side": rng.choice(["buy", "sell"]),
                   "qty": rng.randint(1, 9), "client_order_id": coid}
            if rng.random() < 0.08:
                msg.update(order_type="market", tif="ioc")
            else:
                msg.update(price=MID[symbol] + TICK[symbol] * rng.randint(-6, 6),
                           tif=rng.choice(["gtc", "gtc", "gtc", "ioc", "fok"]))
            coids.append((symbol, coid))
        elif r < 0.9:
            msg = {"type": "cancel", "client_order_id": rng.choice(coids)[1]}
        else:
            symbol, coid = rng.choice(coids)
            msg = {"type": "modify", "client_order_id": coid, "qty": rng.randint(0, 9)}
            if rng.random() < 0.5:
                msg["price"] = MID[symbol] + TICK[symbol] * rng.randint(-6, 6)
        msg["req_id"] = i + 1
        cmds.append(msg)
    return cmds


def run_client(port: int, k: int, out: dict[int, Any], done: threading.Event) -> None:
    cmds = client_commands(k)
    replies: dict[int, dict[str, Any]] = {}
    fills: list[dict[str, Any]] = []
    with Client("127.0.0.1", port, timeout=30) as c:
        c.login(k + 1)
        for msg in cmds:
            c.send(msg)
        while len(replies) < len(cmds):
            m = c.recv()
            if m["type"] == "fill":
                fills.append(m)
            elif m.get("req_id") is not None:
                replies[m["req_id"] - 1] = m
        # Fills of resting orders can still come as other clients trade with
        # them; once everyone is done they are all in (checked below).
        out[k] = (cmds, replies, fills)
        done.wait(60)
        while True:
            try:
                m = c.recv(timeout=1.0)
            except TimeoutError:
                break
            if m["type"] == "fill":
                fills.append(m)



def test_fills_match_an_in_process_engine(server: RunningServer) -> None:
    results: dict[int, Any] = {}
    done = threading.Event()
    threads = [threading.Thread(target=run_client, args=(server.port, k, results, done)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    while len(results) < CLIENTS and any(t.is_alive() for t in threads):
        threads[0].join(0.05)
    done.set()
    for t in threads:
        t.join(120)
    assert len(results) == CLIENTS

    # Every command got a direct reply that went through the engine.
    sequenced = []
    for k, (cmds, replies, _) in results.items():
        for i, msg in enumerate(cmds):
            reply = replies[i]
            assert reply["type"] in ("ack", "reject", "cancelled", "modified"), reply
            sequenced.append((reply["seq"], k, msg, reply))
    sequenced.sort(key=lambda s: s[0])
    assert [s[0] for s in sequenced] == list(range(1, CLIENTS * COMMANDS + 1))

    eng = Engine()
    for inst in DEFAULT_INSTRUMENTS:
        eng.add_instrument(inst.symbol, tick_size=inst.tick_size, lot_size=inst.lot_size,
                           price_band=inst.price_band, market_protection=inst.market_protection)
    trades = []
    for seq, k, msg, reply in sequenced:
        account = k + 1
        if msg["type"] == "new_order":
            evs = eng.submit(msg["symbol"], msg["side"], msg["qty"], msg.get("price"), account=account,
                             client_order_id=msg["client_order_id"], tif=msg.get("tif", "gtc"),
                             order_type=msg.get("order_type", "limit"))
        elif msg["type"] == "cancel":
            evs = eng.cancel(client_order_id=msg["client_order_id"], account=account)
        else:
            evs = eng.modify(client_order_id=msg["client_order_id"], account=account, qty=msg["qty"],
                             price=msg.get("price"))
        assert evs[0].seq == seq
        kinds = {"ack": "Accepted", "reject": "Rejected", "cancelled": "Cancelled", "modified": "Modified"}
        assert type(evs[0]).__name__ == kinds[reply["type"]], (msg, reply, evs)
        trades += [e for e in evs if type(e) is Trade]

    fills = [f for _, (_, _, fs) in results.items() for f in fs]
    by_trade: dict[int, dict[str, dict[str, Any]]] = {}
    for f in fills:
        assert f["liquidity"] not in by_trade.setdefault(f["trade_id"], {}), "a fill came twice"
        by_trade[f["trade_id"]][f["liquidity"]] = f
    assert len(trades) > 200  # the flow really trades
    assert sorted(by_trade) == [t.trade_id for t in trades]
    for t in trades:
        taker, maker = by_trade[t.trade_id]["taker"], by_trade[t.trade_id]["maker"]
        assert (taker["order_id"], maker["order_id"]) == (t.taker_order_id, t.maker_order_id)
        assert taker["price"] == maker["price"] == t.price
        assert taker["qty"] == maker["qty"] == t.qty
        assert (taker["leaves"], maker["leaves"]) == (t.taker_leaves, t.maker_leaves)

"""The synthetic mixed order flows of the benchmarks, in Python.

The same shape as the C benchmark's flow (csrc/tests/flow.c): about 60% limit
adds (a sixth of them crossing the spread), 35% cancels (of an open order while
the book is above `resting`, else of one already gone: 3,288 of the 70,056 of
``generate(200_000)`` are refused), 5% market orders, around a random-walk
mid, over a book kept near `resting` open orders within `levels` ticks of the
touch (so a hundred or more orders per level).

The generator drives a scratch ``Engine`` to know which orders are open; the
resulting stream is deterministic for a seed and replays identically on a
fresh engine, as one call per operation (``ops``) or packed (``packed``).
``DEEP`` is a second shape: a few deep levels (a thousand or more orders
each) and cancels that mostly name orders already gone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyengine import Accepted, Cancelled, Engine, Trade, pack_cancel, pack_new_order

SYMBOL = "FLOW"

# The deep-levels, mostly-stale-cancels shape: generate(n, **DEEP).
DEEP = {"resting": 20_000, "levels": 8, "stale": 0.8}

# Operation kinds in `Flow.ops`.
ADD, CANCEL, MARKET = 0, 1, 2


@dataclass
class Flow:
    warmup: list[tuple]  # passive adds that build the book
    ops: list[tuple]  # (ADD, side, qty, price, account) | (CANCEL, id, account) | (MARKET, side, qty, account)

    def packed(self, ops: list[tuple]) -> bytes:
        """The operations as packed commands for ``Engine.process_batch``."""
        out = []
        for op in ops:
            if op[0] == ADD:
                out.append(pack_new_order(0, op[1], op[2], op[3], account=op[4]))
            elif op[0] == CANCEL:
                out.append(pack_cancel(op[1], account=op[2]))
            else:
                out.append(pack_new_order(0, op[1], op[2], order_type="market", tif="ioc", account=op[3]))
        return b"".join(out)


def new_engine() -> Engine:
    eng = Engine(expected_orders=1 << 17)
    eng.add_instrument(SYMBOL, tick_size=1, lot_size=1)
    return eng


def generate(
    n: int,
    *,
    seed: int = 7,
    resting: int = 50_000,
    levels: int = 200,
    mid: int = 100_000,
    stale: float | None = None,
) -> Flow:
    """`n` operations after a book of about `resting` orders within `levels`
    ticks of the touch. A cancel targets an order that is no longer open
    with probability `stale` (default: only while the book is at or below
    `resting` orders, which keeps it there)."""
    rng = random.Random(seed)
    eng = new_engine()
    live: list[int] = []  # open order ids
    pos: dict[int, int] = {}  # id -> index in live
    owner: dict[int, int] = {}  # id -> account
    dead: list[int] = []  # ids that finished recently (a ring)

    def done(oid: int) -> None:
        i = pos.pop(oid, None)
        if i is None:
            return
        last = live.pop()
        if last != oid:
            live[i] = last
            pos[last] = i
        if len(dead) < 4096:
            dead.append(oid)
        else:
            dead[rng.randrange(4096)] = oid

    def run(op: tuple) -> None:
        if op[0] == ADD:
            evs = eng.submit(SYMBOL, op[1], op[2], op[3], account=op[4])
        elif op[0] == CANCEL:
            evs = eng.cancel(op[1], account=op[2])
        else:
            evs = eng.submit(SYMBOL, op[1], op[2], order_type="market", tif="ioc", account=op[3])
        for ev in evs:
            if type(ev) is Trade and ev.maker_leaves == 0:
                done(ev.maker_order_id)
            elif type(ev) is Cancelled:
                done(ev.order_id)
        first = evs[0]
        if type(first) is Accepted and eng.order(first.order_id) is not None:
            pos[first.order_id] = len(live)
            live.append(first.order_id)
        if type(first) is Accepted:
            owner[first.order_id] = first.account

    def passive() -> tuple:
        depth = 1 + rng.randrange(levels) * rng.randrange(levels) // levels
        side = "buy" if rng.randrange(2) else "sell"
        price = mid - depth if side == "buy" else mid + depth
        return (ADD, side, 1 + rng.randrange(10), price, rng.randrange(1000))

    warmup = []
    while len(live) < resting and len(warmup) < 2 * resting:
        op = passive()
        warmup.append(op)
        run(op)
    ops = []
    for _ in range(n):
        if rng.randrange(50) == 0:
            mid += 1 if rng.randrange(2) else -1
        r = rng.randrange(100)
        if r < 50:
            op = passive()
        elif r < 60:
            # Crossing: a few ticks through the mid, sized like the passive adds.
            _, side, qty, _, account = passive()
            through = 1 + rng.randrange(4)
            op = (ADD, side, qty, mid + through if side == "buy" else mid - through, account)
        elif r < 95:
            if stale is not None:
                fresh = not dead or (live and rng.random() >= stale)
            else:
                fresh = len(live) > resting or not dead
            if fresh and live:
                oid = live[rng.randrange(len(live))]
            else:
                oid = dead[rng.randrange(len(dead))]
            op = (CANCEL, oid, owner[oid])
        else:
            op = (MARKET, "buy" if rng.randrange(2) else "sell", 1 + rng.randrange(10), rng.randrange(1000))
        ops.append(op)
        run(op)
    return Flow(warmup, ops)


def replay(eng: Engine, ops: list[tuple]) -> None:
    """Run operations one call each, as a user of ``Engine`` would."""
    submit, cancel = eng.submit, eng.cancel
    for op in ops:
        kind = op[0]
        if kind == ADD:
            submit(SYMBOL, op[1], op[2], op[3], account=op[4])
        elif kind == CANCEL:
            cancel(op[1], account=op[2])
        else:
            submit(SYMBOL, op[1], op[2], order_type="market", tif="ioc", account=op[3])

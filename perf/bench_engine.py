"""pyperf suite: one ``Engine`` call per operation, on books of several depths.

    python perf/bench_engine.py [--depths 10,10000,1000000] [pyperf options: --fast, -o FILE, ...]

Each benchmark's value is the time of one call (the method call, the C work
and the event objects it returns), on a book that already holds DEPTH resting
orders (``--depths``, default 10,10000,1000000): the book is
built untimed with ``process_batch`` and sits away from the prices the timed
calls touch.

- add_resting: a GTC limit order that rests;
- cancel: cancel of an open order;
- match_1_level: an order that trades with one maker and is done;
- sweep_5_levels: an order that takes five price levels;
- modify_keep: lower the quantity, keeping time priority;
- modify_reprice: move the price, losing it;
- market: a market order filling against one maker.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache import cached  # noqa: E402

from pyengine import Engine, pack_new_order  # noqa: E402

SYMBOL = "BENCH"
MID = 1_000_000  # timed calls trade and rest around here
FAR = 100_000  # the DEPTH orders rest this many ticks away from MID


def book_commands(depth: int) -> bytes:
    """The packed orders of a `depth`-order book, kept between runs
    (perf/cache.py): pyperf runs each benchmark in many processes and
    packing a million orders takes a second."""
    return cached("book", lambda: b"".join(
        pack_new_order(0, "buy" if i % 2 else "sell", 1 + i % 7,
                       MID - FAR - i % 1000 if i % 2 else MID + FAR + i % 1000, account=9)
        for i in range(depth)
    ), [Path(__file__)], depth)


def book(depth: int) -> Engine:
    """An engine whose book holds `depth` resting orders, far from MID."""
    eng = Engine(expected_orders=depth + (1 << 16))
    eng.add_instrument(SYMBOL, tick_size=1, lot_size=1)
    eng.process_batch(book_commands(depth), collect_events=False)
    return eng


def add_resting(loops: int, depth: int) -> float:
    eng = book(depth)
    submit = eng.submit
    t0 = time.perf_counter()
    for i in range(loops):
        submit(SYMBOL, "buy", 1, MID - 1 - i % 100, account=1)
    return time.perf_counter() - t0


def cancel(loops: int, depth: int) -> float:
    eng = book(depth)
    ids = [eng.submit(SYMBOL, "buy", 1, MID - 1 - i % 100, account=1)[0].order_id for i in range(loops)]
    cancel_ = eng.cancel
    t0 = time.perf_counter()
    for oid in ids:
        cancel_(oid, account=1)
    return time.perf_counter() - t0


def match_1_level(loops: int, depth: int) -> float:
    eng = book(depth)
    for _ in range(loops):
        eng.submit(SYMBOL, "sell", 1, MID, account=2)
    submit = eng.submit
    t0 = time.perf_counter()
    for _ in range(loops):
        submit(SYMBOL, "buy", 1, MID, account=1)
    return time.perf_counter() - t0


SWEEPS = FAR // 5 - 1  # sweeps whose asks fit between MID and the book's asks at MID+FAR


def sweep_5_levels(loops: int, depth: int) -> float:
    eng = book(depth)
    submit = eng.submit
    elapsed = 0.0
    # In rounds of SWEEPS (untimed: laying out the asks): iteration i of a
    # round finds five one-lot asks at MID+5i .. MID+5i+4 as the best levels,
    # below the book's own asks, and takes all five.
    for start in range(0, loops, SWEEPS):
        n = min(SWEEPS, loops - start)
        eng.process_batch(b"".join(pack_new_order(0, "sell", 1, MID + p, account=2) for p in range(5 * n)),
                          collect_events=False)
        t0 = time.perf_counter()
        for i in range(n):
            submit(SYMBOL, "buy", 5, MID + 5 * i + 4, account=1)
        elapsed += time.perf_counter() - t0
    return elapsed


def modify_keep(loops: int, depth: int) -> float:
    eng = book(depth)
    ids = [eng.submit(SYMBOL, "buy", 1_000_000, MID - 1 - i % 100, account=1)[0].order_id for i in range(loops)]
    modify = eng.modify
    t0 = time.perf_counter()
    for oid in ids:
        modify(oid, qty=999_999, account=1)
    return time.perf_counter() - t0


def modify_reprice(loops: int, depth: int) -> float:
    eng = book(depth)
    ids = [eng.submit(SYMBOL, "buy", 10, MID - 1 - i % 100, account=1)[0].order_id for i in range(loops)]
    modify = eng.modify
    t0 = time.perf_counter()
    for i, oid in enumerate(ids):
        modify(oid, qty=10, price=MID - 200 - i % 100, account=1)
    return time.perf_counter() - t0


def market(loops: int, depth: int) -> float:
    eng = book(depth)
    cmds = b"".join(pack_new_order(0, "sell", 1, MID + i % 50, account=2) for i in range(loops))
    eng.process_batch(cmds, collect_events=False)
    submit = eng.submit
    t0 = time.perf_counter()
    for _ in range(loops):
        submit(SYMBOL, "buy", 1, order_type="market", tif="ioc", account=1)
    return time.perf_counter() - t0


BENCHMARKS = (add_resting, cancel, match_1_level, sweep_5_levels, modify_keep, modify_reprice, market)


def main() -> None:
    # pyperf reruns this script in worker processes: pass our option along.
    runner = pyperf.Runner(add_cmdline_args=lambda cmd, args: cmd.extend(("--depths", args.depths)))
    runner.argparser.add_argument("--depths", default="10,10000,1000000", help="book depths, comma-separated")
    args = runner.parse_args()
    runner.metadata["description"] = "pyengine.Engine, one call per operation"
    for depth in (int(d) for d in args.depths.split(",")):
        for fn in BENCHMARKS:
            runner.bench_time_func(f"{fn.__name__}[depth={depth}]", fn, depth)


if __name__ == "__main__":
    main()

"""What the C core buys: the same order flow through three paths.

    python perf/compare_python.py [--ops 300000] [--seed 7] [--repeat 5]

Runs two of perf/flow.py's flows (fixed seed, book built first and untimed):
the mixed flow, and one with a few deep levels whose cancels mostly name
orders already gone (flow.DEEP). On each:

1. ``pyengine.Engine``, one ``submit``/``cancel`` call per operation, with
   plain strings and ``cancel(oid, account=...)``, then again with enum
   members and ``cancel(oid)``;
2. ``Engine.process_batch``, all operations packed in one call;
3. a careful pure-Python price-time matcher (perf/pymatcher.py: dicts,
   heaps, OrderedDict levels) returning the same event objects.

It checks that all paths produce the same trades, then prints each path's
median throughput over ``--repeat`` runs and the ratios to pure Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402
import pymatcher  # noqa: E402

from pyengine import Engine, OrderType, Side, Trade  # noqa: E402


def run_pure(m: pymatcher.PyMatcher, ops: list[tuple], collect: list | None = None) -> None:
    submit, cancel = m.submit, m.cancel
    for op in ops:
        kind = op[0]
        if kind == flow.ADD:
            evs = submit(op[1], op[2], op[3], op[4])
        elif kind == flow.CANCEL:
            evs = cancel(op[1], op[2])
        else:
            evs = submit(op[1], op[2], None, op[3])
        if collect is not None:
            collect.extend(e for e in evs if type(e) is Trade)


def run_engine(eng: object, ops: list[tuple], collect: list) -> None:
    submit, cancel = eng.submit, eng.cancel  # type: ignore[attr-defined]
    for op in ops:
        kind = op[0]
        if kind == flow.ADD:
            evs = submit(flow.SYMBOL, op[1], op[2], op[3], account=op[4])
        elif kind == flow.CANCEL:
            evs = cancel(op[1], account=op[2])
        else:
            evs = submit(flow.SYMBOL, op[1], op[2], order_type="market", tif="ioc", account=op[3])
        collect.extend(e for e in evs if type(e) is Trade)


def same_trades(f: flow.Flow) -> int:
    """All three paths give the same trades; returns how many."""
    a: list = []
    eng = flow.new_engine()
    flow.replay(eng, f.warmup)
    run_engine(eng, f.ops, a)
    b = flow.new_engine()
    b.process_batch(f.packed(f.warmup), collect_events=False)
    batched = [e for e in b.decode_events(b.process_batch(f.packed(f.ops)).events) if type(e) is Trade]
    c: list = []
    m = pymatcher.PyMatcher(flow.SYMBOL)
    run_pure(m, f.warmup)
    run_pure(m, f.ops, c)
    if not a == batched == c:
        raise SystemExit("the paths disagree on the trades: that is a bug")
    return len(a)


def timed(setup, run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        state = setup()
        t0 = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_engine_natural(eng: Engine, ops: list[tuple]) -> None:
    """One call per operation in the forms a user reaches for first: enum
    members, a market order by its type alone, a cancel by id alone."""
    submit, cancel, market = eng.submit, eng.cancel, OrderType.MARKET
    for op in ops:
        kind = op[0]
        if kind == flow.ADD:
            submit(flow.SYMBOL, op[1], op[2], op[3], account=op[4])
        elif kind == flow.CANCEL:
            cancel(op[1])
        else:
            submit(flow.SYMBOL, op[1], op[2], order_type=market, account=op[3])


def as_members(ops: list[tuple]) -> list[tuple]:
    """The flow with each side as a Side member."""
    side = {"buy": Side.BUY, "sell": Side.SELL}
    return [(op[0], side[op[1]], *op[2:]) if op[0] != flow.CANCEL else op for op in ops]


def compare(title: str, f: flow.Flow, repeat: int) -> None:
    trades = same_trades(f)
    n = len(f.ops)
    warm_packed, ops_packed = f.packed(f.warmup), f.packed(f.ops)
    natural_ops = as_members(f.ops)

    def engine_setup() -> Engine:
        eng = flow.new_engine()
        eng.process_batch(warm_packed, collect_events=False)
        return eng

    def pure_setup() -> pymatcher.PyMatcher:
        m = pymatcher.PyMatcher(flow.SYMBOL)
        run_pure(m, f.warmup)
        return m

    results = {
        "Engine, one call per operation": timed(engine_setup, lambda e: flow.replay(e, f.ops), repeat),
        "... enum members, cancel(oid)": timed(engine_setup, lambda e: run_engine_natural(e, natural_ops), repeat),
        "Engine.process_batch": timed(engine_setup, lambda e: e.process_batch(ops_packed), repeat),
        "pure-Python matcher": timed(pure_setup, lambda m: run_pure(m, f.ops), repeat),
    }
    pure = results["pure-Python matcher"]
    cancels = sum(op[0] == flow.CANCEL for op in f.ops)
    print(f"{title}: {n:,} operations ({cancels:,} cancels) after a {len(f.warmup):,}-order book; "
          f"{trades:,} trades, the same on every path; median of {repeat} runs")
    for name, secs in results.items():
        print(f"  {name:<32} {n / secs / 1e6:7.2f} M ops/s  {secs / n * 1e9:8.0f} ns/op  {pure / secs:6.2f}x pure Python")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    compare("mixed flow", flow.generate(args.ops, seed=args.seed), args.repeat)
    compare("deep levels, mostly-stale cancels", flow.generate(args.ops, seed=args.seed, **flow.DEEP), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

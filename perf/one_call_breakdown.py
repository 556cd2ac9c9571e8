"""Where the time of one ``Engine`` call goes (docs/benchmarks.md).

    python perf/one_call_breakdown.py

1. Warm caches: the same resting order and its cancel, over and over on a
   small book (the cost of the binding itself).
2. The mixed flow of perf/flow.py, one call per operation, each call timed
   with ``time.perf_counter_ns`` and grouped by what it was and how many
   events it returned (the timer's own cost is subtracted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402

KINDS = {flow.ADD: "limit", flow.CANCEL: "cancel", flow.MARKET: "market"}


def warm() -> None:
    eng = flow.new_engine()
    submit, cancel = eng.submit, eng.cancel
    n = 200_000
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            (ev,) = submit(flow.SYMBOL, "buy", 5, 1000, account=1)
            cancel(ev.order_id, account=1)
        runs.append((time.perf_counter_ns() - t0) / n / 2)
    print(f"warm caches: {statistics.median(runs):.0f} ns per call (a resting limit order, then its cancel)")


def mixed() -> None:
    f = flow.generate(200_000)
    eng = flow.new_engine()
    flow.replay(eng, f.warmup)
    clock = time.perf_counter_ns
    timer = statistics.median((lambda t: clock() - t)(clock()) for _ in range(10_000))
    total: dict[tuple[str, int], int] = defaultdict(int)
    count: dict[tuple[str, int], int] = defaultdict(int)
    submit, cancel = eng.submit, eng.cancel
    for op in f.ops:
        kind = op[0]
        t0 = clock()
        if kind == flow.ADD:
            evs = submit(flow.SYMBOL, op[1], op[2], op[3], account=op[4])
        elif kind == flow.CANCEL:
            evs = cancel(op[1], account=op[2])
        else:
            evs = submit(flow.SYMBOL, op[1], op[2], order_type="market", tif="ioc", account=op[3])
        dt = clock() - t0 - timer
        key = (KINDS[kind], len(evs))
        total[key] += dt
        count[key] += 1
    print(f"mixed flow, {len(f.ops)} operations (timer cost {timer:.0f} ns subtracted):")
    print("  kind    events   calls   mean ns   ns per operation of the flow")
    for key in sorted(total, key=lambda k: -total[k])[:10]:
        share = total[key] / len(f.ops)
        print(f"  {key[0]:<7} {key[1]:>6} {count[key]:>7} {total[key] / count[key]:>9.0f} {share:>9.0f}")
    print(f"  all: {sum(total.values()) / len(f.ops):.0f} ns per operation")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    warm()
    mixed()

"""Order churn beside long-lived orders: the order-id index under wrap-around.

    python perf/bench_id_churn.py [--churn 400000] [--old 0,10000,100000,300000]

For each count of old orders: rest that many orders deep in the book, then
add one order and cancel the previous one, CHURN times, in one
``process_batch``, and print the time per command. Order ids keep rising
while the old orders stay, so the id counter laps the index table many
times: the cost must not grow with the number of old orders.
"""

from __future__ import annotations

import argparse
import time

from pyengine import Engine, pack_cancel, pack_new_order


def churn_ns(old: int, churn: int) -> float:
    eng = Engine()
    eng.add_instrument("X")
    resting = b"".join(pack_new_order(0, "buy", 1, 1000 - i % 500, account=1) for i in range(old))
    eng.process_batch(resting, collect_events=False)
    first = old + 1  # the order id of the first churn order
    ops = []
    for k in range(churn):
        ops.append(pack_new_order(0, "sell", 1, 2000 + k % 7, account=2))
        if k:
            ops.append(pack_cancel(first + k - 1, account=2))
    commands = b"".join(ops)
    t0 = time.perf_counter()
    eng.process_batch(commands, collect_events=False)
    elapsed = time.perf_counter() - t0
    eng.verify()
    return elapsed / (len(ops)) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--churn", type=int, default=400_000)
    ap.add_argument("--old", default="0,10000,100000,300000")
    args = ap.parse_args()
    for old in (int(x) for x in args.old.split(",")):
        print(f"{old:>9,} old orders: {churn_ns(old, args.churn):8.1f} ns per command")


if __name__ == "__main__":
    main()

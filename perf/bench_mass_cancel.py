"""One account's cancel-all beside a large book of other accounts' orders.

    python perf/bench_mass_cancel.py [--book 10000,100000,1000000] [--repeat 200]

For each book size: rest that many orders of account 1, then REPEAT times
rest one order of account 2 and cancel all of account 2's orders, in one
``process_batch``; print the engine's time for the first cancel-all (an
account's first walks the books to start the engine's list of its orders)
and the median of the others (its own orders only). Before the engine kept
those lists, every cancel-all walked every order of the books.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pyengine import Engine, pack_cancel_all, pack_new_order


def cancel_all_us(book: int, repeat: int) -> tuple[float, float]:
    eng = Engine()
    eng.add_instrument("X")
    resting = b"".join(pack_new_order(0, "buy", 1, 1000 - i % 500, account=1) for i in range(book))
    eng.process_batch(resting, collect_events=False)
    order = pack_new_order(0, "sell", 1, 2000, account=2)
    cancel_all = pack_cancel_all(2)  # every instrument
    times = []
    for _ in range(repeat):
        eng.process_batch(order, collect_events=False)
        t0 = time.perf_counter()
        eng.process_batch(cancel_all, collect_events=False)
        times.append(time.perf_counter() - t0)
    eng.verify()
    return times[0] * 1e6, statistics.median(times[1:]) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--book", default="10000,100000,1000000", help="book sizes, orders of other accounts")
    ap.add_argument("--repeat", type=int, default=200, help="cancel-alls per book size (at least 2)")
    args = ap.parse_args()
    if args.repeat < 2:
        ap.error("--repeat must be at least 2")
    for book in (int(x) for x in args.book.split(",")):
        first, then = cancel_all_us(book, args.repeat)
        print(f"{book:>9,} orders of others: first cancel-all {first:9.1f} µs, then {then:7.1f} µs (median)")


if __name__ == "__main__":
    main()

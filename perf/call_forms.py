"""What each documented form of an Engine call costs, beside the plain call.

    python perf/call_forms.py [--calls 100000] [--repeat 7]

For each verb (submit, cancel, modify, order, book) it times the plain
positional call and every documented variant -- enum members, numpy integers,
client order ids, keywords, cancels without an account -- on the same book,
and prints the median ns per call over ``--repeat`` runs and the ratio to the
verb's plain call. Each run is a Python loop over prepared arguments, so every
figure includes the loop's own cost (tens of ns), as a user's loop would.
Enum members are bound to local names first (an attribute lookup such as
``Side.BUY`` costs CPython some 250 ns of its own on 3.11).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from pyengine import Engine, SelfTradePrevention, Side, TimeInForce, pack_new_order

SYMBOL = "X"
BOOK_LEVELS = 20  # per side, for book()


def new_engine() -> Engine:
    eng = Engine(expected_orders=1 << 18)
    eng.add_instrument(SYMBOL)
    return eng


def resting(n: int, *, coids: bool = False) -> Engine:
    """An engine holding orders 1..n of account 1, qty 2, on 20 bid levels
    (client order ids o1..on if asked)."""
    eng = new_engine()
    eng.process_batch(
        b"".join(
            pack_new_order(0, "buy", 2, 900 - i % BOOK_LEVELS, account=1, client_order_id=f"o{i + 1}" if coids else None)
            for i in range(n)
        ),
        collect_events=False,
    )
    for i in range(BOOK_LEVELS):
        eng.submit(SYMBOL, "sell", 1, 1000 + i, account=2)
    return eng


# Each form: (label, the engine it starts from, the timed loop).
Form = tuple[str, Callable[[int], Engine], Callable[[Engine, int], None]]


def submit_forms() -> list[Form]:
    buy, gtc, stp = Side.BUY, TimeInForce.GTC, SelfTradePrevention.CANCEL_OLDEST

    def plain(e: Engine, n: int) -> None:
        submit = e.submit
        for p in prices(n):
            submit(SYMBOL, "buy", 1, p)

    def account(e: Engine, n: int) -> None:
        submit = e.submit
        for p in prices(n):
            submit(SYMBOL, "buy", 1, p, account=1)

    def members(e: Engine, n: int) -> None:
        submit = e.submit
        for p in prices(n):
            submit(SYMBOL, buy, 1, p, tif=gtc, stp=stp, account=1)

    def keywords(e: Engine, n: int) -> None:
        submit = e.submit
        for p in prices(n):
            submit(symbol=SYMBOL, side="buy", qty=1, price=p, tif="gtc", account=1)

    def numpy_ints(e: Engine, n: int) -> None:
        submit = e.submit
        qty, acct = np.int64(1), np.uint32(1)
        for p in numpy_prices[:n]:
            submit(SYMBOL, "buy", qty, p, account=acct)

    numpy_prices = list(np.array(prices(1 << 20), dtype=np.int64))  # numpy scalars

    coid_list = [f"c{i}" for i in range(1 << 20)]

    def coid(e: Engine, n: int) -> None:
        submit = e.submit
        for p, c in zip(prices(n), coid_list):
            submit(SYMBOL, "buy", 1, p, account=1, client_order_id=c)

    def zipped(e: Engine, n: int) -> None:  # the loop of the form above, with no coid
        submit = e.submit
        for p, _ in zip(prices(n), coid_list):
            submit(SYMBOL, "buy", 1, p, account=1)

    start = lambda n: new_engine()  # noqa: E731
    return [
        ('submit("X", "buy", 1, p)', start, plain),
        ("... account=1", start, account),
        ("... Side.BUY, tif=TimeInForce.GTC, stp=member, account=1", start, members),
        ("... all by keyword", start, keywords),
        ("... numpy int64 qty and price, uint32 account", start, numpy_ints),
        ("... account=1 in a zip loop", start, zipped),
        ("... account=1, client_order_id=c in the same zip loop", start, coid),
    ]


def prices(n: int) -> list[int]:
    return [900 - i % BOOK_LEVELS for i in range(n)]


def ids(n: int) -> range:
    return range(1, n + 1)


def cancel_forms() -> list[Form]:
    def plain(e: Engine, n: int) -> None:
        cancel = e.cancel
        for i in ids(n):
            cancel(i)

    def account(e: Engine, n: int) -> None:
        cancel = e.cancel
        for i in ids(n):
            cancel(i, account=1)

    def numpy_id(e: Engine, n: int) -> None:
        cancel = e.cancel
        for i in numpy_ids[:n]:
            cancel(i)

    numpy_ids = list(np.arange(1, (1 << 20) + 1, dtype=np.uint64))  # numpy scalars

    coids = [f"o{i}" for i in range(1, 1 << 20)]

    def by_coid(e: Engine, n: int) -> None:
        cancel = e.cancel
        for c in coids[:n]:
            cancel(client_order_id=c, account=1)

    def stale(e: Engine, n: int) -> None:
        cancel = e.cancel
        for i in ids(n):
            cancel(i + (1 << 30))

    return [
        ("cancel(oid)", resting, plain),
        ("... account=1", resting, account),
        ("... a numpy uint64 id", resting, numpy_id),
        ("cancel(client_order_id=c, account=1)", lambda n: resting(n, coids=True), by_coid),
        ("cancel(oid) of an unknown order (Rejected)", resting, stale),
    ]


def modify_forms() -> list[Form]:
    def plain(e: Engine, n: int) -> None:
        modify = e.modify
        for i in ids(n):
            modify(i, 1)

    def account(e: Engine, n: int) -> None:
        modify = e.modify
        for i in ids(n):
            modify(i, 1, account=1)

    def price(e: Engine, n: int) -> None:
        modify = e.modify
        for i in ids(n):
            modify(i, price=800)

    coids = [f"o{i}" for i in range(1, 1 << 20)]

    def by_coid(e: Engine, n: int) -> None:
        modify = e.modify
        for c in coids[:n]:
            modify(client_order_id=c, account=1, qty=1)

    return [
        ("modify(oid, 1)", resting, plain),
        ("... account=1", resting, account),
        ("modify(oid, price=800) (a new level, priority lost)", resting, price),
        ("modify(client_order_id=c, account=1, qty=1)", lambda n: resting(n, coids=True), by_coid),
    ]


def order_forms() -> list[Form]:
    def plain(e: Engine, n: int) -> None:
        order = e.order
        for i in ids(n):
            order(i)

    def account(e: Engine, n: int) -> None:
        order = e.order
        for i in ids(n):
            order(i, account=1)

    coids = [f"o{i}" for i in range(1, 1 << 20)]

    def by_coid(e: Engine, n: int) -> None:
        order = e.order
        for c in coids[:n]:
            order(client_order_id=c, account=1)

    return [
        ("order(oid)", resting, plain),
        ("... account=1", resting, account),
        ("order(client_order_id=c, account=1)", lambda n: resting(n, coids=True), by_coid),
    ]


def book_forms() -> list[Form]:
    def plain(e: Engine, n: int) -> None:
        book = e.book
        for _ in range(n):
            book(SYMBOL)

    def depth1(e: Engine, n: int) -> None:
        book = e.book
        for _ in range(n):
            book(SYMBOL, depth=1)

    def depth10(e: Engine, n: int) -> None:
        book = e.book
        for _ in range(n):
            book(SYMBOL, 10)

    small = lambda n: resting(1000)  # noqa: E731
    return [
        ('book("X") (depth 10: 20 levels)', small, plain),
        ('book("X", 10)', small, depth10),
        ('book("X", depth=1)', small, depth1),
    ]


def measure(form: Form, calls: int, repeat: int) -> float:
    _, start, run = form
    times = []
    for _ in range(repeat):
        eng = start(calls)
        t0 = time.perf_counter()
        run(eng, calls)
        times.append(time.perf_counter() - t0)
        eng.verify()
        eng.close()
    return statistics.median(times) / calls * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000, help="calls per run (default 100,000)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per form; the median is shown (default 7)")
    args = ap.parse_args()
    worst = 0.0
    print(f"ns per call, median of {args.repeat} runs of {args.calls:,} calls; ratio to the verb's plain call")
    for verb, forms in (
        ("submit", submit_forms()),
        ("cancel", cancel_forms()),
        ("modify", modify_forms()),
        ("order", order_forms()),
        ("book", book_forms()),
    ):
        base = measure(forms[0], args.calls, args.repeat)
        print(f"\n{verb}")
        print(f"  {forms[0][0]:<62} {base:7.0f} ns")
        for form in forms[1:]:
            ns = measure(form, args.calls, args.repeat)
            worst = max(worst, ns / base) if "unknown" not in form[0] and "new level" not in form[0] else worst
            print(f"  {form[0]:<62} {ns:7.0f} ns  {ns / base:5.2f}x")
    print(f"\nworst documented form: {worst:.2f}x its plain call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

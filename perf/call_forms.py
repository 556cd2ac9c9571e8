"""What each documented form of an Engine call costs, beside the plain call.

    python perf/call_forms.py [--calls 100000] [--repeat 7]

For each verb (submit, cancel, modify, order, book) it times the plain
positional call and every documented variant -- enum members, numpy integers,
client order ids, keywords, cancels without an account -- on the same book,
and prints the median ns per call over ``--repeat`` runs and the ratio to the
verb's plain call. The forms of a verb run in turn, once each a round, the
order turned by one each round. Each run is a Python loop over a list of
the calls' arguments, made for every form before its clock starts, so every
figure includes the loop's own cost (tens of ns), as a user's loop would,
and no form pays for making its arguments.
Enum members are bound to local names first (an attribute lookup such as
``Side.BUY`` costs CPython some 250 ns of its own on 3.11).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

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


# Each form: (label, the engine it starts from, the arguments of its n calls,
# the timed loop over them). The arguments are made before the clock starts,
# for every form alike: the timed loop only iterates over them and calls.
Form = tuple[str, Callable[[int], Engine], Callable[[int], Any], Callable[[Engine, Any], None]]


def prices(n: int) -> list[int]:
    return [900 - i % BOOK_LEVELS for i in range(n)]


def ids(n: int) -> list[int]:
    return list(range(1, n + 1))


def coids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, n + 1)]


def submit_forms() -> list[Form]:
    buy, gtc, stp = Side.BUY, TimeInForce.GTC, SelfTradePrevention.CANCEL_OLDEST

    def plain(e: Engine, ps: list[int]) -> None:
        submit = e.submit
        for p in ps:
            submit(SYMBOL, "buy", 1, p)

    def account(e: Engine, ps: list[int]) -> None:
        submit = e.submit
        for p in ps:
            submit(SYMBOL, "buy", 1, p, account=1)

    def members(e: Engine, ps: list[int]) -> None:
        submit = e.submit
        for p in ps:
            submit(SYMBOL, buy, 1, p, tif=gtc, stp=stp, account=1)

    def keywords(e: Engine, ps: list[int]) -> None:
        submit = e.submit
        for p in ps:
            submit(symbol=SYMBOL, side="buy", qty=1, price=p, tif="gtc", account=1)

    def numpy_prices(n: int) -> list[np.int64]:
        return list(np.array(prices(n), dtype=np.int64))  # numpy scalars

    def numpy_ints(e: Engine, ps: list[np.int64]) -> None:
        submit = e.submit
        qty, acct = np.int64(1), np.uint32(1)
        for p in ps:
            submit(SYMBOL, "buy", qty, p, account=acct)

    def prices_and_coids(n: int) -> tuple[list[int], list[str]]:
        return prices(n), coids(n, "c")

    def coid(e: Engine, args: tuple[list[int], list[str]]) -> None:
        submit = e.submit
        for p, c in zip(*args):
            submit(SYMBOL, "buy", 1, p, account=1, client_order_id=c)

    def zipped(e: Engine, args: tuple[list[int], list[str]]) -> None:  # the loop of the form above, with no coid
        submit = e.submit
        for p, _ in zip(*args):
            submit(SYMBOL, "buy", 1, p, account=1)

    start = lambda n: new_engine()  # noqa: E731
    return [
        ('submit("X", "buy", 1, p)', start, prices, plain),
        ("... account=1", start, prices, account),
        ("... Side.BUY, tif=TimeInForce.GTC, stp=member, account=1", start, prices, members),
        ("... all by keyword", start, prices, keywords),
        ("... numpy int64 qty and price, uint32 account", start, numpy_prices, numpy_ints),
        ("... account=1 in a zip loop", start, prices_and_coids, zipped),
        ("... account=1, client_order_id=c in the same zip loop", start, prices_and_coids, coid),
    ]


def cancel_forms() -> list[Form]:
    def plain(e: Engine, oids: list[int]) -> None:
        cancel = e.cancel
        for i in oids:
            cancel(i)

    def account(e: Engine, oids: list[int]) -> None:
        cancel = e.cancel
        for i in oids:
            cancel(i, account=1)

    def numpy_ids(n: int) -> list[np.uint64]:
        return list(np.arange(1, n + 1, dtype=np.uint64))  # numpy scalars

    def by_coid(e: Engine, cs: list[str]) -> None:
        cancel = e.cancel
        for c in cs:
            cancel(client_order_id=c, account=1)

    def unknown_ids(n: int) -> list[int]:
        return [i + (1 << 30) for i in ids(n)]

    return [
        ("cancel(oid)", resting, ids, plain),
        ("... account=1", resting, ids, account),
        ("... a numpy uint64 id", resting, numpy_ids, plain),
        ("cancel(client_order_id=c, account=1)", lambda n: resting(n, coids=True), lambda n: coids(n, "o"), by_coid),
        ("cancel(oid) of an unknown order (Rejected)", resting, unknown_ids, plain),
    ]


def modify_forms() -> list[Form]:
    def plain(e: Engine, oids: list[int]) -> None:
        modify = e.modify
        for i in oids:
            modify(i, 1)

    def account(e: Engine, oids: list[int]) -> None:
        modify = e.modify
        for i in oids:
            modify(i, 1, account=1)

    def price(e: Engine, oids: list[int]) -> None:
        modify = e.modify
        for i in oids:
            modify(i, price=800)

    def by_coid(e: Engine, cs: list[str]) -> None:
        modify = e.modify
        for c in cs:
            modify(client_order_id=c, account=1, qty=1)

    return [
        ("modify(oid, 1)", resting, ids, plain),
        ("... account=1", resting, ids, account),
        ("modify(oid, price=800) (a new level, priority lost)", resting, ids, price),
        ("modify(client_order_id=c, account=1, qty=1)", lambda n: resting(n, coids=True), lambda n: coids(n, "o"),
         by_coid),
    ]


def order_forms() -> list[Form]:
    def plain(e: Engine, oids: list[int]) -> None:
        order = e.order
        for i in oids:
            order(i)

    def account(e: Engine, oids: list[int]) -> None:
        order = e.order
        for i in oids:
            order(i, account=1)

    def by_coid(e: Engine, cs: list[str]) -> None:
        order = e.order
        for c in cs:
            order(client_order_id=c, account=1)

    return [
        ("order(oid)", resting, ids, plain),
        ("... account=1", resting, ids, account),
        ("order(client_order_id=c, account=1)", lambda n: resting(n, coids=True), lambda n: coids(n, "o"), by_coid),
    ]


def book_forms() -> list[Form]:
    def symbols(n: int) -> list[str]:
        return [SYMBOL] * n

    def plain(e: Engine, ss: list[str]) -> None:
        book = e.book
        for s in ss:
            book(s)

    def depth1(e: Engine, ss: list[str]) -> None:
        book = e.book
        for s in ss:
            book(s, depth=1)

    def depth10(e: Engine, ss: list[str]) -> None:
        book = e.book
        for s in ss:
            book(s, 10)

    small = lambda n: resting(1000)  # noqa: E731
    return [
        ('book("X") (depth 10: 20 levels)', small, symbols, plain),
        ('book("X", 10)', small, symbols, depth10),
        ('book("X", depth=1)', small, symbols, depth1),
    ]


def measure(forms: list[Form], calls: int, repeat: int) -> list[float]:
    """The median ns per call of each of `forms` over `repeat` rounds, each
    round running every form once, in an order turned by one each round: the
    machine's drift, which on a shared VM moves by tens of percent within a
    minute, hits all the forms of a verb alike."""
    times: list[list[float]] = [[] for _ in forms]
    for r in range(repeat):
        first = r % len(forms)
        for i in [*range(first, len(forms)), *range(first)]:
            _, start, arguments, run = forms[i]
            eng = start(calls)
            args = arguments(calls)
            t0 = time.perf_counter()
            run(eng, args)
            times[i].append(time.perf_counter() - t0)
            eng.verify()
            eng.close()
    return [statistics.median(t) / calls * 1e9 for t in times]


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
        base, *rest = measure(forms, args.calls, args.repeat)
        print(f"\n{verb}")
        print(f"  {forms[0][0]:<62} {base:7.0f} ns")
        for form, ns in zip(forms[1:], rest):
            worst = max(worst, ns / base) if "unknown" not in form[0] and "new level" not in form[0] else worst
            print(f"  {form[0]:<62} {ns:7.0f} ns  {ns / base:5.2f}x")
    print(f"\nworst documented form: {worst:.2f}x its plain call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

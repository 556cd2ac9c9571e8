"""What the pieces of a Python call into the engine cost (docs/design.md).

    python perf/binding_costs.py

Prints the median over 7 repeats of each micro-operation, in ns, from
``timeit`` (the loop overhead of an empty function is subtracted).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import timeit
from dataclasses import dataclass

from pyengine import Engine
from pyengine._ffi import ffi, lib
from pyengine.events import Accepted
from pyengine.enums import Side


@dataclass(frozen=True)
class FrozenAccepted:
    seq: int
    order_id: int
    symbol: str
    side: str
    price: int | None
    qty: int
    account: int
    client_order_id: str | None


def ns(fn, number: int = 500_000) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=7)) / number * 1e9


def main() -> None:
    eng = Engine()
    eng.add_instrument("A")
    ptr = eng._ptr
    buf = ffi.new("struct eng_level_info[]", 1)
    info = ffi.new("struct eng_order_info *")
    lock = threading.Lock()
    new = tuple.__new__
    args = (1, 2, "A", Side.BUY, 100, 5, 7, None)

    def empty() -> None:
        pass

    def locked() -> None:
        if not lock.acquire(False):
            raise RuntimeError
        lock.release()

    base = ns(empty)
    rows = [
        ("cffi call, 1 argument (eng_seq)", lambda: lib.eng_seq(ptr)),
        ("cffi call, 5 arguments (eng_book_levels, no work)", lambda: lib.eng_book_levels(ptr, 0, 1, buf, 0)),
        ("read one field of a C struct", lambda: info.qty),
        ("threading.Lock acquire + release", locked),
        ("NamedTuple event via tuple.__new__", lambda: new(Accepted, args)),
        ("NamedTuple event via its constructor", lambda: Accepted(*args)),
        ("frozen dataclass event", lambda: FrozenAccepted(*args)),
    ]
    print(f"empty function call: {base:.0f} ns (subtracted below)")
    for name, fn in rows:
        print(f"{ns(fn) - base:7.0f} ns  {name}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    main()

"""Memory: orders added and cancelled in a loop reuse the engine's memory.

The pools recycle their nodes through free lists and the indexes keep their
size, so once the book has reached its size nothing grows: the C memory the
engine holds is exactly constant and the process's RSS is flat.
"""

from __future__ import annotations

import os

from pyengine import Accepted, Engine


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def add_and_cancel(eng: Engine, n: int) -> None:
    ids = []
    for i in range(n):
        # Bids at 951..1000, asks at 3000..3049: resting, never trading.
        side, price = ("buy", 1000 - i % 50) if i % 2 else ("sell", 3000 + i % 50)
        (ev,) = eng.submit("A", side, 1 + i % 5, price, account=1, client_order_id=f"c{i}")
        assert type(ev) is Accepted
        ids.append(ev.order_id)
    for oid in ids:
        eng.cancel(oid, account=1)


def test_add_cancel_loop_holds_memory_flat() -> None:
    eng = Engine()
    eng.add_instrument("A")
    add_and_cancel(eng, 20_000)  # the pools and indexes reach their size
    held = eng.stats().bytes_reserved
    rss = rss_bytes()
    for _ in range(10):
        add_and_cancel(eng, 20_000)
        assert eng.stats().bytes_reserved == held
        assert eng.stats().open_orders == 0
    eng.verify()
    # 200k more orders came and went; a leak of even a few bytes per order
    # would show as megabytes. Under AddressSanitizer RSS measures its
    # quarantine of freed memory instead (the exact check above still holds).
    if not os.environ.get("PYENGINE_SANITIZED"):
        assert rss_bytes() - rss < 4 << 20


def test_memory_per_resting_order_is_bounded() -> None:
    """docs/benchmarks.md reports the figure for a million orders; here a
    smaller book keeps the bound (order node, indexes, levels)."""
    eng = Engine()
    eng.add_instrument("A")
    n = 200_000
    for i in range(n):
        eng.submit("A", "buy", 1, 1 + i % 300, account=1, client_order_id=f"c{i}")
    st = eng.stats()
    assert st.open_orders == n
    assert st.bytes_per_order_node == 64
    # Node memory comes in 4 MiB chunks; over 200k orders that granularity
    # and the index doublings stay within 128 bytes an order.
    assert st.bytes_reserved / n < 128

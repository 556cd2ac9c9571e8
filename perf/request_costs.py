"""What each kind of request costs pyengine-server, in CPU time.

    python perf/request_costs.py [--orders 20000] [--repeat 30] [--runs 3]

Starts a server without rate or order limits, then from one client: N
pings, N resting orders at N prices with client order ids (pipelined), N
`order_status` requests by a client order id none of them has, REPEAT
`orders` requests listing the N orders, REPEAT `orders` and REPEAT
`mass_cancel` requests of another symbol (which skip each of the N) and
REPEAT subscribe/unsubscribe pairs (a snapshot of the N levels), and prints
the server's CPU time (every thread's, from /proc) for each: µs a ping, µs
a new order, µs an `order_status`, µs for each order an `orders` reply
lists, an `orders` or a `mass_cancel` of another symbol skips, and for each
level of a `book_snapshot`, the medians of RUNS runs. A message costs one
token of a session's rate (about what a ping or a new order costs);
requests that go through more cost more tokens (pyengine/server/requests.py,
docs/security.md): the last column shows what a token of each buys at these
figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from pyengine.client import Client
from pyengine.server.process import ServerProcess
from pyengine.server.requests import (
    LEVELS_PER_TOKEN,
    MASS_CANCEL_SKIPPED_PER_TOKEN,
    ORDERS_PER_TOKEN,
    ORDERS_SKIPPED_PER_TOKEN,
)

_NO_LIMITS = "[limits]\nrate = 0\nmax_open_orders = 0\n"


def _cpu_seconds(pid: int) -> float:
    """User and system time of every thread of `pid`."""
    ticks = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        ticks += int(stat[11]) + int(stat[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _drain(client: Client, n: int, kind: str) -> None:
    got = 0
    while got < n:
        reply = client.recv(timeout=60)
        if reply["type"] != kind:
            raise SystemExit(f"expected {kind}, got {reply}")
        got += 1


def one_run(orders: int, repeat: int, workdir: Path) -> dict[str, float]:
    config = workdir / "no_limits.toml"
    config.write_text(_NO_LIMITS)
    server = ServerProcess(["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0", "--config", str(config)],
                           workdir / "server.log", timeout=30)
    try:
        pid = server.proc.pid
        with Client("127.0.0.1", server.port) as c:
            c.login(7)
            t = _cpu_seconds(pid)
            for _ in range(orders):
                c.ping()
            _drain(c, orders, "pong")
            ping = (_cpu_seconds(pid) - t) / orders
            t = _cpu_seconds(pid)
            for i in range(orders):
                c.new_order("ESZ6", "buy", 1, 1_000_000 - 25 * i, client_order_id=f"c{i}")
            _drain(c, orders, "ack")
            new_order = (_cpu_seconds(pid) - t) / orders
            t = _cpu_seconds(pid)
            for _ in range(orders):  # an id no order has: looked for among all of them
                c.order_status(client_order_id="absent")
            _drain(c, orders, "error")
            by_coid = (_cpu_seconds(pid) - t) / orders
            t = _cpu_seconds(pid)
            for _ in range(repeat):
                c.request(c.orders(), timeout=60)
            listed = (_cpu_seconds(pid) - t) / repeat / orders
            # Of another symbol: each skips every order, and lists or cancels none.
            t = _cpu_seconds(pid)
            for _ in range(repeat):
                c.request(c.orders("NQZ6"), timeout=60)
            skipped_by_orders = (_cpu_seconds(pid) - t) / repeat / orders
            t = _cpu_seconds(pid)
            for _ in range(repeat):
                c.request(c.mass_cancel("NQZ6"), timeout=60)
            skipped_by_mass_cancel = (_cpu_seconds(pid) - t) / repeat / orders
            t = _cpu_seconds(pid)
            for _ in range(repeat):
                c.request(c.subscribe("ESZ6"), timeout=60)
                c.request(c.unsubscribe("ESZ6"), timeout=60)
            level = (_cpu_seconds(pid) - t) / repeat / orders
    finally:
        server.stop()
    return {"ping": ping, "new_order": new_order, "by_coid": by_coid, "listed": listed,
            "skipped_by_orders": skipped_by_orders, "skipped_by_mass_cancel": skipped_by_mass_cancel, "level": level}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=20_000, help="pings, orders, levels (default 20000)")
    ap.add_argument("--repeat", type=int, default=30,
                    help="orders, mass_cancel and subscribe requests a run (default 30)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians printed (default 3)")
    args = ap.parse_args()
    for name in ("orders", "repeat", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            runs.append(one_run(args.orders, args.repeat, Path(tmp)))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"server CPU, medians of {args.runs} runs ({args.orders} pings, orders and levels):")
    rows = [("ping", "ping", None, ""), ("new order (resting)", "new_order", None, ""),
            ("order_status, an absent client order id", "by_coid", None, ""),
            ("an order listed by orders", "listed", ORDERS_PER_TOKEN, "orders"),
            ("an order orders skips", "skipped_by_orders", ORDERS_SKIPPED_PER_TOKEN, "orders"),
            ("an order mass_cancel skips", "skipped_by_mass_cancel", MASS_CANCEL_SKIPPED_PER_TOKEN, "orders"),
            ("a level of a book_snapshot", "level", LEVELS_PER_TOKEN, "levels")]
    for name, key, per_token, unit in rows:
        token = f"  a token ({per_token} {unit}): {med[key] * per_token * 1e6:.2f} µs" if per_token else ""
        print(f"  {name:<42}{med[key] * 1e6:6.2f} µs{token}")

if __name__ == "__main__":
    main()

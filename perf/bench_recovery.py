"""Recovery time: how fast a restarting server gets its state back.

    python perf/bench_recovery.py [--commands 1000000 10000000] [--repeat 3] [--dir DIR]

For each size N: perf/flow.py's mixed flow of N commands is journaled into a
fresh data directory by the server's engine thread (``run_offline``, fsync
off), then recovered ``--repeat`` times exactly as ``pyengine-server
--data-dir`` does at start (``pyengine.durability.recover``: every record
read, its CRC-32C checked and the command applied); prints the median time
and commands per second. The server then runs the same commands once more
for the orders' status (``rebuild_order_status``, 1,000 finished orders
kept per account, its default): timed too, and its ratio to the recovery.
Then a snapshot is taken at the end and recovery from it timed too. The journal is read from the page cache (it was just
written): the figure is the CPU cost of replay, not of the disk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402
from cache import cached  # noqa: E402

from pyengine._ffi import ffi, lib  # noqa: E402
from pyengine._server import OrderStatus  # noqa: E402
from pyengine.durability import recover  # noqa: E402
from pyengine.server.config import InstrumentConfig, ServerConfig  # noqa: E402
from pyengine.server.engine_thread import instrument_spec, run_offline  # noqa: E402
from pyengine.server.recovered_status import rebuild_order_status  # noqa: E402


def packed_flow(n: int) -> bytes:
    """n packed commands: a 50,000-order book, then the mixed flow; kept
    between runs (perf/cache.py: generating 10 M takes a minute or two)."""
    def make() -> bytes:
        f = flow.generate(n - 50_000)
        return f.packed(f.warmup) + f.packed(f.ops)
    return cached("flow-packed", make, [Path(flow.__file__)], n)


def timed_recovery(data_dir: Path, specs: list[object], repeat: int) -> tuple[float, float, int, int]:
    """(median seconds of the recovery, of the orders' status after it, commands replayed, seq)."""
    times, status_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        eng, report = recover(data_dir, specs, level_events=True)  # as the server does
        times.append(time.perf_counter() - t0)
        lib.eng_destroy(eng)
        t0 = time.perf_counter()
        rebuild_order_status(OrderStatus(keep=1000), data_dir, report, specs)
        status_times.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.median(status_times), report.replayed, report.seq


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="where to put the data directories (default: a temporary one)")
    args = p.parse_args()
    instruments = (InstrumentConfig(flow.SYMBOL, tick_size=1, lot_size=1),)
    specs = [instrument_spec(i) for i in instruments]
    root = Path(tempfile.mkdtemp(prefix="pyengine-recovery-", dir=args.dir))
    try:
        for n in args.commands:
            t0 = time.perf_counter()
            packed = packed_flow(n)
            gen = time.perf_counter() - t0
            data = root / f"n{n}"
            config = ServerConfig(instruments=instruments, data_dir=str(data), engine_cpu=-1, fsync="off",
                                  snapshot_every=0)
            t0 = time.perf_counter()
            run_offline(config, packed)
            wrote = time.perf_counter() - t0
            del packed
            size = sum(p.stat().st_size for p in data.glob("journal-*.log"))
            secs, status_secs, replayed, seq = timed_recovery(data, specs, args.repeat)
            print(f"{n:>11,} commands: made in {gen:.1f} s, journaled in {wrote:.1f} s "
                  f"({size / 1e6:,.0f} MB); recovery from the journal alone: {secs:.2f} s, "
                  f"{replayed / secs / 1e6:.2f} M commands/s (median of {args.repeat}, seq {seq}); "
                  f"the orders' status after it: {status_secs:.2f} s ({status_secs / secs:.2f}x the recovery)")
            # The same state from a snapshot at the end.
            eng, _ = recover(data, specs)
            buf_len = ffi.new("size_t *")
            t0 = time.perf_counter()
            buf = lib.eng_snapshot_serialize(eng, buf_len)  # what the engine thread does
            serialize = time.perf_counter() - t0
            st = ffi.new("struct eng_stats *")
            lib.eng_get_stats(eng, st)
            assert lib.eng_snapshot_write_file(str(data).encode(), buf, buf_len[0]) == 0
            lib.eng_free_buffer(buf)
            lib.eng_destroy(eng)
            secs, status_secs, replayed, _ = timed_recovery(data, specs, args.repeat)
            assert replayed == 0
            print(f"{'':>11}  a snapshot of {st.open_orders:,} resting orders ({buf_len[0] / 1e6:,.1f} MB): "
                  f"serialized in {serialize * 1e3:.1f} ms; recovery from it: {secs * 1e3:.1f} ms; "
                  f"the orders' status after it: {status_secs * 1e3:.1f} ms")
            shutil.rmtree(data)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

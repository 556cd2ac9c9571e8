"""What one group commit costs on this disk: append N journal records and
fdatasync, as the journal thread does.

    python perf/fsync_latency.py [--dir DIR] [--rounds 200]

Prints the median and p99 time of write + fdatasync for groups of 1, 16, 256
and 4096 records of 88 bytes, in a file in DIR (default: the current
directory, which should be on the disk the data directory will use).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

RECORD = 88


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=".")
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    fd, path = tempfile.mkstemp(prefix="pyengine-fsync-", dir=args.dir)
    try:
        for group in (1, 16, 256, 4096):
            data = b"\x5a" * (RECORD * group)
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                os.write(fd, data)
                os.fdatasync(fd)
                times.append(time.perf_counter() - t0)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"{group:>5} records ({len(data):>7,} bytes): write + fdatasync median "
                  f"{statistics.median(times) * 1e6:8.0f} µs, p99 {p99 * 1e6:8.0f} µs")
    finally:
        os.close(fd)
        os.unlink(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

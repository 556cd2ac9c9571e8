"""What one group commit costs on this disk: append N journal records and
fdatasync, as the journal thread does.

    python perf/fsync_latency.py [--dir DIR] [--rounds 200]

Prints the median and the nearest-rank p99 time of write + fdatasync for
groups of 1, 16, 256 and 4096 records of 88 bytes, in a file in DIR
(default: the current directory, which should be on the disk the data
directory will use).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from pyengine.server.latency_trace import percentile

RECORD = 88


def figures(times_ns: list[int]) -> tuple[float, int]:
    """The median and the nearest-rank p99 (the rule of the server's own
    latency trace) of `times_ns`, not empty, in ns."""
    ordered = sorted(times_ns)
    return statistics.median(ordered), percentile(ordered, 99)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=".")
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    fd, path = tempfile.mkstemp(prefix="pyengine-fsync-", dir=args.dir)
    try:
        for group in (1, 16, 256, 4096):
            data = b"\x5a" * (RECORD * group)
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter_ns()
                os.write(fd, data)
                os.fdatasync(fd)
                times.append(time.perf_counter_ns() - t0)
            median, p99 = figures(times)
            print(f"{group:>5} records ({len(data):>7,} bytes): write + fdatasync median "
                  f"{median / 1e3:8.0f} µs, p99 {p99 / 1e3:8.0f} µs")
    finally:
        os.close(fd)
        os.unlink(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

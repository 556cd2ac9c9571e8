"""Run tools/loadgen.py at several offered rates and print a table of medians.

    python perf/loadgen_table.py [--rates 1000,10000,20000,50000,0] [--runs 3]
                                 [--duration 8] [--workers 1] [--pin] [--probe 5] [--json out.json]
                                 [--plot-rate 20000 --plot out.png] [-- more loadgen arguments]

Each run starts a fresh server (``--spawn-server``) so runs do not share a
book; rate 0 is the closed loop (maximum throughput). The table gives, per
rate, the median over the runs of each figure.

``--pin`` keeps the server and the load generator apart: the server's
event-loop and engine threads on CPU 0, the load generator on every other
CPU. Unpinned, the scheduler often puts the two Python processes on one CPU
at a time, and each waits for the other; and the engine thread on a CPU of
its own would cost two wake-ups across CPUs per command where traffic is
sparse, the dearest thing on a small virtual machine (see
tools/cpu_probe.py).

Before the table, ``tools/cpu_probe.py`` measures for ``--probe`` seconds
(default 5; 0: not at all) how long the machine stalls a busy CPU: no
latency percentile can be better than those stalls allow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinning() -> list[str]:
    """loadgen arguments for --pin (nothing on a 1-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    rest = ",".join(str(c) for c in cpus[1:])
    return ["--cpus", rest, f"--server-arg=--server-cpu={cpus[0]}", f"--server-arg=--engine-cpu={cpus[0]}"]


def run_once(rate: float, duration: float, workers: int, extra: list[str], plot: str | None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--spawn-server", "--rate", str(rate),
               "--duration", str(duration), "--workers", str(workers), "--json", f.name, *extra]
        if plot:
            cmd += ["--plot", plot]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(Path(f.name).read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000,20000,50000,0")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="server and load generator on separate CPUs")
    ap.add_argument("--probe", type=float, default=5.0, metavar="SECONDS",
                    help="measure the machine's CPU stalls first, for this long (0: don't)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot-rate", type=float, help="draw the percentile curve of the last run at this rate")
    ap.add_argument("--plot", metavar="FILE")
    ap.add_argument("loadgen_args", nargs="*", help="more loadgen arguments (after --)")
    args = ap.parse_args()
    extra = (pinning() if args.pin else []) + args.loadgen_args
    if args.probe > 0:
        probe = subprocess.run([sys.executable, str(ROOT / "tools" / "cpu_probe.py"), "--duration", str(args.probe),
                                "--wake-rounds", "0"], capture_output=True, text=True, check=True)
        print(probe.stdout)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        runs = []
        for i in range(args.runs):
            plot = args.plot if args.plot and rate == args.plot_rate and i == args.runs - 1 else None
            runs.append(run_once(rate, args.duration, args.workers, extra, plot))
        med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
        rows.append({
            "rate": rate,
            "throughput": med(lambda r: r["throughput_per_s"]),
            **{f"ack_{k}": med(lambda r, k=k: r["ack_us"][k]) for k in ("p50", "p90", "p99", "p99.9", "max")},
            **{f"fill_{k}": med(lambda r, k=k: r["fill_us"][k]) for k in ("p50", "p99")},
            "errors": sum(r["errors"] + r["unanswered"] for r in runs),
        })
        print(f"rate {rate:>8,.0f}: done", file=sys.stderr, flush=True)
    print("| offered | achieved | ack p50 | ack p90 | ack p99 | ack p99.9 | ack max | fill p50 | fill p99 | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        offered = "max (closed loop)" if r["rate"] == 0 else f"{r['rate']:,.0f}/s"
        print(f"| {offered} | {r['throughput']:,.0f}/s | {r['ack_p50']:,.0f} | {r['ack_p90']:,.0f} | "
              f"{r['ack_p99']:,.0f} | {r['ack_p99.9']:,.0f} | {r['ack_max']:,.0f} | {r['fill_p50']:,.0f} | "
              f"{r['fill_p99']:,.0f} | {r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where pyengine-server's latency goes, stage by stage, under tools/loadgen.py.

    python perf/latency_breakdown.py [--rate 20000] [--runs 3] [--duration 10] [--every 100]
                                     [--workers 1] [--pin] [--no-floor] [--server-arg ARG ...]
                                     [--json out.json] [-- more loadgen arguments]

Each run spawns pyengine-server as ``tools/loadgen.py --spawn-server`` does
(its ``spawn_server``), with ``--trace-latency EVERY`` (one new order in
EVERY stamped on its way through: pyengine/server/latency_trace.py), drives
it with tools/loadgen.py at ``--rate`` requests/s offered (open loop; 0: the
closed loop), then stops it and reads the ``stage_latency`` lines it logs
at stop. Unless ``--no-floor``, each run is paired with one against the C
floor (perf/floor_epoll.c, as ``perf/loadgen_table.py --floors`` runs it),
so that the two share the machine's state of the moment: the floor first
in the first round, pyengine-server first in the second, and so on
(perf/loadgen_table.py's rotation). ``--pin`` pins
both servers and the load generator as ``perf/loadgen_table.py --pin``
does (the floor's event loop and pyengine-server's two threads on the first
CPU, the load generator on the others).

Prints, per stage, the medians over the runs of the traced orders' count,
p50, p90, p99 and p99.9 (µs; the p99.9 of a few thousand orders is about
their longest: trace more of them, a small ``--every`` such as 4, for a
tail worth the name); then, per generation, the cyclic collector's pauses in the
traced server from its start (its ``gc_pauses`` lines: collections, their
total time, mean and longest; medians over the runs); then the load
generator's order-to-ack percentiles for pyengine-server and the floor
(medians over the runs). The server's stages run from the socket read that
completed an order's frame to the write of its answer: the load generator's
figure adds the client's side and the loopback. The breakdown counts from the server's start (the load
generator's warm-up included), the load generator's figures leave the
warm-up out.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Not on the path under PYTHONSAFEPATH: the tools this drives.
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "perf"))
from loadgen import spawn_server, stop_server  # noqa: E402
from loadgen_table import FLOORS, medians, pinning, rotation, run_once  # noqa: E402

from pyengine.server.latency_trace import STAGES  # noqa: E402

C_FLOOR = FLOORS[0]
FIGURES = ("count", "p50_us", "p90_us", "p99_us", "p999_us")
PAUSES = ("collections", "total_ms", "mean_us", "longest_us")
ACK = ("p50", "p90", "p99", "p99.9")


def last_lines(log: list[str], event: str, key: str, figures: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The last `event` line of each value of its field `key` in a server's
    log (the last breakdown's): {that value: {figure: value}}."""
    out: dict[str, dict[str, float]] = {}
    for line in log:
        if f"event={event} " in line:
            kv = dict(re.findall(r"(\w+)=(\S+)", line))
            out[kv[key]] = {k: float(kv[k]) for k in figures}
    return out


def split_server_args(loadgen_args: list[str]) -> tuple[list[str], list[str]]:
    """(the load generator's own arguments, the server's) of loadgen
    arguments that pass some to a spawned server as ``--server-arg=ARG``."""
    prefix = "--server-arg="
    return ([a for a in loadgen_args if not a.startswith(prefix)],
            [a[len(prefix):] for a in loadgen_args if a.startswith(prefix)])


def run_traced(rate: float, duration: float, workers: int, every: int, server_args: list[str],
               loadgen_args: list[str]) -> dict[str, Any]:
    """One run against a traced pyengine-server: the load generator's result
    and the server's breakdown."""
    with tempfile.TemporaryDirectory(prefix="pyengine-breakdown-") as workdir:
        server = spawn_server(["--trace-latency", str(every), *server_args], workdir)
        out = Path(workdir) / "loadgen.json"
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port),
                                   "--rate", str(rate), "--duration", str(duration), "--workers", str(workers),
                                   "--json", str(out), *loadgen_args], capture_output=True, text=True)
        finally:
            code = stop_server(server)
        if proc.returncode != 0 or code != 0:
            raise SystemExit(f"the run failed (loadgen {proc.returncode}, server {code}):\n{proc.stdout}\n{proc.stderr}")
        stages = last_lines(server.lines, "stage_latency", "stage", FIGURES)
        if sorted(stages) != sorted(s for s, _, _ in STAGES):
            raise SystemExit("the server logged no complete breakdown:\n" + server.tail())
        pauses = last_lines(server.lines, "gc_pauses", "generation", PAUSES)
        if sorted(pauses) != ["0", "1", "2"]:
            raise SystemExit("the server logged no collector pauses:\n" + server.tail())
        return {"loadgen": json.loads(out.read_text()), "stages": stages, "gc_pauses": pauses}


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, the median over the runs of each figure."""
    return {s: {k: statistics.median(r["stages"][s][k] for r in runs) for k in FIGURES} for s, _, _ in STAGES}


def pause_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per generation, the median over the runs of each figure."""
    return {g: {k: statistics.median(r["gc_pauses"][g][k] for r in runs) for k in PAUSES} for g in ("0", "1", "2")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20000.0, help="requests/s offered, cancels included (0: closed loop)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--every", type=int, default=100, help="trace one new order in EVERY")
    ap.add_argument("--workers", type=int, default=1, help="load generator processes")
    ap.add_argument("--no-floor", action="store_true", help="do not run the C floor beside the runs")
    ap.add_argument("--pin", action="store_true", help="servers and load generator on separate CPUs")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for pyengine-server (repeat for more)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("loadgen_args", nargs="*", help="more loadgen arguments (after --)")
    args = ap.parse_args()
    if args.every < 1 or args.runs < 1:
        ap.error("--every and --runs must be at least 1")
    traced: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    pin_loadgen, pin_server = split_server_args(pinning() if args.pin else [])
    servers = ("pyengine",) if args.no_floor else ("floor", "pyengine")
    for i in range(args.runs):
        for server in rotation(servers, i):
            if server == "floor":
                floor.append(run_once(args.rate, args.duration, args.workers,
                                      (pinning(C_FLOOR) if args.pin else []) + args.loadgen_args, None, C_FLOOR))
            else:
                traced.append(run_traced(args.rate, args.duration, args.workers, args.every,
                                         pin_server + args.server_arg, pin_loadgen + args.loadgen_args))
        print(f"run {i + 1} of {args.runs}: done", file=sys.stderr, flush=True)
    stages = summary(traced)
    pauses = pause_summary(traced)
    mine = medians([r["loadgen"] for r in traced])
    theirs = medians(floor) if floor else None
    offered = "the closed loop" if args.rate == 0 else f"{args.rate:,.0f} requests/s offered"
    print(f"pyengine-server at {offered}, one new order in {args.every} traced; medians of {args.runs} runs, µs\n")
    print("| stage | from | to | orders | p50 | p90 | p99 | p99.9 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, start, end in STAGES:
        f = stages[name]
        print(f"| {name} | {start} | {end} | {f['count']:,.0f} | {f['p50_us']:,.1f} | {f['p90_us']:,.1f} | "
              f"{f['p99_us']:,.1f} | {f['p999_us']:,.1f} |")
    print("\nThe cyclic collector's pauses in the traced server, from its start:\n")
    print("| generation | collections | total ms | mean µs | longest µs |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for g, f in pauses.items():
        print(f"| {g} | {f['collections']:,.0f} | {f['total_ms']:,.1f} | {f['mean_us']:,.1f} | "
              f"{f['longest_us']:,.1f} |")
    print("\nOrder to ack at the load generator (µs):\n")
    print("| server | achieved | " + " | ".join(f"ack {k}" for k in ACK) + " | errors |")
    print("| --- | ---: | " + " | ".join("---:" for _ in ACK) + " | ---: |")
    rows = [("pyengine-server (traced)", mine)] + ([(C_FLOOR.name, theirs)] if theirs else [])
    for name, m in rows:
        print(f"| {name} | {m['throughput']:,.0f}/s | " + " | ".join(f"{m[f'ack_{k}']:,.0f}" for k in ACK)
              + f" | {m['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": args.rate, "every": args.every, "runs": args.runs,
                                               "pin": args.pin, "stages": stages, "gc_pauses": pauses, "pyengine": mine,
                                               "c_floor": theirs, "per_run": [r["stages"] for r in traced],
                                               "gc_pauses_per_run": [r["gc_pauses"] for r in traced]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

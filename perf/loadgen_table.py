"""Run tools/loadgen.py at several offered rates and print a table of medians.

    python perf/loadgen_table.py [--rates 1000,10000,20000,50000,0] [--runs 3]
                                 [--duration 8] [--workers 1] [--pin] [--probe 5] [--json out.json]
                                 [--plot-rate 20000 --plot out.png] [--pyengine-arg ARG ...]
                                 [--floors [--server-spin-us N]]
                                 [-- more loadgen arguments]
    python perf/loadgen_table.py --floors --rates 20000 --runs 3 --duration 10

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

``--floors`` measures pyengine-server against this machine's floor: at each
rate, run by run, the C floor (perf/floor_epoll.c: epoll, answering each
frame at once), the hand-off floor (perf/floor_handoff.py: the C floor with
each reply sent by way of a second pinned thread, through rings and the
engine thread's wake-ups: the design's round trip to the engine thread,
without the engine), the gevent floor (perf/floor_gevent.py: a gevent
StreamServer and orjson, answering each frame at once) and pyengine-server,
one after the other, the order turned each round (C, hand-off, gevent,
pyengine; then hand-off, gevent, pyengine, C; ...: noise that lasts a while
hits them all alike, and a drift within a round favours no server round
after round). The table gives each server's medians
over the runs and pyengine's figure as a ratio to each floor's (ratios of
the medians). Load generator arguments after ``--`` apply to every server,
``--pyengine-arg`` ones to pyengine-server's runs only
(``--pyengine-arg=--spawn-fsync=batch``: the journaled server against
floors that journal nothing). ``--server-spin-us N`` adds three servers
to the rounds: pyengine-server with ``--server-spin-us N`` (its event loop
polls for N µs after each read instead of sleeping), and the C floor and
the hand-off floor doing the same, the floors of a server that spins; each
pyengine row gives its ratios to every floor (the JSON's ``ratios``: per
pyengine-server, per floor).

"achieved" is loadgen's throughput: requests answered (cancels included,
new orders' rejects left out) per second from the end of the warm-up to the
last reply. "rejected" sums the new orders the server refused over the runs
(marked "(!)" where a run's were beyond 0.1% of its new orders, which loadgen
warns of on stderr, saying why): refusals are counted apart from the acks.

Every row gives the load generator's own CPU too (µs a request sent, and
the CPUs its workers kept busy while sending): a load generator near a
full CPU queues its own work, and that queueing lands in the figures of
whichever server it measures. And the server's CPU (µs a reply and CPUs
busy over the measured window, its process read from outside, idle
polling included): where the load generator is the limit, as in the
closed loop on two CPUs, that is what tells the servers' costs apart.

``--rates 0 -- --driver c`` drives the closed loop with tools/loadgen.py's
C workers (tools/loadgen_worker.c; closed loop only: loadgen refuses them
at an offered rate), which cost a fraction of the Python workers' CPU a
request: on two CPUs, the Python load generator is the limit of every
closed loop, the C one only of the floors'.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


PERCENTILES = ("p50", "p90", "p99", "p99.9")


@dataclass(frozen=True)
class Server:
    """One server of a --floors run: its key in the JSON, its names in the
    table (in full, and in pyengine's ratios), how loadgen spawns it."""

    key: str
    name: str
    short: str
    spawn: tuple[str, ...]
    has_engine: bool  # takes --engine-cpu


PYENGINE = Server("pyengine", "pyengine-server", "pyengine", ("--spawn-server",), True)
FLOORS = (
    Server("c_floor", "C floor (perf/floor_epoll.c)", "C",
           ("--spawn-script", str(ROOT / "perf" / "floor_epoll.py")), False),
    Server("handoff_floor", "hand-off floor (perf/floor_handoff.py)", "hand-off",
           ("--spawn-script", str(ROOT / "perf" / "floor_handoff.py")), True),
    Server("gevent_floor", "gevent floor (perf/floor_gevent.py)", "gevent",
           ("--spawn-script", str(ROOT / "perf" / "floor_gevent.py")), False),
)


def rotation(servers: Sequence[T], round_: int) -> list[T]:
    """The order in which round `round_` (from 0) runs `servers`: turned to
    start with server `round_` mod k, so that over k rounds each server runs
    once in every place (in a fixed order, a drift within a round, or what
    a run leaves behind for the next, favours the same servers every round)."""
    first = round_ % len(servers)
    return [*servers[first:], *servers[:first]]


def pinning(server: Server = PYENGINE) -> list[str]:
    """loadgen arguments for --pin (nothing on a 1-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return []
    rest = ",".join(str(c) for c in cpus[1:])
    engine = [f"--server-arg=--engine-cpu={cpus[0]}"] if server.has_engine else []
    return ["--cpus", rest, f"--server-arg=--server-cpu={cpus[0]}", *engine]


def run_once(rate: float, duration: float, workers: int, extra: list[str], plot: str | None,
             server: Server = PYENGINE) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, str(ROOT / "tools" / "loadgen.py"), *server.spawn, "--rate", str(rate),
               "--duration", str(duration), "--workers", str(workers), "--json", f.name, *extra]
        if plot:
            cmd += ["--plot", plot]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed:\n{proc.stdout}\n{proc.stderr}")
        result: dict[str, Any] = json.loads(Path(f.name).read_text())
    # Rejects are counted apart from the acks, but a run with many measured
    # refusals as much as orders: say so at once, not only in the table.
    offered = "closed loop" if rate == 0 else f"{rate:,.0f}/s"
    for text in result.get("warnings", []):
        print(f"warning ({server.name}, {offered}): {text}", file=sys.stderr, flush=True)
    return result


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians over `runs` (loadgen results) of the table's figures (the
    server's CPU over the runs that gave it, None if none did)."""
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    with_cpu = [r for r in runs if r.get("server_cpu_us_per_reply") is not None]
    return {
        "server_cpu_us": statistics.median(r["server_cpu_us_per_reply"] for r in with_cpu) if with_cpu else None,
        "server_busy": statistics.median(r["server_cpus_busy"] for r in with_cpu) if with_cpu else None,
        "throughput": med(lambda r: r["throughput_per_s"]),
        **{f"ack_{k}": med(lambda r, k=k: r["ack_us"][k]) for k in (*PERCENTILES, "max")},
        **{f"fill_{k}": med(lambda r, k=k: r["fill_us"][k]) for k in ("p50", "p99")},
        "client_cpu_us": med(lambda r: r["client_cpu_us_per_order"]),
        "client_busy": med(lambda r: r["client_cpus_busy"]),
        "errors": sum(r["errors"] + r["unanswered"] for r in runs),
        "rejected": sum(r["rejected"] for r in runs),  # new orders refused (max_open_orders_exceeded, ...)
        "warnings": sum(len(r["warnings"]) for r in runs),  # runs whose rejects were beyond loadgen's bound
    }


def rejected_cell(fig: dict[str, Any]) -> str:
    """New orders rejected over the runs; flagged when a run had more than
    loadgen warns of (its figures then partly measure refusals)."""
    return f"{fig['rejected']:,}" + (" (!)" if fig["warnings"] else "")


def rejects_note(figures: list[dict[str, Any]]) -> None:
    if any(fig["warnings"] for fig in figures):
        print("\n(!) some runs had rejects beyond 0.1% of their new orders (loadgen's warnings above say why); "
              "their throughput leaves the rejects out and their latency holds acks only.")


def client_cell(fig: dict[str, Any]) -> str:
    """The load generator's own CPU: µs an order, and the CPUs its workers
    kept busy (1.00: one CPU's worth)."""
    return f"{fig['client_cpu_us']:.1f} µs, {fig['client_busy']:.2f} CPUs"


def server_cell(fig: dict[str, Any]) -> str:
    """The spawned server's own CPU over the measured window: µs a reply,
    and the CPUs it kept busy; n/a where loadgen could not read it."""
    if fig["server_cpu_us"] is None:
        return "n/a"
    return f"{fig['server_cpu_us']:.2f} µs, {fig['server_busy']:.2f} CPUs"


def ratio(value: float, floor: float) -> float | None:
    """value / floor; None when the floor has no figure (no orders counted)."""
    return value / floor if floor > 0 else None


def line_up(spin_us: int = 0) -> tuple[tuple[Server, ...], tuple[Server, ...]]:
    """The floors and the pyengine-servers of a --floors run: with spin_us,
    the C and hand-off floors and pyengine-server polling that long after
    a read too."""
    if not spin_us:
        return FLOORS, (PYENGINE,)
    c_floor, handoff_floor = FLOORS[:2]
    spin = f"--server-arg=--server-spin-us={spin_us}"
    polling_floors = (
        Server("c_floor_spin", f"C floor polling {spin_us} µs", "C polling", (*c_floor.spawn, spin), False),
        Server("handoff_floor_spin", f"hand-off floor polling {spin_us} µs", "hand-off polling",
               (*handoff_floor.spawn, spin), True),
    )
    polling = Server("pyengine_spin", f"pyengine-server --server-spin-us {spin_us}", "pyengine polling",
                     (*PYENGINE.spawn, spin), True)
    return (*FLOORS, *polling_floors), (PYENGINE, polling)


def floors_row(rate: float, runs: int, duration: float, workers: int, extra: list[str], pin: bool,
               plot: str | None, mine: tuple[str, ...] = (), spin_us: int = 0) -> dict[str, Any]:
    """One rate of --floors: the servers in turn, `runs` rounds, each in
    its rotation() of the table's order; `mine`,
    loadgen arguments for pyengine-server's runs only. `ratios` holds, per
    pyengine-server, its figures over each floor's."""
    floors, ours = line_up(spin_us)
    results: dict[str, list[dict[str, Any]]] = {s.key: [] for s in (*floors, *ours)}
    for i in range(runs):
        for s in rotation((*floors, *ours), i):
            plot_this = plot if s is ours[0] and i == runs - 1 else None
            own = list(mine) if s in ours else []
            results[s.key].append(run_once(rate, duration, workers, (pinning(s) if pin else []) + extra + own,
                                           plot_this, s))
    figures = {key: medians(r) for key, r in results.items()}
    ratios = {p.key: {f.key: {k: ratio(figures[p.key][f"ack_{k}"], figures[f.key][f"ack_{k}"]) for k in PERCENTILES}
                      for f in floors}
              for p in ours}
    return {"rate": rate, "servers": figures, "ratios": ratios}


def print_floors(rows: list[dict[str, Any]], spin_us: int = 0) -> None:
    floors, ours = line_up(spin_us)
    print("| offered | server | achieved | ack p50 | ack p90 | ack p99 | ack p99.9 | load generator CPU | server CPU "
          "| errors | rejected |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        offered = "max (closed loop)" if row["rate"] == 0 else f"{row['rate']:,.0f}/s"
        for s in (*floors, *ours):
            fig = row["servers"][s.key]
            cells = []
            for k in PERCENTILES:
                cell = f"{fig[f'ack_{k}']:,.0f}"
                if s in ours:
                    parts = []
                    for f in floors:
                        r = row["ratios"][s.key][f.key][k]
                        parts.append(f"{r:.2f}x {f.short}" if r is not None else f"n/a {f.short}")
                    cell += f" ({', '.join(parts)})"
                cells.append(cell)
            print(f"| {offered} | {s.name} | {fig['throughput']:,.0f}/s | {' | '.join(cells)} | {client_cell(fig)} | "
                  f"{server_cell(fig)} | {fig['errors']} | {rejected_cell(fig)} |")
    rejects_note([fig for row in rows for fig in row["servers"].values()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000,20000,50000,0")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="server and load generator on separate CPUs")
    ap.add_argument("--floors", action="store_true",
                    help="run the floor servers (C, C with the hand-off, gevent) interleaved with pyengine-server, "
                         "and give pyengine's "
                         "latency as a ratio to theirs")
    ap.add_argument("--pyengine-arg", action="append", default=[], metavar="ARG",
                    help="one more loadgen argument for pyengine-server's runs only (repeat for more), e.g. "
                         "--pyengine-arg=--spawn-fsync=batch: the floors journal nothing")
    ap.add_argument("--server-spin-us", type=int, default=0, metavar="N",
                    help="with --floors: also run pyengine-server and the C and hand-off floors polling N µs after "
                         "each read")
    ap.add_argument("--probe", type=float, default=5.0, metavar="SECONDS",
                    help="measure the machine's CPU stalls first, for this long (0: don't)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot-rate", type=float, help="draw the percentile curve of the last run at this rate")
    ap.add_argument("--plot", metavar="FILE")
    ap.add_argument("loadgen_args", nargs="*", help="more loadgen arguments (after --)")
    args = ap.parse_args()
    extra = args.loadgen_args
    if args.server_spin_us and not args.floors:
        ap.error("--server-spin-us needs --floors")
    if not 0 <= args.server_spin_us <= 1_000_000:
        ap.error(f"--server-spin-us must be from 0 to 1000000, not {args.server_spin_us}")
    if args.probe > 0:
        probe = subprocess.run([sys.executable, str(ROOT / "tools" / "cpu_probe.py"), "--duration", str(args.probe),
                                "--wake-rounds", "0"], capture_output=True, text=True, check=True)
        print(probe.stdout)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        plot_rate = args.plot if args.plot and rate == args.plot_rate else None
        if args.floors:
            rows.append(floors_row(rate, args.runs, args.duration, args.workers, extra, args.pin, plot_rate,
                                   tuple(args.pyengine_arg), args.server_spin_us))
        else:
            runs = []
            for i in range(args.runs):
                plot = plot_rate if i == args.runs - 1 else None
                runs.append(run_once(rate, args.duration, args.workers,
                                     (pinning() if args.pin else []) + extra + args.pyengine_arg, plot))
            rows.append({"rate": rate, **medians(runs)})
        print(f"rate {rate:>8,.0f}: done", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.floors:
        print_floors(rows, args.server_spin_us)
        return 0
    print("| offered | achieved | ack p50 | ack p90 | ack p99 | ack p99.9 | ack max | fill p50 | fill p99 "
          "| load generator CPU | server CPU | errors | rejected |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        offered = "max (closed loop)" if r["rate"] == 0 else f"{r['rate']:,.0f}/s"
        print(f"| {offered} | {r['throughput']:,.0f}/s | {r['ack_p50']:,.0f} | {r['ack_p90']:,.0f} | "
              f"{r['ack_p99']:,.0f} | {r['ack_p99.9']:,.0f} | {r['ack_max']:,.0f} | {r['fill_p50']:,.0f} | "
              f"{r['fill_p99']:,.0f} | {client_cell(r)} | {server_cell(r)} | {r['errors']} | {rejected_cell(r)} |")
    rejects_note(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

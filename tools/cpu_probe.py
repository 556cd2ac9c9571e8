"""How this machine's CPUs treat a latency-sensitive process: stalls and wake-ups.

    python tools/cpu_probe.py [--duration 10] [--threshold-us 100] [--bounds-us 500,2000]
                              [--cpus 0,1] [--wake-rounds 20000] [--json FILE]

Stalls: one process pinned to each CPU reads the clock in a tight loop; a
gap between two readings longer than the threshold is time that CPU was
taken from a running thread (the hypervisor, an interrupt, a kernel
thread). No server can answer faster than its CPU runs: if a CPU is stalled
for more than B µs for a share s of the time, requests arriving then --
about that share of them -- wait more than B µs on that CPU, whatever the
software does. "beyond B" is that share, per CPU and for any of them (a
request needs the load generator's CPU and the server's).

Wake-ups: two processes pass a byte back and forth through pipes, both on
one CPU and on two; the round trip and the CPU time each side spends per
round trip show what one thread waking another costs here, the price of
every reply to a client that sleeps.

Every figure in docs/benchmarks.md about the machine itself comes from here.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Interval = tuple[float, float]


@dataclass
class CpuStalls:
    cpu: int
    seconds: float  # how long the probe ran
    stalls: list[Interval]  # (start, end) of each gap over the threshold, perf_counter seconds

    @property
    def stalled(self) -> float:
        """Share of the time spent in stalls."""
        return sum(e - s for s, e in self.stalls) / self.seconds

    @property
    def longest(self) -> float:
        return max((e - s for s, e in self.stalls), default=0.0)


def beyond(stalls: list[Interval], bound: float, seconds: float) -> float:
    """Share of the time at which a request arriving would wait more than
    `bound` seconds for a stall to end: each stall longer than the bound
    contributes its length minus the bound. Overlapping stalls (of several
    CPUs) count once."""
    parts = sorted((s + bound, e) for s, e in stalls if e - s > bound)
    total, reach = 0.0, float("-inf")
    for s, e in parts:
        if e <= reach:
            continue
        total += e - max(s, reach)
        reach = e
    return total / seconds


def _stall_probe(cpu: int, start: float, seconds: float, threshold: float, out: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    gc.disable()  # the loop allocates only floats; no collector pause in it
    clock = time.perf_counter
    while clock() < start:  # every probe watches the same stretch of time
        pass
    stalls: list[Interval] = []
    last = clock()
    end = start + seconds
    while last < end:
        now = clock()
        if now - last > threshold:
            stalls.append((last, now))
        last = now
    out.send(CpuStalls(cpu, seconds, stalls))
    out.close()


def probe_stalls(cpus: list[int], seconds: float, threshold: float) -> list[CpuStalls]:
    """Run one stall probe per CPU at the same time."""
    ctx = mp.get_context("fork")
    start = time.perf_counter() + 0.3
    probes = []
    for cpu in cpus:
        receive, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_stall_probe, args=(cpu, start, seconds, threshold, send))
        p.start()
        send.close()
        probes.append((p, receive))
    results = []
    for p, receive in probes:
        results.append(receive.recv())
        p.join()
    return results


def _echo(cpu: int, ping: int, pong: int, rounds: int, out: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        os.write(pong, os.read(ping, 1))
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.send((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    out.close()


@dataclass
class WakeCost:
    cpus: tuple[int, int]  # (this side, the echoing side)
    round_trip_us: float  # median over the rounds
    cpu_us_per_round: tuple[float, float]  # CPU time of each side per round trip


def probe_wake(cpus: tuple[int, int], rounds: int) -> WakeCost:
    """Ping-pong one byte `rounds` times between a process on cpus[0] and
    one on cpus[1]; each waits in a blocking read, so every byte is a
    wake-up."""
    ctx = mp.get_context("fork")
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    receive, send = ctx.Pipe(duplex=False)
    echo = ctx.Process(target=_echo, args=(cpus[1], ping_r, pong_w, rounds, send))
    echo.start()
    send.close()
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        times = []
        clock = time.perf_counter
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(rounds):
            t = clock()
            os.write(ping_w, b"x")
            os.read(pong_r, 1)
            times.append(clock() - t)
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.sched_setaffinity(0, old)
        for fd in (ping_r, ping_w, pong_r, pong_w):
            os.close(fd)
    echo_cpu = receive.recv()
    echo.join()
    times.sort()
    mine = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return WakeCost(cpus, times[len(times) // 2] * 1e6, (mine / rounds * 1e6, echo_cpu / rounds * 1e6))


def report(stalls: list[CpuStalls], bounds: list[float], threshold: float, wakes: list[WakeCost]) -> str:
    heads = "".join(f" | beyond {b * 1e6:,.0f} µs" for b in bounds)
    lines = [
        f"Stalls over {threshold * 1e6:,.0f} µs seen by a busy process on each CPU:",
        "",
        f"| CPU | stalls/s | time stalled | longest{heads} |",
        "| ---: | ---: | ---: | ---: |" + " ---: |" * len(bounds),
    ]
    for c in stalls:
        cells = "".join(f" | {beyond(c.stalls, b, c.seconds):.2%}" for b in bounds)
        lines.append(f"| {c.cpu} | {len(c.stalls) / c.seconds:,.1f} | {c.stalled:.2%} | "
                     f"{c.longest * 1e3:,.2f} ms{cells} |")
    if len(stalls) > 1:
        union = [iv for c in stalls for iv in c.stalls]
        seconds = stalls[0].seconds
        cells = "".join(f" | {beyond(union, b, seconds):.2%}" for b in bounds)
        lines.append(f"| any | | |{cells} |")
    if wakes:
        lines += ["", "Wake-ups (one byte back and forth through pipes, each side blocked in read):", "",
                  "| CPUs | round trip (median) | CPU per round trip: sender | echo |",
                  "| --- | ---: | ---: | ---: |"]
        for w in wakes:
            lines.append(f"| {w.cpus[0]} and {w.cpus[1]} | {w.round_trip_us:,.1f} µs | "
                         f"{w.cpu_us_per_round[0]:,.1f} µs | {w.cpu_us_per_round[1]:,.1f} µs |")
    return "\n".join(lines)


DEFAULT_BOUNDS_US = (500, 2000)


def cpu_list(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of stall probing")
    ap.add_argument("--threshold-us", type=float, default=100.0, help="a gap longer than this is a stall")
    ap.add_argument("--bounds-us", help="latency bounds to report the stall share beyond (default: those of "
                    f"{','.join(map(str, DEFAULT_BOUNDS_US))} above the threshold)")
    ap.add_argument("--cpus", type=cpu_list, default=None, help="CPUs to probe (default: every usable one)")
    ap.add_argument("--wake-rounds", type=int, default=20000, help="round trips per wake-up probe; 0: none")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    cpus = args.cpus or sorted(os.sched_getaffinity(0))
    threshold = args.threshold_us * 1e-6
    if args.bounds_us is None:
        bounds = [b * 1e-6 for b in DEFAULT_BOUNDS_US if b > args.threshold_us]
    else:
        bounds = [float(b) * 1e-6 for b in args.bounds_us.split(",") if b]
        if threshold >= min(bounds, default=float("inf")):
            ap.error("--threshold-us must be below every bound")
    stalls = probe_stalls(cpus, args.duration, threshold)
    wakes = []
    if args.wake_rounds > 0:
        wakes.append(probe_wake((cpus[0], cpus[0]), args.wake_rounds))
        if len(cpus) > 1:
            wakes.append(probe_wake((cpus[0], cpus[1]), args.wake_rounds))
    print(report(stalls, bounds, threshold, wakes))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "threshold_us": args.threshold_us,
            "cpus": [{"cpu": c.cpu, "seconds": c.seconds, "stalls": len(c.stalls), "stalled": c.stalled,
                      "longest_us": c.longest * 1e6,
                      "beyond": {f"{b * 1e6:g}": beyond(c.stalls, b, c.seconds) for b in bounds}}
                     for c in stalls],
            "wake": [asdict(w) for w in wakes],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

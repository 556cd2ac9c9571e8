"""Where an order's time goes between a readable socket and a written reply.

With ``--trace-latency N`` (``[server] trace_latency``; 0, the default,
is off) one new order in N is stamped at each point of its way through
the server (``pyengine._server.LatencyTrace``, csrc/binding/trace.c, which
names the points), and the server logs one ``stage_latency`` line per
stage when it stops and on SIGUSR1 (without tracing, SIGUSR1 logs a
``trace_off`` line and nothing else): how many orders, and the minimum,
p50, p90, p99, p99.9 and maximum of the stage's time in µs over them (exact:
the sampled times sorted). A stage is the time between two points:

============  ==========  ==========  ============================================
stage         from        to          what it holds
============  ==========  ==========  ============================================
intake        read        intake      the frame decoded, checked, packed
queued        intake      pushed      until the last reader's push or turn's end
to_engine     pushed      taken       the input ring and the engine thread's wake-up
engine        taken       published   the engine's batch (the whole batch it was in)
to_server     published   popped      the output ring, the dispatcher's wake-up
route         popped      routed      the Router, up to its answer (ack or reject)
write         routed      written     the rest of the routing, then the flush's sends up to its session's
total         read        written     all of it
============  ==========  ==========  ============================================

A stage's minimum below 0 would mean stamps out of order: with one clock
for every thread, it never is.

Tracing also times the cyclic collector's pauses while the server runs,
from its listening to its stop (``CollectorPauses``): a collection stops
the event loop, and every order that arrives meanwhile waits for it. They
are logged beside the stages, a ``gc_pauses`` line per generation:
collections, their total time (ms) and mean and longest (µs).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from array import array
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction

from .._server import LatencyTrace, Ledger, stage_times
from ..log import fields
from .engine_thread import EngineThread

__all__ = ["STAGES", "CollectorPauses", "GenerationPauses", "StageFigures", "breakdown", "log_breakdown",
           "start_trace"]

log = logging.getLogger("pyengine.server")

# (stage, from point, to point), in the order an order passes them.
STAGES = (
    ("intake", "read", "intake"),
    ("queued", "intake", "pushed"),
    ("to_engine", "pushed", "taken"),
    ("engine", "taken", "published"),
    ("to_server", "published", "popped"),
    ("route", "popped", "routed"),
    ("write", "routed", "written"),
    ("total", "read", "written"),
)


@dataclass(frozen=True)
class StageFigures:
    """One stage over the traced orders, in µs."""

    stage: str
    count: int
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float


@dataclass
class GenerationPauses:
    """The collections of one generation so far."""

    collections: int = 0
    total_ns: int = 0
    longest_ns: int = 0


class CollectorPauses:
    """How long the cyclic collector has held the interpreter, by generation,
    while started (gc.callbacks: a collection in any Python thread counts)."""

    def __init__(self) -> None:
        self.generations = tuple(GenerationPauses() for _ in range(3))
        self._began = 0

    def start(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        with suppress(ValueError):
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter_ns()
        if phase == "start":
            self._began = now
            return
        if not self._began:
            return  # its start came before start(): another thread's collection
        g = self.generations[info["generation"]]
        took, self._began = now - self._began, 0
        g.collections += 1
        g.total_ns += took
        g.longest_ns = max(g.longest_ns, took)

    def log(self) -> None:
        """A ``gc_pauses`` line per generation."""
        for n, g in enumerate(self.generations):
            mean = g.total_ns / g.collections if g.collections else 0.0
            log.info("gc_pauses", extra=fields(generation=n, collections=g.collections,
                                               total_ms=f"{g.total_ns / 1e6:.3f}", mean_us=f"{mean / 1e3:.1f}",
                                               longest_us=f"{g.longest_ns / 1e3:.1f}"))


def start_trace(every: int, ledger: Ledger, engine: EngineThread) -> LatencyTrace | None:
    """Trace one new order in `every` (0: none, and None back)."""
    if every <= 0:
        return None
    trace = LatencyTrace(ledger, every)
    engine.trace_batches()
    log.info("latency_trace", extra=fields(every=every))
    return trace


def percentile(ordered: Sequence[int], p: float) -> int:
    """The nearest-rank `p`th percentile of the sorted, non-empty `ordered`:
    the rank p * n / 100 rounded up, in exact arithmetic on p as written
    (in floats 99.9 / 100 * 1000 is a hair above 999, and its ceiling 1000)."""
    return ordered[max(0, math.ceil(Fraction(str(p)) * len(ordered) / 100) - 1)]


def breakdown(records: bytes, points: tuple[str, ...]) -> list[StageFigures]:
    """Each stage's figures over `records` (LatencyTrace.records(): int64
    stamps, len(points) a record); no stages for no records."""
    width = len(points)
    if not records:
        return []
    at = {name: i for i, name in enumerate(points)}
    out = []
    for stage, start, end in STAGES:
        times = array("q", stage_times(records, width, at[start], at[end]))  # sorted in C
        n = len(times)
        out.append(StageFigures(stage, n, times[0] / 1e3, percentile(times, 50) / 1e3, percentile(times, 90) / 1e3,
                                percentile(times, 99) / 1e3, percentile(times, 99.9) / 1e3, times[-1] / 1e3))
    return out


def log_breakdown(trace: LatencyTrace, pauses: CollectorPauses | None = None) -> list[StageFigures]:
    """Log the breakdown so far: a ``latency_trace`` line with the counts,
    then a ``stage_latency`` line per stage, then the collector's pauses;
    returns the stages' figures."""
    figures = breakdown(trace.records(), trace.points)
    log.info("latency_trace", extra=fields(every=trace.every, traced=trace.traced, completed=trace.completed,
                                           lost=trace.lost, skipped=trace.skipped,
                                           kept=figures[0].count if figures else 0))
    for f in figures:
        log.info("stage_latency", extra=fields(stage=f.stage, count=f.count, min_us=f"{f.min_us:.3f}",
                                               p50_us=f"{f.p50_us:.1f}", p90_us=f"{f.p90_us:.1f}",
                                               p99_us=f"{f.p99_us:.1f}", p999_us=f"{f.p999_us:.1f}",
                                               max_us=f"{f.max_us:.1f}"))
    if pauses is not None:
        pauses.log()
    return figures

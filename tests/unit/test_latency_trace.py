"""The breakdown's arithmetic (pyengine/server/latency_trace.py): each stage
between its two points, nearest-rank percentiles of the sorted times."""

from __future__ import annotations

from array import array

from pyengine._server import LatencyTrace, Ledger
from pyengine.server.latency_trace import STAGES, breakdown, percentile

POINTS = LatencyTrace(Ledger(), 1).points


def test_the_stages_join_the_points_end_to_end() -> None:
    assert POINTS == ("read", "intake", "pushed", "taken", "published", "popped", "routed", "written")
    steps = STAGES[:-1]
    assert [a for _, a, _ in steps] == list(POINTS[:-1])
    assert [b for _, _, b in steps] == list(POINTS[1:])
    assert STAGES[-1] == ("total", POINTS[0], POINTS[-1])


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 99) == 7
    assert percentile([1, 2], 50) == 1


def test_breakdown_of_records() -> None:
    # Record r: each point 1000 * (r + 1) ns after the one before.
    records = array("q")
    for r in range(10):
        records.extend(1_000_000 + i * 1000 * (r + 1) for i in range(len(POINTS)))
    figures = {f.stage: f for f in breakdown(records.tobytes(), POINTS)}
    assert list(figures) == [s for s, _, _ in STAGES]
    engine = figures["engine"]
    assert (engine.count, engine.min_us, engine.p50_us, engine.p90_us, engine.p99_us, engine.max_us) == (
        10, 1.0, 5.0, 9.0, 10.0, 10.0)
    assert figures["total"].max_us == 70.0
    assert breakdown(b"", POINTS) == []

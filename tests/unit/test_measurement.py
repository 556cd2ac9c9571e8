"""The measuring scripts of perf/ take their figures as documented: the
percentiles by nearest rank, checked against a brute-force count on small
sample lists; every call form timed on the same terms; the servers
compared in an order turned each round."""

from __future__ import annotations

import importlib.util
import os
import random
import statistics
import sys
import tracemalloc
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def perf_module(name: str, folder: str = "perf") -> ModuleType:
    """perf/NAME.py (or FOLDER/NAME.py), imported as a module (perf/ and tools/ are not packages)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def nearest_rank(values: list[int], p: float) -> int:
    """The least value at or below which at least p% of `values` lie."""
    share = Fraction(str(p)) / 100
    return min(v for v in values if sum(w <= v for w in values) >= share * len(values))


def samples() -> list[list[int]]:
    """Small lists of nanoseconds, ties included, of every length up to 30
    and a few whose p99 rank is a whole number."""
    rng = random.Random(7)
    return [[rng.randrange(1, 60) * 1000 for _ in range(n)] for n in [*range(1, 31), 100, 200, 300]]


@pytest.mark.parametrize("ns", samples(), ids=len)
def test_login_storm_percentiles_are_nearest_rank(ns: list[int]) -> None:
    figures = perf_module("login_storm").figures([t / 1e9 for t in ns])
    assert figures["p50_ms"] == pytest.approx(nearest_rank(ns, 50) / 1e6)
    assert figures["p99_ms"] == pytest.approx(nearest_rank(ns, 99) / 1e6)
    assert figures["max_ms"] == pytest.approx(max(ns) / 1e6) and figures["count"] == len(ns)


@pytest.mark.parametrize("ns", samples(), ids=len)
def test_fsync_latency_p99_is_nearest_rank(ns: list[int]) -> None:
    median, p99 = perf_module("fsync_latency").figures(ns)
    assert p99 == nearest_rank(ns, 99)
    assert median == statistics.median(ns)


def test_each_round_turns_the_order_of_the_servers() -> None:
    rotation = perf_module("loadgen_table").rotation
    servers = ("c", "handoff", "gevent", "pyengine")
    rounds = [rotation(servers, r) for r in range(5)]
    assert rounds == [
        ["c", "handoff", "gevent", "pyengine"],
        ["handoff", "gevent", "pyengine", "c"],
        ["gevent", "pyengine", "c", "handoff"],
        ["pyengine", "c", "handoff", "gevent"],
        ["c", "handoff", "gevent", "pyengine"],
    ]
    # Over k rounds each server runs once in every place.
    for place in range(len(servers)):
        assert sorted(order[place] for order in rounds[:4]) == sorted(servers)
    assert [rotation(("old", "new"), r) for r in range(3)] == [["old", "new"], ["new", "old"], ["old", "new"]]
    assert rotation(["traced"], 7) == ["traced"]


def test_every_call_form_times_only_its_calls() -> None:
    """perf/call_forms.py makes each form's arguments before its clock
    starts: the timed loop only iterates and calls. A list of the calls'
    arguments made inside it would hold 8 bytes a call for its pointers
    alone; the loops allocate less than one byte a call at their peak."""
    call_forms = perf_module("call_forms")
    n = 5000
    forms = [*call_forms.submit_forms(), *call_forms.cancel_forms(), *call_forms.modify_forms(),
             *call_forms.order_forms(), *call_forms.book_forms()]
    assert len(forms) == 22
    for label, start, arguments, run in forms:
        eng = start(n)
        args = arguments(n)
        tracemalloc.start()
        try:
            run(eng, args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        eng.verify()
        eng.close()
        assert peak < n, f"{label}: {peak} bytes at the peak of {n} calls"


def test_the_call_forms_of_a_verb_run_in_turn() -> None:
    """Each round runs every form once, the order turned by one each round,
    and each form's figure is the median of its own runs."""
    call_forms = perf_module("call_forms")
    ran: list[str] = []

    def form(label: str) -> tuple[object, ...]:
        def run(eng: object, args: list[int]) -> None:
            assert args == [3]
            ran.append(label)
        return (label, lambda n: call_forms.new_engine(), lambda n: [n], run)

    figures = call_forms.measure([form("a"), form("b"), form("c")], 3, 4)
    assert ran == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert len(figures) == 3 and all(ns >= 0 for ns in figures)


def test_the_server_cpu_over_a_window_is_read_off_between_samples() -> None:
    """loadgen samples the spawned server's CPU time now and then, and reads
    off the measured window's share on the line between the samples around
    each end: exact for a server busy at a steady rate, None for a window the
    samples do not cover."""
    cpu_between = perf_module("loadgen", "tools").cpu_between
    steady = [(t / 10, 0.6 * t / 10) for t in range(0, 31, 3)]  # 0.6 CPUs busy, a sample each 0.3 s
    for t0, t1 in ((0.0, 3.0), (0.45, 2.05), (1.2, 1.2), (0.31, 0.32)):
        assert cpu_between(steady, t0, t1) == pytest.approx(0.6 * (t1 - t0))
    bursty = [(0.0, 0.0), (1.0, 0.1), (2.0, 1.1)]  # idle, then a whole CPU
    assert cpu_between(bursty, 0.5, 1.5) == pytest.approx(0.05 + 0.5)
    assert cpu_between(steady, -0.1, 1.0) is None and cpu_between(steady, 1.0, 3.1) is None
    assert cpu_between([], 0.0, 1.0) is None


def test_a_process_cpu_time_is_read_from_proc() -> None:
    """The CPU time of a whole process, as the kernel counts it (in ns per
    thread: the clock ticks of user and system time are coarser)."""
    loadgen = perf_module("loadgen", "tools")
    before = loadgen.process_cpu_s(os.getpid())
    start = sum(os.times()[:2])
    while sum(os.times()[:2]) - start < 0.3:  # busy for 0.3 s of CPU
        pass
    after = loadgen.process_cpu_s(os.getpid())
    # The threads' own counts: a thread that has ended (the test runner's) is not in them, so only the
    # difference is the process's.
    assert before is not None and after is not None and 0.25 <= after - before <= 1.0
    assert loadgen.process_cpu_s(2**22 + 12345) is None  # no such process

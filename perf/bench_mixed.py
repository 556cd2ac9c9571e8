"""pyperf suite: the mixed order flow through every path, time per operation.

    python perf/bench_mixed.py [--ops 200000] [pyperf options, e.g. --fast, -o out.json]

Benchmarks (each value is the time of one operation of the flow, its book
built untimed first):
- mixed_one_call: ``Engine.submit``/``cancel``, one call per operation,
  events returned as Python objects;
- mixed_process_batch: the same operations packed, one ``process_batch``
  call, events handed over packed;
- mixed_process_batch_out: the same into a reused ``out`` bytearray;
- mixed_pure_python: a careful pure-Python matcher (perf/pymatcher.py) on
  the same operations, giving the same events.

The flow (perf/flow.py) is generated once and kept between runs (perf/cache.py).
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402
from cache import cached  # noqa: E402
import pymatcher  # noqa: E402


def runner_with_ops(default_ops: int, description: str) -> tuple[pyperf.Runner, int]:
    """A pyperf Runner taking ``--ops N``, and N."""
    # pyperf reruns the script in worker processes: pass the option along.
    runner = pyperf.Runner(add_cmdline_args=lambda cmd, args: cmd.extend(("--ops", str(args.ops))))
    runner.argparser.add_argument("--ops", type=int, default=default_ops, help="operations of the flow")
    args = runner.parse_args()
    runner.metadata["description"] = description
    return runner, args.ops


def load_flow(n: int) -> flow.Flow:
    """The flow of `n` operations (perf/cache.py keeps it between runs)."""
    return pickle.loads(cached("flow", lambda: pickle.dumps(flow.generate(n)), [Path(flow.__file__)], n))


def time_one_call(loops: int, f: flow.Flow) -> float:
    total = 0.0
    for _ in range(loops):
        eng = flow.new_engine()
        flow.replay(eng, f.warmup)
        t0 = time.perf_counter()
        flow.replay(eng, f.ops)
        total += time.perf_counter() - t0
    return total


def reused_out(warmup: bytes, ops: bytes) -> bytearray:
    """The ``out`` bytearray of the timed calls, grown to the flow's events
    by an untimed run first: reused, as the benchmark says (pyperf makes
    its values of one or two calls each, and a new one each time would
    time its growth, not the copy)."""
    out = bytearray()
    eng = flow.new_engine()
    eng.process_batch(warmup, collect_events=False)
    eng.process_batch(ops, out=out)
    return out


def time_batch(loops: int, warmup: bytes, ops: bytes, out: bytearray | None) -> float:
    total = 0.0
    for _ in range(loops):
        eng = flow.new_engine()
        eng.process_batch(warmup, collect_events=False)
        t0 = time.perf_counter()
        result = eng.process_batch(ops, out=out) if out is not None else eng.process_batch(ops)
        total += time.perf_counter() - t0
        del result
    return total


def replay_pure(m: pymatcher.PyMatcher, ops: list[tuple]) -> None:
    submit, cancel = m.submit, m.cancel
    for op in ops:
        kind = op[0]
        if kind == flow.ADD:
            submit(op[1], op[2], op[3], op[4])
        elif kind == flow.CANCEL:
            cancel(op[1], op[2])
        else:
            submit(op[1], op[2], None, op[3])


def time_pure_python(loops: int, f: flow.Flow) -> float:
    total = 0.0
    for _ in range(loops):
        m = pymatcher.PyMatcher(flow.SYMBOL)
        replay_pure(m, f.warmup)
        t0 = time.perf_counter()
        replay_pure(m, f.ops)
        total += time.perf_counter() - t0
    return total


def main() -> None:
    runner, n_ops = runner_with_ops(200_000, "pyengine mixed flow, time per operation")
    f = load_flow(n_ops)
    n = len(f.ops)
    warmup, ops = f.packed(f.warmup), f.packed(f.ops)
    runner.bench_time_func("mixed_one_call", time_one_call, f, inner_loops=n)
    runner.bench_time_func("mixed_process_batch", time_batch, warmup, ops, None, inner_loops=n)
    runner.bench_time_func("mixed_process_batch_out", time_batch, warmup, ops, reused_out(warmup, ops),
                           inner_loops=n)
    runner.bench_time_func("mixed_pure_python", time_pure_python, f, inner_loops=n)


if __name__ == "__main__":
    main()

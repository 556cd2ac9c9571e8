"""pyperf suite: ``Engine.process_batch`` on a million commands of the mixed flow.

    python perf/bench_batch.py [--ops 1000000] [pyperf options]

Values are per command (inner_loops = the number of commands), for the
default hand-over of the events, for a reused ``out`` bytearray, and with the
events dropped. ``--ops`` sets the number of commands (default 1,000,000);
the flow is perf/flow.py's, generated once and cached.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402
from bench_mixed import load_flow, reused_out, runner_with_ops  # noqa: E402



def batch(loops: int, warmup: bytes, ops: bytes, mode: str, out: bytearray) -> float:
    total = 0.0
    for _ in range(loops):
        eng = flow.new_engine()
        eng.process_batch(warmup, collect_events=False)
        t0 = time.perf_counter()
        if mode == "out":
            result = eng.process_batch(ops, out=out)
        elif mode == "counts":
            result = eng.process_batch(ops, collect_events=False)
        else:
            result = eng.process_batch(ops)
        total += time.perf_counter() - t0
        del result
    return total


def main() -> None:
    runner, n_ops = runner_with_ops(1_000_000, "pyengine process_batch, time per command")
    f = load_flow(n_ops)
    warmup, ops = f.packed(f.warmup), f.packed(f.ops)
    n = len(f.ops)
    out = reused_out(warmup, ops)
    for mode in ("handover", "out", "counts"):
        runner.bench_time_func(f"process_batch_{n}[{mode}]", batch, warmup, ops, mode, out, inner_loops=n)


if __name__ == "__main__":
    main()

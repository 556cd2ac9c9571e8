"""pyperf suite: ``Engine.decode_events`` on the events of the mixed flow.

    python perf/bench_decode.py [--ops 100000] [pyperf options]

Values are per event record decoded into an event object. The records are
those of the flow's operations (perf/flow.py, after its warm-up book) run
by one ``process_batch``, untimed:

- decode_events[mixed]: Accepted, Trade, Cancelled and Rejected records;
- decode_events[level_updates]: the same from an Engine made with
  ``level_updates=True``, a LevelUpdate record after each change to a level.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flow  # noqa: E402
from bench_mixed import load_flow, runner_with_ops  # noqa: E402

from pyengine import Engine  # noqa: E402
from pyengine.batch import EVENT_SIZE  # noqa: E402


def decode(loops: int, eng: Engine, events: Any) -> float:
    total = 0.0
    for _ in range(loops):
        t0 = time.perf_counter()
        decoded = eng.decode_events(events)
        total += time.perf_counter() - t0
        del decoded
    return total


def main() -> None:
    runner, n_ops = runner_with_ops(100_000, "pyengine decode_events, time per event record")
    f = load_flow(n_ops)
    warmup, ops = f.packed(f.warmup), f.packed(f.ops)
    for name, levels in (("mixed", False), ("level_updates", True)):
        eng = Engine(expected_orders=1 << 17, level_updates=levels)
        eng.add_instrument(flow.SYMBOL, tick_size=1, lot_size=1)
        eng.process_batch(warmup, collect_events=False)
        events = eng.process_batch(ops).events
        runner.bench_time_func(f"decode_events[{name}]", decode, eng, events, inner_loops=len(events) // EVENT_SIZE)


if __name__ == "__main__":
    main()

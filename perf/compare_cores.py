"""Two builds of the C core on the harness-shaped flow, side by side.

    python perf/compare_cores.py OLD_BENCH NEW_BENCH [--rounds 9] [--messages 2000000]
                                 [--old-path cmd] [--new-path ids_cmd]

OLD_BENCH and NEW_BENCH are ``pyengine_bench`` binaries of two commits (build
the old one from a worktree: ``git worktree add /tmp/old <commit>``, then
``cmake -S /tmp/old -B /tmp/old/build -DCMAKE_BUILD_TYPE=Release`` and
``cmake --build /tmp/old/build``). Each round runs every scenario through
the old build and then the new one (the other way round every second round),
one scenario at a time, so that the machine's drift hits both alike. Prints,
per scenario, the median ns/message of each build's path over the rounds and
the median of the per-round ratios old/new; then the same for the worst
scenario of each round. A ratio above 1 means the new build is faster.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

SCENARIOS = ("static", "normal", "swing25", "swing40", "crash")
ROW = re.compile(r"^harness_(\w+)/(\w+)\s+([0-9.]+) ns/msg")


def run_scenario(bench: str, scenario: str, messages: int, reps: int) -> dict[str, float]:
    """ns/message of every path of one scenario, as one bench run reports them."""
    out = subprocess.run([bench, str(messages), str(reps), f"harness_{scenario}"],
                         capture_output=True, text=True, check=True).stdout
    paths = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m and m.group(1) == scenario:
            paths[m.group(2)] = float(m.group(3))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_bench")
    ap.add_argument("new_bench")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--reps", type=int, default=3, help="replays per path in one bench run (their median)")
    ap.add_argument("--old-path", default="cmd", help="the old build's path to compare (default cmd)")
    ap.add_argument("--new-path", default="ids_cmd", help="the new build's path (default ids_cmd)")
    args = ap.parse_args()

    old: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    new: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    for r in range(args.rounds):
        for s in SCENARIOS:
            order = [("old", args.old_bench), ("new", args.new_bench)]
            for which, bench in order if r % 2 == 0 else reversed(order):
                paths = run_scenario(bench, s, args.messages, args.reps)
                path = args.old_path if which == "old" else args.new_path
                if path not in paths:
                    sys.exit(f"{bench} reports no path {path!r} for {s} (it has {', '.join(paths)})")
                (old if which == "old" else new)[s].append(paths[path])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"{'scenario':10s} {'old ' + args.old_path:>14s} {'new ' + args.new_path:>14s} {'old/new':>8s}"
          f"   (ns/message, medians of {args.rounds} rounds; ratio: median of the rounds' ratios)")
    for s in SCENARIOS:
        ratio = statistics.median(o / n for o, n in zip(old[s], new[s]))
        print(f"{s:10s} {statistics.median(old[s]):14.1f} {statistics.median(new[s]):14.1f} {ratio:8.2f}")
    worst_old = [max(old[s][r] for s in SCENARIOS) for r in range(args.rounds)]
    worst_new = [max(new[s][r] for s in SCENARIOS) for r in range(args.rounds)]
    ratio = statistics.median(o / n for o, n in zip(worst_old, worst_new))
    print(f"{'worst':10s} {statistics.median(worst_old):14.1f} {statistics.median(worst_new):14.1f} {ratio:8.2f}")


if __name__ == "__main__":
    main()

"""Two builds of pyengine-server under one load generator, side by side.

    python perf/compare_servers.py OLD_PYTHON [NEW_PYTHON] [--rate 20000] [--rounds 5]
                                   [--duration 8] [--workers 1] [--pin] [--floor] [--json out.json]
                                   [--server-arg ARG ...]

OLD_PYTHON and NEW_PYTHON are the interpreters of two venvs, each with a
checkout of pyengine installed in place (for the old one: ``git worktree add
/tmp/old <commit>``, ``python -m venv /tmp/oldvenv``, then README's install
command run in /tmp/old with /tmp/oldvenv's pip); NEW_PYTHON defaults to the
one running this. Each round runs this checkout's tools/loadgen.py with
``--spawn-server --server-python`` once against each build, and with
``--floor`` once against the C floor (perf/floor_epoll.c) under the same
load, with no ``--server-arg`` (a floor that sleeps). The order turns each
round so that the machine's drift hits them all alike: old, new; then new,
old; ... and with ``--floor``: floor, old, new; then old, new, floor; then
new, floor, old; ... (perf/loadgen_table.py's rotation). ``--pin`` pins as
``perf/loadgen_table.py --pin`` does. Prints every round's order-to-ack
percentiles, then each build's medians over the rounds and the median of
the per-round differences new - old (negative: the new build is faster),
and the new orders each build rejected when there were any (loadgen's
warning, on stderr, says why: rejects are not in the ack percentiles, but a
build that refuses orders does less work).
``--server-arg`` passes an option to both builds' servers
(``--server-arg=--server-spin-us=200``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # not on the path under PYTHONSAFEPATH
from loadgen_table import FLOORS, PERCENTILES, pinning, rotation, run_once  # noqa: E402

C_FLOOR = FLOORS[0]


def compare(old: str, new: str, rate: float, rounds: int, duration: float, workers: int, pin: bool,
            floor: bool, server_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every round's order-to-ack percentiles of each build (and the floor);
    `server_args`, options for both builds' servers."""
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": [], **({"floor": []} if floor else {})}
    rejected: dict[str, list[int]] = {build: [] for build in runs}
    order = ("floor", "old", "new") if floor else ("old", "new")
    for i in range(rounds):
        for build in rotation(order, i):
            if build == "floor":
                r = run_once(rate, duration, workers, pinning(C_FLOOR) if pin else [], None, C_FLOOR)
                runs["floor"].append(r["ack_us"])
                rejected["floor"].append(r["rejected"])
                continue
            python = old if build == "old" else new
            extra = [*(pinning() if pin else []), "--server-python", python,
                     *(f"--server-arg={a}" for a in server_args)]
            try:
                r = run_once(rate, duration, workers, extra, None)
            except SystemExit as exc:  # run_once's: the load generator's own words
                raise SystemExit(f"round {i + 1}, the {build} build ({python}): {exc}") from None
            runs[build].append(r["ack_us"])
            rejected[build].append(r["rejected"])
        print(f"round {i + 1} of {rounds}: done", file=sys.stderr, flush=True)
    medians = {build: {k: statistics.median(r[k] for r in results) for k in PERCENTILES}
               for build, results in runs.items()}
    change = {k: statistics.median(n[k] - o[k] for o, n in zip(runs["old"], runs["new"])) for k in PERCENTILES}
    return {"rate": rate, "old": old, "new": new, "runs": runs, "medians": medians, "change": change,
            "rejected": rejected}


def print_result(result: dict[str, Any]) -> None:
    builds = [b for b in ("floor", "old", "new") if b in result["runs"]]
    head = " | ".join(f"{b} {k}" for b in builds for k in PERCENTILES)
    offered = "in the closed loop" if result["rate"] == 0 else f"at {result['rate']:,.0f}/s offered"
    print(f"order to ack {offered}, µs; old: {result['old']}, new: {result['new']}\n")
    print(f"| round | {head} |")
    print("| ---: |" + " ---: |" * (len(builds) * len(PERCENTILES)))
    rows = len(result["runs"]["old"])
    for i in range(rows):
        cells = " | ".join(f"{result['runs'][b][i][k]:,.0f}" for b in builds for k in PERCENTILES)
        print(f"| {i + 1} | {cells} |")
    cells = " | ".join(f"{result['medians'][b][k]:,.0f}" for b in builds for k in PERCENTILES)
    print(f"| median | {cells} |")
    change = ", ".join(f"{k} {result['change'][k]:+,.0f}" for k in PERCENTILES)
    print(f"\nnew - old, median of the rounds' differences (µs): {change}")
    rejected = result.get("rejected", {})
    if any(any(counts) for counts in rejected.values()):
        per_build = "; ".join(f"{b} {', '.join(f'{n:,}' for n in rejected[b])}" for b in builds)
        print(f"new orders rejected, round by round: {per_build} (see the load generator's warnings)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_python", metavar="OLD_PYTHON")
    ap.add_argument("new_python", metavar="NEW_PYTHON", nargs="?", default=sys.executable)
    ap.add_argument("--rate", type=float, default=20000.0,
                    help="requests/s offered, cancels included (0: the closed loop)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="server and load generator on separate CPUs")
    ap.add_argument("--floor", action="store_true", help="the C floor too in each round, in turn with the builds")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="an option for both builds' servers (repeat for more), e.g. --server-arg=--server-spin-us=200")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for python in (args.old_python, args.new_python):
        if not (Path(python).is_file() and os.access(python, os.X_OK)):
            ap.error(f"{python}: no such interpreter")
    result = compare(args.old_python, args.new_python, args.rate, args.rounds, args.duration, args.workers,
                     args.pin, args.floor, tuple(args.server_arg))
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

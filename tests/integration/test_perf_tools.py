"""The benchmark scripts run and report well-formed results (in their
quickest settings; no timing is asserted)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyengine.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"bench_engine": ["--depths", "10,1000"], "bench_mixed": ["--ops", "3000"], "bench_batch": ["--ops", "3000"]}


# pyperf workers get a scrubbed environment; a sanitizer build needs its
# runtime preloaded and its options passed on to them as well.
SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "PYTHONMALLOC")


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    inherit = [name for name in SANITIZER_ENV if name in os.environ]
    if inherit and args[0].startswith("perf/bench_"):
        args = [*args, f"--inherit-environ={','.join(inherit)}"]
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize(
    "suite, names",
    [
        ("bench_engine", [f"{b}[depth={d}]" for d in (10, 1000) for b in
                          ("add_resting", "cancel", "match_1_level", "sweep_5_levels", "modify_keep",
                           "modify_reprice", "market")]),
        ("bench_mixed", ["mixed_one_call", "mixed_process_batch", "mixed_process_batch_out", "mixed_pure_python"]),
        ("bench_batch", ["process_batch_3000[handover]", "process_batch_3000[out]", "process_batch_3000[counts]"]),
        ("bench_protocol", ["decode_validate_order", "encode_fill"]),
    ],
)
def test_pyperf_suite(tmp_path: Path, suite: str, names: list[str]) -> None:
    out = tmp_path / "out.json"
    run([f"perf/{suite}.py", *QUICK.get(suite, []), "--debug-single-value", "--quiet", "-o", str(out)])
    data = json.loads(out.read_text())
    got = {b["metadata"]["name"]: b for b in data["benchmarks"]}
    assert sorted(got) == sorted(names)
    for b in got.values():
        values = [v for run_ in b["runs"] for v in run_.get("values", [])]
        assert values and all(v > 0 for v in values)


def test_compare_python_checks_the_trades() -> None:
    proc = run(["perf/compare_python.py", "--ops", "3000", "--repeat", "1"])
    assert proc.stdout.count("the same on every path") == 2  # the mixed flow and the deep one
    lines = [line for line in proc.stdout.splitlines() if "x pure Python" in line]
    assert len(lines) == 8


def fake_bench(path: Path, log: Path, ns: dict[str, tuple[float, float]]) -> str:
    """An executable that answers like pyengine_bench for one harness scenario:
    `cmd` and `ids_cmd` rows with the given ns/message, its call logged."""
    cases = "".join(f'  {scn}) c={c}; i={i} ;;\n' for scn, (c, i) in ns.items())
    path.write_text(f"""#!/bin/sh
scn=${{3#harness_}}
echo "$(basename "$0") $scn" >> {log}
case $scn in
{cases}esac
echo "harness_$scn: 1 limit, 0 ioc, 0 cancel, 0 modify"
echo "harness_$scn/cmd             $c ns/msg  1 msg/s"
echo "harness_$scn/ids_cmd         $i ns/msg  1 msg/s"
echo "harness_worst/cmd            $c ns/msg  1 msg/s   $scn"
""")
    path.chmod(0o755)
    return str(path)


def test_compare_cores_alternates_the_builds_and_takes_ratios(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    scenarios = ("static", "normal", "swing25", "swing40", "crash")
    old = fake_bench(tmp_path / "old", log, {s: (120.0 if s == "swing40" else 100.0, 0.0) for s in scenarios})
    new = fake_bench(tmp_path / "new", log, {s: (0.0, 40.0 if s == "crash" else 50.0) for s in scenarios})
    proc = run(["perf/compare_cores.py", old, new, "--rounds", "2", "--messages", "10"])
    calls = log.read_text().split("\n")[:-1]
    # one scenario at a time, old first in the first round and new first in the second
    assert calls == [f"{b} {s}" for s in scenarios for b in ("old", "new")] + \
        [f"{b} {s}" for s in scenarios for b in ("new", "old")]
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:]}
    assert rows["static"] == ["100.0", "50.0", "2.00"]
    assert rows["swing40"] == ["120.0", "50.0", "2.40"]
    assert rows["crash"] == ["100.0", "40.0", "2.50"]
    assert rows["worst"] == ["120.0", "50.0", "2.40"]  # each build's slowest scenario of the round


def test_compare_cores_names_a_missing_path(tmp_path: Path) -> None:
    bench = fake_bench(tmp_path / "bench", tmp_path / "calls", {"static": (1.0, 1.0)})
    proc = subprocess.run([sys.executable, "perf/compare_cores.py", bench, bench, "--rounds", "1",
                           "--new-path", "ids_batch"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "reports no path 'ids_batch' for static (it has cmd, ids_cmd)" in proc.stderr


def test_call_forms_times_every_form() -> None:
    proc = run(["perf/call_forms.py", "--calls", "200", "--repeat", "1"])
    verbs = [line for line in proc.stdout.splitlines() if line and not line.startswith((" ", "ns per", "worst"))]
    assert verbs == ["submit", "cancel", "modify", "order", "book"]
    assert sum(line.endswith("x") for line in proc.stdout.splitlines()) == 17
    assert "worst documented form:" in proc.stdout


def test_bench_mass_cancel_reports_each_book() -> None:
    # Not a pyperf suite (run() gives those the sanitizer's environment).
    proc = subprocess.run([sys.executable, "perf/bench_mass_cancel.py", "--book", "100,2000", "--repeat", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" orders")[0].strip() for line in lines] == ["100", "2,000"]
    assert all("first cancel-all" in line and line.endswith("(median)") for line in lines)


def test_bench_mass_cancel_needs_two_cancel_alls() -> None:
    proc = subprocess.run([sys.executable, "perf/bench_mass_cancel.py", "--repeat", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--repeat must be at least 2" in proc.stderr


def test_request_costs_reports_each_kind() -> None:
    proc = subprocess.run([sys.executable, "perf/request_costs.py", "--orders", "300", "--repeat", "2", "--runs", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split("  ")[1].strip() for line in proc.stdout.splitlines()[1:]]
    assert rows == ["ping", "new order (resting)", "order_status, an absent client order id",
                    "an order listed by orders", "an order orders skips", "an order mass_cancel skips",
                    "a level of a book_snapshot"]
    assert all(float(line.split()[-2]) >= 0 for line in proc.stdout.splitlines()[4:])


def test_request_costs_needs_something_to_measure() -> None:
    proc = subprocess.run([sys.executable, "perf/request_costs.py", "--orders", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--orders must be at least 1" in proc.stderr


def test_replay_l3_counts(tmp_path: Path) -> None:
    rows = [
        "id,timestamp,exchange_timestamp,price,volume,action,direction",
        "1,0,0,100.0,0.5,created,bid",
        "2,0,0,101.0,0.25,created,ask",
        "3,0,0,100.0,0.5,created,ask",      # trades with 1 in full
        "3,0,0,100.0,0.0,deleted,ask",      # already filled by us
        "2,0,0,101.0,0.25,changed,ask",     # skipped
        "2,0,0,101.0,0.25,deleted,ask",     # cancel
        "9,0,0,101.0,0.25,deleted,ask",     # never entered: skipped
    ]
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    proc = run(["tools/replay_l3.py", "--data", str(path), "--repeat", "1"])
    assert "7 rows -> 3 adds, 2 cancels (2 rows skipped)" in proc.stdout
    assert "1 trades, 1 cancels of orders already filled" in proc.stdout
    assert "1 trades, 1 rejected" in proc.stdout


def _tool(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_stall_share_beyond_a_bound() -> None:
    beyond = _tool("cpu_probe").beyond
    # Over 1 s: stalls of 3 ms and 0.4 ms; beyond 0.5 ms only the first
    # counts, for 2.5 ms.
    stalls = [(0.100, 0.103), (0.500, 0.5004)]
    assert beyond(stalls, 0.0005, 1.0) == pytest.approx(0.0025)
    assert beyond(stalls, 0.003, 1.0) == 0.0
    # Two CPUs stalled over overlapping stretches: the overlap counts once.
    assert beyond([(0.100, 0.104), (0.102, 0.106)], 0.001, 1.0) == pytest.approx(0.005)
    assert beyond([(0.100, 0.104), (0.101, 0.103)], 0.001, 1.0) == pytest.approx(0.003)
    assert beyond([], 0.001, 1.0) == 0.0


def test_cpu_probe_reports(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    proc = run(["tools/cpu_probe.py", "--duration", "0.3", "--wake-rounds", "300", "--json", str(out)])
    assert "beyond 500 µs" in proc.stdout and "round trip" in proc.stdout
    data = json.loads(out.read_text())
    cpus = sorted(os.sched_getaffinity(0))
    assert [c["cpu"] for c in data["cpus"]] == cpus
    for c in data["cpus"]:
        assert 0.0 <= c["beyond"]["2000"] <= c["beyond"]["500"] <= c["stalled"] <= 1.0
    assert [tuple(w["cpus"]) for w in data["wake"]] == [(cpus[0], cpus[0])] + ([(cpus[0], cpus[1])] if len(cpus) > 1 else [])
    assert all(w["round_trip_us"] > 0 for w in data["wake"])


def test_cpu_probe_threshold_past_a_default_bound(tmp_path: Path) -> None:
    # As docs/benchmarks.md runs it (--threshold-us 1000): the default bounds
    # at or below the threshold are left out, not an error.
    out = tmp_path / "probe.json"
    cpu = str(min(os.sched_getaffinity(0)))
    proc = run(["tools/cpu_probe.py", "--cpus", cpu, "--threshold-us", "1000", "--duration", "0.3",
                "--wake-rounds", "0", "--json", str(out)])
    assert "Stalls over 1,000 µs" in proc.stdout
    assert "beyond 2,000 µs" in proc.stdout and "beyond 500 µs" not in proc.stdout
    data = json.loads(out.read_text())
    assert data["threshold_us"] == 1000 and [list(c["beyond"]) for c in data["cpus"]] == [["2000"]]
    # Bounds given at or below the threshold are still refused.
    refused = subprocess.run([sys.executable, "tools/cpu_probe.py", "--threshold-us", "1000", "--bounds-us", "500,2000",
                              "--duration", "0.1", "--wake-rounds", "0"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "--threshold-us must be below every bound" in refused.stderr


def test_loadgen_table(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    proc = run(["perf/loadgen_table.py", "--rates", "2000", "--runs", "1", "--duration", "1", "--probe", "0.3",
                "--pin", "--json", str(out), "--", "--connections", "4", "--warmup", "0.2"])
    assert "beyond 500 µs" in proc.stdout  # the machine's stalls, then the table
    assert "| 2,000/s |" in proc.stdout
    (row,) = json.loads(out.read_text())
    assert row["rate"] == 2000 and row["errors"] == 0 and row["throughput"] > 0
    assert row["ack_p50"] <= row["ack_p99"] <= row["ack_max"]
    # One worker (its report queue's feeder thread may add a little).
    assert row["client_cpu_us"] > 0 and 0 < row["client_busy"] <= 1.05
    # The server's own CPU a reply (its process, from outside), then no errors and nothing rejected.
    assert row["server_cpu_us"] > 0 and 0 < row["server_busy"] <= (os.cpu_count() or 1) + 0.1
    assert (f"| {row['client_cpu_us']:.1f} µs, {row['client_busy']:.2f} CPUs | {row['server_cpu_us']:.2f} µs, "
            f"{row['server_busy']:.2f} CPUs | 0 | 0 |") in proc.stdout
    assert row["rejected"] == row["warnings"] == 0 and "(!)" not in proc.stdout


def test_loadgen_table_shows_the_rejects(tmp_path: Path) -> None:
    """A server that refuses most new orders (an account may hold 5 open
    orders): the table's rejected column counts them and flags the run, and
    loadgen's warning, naming the limit, comes through on stderr."""
    config = tmp_path / "tiny.toml"
    config.write_text("[limits]\nmax_open_orders = 5\n")
    out = tmp_path / "table.json"
    proc = run(["perf/loadgen_table.py", "--rates", "0", "--runs", "1", "--duration", "1", "--probe", "0",
                "--json", str(out), f"--pyengine-arg=--server-arg=--config={config}", "--",
                "--connections", "4", "--warmup", "0.2"])
    (row,) = json.loads(out.read_text())
    assert row["rejected"] > 0 and row["warnings"] == 1 and row["errors"] == 0
    assert f"| 0 | {row['rejected']:,} (!) |" in proc.stdout
    assert "warning (pyengine-server, closed loop): " in proc.stderr and "max_open_orders" in proc.stderr


def test_compare_servers_turns_the_order_each_round(tmp_path: Path) -> None:
    """Each round runs both builds (here two names for this interpreter)
    and, with --floor, the C floor, the order turned by one each round
    (floor, old, new; then old, new, floor); --server-arg goes to both
    builds; the medians and the differences come out of every round."""
    from .test_loadgen import logging_python

    log, out = tmp_path / "ran.log", tmp_path / "compare.json"
    old = logging_python(tmp_path / "old", log, "old")
    new = logging_python(tmp_path / "new", log, "new")
    proc = run(["perf/compare_servers.py", str(old), str(new), "--rounds", "2", "--duration", "1.5", "--rate", "2000",
                "--floor", "--pin", "--json", str(out), "--server-arg=--server-spin-us=300"])
    ran = log.read_text().splitlines()
    assert [line.split()[0] for line in ran] == ["old", "new", "old", "new"]
    assert all(" --server-spin-us=300" in line for line in ran)  # --server-arg reaches both builds' servers
    result = json.loads(out.read_text())
    assert {b: len(r) for b, r in result["runs"].items()} == {"floor": 2, "old": 2, "new": 2}
    for build in ("floor", "old", "new"):
        runs = result["runs"][build]
        assert all(0 < r["p50"] <= r["p99"] for r in runs)
        assert result["medians"][build]["p50"] == sum(r["p50"] for r in runs) / 2
    assert result["change"]["p99"] == ((result["runs"]["new"][0]["p99"] - result["runs"]["old"][0]["p99"])
                                       + (result["runs"]["new"][1]["p99"] - result["runs"]["old"][1]["p99"])) / 2
    assert "| median |" in proc.stdout and "new - old" in proc.stdout
    assert result["rejected"] == {"floor": [0, 0], "old": [0, 0], "new": [0, 0]}
    assert "rejected" not in proc.stdout


def test_compare_servers_names_a_missing_interpreter() -> None:
    proc = subprocess.run([sys.executable, "perf/compare_servers.py", "/nonexistent/python"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/nonexistent/python: no such interpreter" in proc.stderr


def test_loadgen_table_gives_pyengine_its_own_arguments() -> None:
    """--pyengine-arg reaches the spawned server's load generator: a value it
    refuses fails the table, with the load generator's words."""
    proc = subprocess.run([sys.executable, "perf/loadgen_table.py", "--rates", "2000", "--runs", "1", "--duration", "0.5",
                           "--probe", "0", "--pyengine-arg=--spawn-fsync=sometimes"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "loadgen failed" in proc.stderr and "invalid choice: 'sometimes'" in proc.stderr, proc.stderr


def test_loadgen_table_against_the_floors(tmp_path: Path) -> None:
    """--floors runs the C floor (built here, warnings as errors), the same
    with the hand-off thread, the gevent floor and pyengine-server, and
    states pyengine's percentiles as ratios. --pyengine-arg goes to
    pyengine-server's runs alone (a floor given --spawn-fsync would fail).
    --server-spin-us adds the C and hand-off floors and pyengine-server
    polling after each read, each pyengine-server's ratios to every floor."""
    out = tmp_path / "floors.json"
    proc = run(["perf/loadgen_table.py", "--floors", "--server-spin-us", "300", "--rates", "2000", "--runs", "1",
                "--duration", "1", "--probe", "0", "--json", str(out), "--pyengine-arg=--spawn-fsync=off", "--",
                "--connections", "4", "--warmup", "0.2"])
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 2,000/s |")]
    assert [row.split(" | ")[1] for row in rows] == [
        "C floor (perf/floor_epoll.c)", "hand-off floor (perf/floor_handoff.py)", "gevent floor (perf/floor_gevent.py)",
        "C floor polling 300 µs", "hand-off floor polling 300 µs", "pyengine-server",
        "pyengine-server --server-spin-us 300"]
    assert all(row.endswith("| 0 | 0 |") for row in rows)  # no errors, nothing unanswered, no rejects
    (row,) = json.loads(out.read_text())
    floors = ["c_floor", "c_floor_spin", "gevent_floor", "handoff_floor", "handoff_floor_spin"]
    assert row["rate"] == 2000 and sorted(row["servers"]) == sorted([*floors, "pyengine", "pyengine_spin"])
    for figures in row["servers"].values():
        assert figures["throughput"] > 0 and 0 < figures["ack_p50"] <= figures["ack_p99.9"]
        assert figures["client_cpu_us"] > 0 and 0 < figures["client_busy"] <= 1.05
    assert sorted(row["ratios"]) == ["pyengine", "pyengine_spin"]
    for ours, ratios_of in row["ratios"].items():
        assert sorted(ratios_of) == floors
        for floor, ratios in ratios_of.items():
            assert sorted(ratios) == ["p50", "p90", "p99", "p99.9"]
            assert all(math.isfinite(r) and r > 0 for r in ratios.values()), ratios
            assert ratios["p50"] == row["servers"][ours]["ack_p50"] / row["servers"][floor]["ack_p50"]
    for line in rows[5:]:
        assert (line.count("x C, ") == line.count("x hand-off, ") == line.count("x gevent, ")
                == line.count("x C polling, ") == line.count("x hand-off polling)") == 4)


def test_loadgen_table_spin_needs_the_floors() -> None:
    proc = subprocess.run([sys.executable, "perf/loadgen_table.py", "--server-spin-us", "100", "--probe", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--server-spin-us needs --floors" in proc.stderr


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


def _replies(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    data = b""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(out)} of {n} replies"
        data += chunk
        while len(data) >= 4 and len(data) - 4 >= (size := int.from_bytes(data[:4], "big")):
            out.append(json.loads(data[4:4 + size]))
            data = data[4 + size:]
    return out


def test_the_handoff_floor_answers_in_order_through_its_thread(tmp_path: Path) -> None:
    """perf/floor_handoff.py: every reply comes back through the second
    thread to its own connection, in order, through rings of 16 slots (full
    at every read, so the main thread waits for room and takes replies back
    meanwhile); a connection that goes with replies in flight costs the
    others nothing; SIGTERM stops it cleanly."""
    server = ServerProcess(["--port", "0", "--ring-slots", "16"], tmp_path / "floor.log",
                           launcher=(str(ROOT / "perf" / "floor_handoff.py"),))
    try:
        assert server.port is not None
        count = 20_000
        with socket.create_connection(("127.0.0.1", server.port)) as gone:
            gone.sendall(b"".join(_frame({"type": "new_order", "req_id": i}) for i in range(count)))
        with socket.create_connection(("127.0.0.1", server.port)) as a, \
                socket.create_connection(("127.0.0.1", server.port)) as b:
            a.sendall(b"".join(_frame({"type": "new_order", "req_id": i}) for i in range(count)))
            b.sendall(_frame({"type": "login", "req_id": "x", "account": 7}) + _frame({"type": "ping", "req_id": 2}))
            assert _replies(b, 2) == [{"type": "logged_in", "req_id": "x", "account": 7},
                                      {"type": "pong", "req_id": 2}]
            acks = _replies(a, count)
        assert [r["req_id"] for r in acks] == list(range(count))
        assert all(r["type"] == "ack" for r in acks)
        ids = [r["order_id"] for r in acks]
        assert ids == sorted(ids) and len(set(ids)) == count
    finally:
        code = server.stop(10)
    assert code == 0, server.tail()


def test_the_benchmarks_inputs_are_kept_for_their_code_and_parameters_in_a_directory_of_this_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_cache", ROOT / "perf" / "cache.py")
    cache = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(cache)  # type: ignore[union-attr]
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    source = tmp_path / "flow.py"
    source.write_text("version 1")
    made: list[int] = []

    def make(n: int) -> bytes:
        made.append(n)
        return b"x" * n

    folder = tmp_path / f"pyengine-bench-{os.getuid()}"
    assert cache.cached("flow", lambda: make(3), [source], 3) == b"xxx"
    assert cache.cached("flow", lambda: make(3), [source], 3) == b"xxx" and made == [3]  # kept
    assert cache.cached("flow", lambda: make(4), [source], 4) == b"xxxx"  # other parameters, kept beside
    assert cache.cached("flow", lambda: make(2), [source], 3, 5) == b"xx"  # (a name that starts as the first's)
    first = sorted(p.name for p in folder.iterdir())
    source.write_text("version 2")
    assert cache.cached("flow", lambda: make(3), [source], 3) == b"xxx" and made == [3, 4, 2, 3]  # other code
    now = sorted(p.name for p in folder.iterdir())  # the one it replaces is gone, the others stay
    (gone,) = set(first) - set(now)
    assert len(now) == 3 and gone.startswith("flow-3-") and gone.count("-") == 2  # (3,)'s, not (3, 5)'s
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # another user could plant what it reads
    with pytest.raises(SystemExit, match="no one else can write to"):
        cache.cached("flow", lambda: make(3), [source], 3)

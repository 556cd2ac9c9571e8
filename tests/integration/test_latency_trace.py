"""The per-stage latency breakdown of a real server (--trace-latency,
pyengine/server/latency_trace.py): orders sent over TCP, the breakdown read
from the server's log. Every stage is there, its count is the number of
orders traced, and no order's stamps are out of stage order (each stage's
shortest time is >= 0). No timings are asserted."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client
from pyengine.server.config import ConfigError, config_from_dict
from pyengine.server.latency_trace import STAGES

from .conftest import RunningServer

ES, NQ = "ESZ6", "NQZ6"
ROOT = Path(__file__).resolve().parents[2]


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def breakdown_logs(server: RunningServer) -> list[tuple[dict[str, str], dict[str, dict[str, str]]]]:
    """Each breakdown the server logged: its latency_trace counts and its stage_latency lines by stage."""
    out: list[tuple[dict[str, str], dict[str, dict[str, str]]]] = []
    for line in server.lines:
        f = _fields(line)
        if f.get("event") == "latency_trace" and "traced" in f:
            out.append((f, {}))
        elif f.get("event") == "stage_latency":
            assert out, line
            out[-1][1][f["stage"]] = f
    return out


def pause_logs(server: RunningServer) -> list[dict[str, str]]:
    """Every gc_pauses line the server logged."""
    return [f for f in map(_fields, server.lines) if f.get("event") == "gc_pauses"]


def check_pauses(lines: list[dict[str, str]]) -> None:
    """One line per generation, its figures consistent."""
    assert [f["generation"] for f in lines] == ["0", "1", "2"]
    for f in lines:
        n, total_us, longest_us = int(f["collections"]), float(f["total_ms"]) * 1000, float(f["longest_us"])
        # total_ms is rounded to the µs, longest_us to a tenth of one: one collection's may differ by 0.55.
        assert n >= 0 and longest_us <= total_us + 0.55, f
        if n == 0:
            assert total_us == 0 and longest_us == 0, f


def send_orders(c: Client, n: int, account: int) -> int:
    """`n` new orders on one connection, answered before it returns: resting
    buys, sells crossing some of them, a post-only that crosses (the
    engine's reject), and a cancel (not a new order: never traced)."""
    c.login(account)
    req_ids = []
    for i in range(n):
        if i % 5 == 3:
            req_ids.append(c.new_order(ES, "sell", 1, 400_000 - 25 * (i % 4), tif="ioc"))
        elif i % 7 == 6:
            req_ids.append(c.new_order(ES, "sell", 1, 300_000, post_only=True))
        else:
            req_ids.append(c.new_order(ES, "buy", 1, 400_000 - 25 * (i % 4)))
    answers = [c.request(r, timeout=10)["type"] for r in req_ids]
    assert set(answers) <= {"ack", "reject"} and "reject" in answers
    ack = c.request(c.new_order(NQ, "buy", 1, 1_000_000), timeout=10)
    assert ack["type"] == "ack"
    c.request(c.cancel(ack["order_id"]), timeout=10)
    return n + 1


def check(counts: dict[str, str], stages: dict[str, dict[str, str]], traced: int) -> None:
    assert int(counts["traced"]) == traced
    assert int(counts["completed"]) == traced and int(counts["lost"]) == 0
    assert list(stages) == [s for s, _, _ in STAGES]  # every stage, in order
    for name, f in stages.items():
        assert int(f["count"]) == traced, name
        # Stamps out of stage order would make a stage's time negative.
        assert float(f["min_us"]) >= 0, f"stage {name}: {f}"
        assert (float(f["p50_us"]) <= float(f["p90_us"]) <= float(f["p99_us"]) <= float(f["p999_us"])
                <= float(f["max_us"])), name


def test_every_order_traced_over_several_connections(server_factory: Any) -> None:
    server = server_factory(None, "--trace-latency", "1")
    clients = [server.client() for _ in range(3)]
    try:
        sent = sum(send_orders(c, 40, account) for account, c in enumerate(clients, start=1))
    finally:
        for c in clients:
            c.close()
    assert server.stop() == 0
    (counts, stages), = breakdown_logs(server)
    check_pauses(pause_logs(server))
    # One in one: every new order is traced, unless its slot was busy with
    # another in flight (skipped: the only way an order goes untraced).
    assert int(counts["traced"]) + int(counts["skipped"]) == sent
    check(counts, stages, int(counts["traced"]))


def test_one_in_n_from_the_configuration_and_on_sigusr1(server_factory: Any) -> None:
    server = server_factory("[server]\ntrace_latency = 3\n")
    with server.client() as c:
        sent = send_orders(c, 29, 1)  # 30 new orders with the one to cancel
    assert sent == 30
    server.proc.send_signal(signal.SIGUSR1)
    server.wait_log("event=stage_latency stage=total")
    server.wait_log("event=gc_pauses generation=2")
    (counts, stages), = breakdown_logs(server)
    check(counts, stages, 10)
    check_pauses(pause_logs(server))
    assert server.stop() == 0
    logged = breakdown_logs(server)
    assert len(logged) == 2 and logged[1][0]["traced"] == "10"  # at stop, once more
    pauses = pause_logs(server)
    check_pauses(pauses[3:])
    # Counted from the start on: the later lines hold the earlier ones.
    assert all(int(b["collections"]) >= int(a["collections"]) for a, b in zip(pauses[:3], pauses[3:]))


def test_off_by_default(server: RunningServer) -> None:
    with server.client() as c:
        send_orders(c, 10, 1)
    assert server.stop() == 0
    assert breakdown_logs(server) == [] and pause_logs(server) == []
    assert not any("latency_trace" in line for line in server.lines)


def test_trace_latency_is_at_least_zero() -> None:
    assert config_from_dict({"server": {"trace_latency": 10}}).trace_latency == 10
    with pytest.raises(ConfigError, match=r"trace_latency must be from 0 to 4294967295 \(one new order in N; 0: off\)"):
        config_from_dict({"server": {"trace_latency": -1}})


def test_the_breakdown_splits_the_servers_arguments_from_the_load_generators() -> None:
    """--pin's arguments: the servers' go to the traced server, the rest to the load generator."""
    spec = importlib.util.spec_from_file_location("latency_breakdown", ROOT / "perf" / "latency_breakdown.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    split_server_args = module.split_server_args
    assert split_server_args(["--cpus", "1", "--server-arg=--server-cpu=0", "--server-arg=--engine-cpu=0"]) == (
        ["--cpus", "1"], ["--server-cpu=0", "--engine-cpu=0"])
    assert split_server_args([]) == ([], [])


def test_the_breakdown_benchmark_runs(tmp_path: Path) -> None:
    """perf/latency_breakdown.py in its quickest settings: a row per stage,
    from the traced server's own log."""
    out = tmp_path / "breakdown.json"
    proc = subprocess.run([sys.executable, "perf/latency_breakdown.py", "--rate", "1000", "--runs", "1", "--duration",
                           "1", "--every", "5", "--no-floor", "--json", str(out), "--", "--connections", "4",
                           "--warmup", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split(" | ")[0].lstrip("| ") for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [s for s, _, _ in STAGES] == [r for r in rows if r in {s for s, _, _ in STAGES}]
    result = json.loads(out.read_text())
    assert result["pyengine"]["errors"] == 0 and result["c_floor"] is None
    counts = {f["count"] for f in result["stages"].values()}
    assert len(counts) == 1 and counts.pop() > 0  # every stage over the same traced orders
    assert sorted(result["gc_pauses"]) == ["0", "1", "2"] and "The cyclic collector's pauses" in proc.stdout

"""tools/loadgen.py against a spawned server: the output is well formed and
the counts add up (every order answered; cancels and fills balance)."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def run_loadgen(tmp_path: Path, *args: str, stderr: list[str] | None = None) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--spawn-server", "--json", str(out),
         "--connections", "6", "--workers", "2", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "order->ack" in proc.stdout and "throughput" in proc.stdout and "load generator CPU" in proc.stdout
    assert "server CPU" in proc.stdout  # the spawned server's, over the measured window
    if stderr is not None:
        stderr.append(proc.stderr)
    r = json.loads(out.read_text())
    # The summary line's counts add up to what was sent.
    assert (f"sent {r['sent']} ({r['new_orders_sent']} new orders, {r['cancels_sent']} cancels) = "
            f"acked {r['acked']} + rejected {r['rejected']} + cancelled {r['cancelled']} + "
            f"cancel rejected {r['cancel_rejects']} + error replies {r['error_replies']} + "
            f"unanswered {r['unanswered']};") in proc.stdout
    return r


def check_counts(r: dict) -> None:
    for key in ("ack_us", "fill_us"):
        assert set(r[key]) >= {"p50", "p90", "p99", "p99.9", "max"}
        assert r[key]["p50"] <= r[key]["p90"] <= r[key]["p99"] <= r[key]["p99.9"] <= r[key]["max"]
    # Every order got its answer: acks and rejects for new orders, a
    # cancelled or (if it had traded away meanwhile) a reject for cancels.
    assert r["unanswered"] == 0 and r["errors"] == 0
    assert r["sent"] == r["acked"] + r["rejected"] + r["cancelled"] + r["cancel_rejects"]
    assert r["sent"] == r["new_orders_sent"] + r["cancels_sent"]
    assert r["new_orders_sent"] == r["acked"] + r["rejected"]
    # Every connection is the generator's, so each trade's two fills came
    # back: one to the maker, one to the taker.
    assert r["acked"] > 0 and r["fills"] > 0
    # The server answered every reply of the window with CPU of its own, on at most every CPU there is.
    assert 0 < r["server_cpus_busy"] <= (os.cpu_count() or 1) + 0.1
    assert r["server_cpu_us_per_reply"] == r["server_cpu_s"] * 1e6 / r["window_replies"] > 0
    assert r["maker_fills"] == r["taker_fills"] == r["fills"] // 2
    assert r["throughput_per_s"] > 0
    assert r["ack_us"]["count"] > 0
    # The workers' own CPU: some, and no more than the workers could use (a
    # worker's report queue has a feeder thread, which may add a little).
    assert r["client_cpu_s"] > 0 and 0 < r["client_cpus_busy"] <= r["params"]["workers"] * 1.05
    assert r["client_cpu_us_per_order"] == r["client_cpu_s"] * 1e6 / r["sent"]
    # The rates are over the measured window, from the end of the warm-up to
    # the last reply: throughput leaves the new orders' rejects out.
    assert 0 < r["window_replies"] <= r["sent"]
    assert r["requests_per_s"] == r["window_replies"] / r["window_s"]
    assert r["throughput_per_s"] == (r["window_replies"] - r["window_rejected"]) / r["window_s"]


def test_open_loop(tmp_path: Path) -> None:
    r = run_loadgen(tmp_path, "--rate", "2000", "--duration", "2", "--warmup", "0.2")
    check_counts(r)
    assert r["params"]["rate"] == 2000
    # 2,000 orders a second leave the workers idle most of the time: what
    # they report is CPU time, not the wall clock's (about 1 a worker).
    assert r["client_cpus_busy"] < 0.75 * r["params"]["workers"]


def test_closed_loop_count(tmp_path: Path) -> None:
    r = run_loadgen(tmp_path, "--rate", "0", "--count", "3000", "--warmup", "0")
    check_counts(r)
    assert r["sent"] == 3000
    # With no warm-up every answer is in a histogram (counted by value, then
    # put in at the end): acks and cancels in the ack's, rejects in their own.
    assert r["ack_us"]["count"] == r["acked"] + r["cancelled"]
    assert r["reject_us"]["count"] == r["rejected"] + r["cancel_rejects"]
    assert r["window_replies"] == r["sent"]


def test_rejects_are_counted_apart_from_the_acks(tmp_path: Path) -> None:
    """A server that lets an account hold 5 open orders refuses most of the
    closed loop's new orders at once: the rejects are counted, timed and
    shown apart, never as acks, and the summary warns, naming the limit."""
    config = tmp_path / "tiny.toml"
    config.write_text("[limits]\nmax_open_orders = 5\n")
    stderr: list[str] = []
    r = run_loadgen(tmp_path, "--rate", "0", "--count", "3000", "--warmup", "0", f"--server-arg=--config={config}",
                    stderr=stderr)
    assert r["unanswered"] == r["errors"] == 0
    assert r["rejected"] > 0.1 * r["new_orders_sent"]
    assert r["reject_codes"] == {"max_open_orders_exceeded": r["rejected"]}
    assert r["sent"] == r["acked"] + r["rejected"] + r["cancelled"] + r["cancel_rejects"]
    assert r["ack_us"]["count"] == r["acked"] + r["cancelled"]
    assert r["reject_us"]["count"] == r["rejected"] + r["cancel_rejects"]
    assert r["rejected_share"] == r["rejected"] / r["new_orders_sent"]
    assert r["throughput_per_s"] == (r["window_replies"] - r["window_rejected"]) / r["window_s"]
    assert r["window_rejected"] == r["rejected"]
    (warning,) = r["warnings"]
    assert f"{r['rejected']} of {r['new_orders_sent']} new orders" in warning and "max_open_orders = 0" in warning
    assert f"warning: {warning}" in stderr[0]


def test_the_rates_are_over_the_measured_window(tmp_path: Path) -> None:
    """The window starts at the end of the warm-up and ends at the last
    reply: the warm-up's replies and the last wait (0.2 s once every worker
    is quiet) are left out, and the whole run is reported apart."""
    r = run_loadgen(tmp_path, "--rate", "2000", "--duration", "2", "--warmup", "0.5")
    check_counts(r)
    assert r["warnings"] == [] and r["rejected"] == 0
    assert r["window_replies"] < r["sent"]  # the warm-up's replies are not in it
    assert r["elapsed_s"] >= r["params"]["warmup"] + r["window_s"] + 0.2
    assert math.isclose(r["new_orders_per_s"] + r["cancels_per_s"], r["throughput_per_s"])


def test_closed_loop_with_the_c_workers(tmp_path: Path) -> None:
    # tools/loadgen_worker.c in place of the Python workers: the same counts,
    # the same checks (every request answered, each trade's two fills back,
    # the workers' and the server's CPU), from two workers.
    # 5,000 requests a connection: within the server's per-session burst
    # (20,000) and open-order limit (10,000), at any speed.
    r = run_loadgen(tmp_path, "--rate", "0", "--count", "30000", "--warmup", "0", "--driver", "c")
    check_counts(r)
    assert r["params"]["driver"] == "c" and r["params"]["workers"] == 2
    assert r["sent"] == 30000 and r["rejected"] == 0
    assert r["cancelled"] > 0 and r["fill_us"]["count"] > 0


def test_c_workers_against_the_c_floor(tmp_path: Path) -> None:
    # A reference server that answers every frame at once (no fills) and logs
    # its port as pyengine-server does.
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--spawn-script", str(ROOT / "perf" / "floor_epoll.py"),
         "--json", str(out), "--connections", "4", "--workers", "1", "--rate", "0", "--count", "20000",
         "--warmup", "0", "--driver", "c"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["sent"] == 20000 and r["unanswered"] == 0 and r["errors"] == 0
    assert r["sent"] == r["acked"] + r["cancelled"] + r["cancel_rejects"] and r["rejected"] == 0
    assert r["cancels_sent"] == r["cancelled"] > 0 and r["fills"] == 0


def test_c_workers_count_every_slow_reply(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    # A server stopped for 1.3 s: the replies then read at once have the
    # same latency, past the second a C worker counts in its array, and
    # each still counts in the histograms.
    server = server_factory("[limits]\nrate = 0\nmax_open_orders = 0\n")
    out = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port), "--json", str(out),
         "--connections", "2", "--workers", "1", "--window", "64", "--rate", "0", "--duration", "3",
         "--warmup", "0", "--driver", "c"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        server.wait_log(r"event=login .*account=2\b", timeout=60)
        time.sleep(0.5)  # sending starts 0.2 s after the logins
        server.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.3)
    finally:
        server.proc.send_signal(signal.SIGCONT)
        output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    r = json.loads(out.read_text())
    assert r["ack_us"]["max"] >= 1_000_000 and r["unanswered"] == 0
    assert r["ack_us"]["count"] == r["acked"] + r["cancelled"]
    assert r["reject_us"]["count"] == r["rejected"] + r["cancel_rejects"]


def test_the_orders_a_stall_across_the_end_of_an_open_loop_made_late_still_go_out(
        server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    # The load generator stopped from 2 s into a 3 s run until 0.5 s past its
    # end: the orders due meanwhile before the end are sent on waking, late
    # (their latency counted from when they were due); they were left out.
    server = server_factory("[limits]\nrate = 0\nmax_open_orders = 0\n")
    out = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port), "--json", str(out),
         "--connections", "4", "--workers", "1", "--rate", "2000", "--duration", "3", "--warmup", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        server.wait_log(r"event=login .*account=4\b", timeout=60)
        time.sleep(2.2)  # sending starts 0.2 s after the logins
        os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(1.5)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    r = json.loads(out.read_text())
    assert r["sent"] >= 0.98 * 2000 * 3, output
    assert r["ack_us"]["max"] >= 500_000 and r["unanswered"] == 0


def test_a_count_that_ends_within_the_warm_up_measures_nothing_and_says_so(
        server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port), "--connections", "2",
         "--workers", "1", "--rate", "0", "--count", "200", "--warmup", "5"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "error: no reply came after the warm-up (5 s)" in proc.stderr, proc.stderr


@pytest.mark.parametrize("driver", ["python", "c"])
@pytest.mark.parametrize("duration", [[], ["--duration", "1.5"]])
def test_a_worker_whose_share_of_the_count_is_none_sends_nothing(server_factory: Callable[..., RunningServer],
                                                                 tmp_path: Path, driver: str,
                                                                 duration: list[str]) -> None:
    # --count 1 over two workers: the second one's share is 0 requests, not "no count".
    server = server_factory()
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port), "--json", str(out),
         "--connections", "2", "--workers", "2", "--rate", "0", "--count", "1", "--warmup", "0", *duration,
         "--driver", driver],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["sent"] == 1 and r["unanswered"] == 0 and r["errors"] == 0


def test_c_workers_run_the_closed_loop_only() -> None:
    for extra in (["--rate", "1000"], ["--busy-poll"]):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--driver", "c", *extra],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "--driver c runs the closed loop only" in proc.stderr, proc.stderr


def test_count_and_the_c_workers_window_are_checked() -> None:
    for extra, message in ((["--count", "0"], "--count must be at least 1, not 0"),
                           (["--count", "-2", "--duration", "2"], "--count must be at least 1, not -2"),
                           (["--driver", "c", "--window", "8193"],
                            "--driver c keeps at most 8192 requests in flight a connection: --window 8193")):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), *extra],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_duration_must_exceed_warmup() -> None:
    for duration, warmup in (("1", "1"), ("0.5", "1")):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--duration", duration,
                               "--warmup", warmup], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "must be longer than --warmup" in proc.stderr, proc.stderr


def test_pinned_run(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    r = run_loadgen(tmp_path, "--rate", "0", "--count", "2000", "--warmup", "0", "--cpus", str(cpu),
                    f"--server-arg=--server-cpu={cpu}")
    check_counts(r)
    assert r["params"]["cpus"] == [cpu]


def test_busy_poll_open_loop(tmp_path: Path) -> None:
    r = run_loadgen(tmp_path, "--rate", "2000", "--duration", "1.5", "--warmup", "0.2", "--busy-poll",
                    "--cpus", str(max(os.sched_getaffinity(0))))
    check_counts(r)
    assert r["params"]["busy_poll"] is True
    # An open loop never runs ahead of its schedule (how far it falls behind
    # is the machine's business): at most 1.5 s at 2,000/s.
    assert 0 < r["sent"] <= 3000


def test_server_arg_needs_spawn_server() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--server-arg=--spin-us=0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--server-arg needs --spawn-server" in proc.stderr


def logging_python(path: Path, log: Path, name: str) -> Path:
    """An interpreter that notes `name` and its arguments in `log`, then is
    this one: what --server-python runs shows in the log."""
    quote = shlex.quote
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {quote(str(log))}\nexec {quote(sys.executable)} "$@"\n')
    path.chmod(0o755)
    return path


def test_server_python_runs_the_spawned_server_under_it(tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    python = logging_python(tmp_path / "python", log, "other")
    r = run_loadgen(tmp_path, "--rate", "2000", "--duration", "2", "--server-python", str(python))
    check_counts(r)
    (line,) = log.read_text().splitlines()
    assert line.startswith("other -m pyengine.server.cli --port 0")


def test_server_python_is_checked() -> None:
    loadgen = str(ROOT / "tools" / "loadgen.py")
    proc = subprocess.run([sys.executable, loadgen, "--server-python", sys.executable],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--server-python needs --spawn-server" in proc.stderr
    proc = subprocess.run([sys.executable, loadgen, "--spawn-server", "--server-python", "/nonexistent/python"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/nonexistent/python is not an executable" in proc.stderr


def test_max_reject_rate_fails_a_run_with_more_rejects(server_factory: Callable[..., RunningServer],
                                                       tmp_path: Path) -> None:
    """Against a server whose accounts may hold 5 open orders, most new
    orders of a closed loop are refused: loadgen warns and exits 0 by
    default, exits 1 when --max-reject-rate is given below the rejected
    share (and says so), and 0 again when the share stays within it."""
    server = server_factory("[limits]\nmax_open_orders = 5\n")
    out = tmp_path / "result.json"

    def loadgen(*extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port),
                               "--rate", "0", "--count", "2000", "--warmup", "0", "--connections", "4",
                               "--workers", "2", "--json", str(out), *extra],
                              capture_output=True, text=True, timeout=120)
        return proc, json.loads(out.read_text())

    proc, r = loadgen()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert r["rejected_share"] > 0.05 and r["errors"] == r["unanswered"] == 0
    assert "warning: " in proc.stderr and "error: " not in proc.stderr

    proc, r = loadgen("--max-reject-rate", "0.05")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert r["rejected_share"] > 0.05 and r["errors"] == r["unanswered"] == 0
    assert (f"error: {r['rejected']} of {r['new_orders_sent']} new orders ({100 * r['rejected_share']:.2f}%) "
            "were rejected, more than --max-reject-rate 0.05") in proc.stderr

    proc, r = loadgen("--max-reject-rate", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert r["rejected"] > 0 and "error: " not in proc.stderr


def test_max_reject_rate_is_a_fraction() -> None:
    for bad in ("-0.1", "1.5", "nan"):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--max-reject-rate", bad],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "--max-reject-rate must be from 0 to 1" in proc.stderr, proc.stderr

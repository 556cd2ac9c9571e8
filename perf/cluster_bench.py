"""A replicated shard against a single server with a journal, on this machine.

    python perf/cluster_bench.py [--runs 3] [--duration 8] [--one-by-one 2000] [--failovers 10]
                                 [--lease-ttl 1.0] [--json out.json]

In one run, interleaved, each figure the median of ``--runs``:
- a single ``pyengine-server`` with ``--data-dir`` and ``--fsync batch``
  (every ack after the journal's group commit), and
- the leader of a two-node shard on a three-server NATS cluster (every ack
  after JetStream stored the command on a quorum), each node and NATS server
  a process of its own on loopback,

both driven by tools/loadgen.py: the closed loop (requests/s, cancels
included, 50 connections) and 5,000 requests/s offered (order-to-ack
percentiles), with the CPU each process used per request, and the C floor (perf/floor_epoll.py:
a server that answers each request at once, the machine and its loopback)
under the same load in the same rounds, each latency also given as a ratio
to the floor's. Then one client sending ``--one-by-one`` orders one after
another to each (and a bare JetStream append, for scale). Then ``--failovers`` times: kill -9 the leader while a
client sends orders one after another, and time from the kill to the first
order the new leader acknowledges (the client finds it through not_leader,
as pyengine.client does); the killed node comes back as a follower for the
next round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from pyengine.client import Client, ConnectionClosed, ServerError
from pyengine.cluster.localnats import LocalNats
from pyengine.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadgen(port: int, rate: float, duration: float, watch: dict[str, int] | None = None) -> dict[str, Any]:
    """One run; with `watch` (role -> pid), the CPU each used per order sent (µs)."""
    before = {role: cpu_seconds(pid) for role, pid in (watch or {}).items()}
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(port), "--rate", str(rate),
               "--duration", str(duration), "--json", f.name, "--warmup", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed:\n{proc.stdout}\n{proc.stderr}")
        result: dict[str, Any] = json.loads(Path(f.name).read_text())
    result["cpu_us_per_order"] = {role: (cpu_seconds(pid) - before[role]) / max(1, result["sent"]) * 1e6
                                  for role, pid in (watch or {}).items()}
    return result


FLOOR = "C floor (perf/floor_epoll.c)"


def floor_server(work: Path) -> ServerProcess:
    return ServerProcess(["--port", "0"], work / f"floor-{time.monotonic_ns()}.log",
                         launcher=(str(ROOT / "perf" / "floor_epoll.py"),))


def single_server(work: Path) -> ServerProcess:
    return ServerProcess(["--port", "0", "--data-dir", str(work / f"data-{time.monotonic_ns()}"), "--fsync", "batch",
                          "--stats-interval", "0", "--log-level", "debug"], work / f"single-{time.monotonic_ns()}.log")


class Shard:
    """Two nodes of one shard (every instrument) on a fresh NATS cluster."""

    def __init__(self, work: Path, lease_ttl: float) -> None:
        self.work = work / f"shard-{time.monotonic_ns()}"
        self.work.mkdir()
        self.nats = LocalNats(self.work / "nats").start()
        self.config = self.work / "cluster.toml"
        self.config.write_text(f"[cluster]\nnats = {json.dumps(self.nats.urls)}\nlease_ttl = {lease_ttl}\n")
        self.nodes = {n: ServerProcess(self.args(n), self.work / f"{n}.log", timeout=60) for n in ("a1", "a2")}

    def args(self, node: str) -> list[str]:
        return ["--config", str(self.config), "--shard", "a", "--node", node, "--port", "0", "--stats-interval", "0",
                "--log-level", "debug"]

    def leader(self, timeout: float = 30.0) -> tuple[str, ServerProcess]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, node in self.nodes.items():
                if node.proc.poll() is None and _role(node.port) == "leader":
                    return name, node
            time.sleep(0.02)
        raise SystemExit("no leader")

    def restart(self, name: str) -> None:
        self.nodes[name] = ServerProcess(self.args(name), self.work / f"{name}.log", timeout=60)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.stop()
        self.nats.stop()


def _role(port: int | None) -> str | None:
    try:
        with Client("127.0.0.1", port or 0, timeout=2) as c:
            role: str | None = c.request(c.status(), timeout=2)["role"]
            return role
    except (OSError, ConnectionClosed, ServerError):
        return None


def failover(shard: Shard) -> float:
    """Seconds from kill -9 of the leader to the first ack of the new one."""
    name, leader = shard.leader()
    addresses = [f"127.0.0.1:{n.port}" for n in shard.nodes.values()]
    client = Client(addresses, timeout=5, find_leader_for=30)
    client.login(7, cancel_on_disconnect=False)
    for i in range(20):  # trading before the kill
        client.request(client.new_order("ESZ6", "buy", 1, 449_000 + 25 * (i % 4)))
    leader.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait()
    while True:
        try:
            reply = client.request(client.new_order("ESZ6", "buy", 1, 449_000), timeout=5)
        except (ConnectionClosed, OSError, TimeoutError):
            time.sleep(0.001)
            continue
        if reply["type"] == "ack":
            took = time.monotonic() - killed
            break
    client.close()
    shard.restart(name)
    return took


def one_by_one(port: int, n: int) -> float:
    """The median order-to-ack time of one client sending one order after another (µs)."""
    with Client("127.0.0.1", port, timeout=10) as c:
        c.login(7)
        times = []
        for i in range(n):
            start = time.perf_counter()
            c.request(c.new_order("ESZ6", "buy" if i % 2 else "sell", 1, 450_000 + 25 * (i % 5 - 2)))
            times.append(time.perf_counter() - start)
    return statistics.median(times[n // 10:]) * 1e6


def raw_append(urls: list[str], n: int) -> float:
    """The median time of one JetStream append of one record, 3 replicas, one after another (µs)."""
    async def run() -> float:
        nc = await nats.connect(urls)
        js = nc.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench"], num_replicas=3)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await js.publish("bench", bytes(88))
            times.append(time.perf_counter() - start)
        await js.delete_stream("BENCH")
        await nc.close()
        return statistics.median(times[n // 10:]) * 1e6
    return asyncio.run(run())


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median
    return {
        "throughput": med(r["throughput_per_s"] for r in runs),
        "p50": med(r["ack_us"]["p50"] for r in runs),
        "p99": med(r["ack_us"]["p99"] for r in runs),
        "p99.9": med(r["ack_us"]["p99.9"] for r in runs),
        "cpu_us_per_order": {role: med(r["cpu_us_per_order"][role] for r in runs)
                             for role in runs[0]["cpu_us_per_order"]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--failovers", type=int, default=10)
    ap.add_argument("--lease-ttl", type=float, default=1.0)
    ap.add_argument("--one-by-one", type=int, default=2000, metavar="N",
                    help="orders one client sends one after another (0: none)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
                               "command": " ".join(["python", "perf/cluster_bench.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for _ in range(args.runs):
            for rate in (0.0, 5000.0):
                server = floor_server(work)
                try:
                    runs.setdefault((FLOOR, rate), []).append(
                        loadgen(server.port or 0, rate, args.duration, {"server": server.proc.pid}))
                finally:
                    server.stop()
                server = single_server(work)
                try:
                    runs.setdefault(("single, journal fsync batch", rate), []).append(
                        loadgen(server.port or 0, rate, args.duration, {"server": server.proc.pid}))
                finally:
                    server.stop()
                shard = Shard(work, args.lease_ttl)
                try:
                    name, leader = shard.leader()
                    watch = {"leader": leader.proc.pid,
                             "follower": next(n.proc.pid for k, n in shard.nodes.items() if k != name)}
                    watch |= {f"nats {n.name}": n.proc.pid for n in shard.nats.nodes if n.proc is not None}
                    run = loadgen(leader.port or 0, rate, args.duration, watch)
                    cpu = run["cpu_us_per_order"]
                    cpu["NATS servers"] = sum(cpu.pop(role) for role in list(cpu) if role.startswith("nats "))
                    runs.setdefault(("shard leader, 3 NATS servers", rate), []).append(run)
                finally:
                    shard.stop()
        print(f"{'server':<32} {'offered':>8} {'requests/s':>10} {'ack p50':>9} {'p99':>9} {'p99.9':>9}  (us)"
              "   x C floor (p50, p99, p99.9)   CPU per request (us)")
        table = []
        floors = {rate: median_row(rs) for (what, rate), rs in runs.items() if what == FLOOR}
        for (what, rate), rs in runs.items():
            row = median_row(rs)
            floor = floors[rate]
            row["x_floor"] = {k: row[k] / floor[k] if floor[k] else None for k in ("p50", "p99", "p99.9")}
            table.append({"server": what, "rate": rate, **row})
            cpu = ", ".join(f"{role} {us:,.0f}" for role, us in row["cpu_us_per_order"].items())
            ratios = ", ".join("n/a" if x is None else f"{x:.2f}x" for x in row["x_floor"].values())
            print(f"{what:<32} {('closed' if rate == 0 else f'{rate:,.0f}'):>8} {row['throughput']:>10,.0f} "
                  f"{row['p50']:>9,.0f} {row['p99']:>9,.0f} {row['p99.9']:>9,.0f}   {ratios:<28}  {cpu}")
        results["table"] = table
        if args.one_by_one:
            server = floor_server(work)
            try:
                floor_alone = one_by_one(server.port or 0, args.one_by_one)
            finally:
                server.stop()
            server = single_server(work)
            try:
                alone = one_by_one(server.port or 0, args.one_by_one)
            finally:
                server.stop()
            shard = Shard(work, args.lease_ttl)
            try:
                replicated = one_by_one(shard.leader()[1].port or 0, args.one_by_one)
                append = raw_append(shard.nats.urls, args.one_by_one)
            finally:
                shard.stop()
            results["one_by_one_us"] = {"single": alone, "shard": replicated, "jetstream_append": append,
                                        "floor": floor_alone}
            print(f"one client, one order after another, order to ack: single server {alone:,.0f} us, shard "
                  f"leader {replicated:,.0f} us; a JetStream append alone (3 replicas) {append:,.0f} us; "
                  f"the C floor {floor_alone:,.0f} us")
        single = next(r["throughput"] for r in table if r["rate"] == 0 and r["server"].startswith("single"))
        cluster = next(r["throughput"] for r in table if r["rate"] == 0 and r["server"].startswith("shard"))
        print(f"closed loop, shard leader / single server: {cluster / single:.2f}x")
        if args.failovers:
            shard = Shard(work, args.lease_ttl)
            try:
                times = [failover(shard) for _ in range(args.failovers)]
            finally:
                shard.stop()
            results["failover_s"] = times
            print(f"failover, kill -9 to the first ack of the new leader (lease {args.lease_ttl:g} s), "
                  f"{len(times)} times: median {statistics.median(times):.2f} s, "
                  f"min {min(times):.2f}, max {max(times):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

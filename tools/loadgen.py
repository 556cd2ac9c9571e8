"""End-to-end load generator for pyengine-server: throughput and latency.

    python tools/loadgen.py --spawn-server --rate 20000 --duration 10 --json out.json
    python tools/loadgen.py --port 7001 --rate 0 --count 200000        # closed loop
    python tools/loadgen.py --spawn-server --spawn-fsync batch --rate 0 # closed loop, journaled
    python tools/loadgen.py --spawn-script perf/floor_epoll.py --rate 20000  # the machine's floor

Connections (default 50) are spread over worker processes (default 2), each
running its connections on one non-blocking event loop. Every connection logs
in as its own account and sends a mix over the four default instruments:
limit adds near the touch (70%), cancels of a random open order of its own
(25%; a crossing IOC limit order instead when it has none open), market
orders (5%).

- Open loop (``--rate R``, requests/s offered in total, cancels included):
  each request has an intended send time on a fixed schedule and latency is
  measured from that time, so a server that falls behind shows it in the
  figures (no coordinated omission); every request due before the end is
  sent, those a stall of the load generator made late included.
- Closed loop (``--rate 0``): each connection keeps ``--window`` orders in
  flight and sends the next as soon as one is answered: maximum throughput;
  a request's latency counts from when it was made, just before it is sent.
  ``--driver c`` runs each worker as tools/loadgen_worker.c instead (built
  on demand by tools/cbuild.py): the same connections, mix, window and
  bookkeeping, its own random numbers, a fraction of the CPU a request (the
  Python worker's 5.7-7.8 µs a request kept one CPU busy at 127,000-169,000
  requests/s on the 2-vCPU VM of docs/benchmarks.md, below what a server on
  the other CPU answers); no progress
  lines. Closed loop only. At its speed a connection can pass the server's
  per-session `rate` (10,000 messages/s) and fill its account's
  `max_open_orders` within seconds: give a spawned pyengine-server a
  configuration without them (``--server-arg=--config=FILE``, FILE holding
  ``[limits]`` ``rate = 0`` and ``max_open_orders = 0``) or more connections.

Between sends a worker sleeps in ``select`` until its next order is due or
a reply arrives; each reply then costs a wake-up, which on some virtual
machines takes tens of microseconds and is counted in that reply's latency.
``--busy-poll`` polls instead (a CPU per worker, given with ``--cpus``).

Order-to-ack latency (to a new order's ``ack``, a cancel's ``cancelled``)
and order-to-fill latency (to the first fill of a crossing or market order)
go into HDR histograms (microseconds); rejects go into one of their own, never
the ack's: a server can refuse at once what it would take long to do. Each
account may hold the server's ``max_open_orders`` open orders (10,000 by
default): few connections sending for long reach it, and then the summary
warns (beyond 0.1% of the new orders; the exit status stays 0 unless
``--max-reject-rate FRACTION`` is given and the rejected share of the new
orders exceeds it). Throughput is the requests answered per second of the
measured window, from the end of the warm-up to the last reply to one of them; the run's
whole time (warm-up, waiting for the other workers, a last drain) is
reported apart. The workers' own CPU time while they send is reported too
(CPUs kept busy, and µs a request sent, cancels included): a load generator
near a full CPU queues its own work, and that queueing lands in every
figure. Prints a progress line each second and the summary; ``--json``
writes it, ``--plot`` draws the percentile curve (needs matplotlib).
"""

from __future__ import annotations

import argparse
import collections
import gc
import heapq
import json
import multiprocessing as mp
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from hdrh.histogram import HdrHistogram

from pyengine.server.process import ServerProcess, ServerStartError

# The tools' shared modules sit beside this file (not on the path under
# PYTHONSAFEPATH, as the tests run it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cbuild import build as build_c  # noqa: E402
from idpool import IdPool  # noqa: E402

HEADER = struct.Struct(">I")
LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
# Mid price and tick of each instrument of the server's default configuration.
INSTRUMENTS = {"ESZ6": (450_000, 25), "NQZ6": (2_000_000, 25), "CLF7": (7_000, 1), "BTC-PERP": (90_000, 1)}
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
# Rejects beyond this share of the new orders sent make the figures those of
# refusals more than of orders: the summary warns.
REJECT_SHARE_WARN = 0.001
# The most requests in flight a connection of tools/loadgen_worker.c keeps (its PENDING / 2).
C_MAX_WINDOW = 8192


@dataclass
class Params:
    host: str
    port: int
    connections: int
    workers: int
    rate: float
    window: int
    duration: float | None
    count: int | None
    warmup: float
    seed: int
    cpus: set[int] | None = None
    busy_poll: bool = False
    driver: str = "python"  # or "c": tools/loadgen_worker.c (closed loop only)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


class Conn:
    """One connection's state inside a worker."""

    __slots__ = ("sock", "rng", "buf", "out", "next_req", "pending", "open", "account", "due",
                 "interval", "inflight", "fill_wait")

    def __init__(self, sock: socket.socket, account: int, rng: random.Random, start: float, interval: float) -> None:
        self.sock = sock
        self.rng = rng
        self.buf = bytearray()
        self.out = bytearray()
        self.next_req = 0
        self.pending: dict[int, tuple[float, str]] = {}  # req_id -> (t0, kind)
        self.open = IdPool()  # this connection's open order ids (ack'd, not finished)
        self.account = account
        self.due = start  # intended time of the next order (open loop)
        self.interval = interval
        self.inflight = 0
        self.fill_wait: dict[int, float] = {}  # order id -> t0, until its first fill

    def next_message(self) -> tuple[dict[str, Any], str]:
        rng = self.rng
        r = rng.random()
        if 0.6 <= r < 0.85 and self.open:
            oid = self.open.pop_random(rng)
            return {"type": "cancel", "order_id": oid}, "cancel"
        symbol = rng.choice(tuple(INSTRUMENTS))
        mid, tick = INSTRUMENTS[symbol]
        side = "buy" if rng.random() < 0.5 else "sell"
        qty = rng.randint(1, 10)
        if r >= 0.95:
            msg = {"type": "new_order", "symbol": symbol, "side": side, "qty": qty, "order_type": "market"}
            return msg, "taker"
        if r < 0.6 or r >= 0.85:
            depth = 1 + int(rng.random() * rng.random() * 20)  # near the touch
            price = mid - depth * tick if side == "buy" else mid + depth * tick
            return {"type": "new_order", "symbol": symbol, "side": side, "qty": qty, "price": price}, "new"
        # A crossing order: IOC, so it trades on arrival or is cancelled.
        through = rng.randint(0, 3)
        price = mid + through * tick if side == "buy" else mid - through * tick
        msg = {"type": "new_order", "symbol": symbol, "side": side, "qty": qty, "price": price, "tif": "ioc"}
        return msg, "taker"


def histogram_of(counts: collections.Counter[int]) -> HdrHistogram:
    h = new_histogram()
    for value, n in counts.items():
        h.record_value(value, n)
    return h


class Readiness:
    """Waits up to a timeout for connections with data to read.

    epoll finds the ready connections at a cost independent of how many
    there are, but takes its timeout in whole milliseconds, which would make
    every order of an open-loop schedule up to a millisecond late (and count
    it as latency); select() takes microseconds. So: select() on the epoll
    descriptor alone (it turns readable when a connection does), then
    collect with a non-blocking epoll. Create it before the sockets, so its
    descriptor is small enough for select()."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._fd = [self._ep.fileno()]
        self._conns: dict[int, Conn] = {}

    def add(self, c: Conn) -> None:
        fd = c.sock.fileno()
        self._conns[fd] = c
        self._ep.register(fd, select.EPOLLIN)

    def wait(self, timeout: float) -> list[Conn]:
        events = self._ep.poll(0)
        if not events and timeout > 0 and select.select(self._fd, (), (), timeout)[0]:
            events = self._ep.poll(0)
        conns = self._conns
        return [conns[fd] for fd, _ in events]


def worker(index: int, params: Params, conns: int, report: Any, stop_at: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if params.cpus:
        os.sched_setaffinity(0, params.cpus)
    rate_per_conn = params.rate / params.connections if params.rate > 0 else 0.0
    readiness = Readiness()
    start = time.perf_counter() + 0.2
    connections: list[Conn] = []
    for k in range(conns):
        s = socket.create_connection((params.host, params.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        account = account_base(index) + k
        login = orjson.dumps({"type": "login", "account": account, "req_id": 0})
        s.sendall(HEADER.pack(len(login)) + login)
        s.setblocking(False)
        rng = random.Random(params.seed * 1_000_003 + index * 1009 + k)
        # Spread the connections' schedules evenly over one interval.
        interval = 1.0 / rate_per_conn if rate_per_conn else 0.0
        c = Conn(s, account, rng, start + interval * k / max(conns, 1), interval)
        connections.append(c)
        readiness.add(c)
    # Open loop: (intended time of the next order, connection) of every
    # connection, soonest first; closed loop: the connections with room in
    # their window. Either way the loop touches only the connections due.
    schedule = [(c.due, k) for k, c in enumerate(connections)]
    heapq.heapify(schedule)
    refill = list(connections) if params.rate <= 0 else []
    dirty: list[Conn] = []  # connections with output to send
    rbuf = bytearray(1 << 18)  # one receive buffer, not a fresh one per recv
    rview = memoryview(rbuf)
    # Latencies (µs) counted by value while running, and put into HDR
    # histograms at the end: a Counter increment costs a fraction of an HDR
    # record in Python, and the load generator's own time is latency it adds.
    ack_us: collections.Counter[int] = collections.Counter()
    reject_us: collections.Counter[int] = collections.Counter()
    fill_us: collections.Counter[int] = collections.Counter()
    counts = {"sent": 0, "new_orders_sent": 0, "acked": 0, "rejected": 0, "cancelled": 0, "fills": 0, "errors": 0,
              "error_replies": 0, "cancel_rejects": 0, "maker_fills": 0, "taker_fills": 0}
    reject_codes: collections.Counter[str] = collections.Counter()
    # The measured window: replies to requests from the end of the warm-up
    # on, by what they answer; the last one's time ends the window.
    window = {"replies": 0, "acked": 0, "cancelled": 0, "rejected": 0, "cancel_rejects": 0, "error_replies": 0}
    last_reply = 0.0
    count_limit = count_share(params, index)
    warm_until = start + params.warmup
    end = start + params.duration if params.duration else float("inf")
    last_report = time.perf_counter()
    # This worker's own CPU and the wall-clock time while it sends (from the
    # first order due to the stop, the drain left out): how busy the load
    # generator is.
    busy_since: tuple[float, float] | None = None  # (CPU, wall) when sending began
    cpu = wall = 0.0
    # The loop makes no reference cycles: a collector pause here would only
    # be counted as the server's latency.
    gc.disable()

    def send(c: Conn, t0: float) -> None:
        msg, kind = c.next_message()
        c.next_req += 1
        msg["req_id"] = c.next_req
        body = orjson.dumps(msg)
        c.out += HEADER.pack(len(body)) + body
        c.pending[c.next_req] = (t0, kind)
        c.inflight += 1
        counts["sent"] += 1
        if kind != "cancel":
            counts["new_orders_sent"] += 1

    def flush(c: Conn) -> bool:
        """Send what the socket takes; True if some is left for later."""
        if c.out:
            try:
                n = c.sock.send(c.out)
            except BlockingIOError:
                return True
            del c.out[:n]
        return bool(c.out)

    def on_message(c: Conn, m: dict[str, Any], now: float) -> None:
        nonlocal last_reply
        typ = m["type"]
        if typ == "fill":
            oid = m["order_id"]
            t0 = c.fill_wait.pop(oid, None)  # only an order's first taker fill
            if t0 is not None and t0 >= warm_until:
                fill_us[max(LOWEST_US, int((now - t0) * 1e6))] += 1
            counts["fills"] += 1
            counts["maker_fills" if m["liquidity"] == "maker" else "taker_fills"] += 1
            if m["leaves"] == 0:
                c.open.discard(oid)
            return
        req_id = m.get("req_id")
        if typ == "cancelled" and req_id is None:
            oid = m["order_id"]
            c.fill_wait.pop(oid, None)
            c.open.discard(oid)
            return
        if req_id is None or req_id == 0:
            if typ == "error":
                counts["errors"] += 1
            return
        t0, kind = c.pending.pop(req_id)
        c.inflight -= 1
        latency = ack_us if typ in ("ack", "cancelled") else reject_us if typ == "reject" else None
        if latency is not None and t0 >= warm_until:
            latency[max(LOWEST_US, int((now - t0) * 1e6))] += 1
        if typ == "ack":
            key = "acked"
            if kind == "taker":
                c.fill_wait[m["order_id"]] = t0  # a fill or its cancel follows at once
            else:
                c.open.add(m["order_id"])
        elif typ == "reject":
            key = "cancel_rejects" if kind == "cancel" else "rejected"  # a cancel's order had traded away meanwhile
            if kind != "cancel":
                reject_codes[m.get("code", "?")] += 1
        elif typ == "cancelled":
            key = "cancelled"
        else:
            key = "error_replies"
            counts["errors"] += 1
        counts[key] += 1
        if now >= warm_until:
            window["replies"] += 1
            window[key] += 1
            last_reply = now

    # Stopping: drain our own replies, tell the parent we are quiet, and keep
    # reading until every worker is (fills for our resting orders can still
    # come from the others' orders), then a last short drain.
    stopping = quiet = False
    final_until = None
    while True:
        now = time.perf_counter()
        if busy_since is None and now >= start:
            busy_since = (time.process_time(), now)
        if not stopping and params.rate > 0 and not stop_at.value:
            # Every order due before the end goes out, those a stall made
            # late too (latency counts from when each was due): a run whose
            # last stretch stalled would otherwise leave them out. (A due
            # time summed interval by interval can fall a hair short of the
            # end it is due at: the microsecond before the end is past it.)
            while (schedule[0][0] <= now and schedule[0][0] < end - 1e-6
                   and (count_limit is None or counts["sent"] < count_limit)):
                due, k = schedule[0]
                c = connections[k]
                send(c, due)
                heapq.heapreplace(schedule, (due + c.interval, k))
                dirty.append(c)
        if not stopping and (now >= end or stop_at.value or (count_limit is not None and counts["sent"] >= count_limit)):
            stopping = True
            drain_until = now + 5.0
            if busy_since is not None:
                cpu, wall = time.process_time() - busy_since[0], now - busy_since[1]
        if stopping and not quiet and (all(c.inflight == 0 for c in connections) or now >= drain_until):
            quiet = True
            report.put(("quiet", index, dict(counts)))
        if quiet and final_until is None and stop_at.value >= 2:
            final_until = now + 0.2
        if final_until is not None and now >= final_until:
            break
        if not stopping and params.rate <= 0 and now >= start:
            for c in refill:
                # Each connection's clock starts as its requests are made,
                # and they leave at once: not when the turn began, which
                # would count the time spent on the connections before.
                t0 = time.perf_counter()
                while c.inflight < params.window and (count_limit is None or counts["sent"] < count_limit):
                    send(c, t0)
                if flush(c):
                    dirty.append(c)
            refill.clear()
        if dirty:
            dirty = [c for c in dict.fromkeys(dirty) if flush(c)]
        timeout = 0.0005
        if params.busy_poll:
            timeout = 0.0
        elif params.rate > 0 and not stopping:
            timeout = max(0.0, schedule[0][0] - time.perf_counter())
        for c in readiness.wait(timeout):
            try:
                got = c.sock.recv_into(rbuf)
            except BlockingIOError:
                continue
            if not got:
                raise SystemExit(f"worker {index}: the server closed a connection")
            now = time.perf_counter()
            c.buf += rview[:got]
            buf, pos = c.buf, 0
            while len(buf) - pos >= 4:
                (n,) = HEADER.unpack_from(buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                on_message(c, orjson.loads(bytes(buf[pos + 4 : pos + 4 + n])), now)
                pos += 4 + n
            del buf[:pos]
            if params.rate <= 0:
                refill.append(c)
        if now - last_report >= 1.0:
            report.put(("progress", index, dict(counts)))
            last_report = now
    elapsed = time.perf_counter() - start
    for c in connections:
        c.sock.close()
    report.put(("done", index, dict(counts), histogram_of(ack_us).encode(), histogram_of(fill_us).encode(), elapsed,
                sum(c.inflight for c in connections), cpu, wall, histogram_of(reject_us).encode(), dict(reject_codes),
                dict(window), warm_until, last_reply))


def count_share(params: Params, index: int) -> int | None:
    """Worker `index`'s share of --count (None: no count)."""
    if params.count is None:
        return None
    return params.count // params.workers + (index < params.count % params.workers)


def account_base(index: int) -> int:
    """The account of worker `index`'s first connection (then one each)."""
    return 1 + index * 10_000


def c_workers(params: Params, per: list[int]) -> list[subprocess.Popen[bytes]]:
    """The workers of --driver c, started (tools/loadgen_worker.c)."""
    binary = build_c(Path(__file__).resolve().with_name("loadgen_worker.c"), "loadgen_worker")
    cpus = params.cpus

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    procs = []
    for i, n in enumerate(per):
        if not n:
            continue
        share = count_share(params, i)  # 0 is a count: none sent
        args = [str(binary), params.host, str(params.port), str(n), str(account_base(i)), str(params.window),
                repr(params.duration or 0.0), str(-1 if share is None else share), repr(params.warmup),
                str(params.seed * 1_000 + i)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, preexec_fn=pin))
    return procs


def c_result(index: int, out: bytes) -> tuple[Any, ...]:
    """A C worker's JSON as the Python worker's "done" report."""
    r = json.loads(out)
    hists = []
    for key in ("ack", "fill", "reject"):
        counts: collections.Counter[int] = collections.Counter()
        for value, n in r[key]:  # a latency of a second or more comes once per reply: [µs, 1] each
            counts[value] += n
        hists.append(histogram_of(counts).encode())
    return ("done", index, r["counts"], hists[0], hists[1], r["elapsed"], r["inflight"], r["cpu"], r["wall"],
            hists[2], r["reject_codes"], r["window"], r["warm_until"], r["last_reply"])


def cpu_list(text: str) -> set[int]:
    """'1', '1,3' or '2-5' -> a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def spawn_server(extra: list[str], workdir: str, script: str | None = None,
                 python: str | None = None) -> ServerProcess:
    """A local pyengine-server for the run (under the interpreter `python`,
    default this one), or the Python `script` of a reference server that
    logs its port as pyengine-server does (perf/floor_*.py); one that fails
    shows why."""
    args = ["--port", "0", *extra] if script else ["--port", "0", "--stats-interval", "0", *extra]
    launcher = (script,) if script else ("-m", "pyengine.server.cli")
    try:
        return ServerProcess(args, os.path.join(workdir, "server.log"), launcher=launcher, python=python)
    except ServerStartError as exc:
        raise SystemExit(f"the spawned server did not start: {exc}") from None


def stop_server(server: ServerProcess) -> int:
    """SIGTERM and wait; the end of its log on stderr if it exited badly."""
    try:
        code = server.stop(30)
    except subprocess.TimeoutExpired:
        code = -9
    if code != 0:
        print(f"the spawned server exited with code {code}:\n{server.tail()}", file=sys.stderr)
    return code


def summarize(h: HdrHistogram) -> dict[str, float]:
    out = {name: float(h.get_value_at_percentile(p)) for name, p in PERCENTILES}
    out["max"] = float(h.get_max_value())
    out["count"] = h.get_total_count()
    return out


def process_cpu_s(pid: int) -> float | None:
    """CPU time the process `pid`'s threads have run so far, in seconds: the
    kernel's nanoseconds on a CPU of each living thread (/proc/PID/task/*/
    schedstat), else user + system time in clock ticks (/proc/PID/stat: 10 ms
    steps, too coarse for a short light run); None where /proc does not tell
    (not Linux, or gone)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def cpu_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """CPU seconds used from time t0 to t1, from (time, CPU seconds so far)
    samples in time order, read off the straight line between the samples
    on either side of each end; None unless the samples cover [t0, t1]."""
    def at(t: float) -> float | None:
        for (ta, ca), (tb, cb) in zip(samples, samples[1:]):
            if ta <= t <= tb:
                return ca if tb == ta else ca + (cb - ca) * (t - ta) / (tb - ta)
        return None

    c0, c1 = at(t0), at(t1)
    return None if c0 is None or c1 is None else c1 - c0


def run(params: Params, server_pid: int | None = None) -> dict[str, Any]:
    """The workers' run, summed up; with `server_pid` (a spawned server),
    the server's CPU over the measured window too."""
    per = [params.connections // params.workers + (i < params.connections % params.workers) for i in range(params.workers)]
    # (time, the server's CPU seconds so far), a tenth of a second apart at
    # most while the workers run (the clock is the workers' own: perf_counter
    # is system-wide, CLOCK_MONOTONIC, as the C worker's), read off for the
    # measured window at the end.
    server_cpu: list[tuple[float, float]] = []

    def sample_server() -> None:
        if server_pid is not None and (not server_cpu or time.perf_counter() - server_cpu[-1][0] >= 0.1):
            cpu_s = process_cpu_s(server_pid)
            if cpu_s is not None:
                server_cpu.append((time.perf_counter(), cpu_s))

    results = (run_c if params.driver == "c" else run_python)(params, per, sample_server)
    sample_server()
    return summarize_run(params, results, server_cpu)


def run_c(params: Params, per: list[int], sample_server: Callable[[], None]) -> list[tuple[Any, ...]]:
    """The C workers' run (--driver c): their reports, as the Python workers'.
    Each says "quiet" when its own requests are answered; once all have, they
    are told (SIGUSR1) to read a last 0.2 s and report (fills for one's
    resting orders can come from the others' orders until then)."""
    procs = c_workers(params, per)
    lines: list[list[bytes]] = [[] for _ in procs]

    def read(k: int) -> None:
        stdout = procs[k].stdout
        assert stdout is not None
        lines[k].extend(stdout)  # read as it comes: a report larger than a pipe holds would block it

    readers = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(len(procs))]
    for t in readers:
        t.start()
    told = False
    try:
        while any(p.poll() is None for p in procs):
            if not told and all(b"quiet\n" in got for got in lines):
                for p in procs:
                    p.send_signal(signal.SIGUSR1)
                told = True
            sample_server()
            time.sleep(0.05)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # they stop sending and drain ...
        for p, got in zip(procs, lines):
            while p.poll() is None and b"quiet\n" not in got:
                time.sleep(0.05)
        for p in procs:
            p.send_signal(signal.SIGUSR1)  # ... and report
    results = []
    for k, p in enumerate(procs):
        p.wait()
        readers[k].join()
        if p.returncode != 0 or not lines[k] or lines[k][-1] == b"quiet\n":
            raise SystemExit(f"a load generator worker (tools/loadgen_worker.c) failed with exit code {p.returncode}")
        results.append(c_result(k, lines[k][-1]))
    return results


def run_python(params: Params, per: list[int], sample_server: Callable[[], None]) -> list[tuple[Any, ...]]:
    """The Python workers' run: their reports."""
    ctx = mp.get_context("fork")
    report = ctx.Queue()
    stop_at = ctx.Value("b", 0)
    procs = [ctx.Process(target=worker, args=(i, params, per[i], report, stop_at)) for i in range(params.workers) if per[i]]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    progress: dict[int, dict[str, int]] = {}
    quiet: set[int] = set()
    results = []
    last_sent, last_t = 0, t0
    try:
        while len(results) < len(procs):
            sample_server()
            try:
                item = report.get(timeout=0.1)
            except Exception:
                if not any(p.is_alive() for p in procs):
                    raise SystemExit("a load generator worker died") from None
                continue
            if item[0] == "quiet":
                quiet.add(item[1])
                if len(quiet) == len(procs):
                    stop_at.value = 2  # everyone has sent and been answered
            elif item[0] == "progress":
                progress[item[1]] = item[2]
                now = time.perf_counter()
                sent = sum(c["sent"] for c in progress.values())
                if now - last_t >= 1.0:
                    acked = sum(c["acked"] for c in progress.values())
                    print(f"[{now - t0:5.1f}s] sent {sent} ({(sent - last_sent) / (now - last_t):,.0f}/s) "
                          f"acked {acked}", file=sys.stderr, flush=True)
                    last_sent, last_t = sent, now
            else:
                results.append(item)
    except KeyboardInterrupt:
        stop_at.value = 2
        while len(results) < len(procs):
            item = report.get()
            if item[0] == "done":
                results.append(item)
    for p in procs:
        p.join()
    return results


def summarize_run(params: Params, results: list[tuple[Any, ...]],
                  server_cpu: list[tuple[float, float]]) -> dict[str, Any]:
    """The workers' reports summed up; the server's CPU over the measured
    window from `server_cpu`, its (time, CPU seconds) samples."""
    ack_h, fill_h, reject_h = new_histogram(), new_histogram(), new_histogram()
    counts: collections.Counter[str] = collections.Counter()
    reject_codes: collections.Counter[str] = collections.Counter()
    window: collections.Counter[str] = collections.Counter()
    elapsed = cpu = wall = 0.0
    unanswered = 0
    # The workers' clocks are one (perf_counter is system-wide): the window
    # runs from the first worker's end of warm-up to the last reply of any.
    window_from, window_to = float("inf"), 0.0
    for (_, _, c, ack_enc, fill_enc, el, inflight, worker_cpu, worker_wall, reject_enc, codes, win, warm_until,
         last_reply) in results:
        counts.update(c)
        reject_codes.update(codes)
        ack_h.add(HdrHistogram.decode(ack_enc))
        fill_h.add(HdrHistogram.decode(fill_enc))
        reject_h.add(HdrHistogram.decode(reject_enc))
        elapsed = max(elapsed, el)
        unanswered += inflight
        cpu += worker_cpu
        wall = max(wall, worker_wall)
        window_from = min(window_from, warm_until)
        if win["replies"]:
            window.update(win)
            window_to = max(window_to, last_reply)
    window_s = max(0.0, window_to - window_from)
    per_s = (lambda n: n / window_s) if window_s > 0 else (lambda n: 0.0)  # noqa: E731
    sent = counts["sent"]
    new_orders = counts["new_orders_sent"]
    rejected = counts["rejected"]
    server_cpu_s = cpu_between(server_cpu, window_from, window_to) if window_s > 0 else None
    return {
        "params": {"connections": params.connections, "workers": params.workers, "rate": params.rate,
                   "cpus": sorted(params.cpus) if params.cpus else None,
                   "busy_poll": params.busy_poll, "driver": params.driver,
                   "window": params.window, "duration": params.duration, "count": params.count,
                   "warmup": params.warmup, "seed": params.seed},
        "ack_us": summarize(ack_h),
        "fill_us": summarize(fill_h),
        "reject_us": summarize(reject_h),
        # Per second of the measured window (window_s): requests answered,
        # new orders' rejects and errors left out (a reject need not reach
        # the engine); every reply; new orders acked; cancels done.
        "throughput_per_s": per_s(window["acked"] + window["cancelled"] + window["cancel_rejects"]),
        "requests_per_s": per_s(window["replies"]),
        "new_orders_per_s": per_s(window["acked"]),
        "cancels_per_s": per_s(window["cancelled"] + window["cancel_rejects"]),
        "window_s": window_s,
        "window_replies": window["replies"],
        "window_rejected": window["rejected"],
        "elapsed_s": elapsed,  # the whole run: warm-up, drain and the wait for the other workers included
        # The workers' own CPU time while sending (and reading meanwhile):
        # how busy the measuring side is (a busy one adds queueing to every
        # figure); CPUs busy sums the workers.
        "client_cpu_s": cpu,
        "client_cpus_busy": cpu / wall if wall else 0.0,
        "client_cpu_us_per_order": cpu * 1e6 / sent if sent else 0.0,
        # The spawned server's CPU over the measured window (its process,
        # every thread, idle polling included): CPUs kept busy, and µs per
        # reply; None when the server was not spawned here.
        "server_cpu_s": server_cpu_s,
        "server_cpus_busy": server_cpu_s / window_s if server_cpu_s is not None else None,
        "server_cpu_us_per_reply": (server_cpu_s * 1e6 / window["replies"]
                                    if server_cpu_s is not None and window["replies"] else None),
        "sent": sent,
        "new_orders_sent": new_orders,
        "cancels_sent": sent - new_orders,
        "acked": counts["acked"],
        "rejected": rejected,
        "rejected_share": rejected / new_orders if new_orders else 0.0,
        "reject_codes": dict(reject_codes),
        "cancelled": counts["cancelled"],
        "cancel_rejects": counts["cancel_rejects"],
        "fills": counts["fills"],
        "maker_fills": counts["maker_fills"],
        "taker_fills": counts["taker_fills"],
        "errors": counts["errors"],
        "error_replies": counts["error_replies"],  # the errors that answered a request
        "unanswered": unanswered,
        "warnings": reject_warnings(rejected, new_orders, reject_codes),
        "_hist": {"ack": ack_h, "fill": fill_h},
    }


def reject_warnings(rejected: int, new_orders: int, codes: collections.Counter[str]) -> list[str]:
    """A warning when more than REJECT_SHARE_WARN of the new orders were
    rejected, saying why when the server's open-order limit did it."""
    if not new_orders or rejected <= REJECT_SHARE_WARN * new_orders:
        return []
    by_code = ", ".join(f"{code} {n}" for code, n in codes.most_common())
    text = (f"{rejected} of {new_orders} new orders ({100 * rejected / new_orders:.2f}%) were rejected ({by_code}): "
            "the figures are partly those of refusals, which need not reach the engine")
    if codes.get("max_open_orders_exceeded"):
        text += (". Each connection is an account, and an account may hold the server's max_open_orders open "
                 "orders (10,000 by default): use more connections or shorter runs, or give the server "
                 "max_open_orders = 0 under [limits] in a --config file "
                 "(with --spawn-server: --server-arg=--config=FILE)")
    return [text]


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, h in result["_hist"].items():
        if not h.get_total_count():
            continue
        pcts = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]
        xs = [1 / (1 - p / 100) if p < 100 else 1e5 for p in pcts]
        ax.plot(xs, [h.get_value_at_percentile(p) for p in pcts], marker="o", label=f"order to {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1 / (1 - p / 100) if p < 100 else 1e5 for p in (50, 90, 99, 99.9, 99.99, 100)])
    ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "max"])
    ax.set_ylabel("latency (µs)")
    p = result["params"]
    mode = f"{p['rate']:,.0f} requests/s offered" if p["rate"] else f"closed loop, window {p['window']}"
    ax.set_title(f"pyengine-server, {p['connections']} connections, {mode}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7001)
    ap.add_argument("--spawn-server", action="store_true", help="start a local server for the run, stop it after")
    ap.add_argument("--spawn-script", metavar="FILE",
                    help="spawn `python FILE --port 0` instead of pyengine-server: a reference server that speaks "
                         "the protocol's framing and logs its port as the server does (perf/floor_epoll.py, "
                         "perf/floor_gevent.py)")
    ap.add_argument("--server-python", metavar="PYTHON",
                    help="run the spawned pyengine-server under this interpreter: a venv with another checkout "
                         "installed (perf/compare_servers.py compares two builds under one load generator)")
    ap.add_argument("--spawn-fsync", choices=("always", "batch", "off"),
                    help="the spawned server journals to a fresh temporary data directory with this fsync policy")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--rate", type=float, default=0.0,
                    help="requests/s offered in total, cancels included (open loop); 0: closed loop")
    ap.add_argument("--window", type=int, default=8,
                    help=f"orders in flight per connection in closed loop (--driver c: at most {C_MAX_WINDOW})")
    ap.add_argument("--duration", type=float, help="seconds to send for (default 10 unless --count)")
    ap.add_argument("--count", type=int, help="requests to send in total, cancels included")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds left out of the histograms")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpus", metavar="LIST", type=cpu_list,
                    help="pin the worker processes to these CPUs (e.g. 1 or 2-3); default: not pinned")
    ap.add_argument("--busy-poll", action="store_true",
                    help="never sleep: poll the sockets and the clock in a loop (give the workers CPUs of their own "
                         "with --cpus); no wake-up of the load generator in any reply's latency")
    ap.add_argument("--driver", choices=("python", "c"), default="python",
                    help="c: the closed loop's workers in C (tools/loadgen_worker.c, built with the system cc): a "
                         "fraction of the CPU a request; the same mix and counts, no progress lines")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for the spawned server (repeat for more), e.g. --server-arg=--server-cpu=0")
    ap.add_argument("--max-reject-rate", type=float, metavar="FRACTION",
                    help="exit 1 when more than this share of the new orders were rejected (e.g. 0.001); by "
                         "default rejects beyond 0.1%% are only warned of and the exit status stays 0")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--plot", metavar="FILE", help="latency percentile curve as PNG (matplotlib)")
    args = ap.parse_args(argv)
    if args.max_reject_rate is not None and not 0 <= args.max_reject_rate <= 1:
        ap.error(f"--max-reject-rate must be from 0 to 1, not {args.max_reject_rate:g}")
    if args.duration is None and args.count is None:
        args.duration = 10.0
    if args.connections < 1 or args.workers < 1 or args.window < 1:
        ap.error("--connections, --workers and --window must be at least 1")
    if args.count is not None and args.count < 1:
        ap.error(f"--count must be at least 1, not {args.count}")
    if args.warmup < 0:
        ap.error("--warmup must be at least 0")
    if args.duration is not None and args.duration <= args.warmup:
        ap.error(f"--duration ({args.duration:g} s) must be longer than --warmup ({args.warmup:g} s): "
                 "the warm-up is left out of every figure")
    if args.driver == "c" and (args.rate > 0 or args.busy_poll):
        ap.error("--driver c runs the closed loop only (--rate 0), which never sleeps between orders anyway: "
                 "no --busy-poll")
    if args.driver == "c" and args.window > C_MAX_WINDOW:
        ap.error(f"--driver c keeps at most {C_MAX_WINDOW} requests in flight a connection: --window {args.window}")
    if args.spawn_server and args.spawn_script:
        ap.error("--spawn-server and --spawn-script spawn one server each: give one of them")
    spawning = args.spawn_server or args.spawn_script is not None
    if args.server_arg and not spawning:
        ap.error("--server-arg needs --spawn-server or --spawn-script")
    if args.spawn_fsync and not args.spawn_server:
        ap.error("--spawn-fsync needs --spawn-server")
    if args.server_python and not args.spawn_server:
        ap.error("--server-python needs --spawn-server")
    if args.server_python and not (os.path.isfile(args.server_python) and os.access(args.server_python, os.X_OK)):
        ap.error(f"--server-python: {args.server_python} is not an executable")
    server = None
    workdir = tempfile.mkdtemp(prefix="pyengine-loadgen-") if spawning else None
    if spawning:
        extra = ["--data-dir", os.path.join(workdir, "data"), "--fsync", args.spawn_fsync] if args.spawn_fsync else []
        server = spawn_server(extra + args.server_arg, workdir, args.spawn_script, args.server_python)
        args.port = server.port
    try:
        params = Params(args.host, args.port, args.connections, min(args.workers, args.connections), args.rate,
                        args.window, args.duration, args.count, args.warmup, args.seed, args.cpus, args.busy_poll,
                        args.driver)
        result = run(params, server.proc.pid if server is not None else None)
    finally:
        server_code = stop_server(server) if server is not None else 0
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.plot:
        plot(result, args.plot)
    result.pop("_hist")
    r = result
    print(f"sent {r['sent']} ({r['new_orders_sent']} new orders, {r['cancels_sent']} cancels) = "
          f"acked {r['acked']} + rejected {r['rejected']} + cancelled {r['cancelled']} + "
          f"cancel rejected {r['cancel_rejects']} + error replies {r['error_replies']} + "
          f"unanswered {r['unanswered']};  fills {r['fills']}  errors {r['errors']}")
    print(f"throughput {r['throughput_per_s']:,.0f} requests/s answered, new-order rejects left out "
          f"({r['new_orders_per_s']:,.0f} new orders/s acked, {r['cancels_per_s']:,.0f} cancels/s; "
          f"{r['requests_per_s']:,.0f} replies/s in all) over the {r['window_s']:.2f} s from the end of the "
          f"warm-up to the last reply (run {r['elapsed_s']:.2f} s)")
    print(f"load generator CPU {r['client_cpus_busy']:.2f} CPUs busy, "
          f"{r['client_cpu_us_per_order']:.1f} us a request")
    if r["server_cpu_us_per_reply"] is not None:
        print(f"server CPU {r['server_cpus_busy']:.2f} CPUs busy, {r['server_cpu_us_per_reply']:.2f} us a reply "
              "(the spawned server's process over the measured window, idle polling included)")
    for name, h in (("order->ack ", r["ack_us"]), ("order->fill", r["fill_us"]), ("reject     ", r["reject_us"])):
        if name.startswith("reject") and not h["count"]:
            continue
        print(f"{name} us  p50 {h['p50']:.0f}  p90 {h['p90']:.0f}  p99 {h['p99']:.0f}  "
              f"p99.9 {h['p99.9']:.0f}  max {h['max']:.0f}  (n={h['count']})")
    for text in r["warnings"]:
        print(f"warning: {text}", file=sys.stderr)
    too_many_rejects = args.max_reject_rate is not None and r["rejected_share"] > args.max_reject_rate
    if too_many_rejects:
        print(f"error: {r['rejected']} of {r['new_orders_sent']} new orders ({100 * r['rejected_share']:.2f}%) "
              f"were rejected, more than --max-reject-rate {args.max_reject_rate:g}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    nothing_measured = r["window_replies"] == 0
    if nothing_measured:
        print(f"error: no reply came after the warm-up ({args.warmup:g} s): every figure above is empty; give a "
              "larger --count or --duration, or a shorter --warmup", file=sys.stderr)
    ok = (result["errors"] == 0 and result["unanswered"] == 0 and server_code == 0 and not too_many_rejects
          and not nothing_measured)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

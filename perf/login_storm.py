"""A login storm against a live server: how long it holds up an established client.

    python perf/login_storm.py [--logins 200] [--iterations 100000] [--baseline 1.0] [--interval 0.001]
                               [--login-workers N] [--max-pending-logins N]
                               [--host-logins N] [--floor] [--json out.json] [-- more server arguments]

Starts ``pyengine-server`` on a free port with two accounts whose secrets are
PBKDF2 hashes of ``--iterations`` iterations (hash-secret's default), and a
probe process that logs in and then does ping round trips one after the
other, recording each. After ``--baseline`` seconds it opens ``--logins``
connections, sends a correct login on every one of them at once and waits
for every reply. It prints the probe's round trips before and during the
storm (from the first login sent to the last reply) and what the logins got.

``--login-workers``, ``--max-pending-logins`` and ``--host-logins`` set the
server's ``[server] login_workers``, ``max_pending_logins`` and ``[limits]
host_logins`` (0: no per-host budget); left out, the server's defaults hold,
under which most of a storm from one host is refused (``login_throttled``,
``login_busy``) rather than checked. To make the server check every login,
raise the bounds: ``--max-pending-logins 256 --host-logins 0``.

``--floor`` runs the same probe and the same storm against the C floor
(perf/floor_epoll.py: it answers a login or a ping at once, checking
nothing) right after, and gives the server's round trips as ratios to the
floor's: what the machine's own round trips are at that cadence.

Nothing is asserted; the figures are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import selectors
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from pyengine.client import Client
from pyengine.server.config import hash_secret
from pyengine.server.latency_trace import percentile
from pyengine.server.process import ServerProcess, ServerStartError

_HEADER = struct.Struct(">I")
PROBE_ACCOUNT, STORM_ACCOUNT = 1, 2
SECRETS = {PROBE_ACCOUNT: "probe-secret", STORM_ACCOUNT: "storm-secret"}


def config_text(args: argparse.Namespace) -> str:
    server = {"login_workers": args.login_workers, "max_pending_logins": args.max_pending_logins}
    lines = []
    given = {k: v for k, v in server.items() if v is not None}
    if given:
        lines += ["[server]", *(f"{k} = {v}" for k, v in given.items()), ""]
    if args.host_logins is not None:
        lines += ["[limits]", f"host_logins = {args.host_logins}", ""]
    for account, secret in SECRETS.items():
        lines += ["[[accounts]]", f"account = {account}",
                  f'secret = "{hash_secret(secret, iterations=args.iterations)}"', ""]
    return "\n".join(lines)


FLOOR = Path(__file__).resolve().parent / "floor_epoll.py"


def start_server(config: Path, extra: list[str], workdir: Path) -> ServerProcess:
    try:
        return ServerProcess(["--config", str(config), "--port", "0", "--engine-cpu", "-1", "--stats-interval", "0",
                              *extra], workdir / "server.log")
    except ServerStartError as exc:
        raise SystemExit(str(exc)) from None


def start_floor(workdir: Path) -> ServerProcess:
    try:
        return ServerProcess(["--port", "0"], workdir / "floor.log", launcher=(str(FLOOR),))
    except ServerStartError as exc:
        raise SystemExit(str(exc)) from None


def run(server: ServerProcess, args: argparse.Namespace, hold: float = 0.0) -> dict[str, Any]:
    """The probe's round trips before and during a storm against `server`,
    and what the storm's logins got. "During" lasts `hold` seconds at least
    (a floor that answers the storm at once is measured over the server's
    storm's length)."""
    port = server.port
    assert port is not None  # started
    try:
        stop, mine, prober = started_probe(port, args.interval)
        time.sleep(args.baseline)
        start, last, outcomes, latencies = storm(port, args.logins)
        last = max(last, start + hold)
        time.sleep(max(0.0, last - time.monotonic()) + 0.2)
        stop.set()
        samples: list[tuple[float, float]] = mine.recv()
        prober.join(10)
    finally:
        server.stop()
    before = [rtt for t, rtt in samples if t + rtt <= start]
    during = [rtt for t, rtt in samples if t < last and t + rtt > start]  # in flight at some time of the storm
    return {
        "outcomes": dict(outcomes),
        "storm_s": last - start,  # or `hold`
        "login_reply_p50_ms": percentile_ms(latencies, 50),
        "login_reply_max_ms": max(latencies, default=float("nan")) * 1e3,
        "round_trips_before": figures(before),
        "round_trips_during": figures(during),
    }


def started_probe(port: int, interval: float) -> tuple[Any, Connection, Any]:
    """probe() in a process of its own, logged in: (the event that stops it,
    the end of the pipe its samples come back on, the process)."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    mine, theirs = ctx.Pipe()
    prober = ctx.Process(target=probe, args=(port, interval, stop, theirs))
    prober.start()
    if not mine.poll(60) or mine.recv() != "ready":
        raise SystemExit("the probe did not log in")
    return stop, mine, prober


def probe(port: int, interval: float, stop: Any, out: Connection) -> None:
    """Ping round trips, one after the other with `interval` seconds between
    them (under the session's rate limit), until `stop` is set; sends back
    (send time, round trip) pairs on `out`."""
    samples: list[tuple[float, float]] = []
    with Client("127.0.0.1", port, timeout=30) as c:
        c.login(PROBE_ACCOUNT, SECRETS[PROBE_ACCOUNT])
        out.send("ready")
        while not stop.is_set():
            t0 = time.monotonic()
            c.request(c.ping())
            samples.append((t0, time.monotonic() - t0))
            time.sleep(interval)
    out.send(samples)


def frame(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _HEADER.pack(len(body)) + body


def replies(socks: list[socket.socket], timeout: float = 120.0) -> list[tuple[float, dict[str, Any] | None]]:
    """The first message on each socket, with the time it came (None: none
    within `timeout` seconds)."""
    sel = selectors.DefaultSelector()
    bufs = {s.fileno(): bytearray() for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    got: dict[int, tuple[float, dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            buf = bufs[key.fd]
            buf += by_fd[key.fd].recv(4096)
            if len(buf) >= 4 and len(buf) >= 4 + _HEADER.unpack_from(buf)[0]:
                got[key.fd] = (time.monotonic(), orjson.loads(bytes(buf[4:4 + _HEADER.unpack_from(buf)[0]])))
                sel.unregister(by_fd[key.fd])
    sel.close()
    return [got.get(s.fileno(), (time.monotonic(), None)) for s in socks]


def storm(port: int, n: int) -> tuple[float, float, Counter[str], list[float]]:
    """Open `n` connections (each answers a ping first: the server holds
    them all before the storm), then send a correct login on each at once
    and wait for every reply. Returns (first send, last reply, outcomes,
    reply times)."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(frame({"type": "ping", "req_id": 0}))
    if any(reply is None for _, reply in replies(socks, 30)):
        raise SystemExit("some connections got no pong")
    login = frame({"type": "login", "req_id": 1, "account": STORM_ACCOUNT, "secret": SECRETS[STORM_ACCOUNT]})
    start = time.monotonic()
    for s in socks:
        s.sendall(login)
    answers = replies(socks)
    for s in socks:
        s.close()
    outcomes = Counter("no_reply" if reply is None else reply.get("code") or reply["type"] for _, reply in answers)
    latencies = [t - start for t, reply in answers if reply is not None]
    return start, max(t for t, _ in answers), outcomes, latencies


def percentile_ms(seconds: list[float], p: float) -> float:
    """The nearest-rank `p`th percentile of `seconds`, in ms (NaN for none):
    the rule of the server's own latency trace, on whole nanoseconds."""
    if not seconds:
        return float("nan")
    return percentile(sorted(round(s * 1e9) for s in seconds), p) / 1e6


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor > 0 else "n/a"


def figures(rtts: list[float]) -> dict[str, float]:
    return {"count": len(rtts), "p50_ms": percentile_ms(rtts, 50), "p99_ms": percentile_ms(rtts, 99),
            "max_ms": max(rtts, default=float("nan")) * 1e3}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logins", type=int, default=200)
    p.add_argument("--iterations", type=int, default=100_000, help="PBKDF2 iterations of the accounts' secrets")
    p.add_argument("--baseline", type=float, default=1.0, help="seconds of round trips before the storm")
    p.add_argument("--interval", type=float, default=0.001, help="seconds between the probe's round trips")
    p.add_argument("--login-workers", type=int)
    p.add_argument("--max-pending-logins", type=int)
    p.add_argument("--host-logins", type=int)
    p.add_argument("--floor", action="store_true",
                   help="then the same probe and storm against the C floor (perf/floor_epoll.py), for ratios")
    p.add_argument("--json", metavar="FILE", help="write the figures here too")
    p.add_argument("server_args", nargs="*", help="after --: more pyengine-server arguments")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "storm.toml"
        config.write_text(config_text(args))
        measured = run(start_server(config, args.server_args, Path(tmp)), args)
        floor = run(start_floor(Path(tmp)), args, hold=measured["storm_s"]) if args.floor else None
    result = {
        "machine": machine(),
        "command": " ".join([os.path.basename(sys.executable), "perf/login_storm.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "logins": args.logins,
        "iterations": args.iterations,
        **measured,
    }
    if floor is not None:
        result["floor"] = floor
    print(f"machine: {result['machine']}")
    print(f"command: {result['command']}")
    outcomes = measured["outcomes"]
    print(f"{args.logins} logins, PBKDF2 {args.iterations} iterations: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
          + f"; last reply after {result['storm_s'] * 1e3:.0f} ms (p50 {result['login_reply_p50_ms']:.0f} ms)")
    for name in ("before", "during"):
        f = result[f"round_trips_{name}"]
        line = (f"established client's round trips {name} the storm: {f['count']}, p50 {f['p50_ms']:.2f} ms, "
                f"p99 {f['p99_ms']:.2f} ms, max {f['max_ms']:.2f} ms")
        if floor is not None:
            g = floor[f"round_trips_{name}"]
            line += (f"; the C floor's: p50 {g['p50_ms']:.2f} ms, p99 {g['p99_ms']:.2f} ms, max {g['max_ms']:.2f} ms"
                     f" ({ratio(f['p50_ms'], g['p50_ms'])}, {ratio(f['p99_ms'], g['p99_ms'])},"
                     f" {ratio(f['max_ms'], g['max_ms'])})")
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

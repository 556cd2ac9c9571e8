"""A client flooding the server over its rate: how long it holds up another client.

    python perf/flood_neighbour.py [--kind malformed|order] [--flood-rate 0] [--seconds 3] [--baseline 1.0]
                                   [--interval 0.001] [--json out.json] [-- more server arguments]

Starts ``pyengine-server`` on a free port (its default limits: 10,000
messages a second and a burst of 20,000 per session) and a probe process
that logs in and does ping round trips one after the other, recording each.
After ``--baseline`` seconds a flooder logs in on its own connection and,
for ``--seconds``, sends frames as fast as the server reads them (or
``--flood-rate`` frames a second, in sends of 1,000), reading every answer:
``malformed`` frames (not JSON, 5 bytes each) or ``order`` frames
(well-formed limit orders outside the price band, which the engine
rejects). Past its burst nearly every one is over the rate, and each is
still answered (``rate_limited``, or the error of a frame that is not JSON).
It prints the probe's round trips before and during the flood, the during
figures as ratios to the before ones (the same server, the same run), and
what the flooder sent and got.

Nothing is asserted; the figures are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from pyengine.server.config import hash_secret

sys.path.insert(0, str(Path(__file__).resolve().parent))

from login_storm import PROBE_ACCOUNT, figures, machine, ratio, start_server, started_probe  # noqa: E402
from login_storm import SECRETS as PROBE_SECRETS  # noqa: E402

_HEADER = struct.Struct(">I")
FLOOD_ACCOUNT = PROBE_ACCOUNT + 1
SECRETS = {PROBE_ACCOUNT: PROBE_SECRETS[PROBE_ACCOUNT], FLOOD_ACCOUNT: "flood-secret"}
_CHUNK = 1000  # frames per send


def config_text() -> str:
    lines = []
    for account, secret in SECRETS.items():
        lines += ["[[accounts]]", f"account = {account}", f'secret = "{hash_secret(secret, iterations=1000)}"', ""]
    return "\n".join(lines)


def flood_chunk(kind: str) -> bytes:
    if kind == "malformed":
        return (_HEADER.pack(1) + b"x") * _CHUNK
    frames = []
    for i in range(_CHUNK):
        body = orjson.dumps({"type": "new_order", "req_id": i, "symbol": "BTC-PERP", "side": "buy",
                             "order_type": "limit", "qty": 1, "price": 1})
        frames.append(_HEADER.pack(len(body)) + body)
    return b"".join(frames)


def read_answers(sock: socket.socket, counts: Counter[str]) -> None:
    """Count every answer on `sock` by its code (or type) until it closes."""
    buf = bytearray()
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return
        if not data:
            return
        buf += data
        at = 0
        while len(buf) - at >= 4 and len(buf) - at >= 4 + (n := _HEADER.unpack_from(buf, at)[0]):
            message = orjson.loads(bytes(buf[at + 4:at + 4 + n]))
            counts[message.get("code") or message["type"]] += 1
            at += 4 + n
        del buf[:at]


def flood(port: int, kind: str, seconds: float, rate: float) -> tuple[float, float, int, Counter[str]]:
    """Log in, then send `kind` frames for `seconds` (or until the server
    closes the connection), `rate` a second (0: as fast as they go), reading
    every answer. Returns (start, end, frames sent, answers by code)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = orjson.dumps({"type": "login", "req_id": 0, "account": FLOOD_ACCOUNT, "secret": SECRETS[FLOOD_ACCOUNT],
                         "cancel_on_disconnect": True})
    sock.sendall(_HEADER.pack(len(body)) + body)
    counts: Counter[str] = Counter()
    reader = threading.Thread(target=read_answers, args=(sock, counts), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not counts["logged_in"]:
        if time.monotonic() > deadline or not reader.is_alive():
            raise SystemExit(f"the flooder did not log in: {dict(counts)}")
        time.sleep(0.01)
    chunk, sent = flood_chunk(kind), 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        if rate and (due := start + sent / rate) > now:
            time.sleep(due - now)
        try:
            sock.sendall(chunk)
        except OSError:  # closed by the server: its log says why
            break
        sent += _CHUNK
    end = time.monotonic()
    answered = end + 30
    while sum(counts.values()) - 1 < sent and reader.is_alive() and time.monotonic() < answered:
        time.sleep(0.01)
    sock.close()
    reader.join(5)
    return start, end, sent, counts


def run(port: int, args: argparse.Namespace) -> dict[str, Any]:
    stop, mine, prober = started_probe(port, args.interval)
    time.sleep(args.baseline)
    start, end, sent, counts = flood(port, args.kind, args.seconds, args.flood_rate)
    stop.set()
    samples: list[tuple[float, float]] = mine.recv()
    prober.join(10)
    before = [rtt for t, rtt in samples if t + rtt <= start]
    during = [rtt for t, rtt in samples if start <= t and t + rtt <= end]
    counts.pop("logged_in", None)
    return {"flood_s": end - start, "sent": sent, "answers": dict(counts),
            "round_trips_before": figures(before), "round_trips_during": figures(during)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=("malformed", "order"), default="malformed")
    p.add_argument("--flood-rate", type=float, default=0.0, help="frames a second (0: as fast as they go)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of flood")
    p.add_argument("--baseline", type=float, default=1.0, help="seconds of round trips before the flood")
    p.add_argument("--interval", type=float, default=0.001, help="seconds between the probe's round trips")
    p.add_argument("--json", metavar="FILE", help="write the figures here too")
    p.add_argument("server_args", nargs="*", help="after --: more pyengine-server arguments")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "flood.toml"
        config.write_text(config_text())
        server = start_server(config, args.server_args, Path(tmp))
        try:
            assert server.port is not None  # started
            measured = run(server.port, args)
        finally:
            server.stop()
        closes = Counter(line.split("reason=")[1].split()[0] for line in server.lines
                         if "event=session_close" in line and "reason=" in line)
    result = {
        "machine": machine(),
        "command": " ".join([os.path.basename(sys.executable), "perf/flood_neighbour.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "kind": args.kind,
        **measured,
        "sessions_closed": dict(closes),
    }
    print(f"machine: {result['machine']}")
    print(f"command: {result['command']}")
    answers = ", ".join(f"{k} {v}" for k, v in sorted(measured["answers"].items()))
    print(f"flooder: {measured['sent']} {args.kind} frames in {measured['flood_s']:.2f} s "
          f"({measured['sent'] / measured['flood_s']:.0f} a second); answers: {answers}; sessions closed by "
          f"reason: {dict(closes) or 'none'}")
    before, during = measured["round_trips_before"], measured["round_trips_during"]
    for name, f in (("before", before), ("during", during)):
        print(f"probe's round trips {name} the flood: {f['count']}, p50 {f['p50_ms']:.3f} ms, "
              f"p99 {f['p99_ms']:.3f} ms, max {f['max_ms']:.3f} ms")
    print(f"during / before: p50 {ratio(during['p50_ms'], before['p50_ms'])}, "
          f"p99 {ratio(during['p99_ms'], before['p99_ms'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

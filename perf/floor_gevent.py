"""The gevent floor server: what the server's architecture costs by itself.

    python perf/floor_gevent.py --port 0 [--host 127.0.0.1] [--server-cpu N]

A gevent ``StreamServer`` that answers every frame of the pyengine-server
protocol (docs/protocol.md) at once, decoding each request and encoding its
reply with orjson, as the server does: no engine, no engine thread, no
queue, no writer greenlet. Its latency under tools/loadgen.py is that of
the machine plus gevent's event loop and the JSON; perf/loadgen_table.py
--floors states pyengine-server's figures beside it and beside the C floor
(perf/floor_epoll.c, whose replies this one repeats field for field).

Logs ``event=listening host=H port=P`` on stderr, as pyengine-server does,
and exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
from typing import Any

import gevent
import orjson
from gevent.event import Event
from gevent.server import StreamServer

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024


class FloorServer:
    """Answers each request frame with the smallest reply tools/loadgen.py counts."""

    def __init__(self, host: str, port: int) -> None:
        self.next_id = 0  # order ids and sequence numbers
        self.listener = StreamServer((host, port), self.handle)

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        typ, req_id = request.get("type"), request.get("req_id")
        if typ == "login":
            return {"type": "logged_in", "req_id": req_id, "account": request.get("account")}
        if typ == "new_order":
            self.next_id += 1
            return {"type": "ack", "req_id": req_id, "order_id": self.next_id, "seq": self.next_id}
        if typ == "cancel":
            self.next_id += 1
            return {"type": "cancelled", "req_id": req_id, "order_id": request.get("order_id"), "seq": self.next_id}
        if typ == "ping":
            return {"type": "pong", "req_id": req_id}
        return {"type": "error", "req_id": req_id, "code": "unsupported",
                "message": "the floor server answers login, new_order, cancel and ping"}

    def handle(self, sock: socket.socket, _address: Any) -> None:
        """One connection: read, answer every whole frame, send the replies of one read at once."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    return
                buf += data
                out = bytearray()
                pos = 0
                while len(buf) - pos >= 4:
                    (n,) = HEADER.unpack_from(buf, pos)
                    if n == 0 or n > MAX_FRAME:
                        return  # a framing error closes the connection
                    if len(buf) - pos - 4 < n:
                        break
                    body = orjson.dumps(self.reply(orjson.loads(memoryview(buf)[pos + 4 : pos + 4 + n])))
                    out += HEADER.pack(len(body)) + body
                    pos += 4 + n
                del buf[:pos]
                if out:
                    sock.sendall(out)
        except OSError:
            return  # the client went away
        finally:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="0: any free port")
    ap.add_argument("--server-cpu", type=int, default=-1, help="pin the server to this CPU (-1: don't)")
    args = ap.parse_args(argv)
    if args.server_cpu >= 0:
        os.sched_setaffinity(0, {args.server_cpu})
    server = FloorServer(args.host, args.port)
    server.listener.start()
    bound = server.listener.address
    assert isinstance(bound, tuple)  # a TCP listener's (host, port)
    host, port = bound[0], bound[1]
    print(f"event=listening host={host} port={port}", file=sys.stderr, flush=True)
    stopped = Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stopped.set)
    stopped.wait()
    server.listener.stop(timeout=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

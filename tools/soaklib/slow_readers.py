"""Slow readers: market data subscribers that do not read, which the server
must disconnect."""

from __future__ import annotations

import socket
import time

import gevent
from gevent import socket as gsocket

from .common import MARKETS, SLOW_DRAIN_TIMEOUT, SLOW_READER_MSS, SLOW_READER_RCVBUF, Soak, frame_of


def drain_to_eof(sock: socket.socket, timeout: float) -> bool:
    """Read until the stream ends (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            return False
        except OSError:
            return True  # reset
        if not data:
            return True
    return False


class SlowReader:
    """Subscribes to market data and does not read."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.report = soak.report
        self.name = f"slow-{index}"
        self.rng = soak.rng(self.name)

    def run(self) -> None:
        gevent.sleep(self.rng.uniform(0.0, 0.5))
        while not self.soak.stop.is_set():
            try:
                self._one()
            except OSError as exc:
                self.report.fail("connections", f"{self.name}: {exc!r}")
                gevent.sleep(1.0)

    def _one(self) -> None:
        sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
        # An Ethernet-sized MSS: with loopback's 64 KiB one, the kernel lets the
        # server's send buffer grow to megabytes before max_unsent counts a byte.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SLOW_READER_MSS)
        try:
            sock.connect((self.soak.host, self.soak.port))
            sock.sendall(b"".join(frame_of({"type": "subscribe", "req_id": i, "symbol": m.symbol})
                                  for i, m in enumerate(MARKETS)))
            self.report.count("slow_readers_started")
            cut_short = self.soak.stop.wait(self.soak.opts.slow_hold)
            if drain_to_eof(sock, SLOW_DRAIN_TIMEOUT):
                self.report.count("slow_readers_disconnected")
            elif cut_short:
                self.report.count("slow_readers_cut_short")
            else:
                self.report.count("slow_readers_not_disconnected")
        finally:
            sock.close()

"""TCP keepalive on a connection: how the client and the server each find
out about a peer that went away without a word (its machine lost, a cable
cut), which otherwise looks like a connection that is merely quiet."""

from __future__ import annotations

import socket
from typing import Protocol

MAX_KEEPALIVE = 32767  # seconds: Linux's bound for TCP_KEEPIDLE and TCP_KEEPINTVL
PROBES = 3


class _Sock(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def keep_alive(sock: _Sock, idle: float) -> None:
    """Probe `sock` after `idle` whole seconds without traffic either way,
    every idle / 2 seconds, three probes, after which the kernel ends the
    connection (reads fail with ETIMEDOUT): about 2.5 x `idle` in all. Data
    sent and not acknowledged for as long (keepalive probes only a quiet
    connection: a peer gone while data was on its way would otherwise be
    retransmitted to for some 15 minutes), or waiting for as long for the
    peer to make room (it reads nothing), ends it too (TCP_USER_TIMEOUT).
    Where the platform lets these be set (Linux; macOS names the first
    TCP_KEEPALIVE); elsewhere, or where it names an option but refuses it,
    the system's own times."""
    interval = max(1, int(idle) // 2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for option, value in ((idle_option, int(idle)), (getattr(socket, "TCP_KEEPINTVL", None), interval),
                          (getattr(socket, "TCP_KEEPCNT", None), PROBES),
                          (getattr(socket, "TCP_USER_TIMEOUT", None), (int(idle) + PROBES * interval) * 1000)):
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass

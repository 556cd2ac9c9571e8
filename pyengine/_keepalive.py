"""TCP keepalive on a connection: how the client and the server each find
out about a peer that went away without a word (its machine lost, a cable
cut), which otherwise looks like a connection that is merely quiet."""

from __future__ import annotations

import socket
import struct
import sys
from typing import Protocol

MAX_KEEPALIVE = 32767  # seconds: Linux's bound for TCP_KEEPIDLE and TCP_KEEPINTVL
PROBES = 3


class _Sock(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def give_up_after(idle: float) -> int:
    """Seconds after which keep_alive(sock, idle) gives up on a silent peer:
    `idle`, then three probes `idle` / 2 apart (about 2.5 x `idle`)."""
    return int(idle) + PROBES * max(1, int(idle) // 2)


def keep_alive(sock: _Sock, idle: float, *, user_timeout: bool = True) -> None:
    """Probe `sock` after `idle` whole seconds without traffic either way,
    every idle / 2 seconds, three probes, after which the kernel ends the
    connection (reads fail with ETIMEDOUT): about 2.5 x `idle` in all
    (give_up_after). Keepalive probes only a quiet connection: a peer gone
    while data was on its way is retransmitted to for some 15 minutes.
    `user_timeout`: data sent and not acknowledged for as long ends the
    connection too (TCP_USER_TIMEOUT); so does data waiting as long for room
    the peer does not make, even a peer that reads, only slower than it is
    sent to (Linux counts from the first probe of the shut window and starts
    again only when the window takes the whole next segment queued), which
    is why the server checks unacknowledged_for() instead.
    Where the platform lets these be set (Linux; macOS names the first
    TCP_KEEPALIVE); elsewhere, or where it names an option but refuses it,
    the system's own times."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    options = [(idle_option, int(idle)), (getattr(socket, "TCP_KEEPINTVL", None), max(1, int(idle) // 2)),
               (getattr(socket, "TCP_KEEPCNT", None), PROBES)]
    if user_timeout:
        options.append((getattr(socket, "TCP_USER_TIMEOUT", None), give_up_after(idle) * 1000))
    for option, value in options:
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass


# Linux's struct tcp_info, three of its fields: tcpi_probes (at 3: probes sent and not answered, of a shut receive
# window or keepalive's), tcpi_unacked (at 24) and tcpi_last_ack_recv (at 56, in ms)
_TCP_INFO = struct.Struct("=3xB20xI28xI")


def unacknowledged_for(sock: socket.socket) -> float:
    """Seconds since the peer of `sock` last acknowledged anything, while
    data sent to it waits for that or three probes in a row went unanswered
    (of its shut receive window, which a peer that is there answers even
    when it reads nothing: the count starts again at each answer, so one
    probe lost, or one on its way, is not taken for a peer gone); 0.0 when
    neither, or where the platform does not say (Linux's TCP_INFO only)."""
    if not sys.platform.startswith("linux"):
        return 0.0
    try:
        probes, unacked, last_ack_ms = _TCP_INFO.unpack(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size))
    except (OSError, struct.error):
        return 0.0
    return last_ack_ms / 1000 if unacked or probes >= PROBES else 0.0

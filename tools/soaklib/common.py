"""What every part of the soak shares: the instruments, accounts and limits,
the options, the findings (Report), the order board, the Soak context, and
helpers for frames and sessions."""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gevent.event
import orjson
from gevent import socket as gsocket

from pyengine.client import Client, ConnectionClosed, ServerError
from pyengine.server.config import InstrumentConfig

LOG = logging.getLogger("soak")

HEADER = struct.Struct(">I")


class Market(NamedTuple):
    symbol: str
    mid: int
    tick: int


# The instruments of the default configuration, with the mid prices
# tools/loadgen.py trades them around.
MARKETS = (Market("ESZ6", 450_000, 25), Market("NQZ6", 2_000_000, 25), Market("CLF7", 7_000, 1),
           Market("BTC-PERP", 90_000, 1))
# Traded by the disconnect clients only, never across: buys at or below
# QUIET_BID, sells at or above QUIET_ASK.
QUIET = InstrumentConfig("SOAK-QUIET", tick_size=1, lot_size=1, price_band=(1_000, 100_000))
QUIET_BID, QUIET_ASK = 10_000, 20_000

# Accounts: tools/loadgen.py uses 1..connections (one worker).
TRACKED_BASE, DISCONNECT_BASE, HOSTILE_BASE = 100_000, 200_000, 300_000
PROBE_ACCOUNT = 900_000
UNLISTED_ACCOUNT = 999_999
ACCOUNTS_PER_DISCONNECTOR = 4
MAX_CLIENTS = 64

REPLY_TIMEOUT = 10.0
REUSE_DELAY = 1.0  # seconds before a dropped account logs in again
CLAIM_RETRY_DELAY = 2.0
AUTH_FAILURE_SPACING = 20.0
TRACKED_MAX_OPEN = 150
BARRIER_COID = "soak-barrier"
SLOW_READER_RCVBUF = 4096
SLOW_READER_MSS = 1400
SLOW_DRAIN_TIMEOUT = 8.0  # the server closes a dropped reader within 5 s
MIN_LOADGEN_RUN = 2.0
SPAWN_ATTEMPTS = 3
END_PHASE_TIMEOUT = 60.0

CHECKS = ("accounting", "disconnect_claims", "hostile", "slow_readers", "connections", "loadgen", "server_alive",
          "book_empty", "server_log", "server_exit", "memory", "tool")


class SetupError(Exception):
    """The soak cannot run at all (exit status 2)."""


# ---- options ----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: float
    seed: int
    host: str
    port: int | None  # None: spawn a server
    server_pid: int | None
    fsync: str
    engine_cpu: int
    max_unsent: int
    loadgen_rate: float
    loadgen_connections: int
    loadgen_cycle: float
    tracked_clients: int
    tracked_rate: float
    disconnect_clients: int
    taker_drops: float
    hostile_clients: int
    slow_readers: int
    slow_hold: float
    warmup_fraction: float
    rss_tolerance: float
    rss_slack_mb: float
    json_path: str | None
    server_log: str | None

    @property
    def spawn(self) -> bool:
        return self.port is None


# ---- findings ---------------------------------------------------------------------


class Report:
    """Counters of what was done, and failures by check."""

    MAX_MESSAGES = 12

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: dict[str, list[str]] = {}
        self.failure_counts: Counter[str] = Counter()

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def fail(self, check: str, message: str) -> None:
        self.failure_counts[check] += 1
        messages = self.failures.setdefault(check, [])
        if len(messages) < self.MAX_MESSAGES:
            messages.append(message)
            LOG.warning("FAIL %s: %s", check, message)

    @property
    def passed(self) -> bool:
        return not self.failure_counts


class OrderBoard:
    """Recent order ids and client order ids of the soak's well-behaved
    accounts: what hostile clients try to act on."""

    def __init__(self, size: int = 512) -> None:
        self._ids: deque[int] = deque(maxlen=size)
        self._coids: deque[str] = deque(maxlen=size)

    def add(self, order_id: int, client_order_id: str | None) -> None:
        self._ids.append(order_id)
        if client_order_id is not None:
            self._coids.append(client_order_id)

    def order_id(self, rng: random.Random) -> int:
        return rng.choice(self._ids) if self._ids else rng.randint(1, 1 << 20)

    def client_order_id(self, rng: random.Random) -> str:
        return rng.choice(self._coids) if self._coids else "t1"


@dataclass
class Soak:
    """What every client of the soak shares."""

    opts: Options
    host: str
    port: int
    report: Report
    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    board: OrderBoard = field(default_factory=OrderBoard)
    last_auth_failure: float = float("-inf")

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.opts.seed}:{name}")

    def connect(self, timeout: float = REPLY_TIMEOUT) -> Client:
        return Client(self.host, self.port, timeout=timeout, socket_module=gsocket)

    def may_fail_login(self) -> bool:
        """At most one failed login every AUTH_FAILURE_SPACING seconds, so the
        server's per-host throttle never locks the soak's own clients out."""
        now = time.monotonic()
        if now - self.last_auth_failure < AUTH_FAILURE_SPACING:
            return False
        self.last_auth_failure = now
        return True


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def frame_of(message: dict[str, Any]) -> bytes:
    return frame(orjson.dumps(message))


def reset_on_close(sock: socket.socket) -> None:
    """Make close() send a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def close_and_wait(client: Client, timeout: float = REPLY_TIMEOUT) -> bool:
    """End our side of the stream and wait for the server to close its side:
    then it has processed the end of the session. False on a timeout."""
    try:
        client.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            client.recv(timeout=left)
        return False
    except (ConnectionClosed, ConnectionError):
        return True
    except TimeoutError:
        return False
    finally:
        client.close()


def mass_cancel_all(client: Client, timeout: float = REPLY_TIMEOUT) -> tuple[dict[int, int], int]:
    """Mass-cancel the session's orders: (order id -> leaves of each
    ``cancelled`` push, the ``mass_cancelled`` count)."""
    req_id = client.mass_cancel()
    cancelled: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no mass_cancelled reply")
        m = client.recv(timeout=left)
        if m.get("req_id") == req_id:
            if m.get("type") != "mass_cancelled":
                raise ServerError(m)
            return cancelled, m["count"]
        if m.get("type") == "cancelled":
            cancelled[m["order_id"]] = m["leaves"]


def compare_open(report: Report, check: str, label: str, expected: dict[int, int], cancelled: dict[int, int],
                 count: int) -> None:
    """The orders a mass cancel returned must be exactly the ones expected
    open, with the expected leaves."""
    lost = sorted(expected.keys() - cancelled.keys())
    phantom = sorted(cancelled.keys() - expected.keys())
    wrong = sorted(oid for oid in expected.keys() & cancelled.keys() if expected[oid] != cancelled[oid])
    if lost:
        report.fail(check, f"{label}: {len(lost)} acknowledged order(s) neither filled nor cancelled are not open "
                           f"on the server (lost), e.g. {[(oid, expected[oid]) for oid in lost[:5]]} (id, leaves)")
    if phantom:
        report.fail(check, f"{label}: the server holds {len(phantom)} open order(s) the client does not know open, "
                           f"e.g. {[(oid, cancelled[oid]) for oid in phantom[:5]]} (id, leaves)")
    if wrong:
        report.fail(check, f"{label}: {len(wrong)} order(s) with other leaves than the client computed, e.g. "
                           f"{[(oid, expected[oid], cancelled[oid]) for oid in wrong[:5]]} (id, expected, server)")
    if count != len(cancelled):
        report.fail(check, f"{label}: mass_cancelled count {count}, but {len(cancelled)} cancelled pushes")

"""Limits that protect the engine and the server from one client.

- ``HostWindow``: events per host within a window: failed logins
  (``login_failures``), and logins with a secret to check, of any outcome
  (``host_logins``); over the limit, the host's logins are refused until its
  events age out.
- ``LoginChecks``: login secrets checked on a few threads, off the event
  loop, with a bound on the logins in progress (``max_pending_logins``).
- ``OrderLimits``: per instrument, the largest order quantity and notional
  (price x qty); per account, the most open orders across all its sessions.

A session's message rate (``[limits] rate`` and ``burst``) is its Link's
token bucket, and the open-order limit is applied by the Intake, both in C
(csrc/binding/link.c, intake.c). An instrument's limits are the engine's
state (a sequenced SET_LIMITS command, journaled like any other): the engine
checks each new order and each modify against them as it runs it, so a
modify sent before its order's ack is held to them as well. The server sets
them from its configuration when it starts taking orders. The open-order
count of an account is kept
in the Ledger from the engine's events (an order is open from its
``ACCEPTED`` until a trade leaves it 0 or it is cancelled) plus the new
orders the account has sent that the engine has not answered yet, so a burst
cannot slip past the limit while in flight.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from gevent.threadpool import ThreadPool

from .config import InstrumentConfig, LimitsConfig

__all__ = ["HostWindow", "LoginChecks", "OrderLimits", "login_source"]


def login_source(host: str) -> str:
    """Whom a login comes from, for the per-host throttles: an IPv4 address
    (an IPv6-mapped one too), or an IPv6 address's /64: one machine, or one
    customer's network, holds a whole /64, and could take a new address for
    every login."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return host


class HostWindow:
    """At most ``limit`` events per host within ``window`` seconds; limit 0:
    no limit. Hosts whose events have all aged out are forgotten, so the
    memory held is bounded by the hosts seen within one window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: OrderedDict[str, deque[float]] = OrderedDict()  # least recently added host first

    def _recent(self, host: str, now: float) -> deque[float] | None:
        events = self._events.get(host)
        if events is None:
            return None
        while events and now - events[0] >= self.window:
            events.popleft()
        if not events:
            del self._events[host]
            return None
        return events

    def full(self, host: str) -> bool:
        if not self.limit:
            return False
        events = self._recent(host, time.monotonic())
        return events is not None and len(events) >= self.limit

    def add(self, host: str) -> None:
        if not self.limit:
            return
        now = time.monotonic()
        while self._events:
            oldest = next(iter(self._events))
            if now - self._events[oldest][-1] < self.window:
                break
            del self._events[oldest]
        events = self._recent(host, now)
        if events is None:
            events = self._events[host] = deque()
        self._events.move_to_end(host)
        events.append(now)


class LoginChecks:
    """Checks login secrets on ``workers`` OS threads of their own, off the
    event loop: a PBKDF2 check takes tens of milliseconds, and hashlib
    releases the GIL while it runs. At most ``max_pending`` logins are checked
    or wait for a worker at once; the session asks ``busy`` first.

    ``dummy`` is a stored secret that nothing matches, with the parameters of
    the configured accounts' secrets: a login for an unknown account, or
    without a secret, is checked against it, so every failed login costs the
    same work and gets the same reply."""

    def __init__(self, workers: int, max_pending: int, dummy: str, check: Callable[[str, str], bool]) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.dummy = dummy
        self.pending = 0
        self._check = check
        self._pool = ThreadPool(workers)

    def start(self) -> None:
        """Start the threads now, from the thread that starts the server,
        rather than on first use from the event loop's: a thread inherits
        the CPU its creator is pinned to."""
        self._pool.size = self.workers

    @property
    def busy(self) -> bool:
        return self.pending >= self.max_pending

    def verify(self, stored: str, given: str) -> bool:
        """Whether `given` matches `stored`; the calling greenlet waits, the
        event loop runs on."""
        self.pending += 1
        try:
            return bool(self._pool.spawn(self._check, stored, given).get())
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.kill()


class OrderLimits:
    """The configured order limits: per instrument (by instrument number) the
    largest quantity and notional, 0 for none, as the engine's SET_LIMITS
    takes them (``per_instrument``); the most open orders of an account, 0
    for no limit, which the server's Intake (csrc/binding/intake.c) applies."""

    def __init__(self, instruments: Sequence[InstrumentConfig], limits: LimitsConfig) -> None:
        self.per_instrument = [(i.max_qty or 0, i.max_notional or 0) for i in instruments]
        self.max_open_orders = limits.max_open_orders

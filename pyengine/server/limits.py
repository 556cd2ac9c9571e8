"""Limits that protect the engine and the server from one client.

- ``TokenBucket``: a session's message rate (``[limits] rate`` and ``burst``).
- ``LoginThrottle``: failed logins per host; over the limit, the host's
  logins are refused until its failures age out of the window.
- ``OrderLimits``: per instrument, the largest order quantity and notional
  (price x qty); per account, the most open orders across all its sessions.

The open-order count of an account is kept from the engine's events (an order
is open from its ``ACCEPTED`` until a trade leaves it 0 or it is cancelled)
plus the new orders the account has sent that the engine has not answered
yet, so a burst cannot slip past the limit while in flight.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence

from .config import InstrumentConfig, LimitsConfig

__all__ = ["TokenBucket", "LoginThrottle", "OrderLimits"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; rate 0: unlimited."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one."""
        if not self.rate:
            return True
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class LoginThrottle:
    """At most ``limit`` failed logins per host within ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, host: str, now: float) -> deque[float] | None:
        failures = self._failures.get(host)
        if failures is None:
            return None
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[host]
            return None
        return failures

    def blocked(self, host: str) -> bool:
        if not self.limit:
            return False
        failures = self._recent(host, time.monotonic())
        return failures is not None and len(failures) >= self.limit

    def failed(self, host: str) -> None:
        if self.limit:
            now = time.monotonic()
            self._recent(host, now)
            self._failures.setdefault(host, deque()).append(now)


class OrderLimits:
    def __init__(self, instruments: Sequence[InstrumentConfig], limits: LimitsConfig) -> None:
        self.max_qty = [i.max_qty or 0 for i in instruments]
        self.max_notional = [i.max_notional or 0 for i in instruments]
        self.max_open_orders = limits.max_open_orders
        self.open = Counter[int]()  # account -> accepted orders not finished
        self.in_flight = Counter[int]()  # account -> new orders sent, not answered

    def check_order(self, inst: int, qty: int, price: int | None) -> tuple[str, str] | None:
        """(code, message) if an order breaks its instrument's limits.
        ``price`` None (a market order) is checked by quantity only."""
        if inst >= len(self.max_qty):
            return None  # the engine rejects it: unknown instrument
        max_qty = self.max_qty[inst]
        if max_qty and qty > max_qty:
            return "max_qty_exceeded", f"qty {qty} is over the instrument's limit of {max_qty}"
        max_notional = self.max_notional[inst]
        if max_notional and price is not None and price * qty > max_notional:
            return ("max_notional_exceeded",
                    f"notional {price * qty} (price x qty) is over the instrument's limit of {max_notional}")
        return None

    def check_open(self, account: int) -> tuple[str, str] | None:
        limit = self.max_open_orders
        if limit and self.open[account] + self.in_flight[account] >= limit:
            return "max_open_orders_exceeded", f"account {account} has {limit} open orders, the most it may have"
        return None

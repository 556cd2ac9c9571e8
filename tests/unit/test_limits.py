"""The server's limits on their own: token bucket, login throttle, order limits."""

from __future__ import annotations

import pytest

from pyengine.server import limits
from pyengine.server.config import InstrumentConfig, LimitsConfig
from pyengine.server.limits import LoginThrottle, OrderLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(limits.time, "monotonic", c)
    return c


def test_token_bucket_allows_a_burst_then_the_rate(clock: Clock) -> None:
    bucket = TokenBucket(rate=8, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 1 / 16  # half a token (binary fractions: exact arithmetic)
    assert not bucket.take()
    clock.now += 1 / 16
    assert bucket.take() and not bucket.take()
    clock.now += 100  # never more than the burst saved
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_token_bucket_rate_zero_is_unlimited(clock: Clock) -> None:
    bucket = TokenBucket(rate=0, burst=0)
    assert all(bucket.take() for _ in range(10_000))


def test_login_throttle_per_host_and_window(clock: Clock) -> None:
    throttle = LoginThrottle(limit=2, window=60)
    throttle.failed("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")
    clock.now += 30
    throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    clock.now += 30  # the first failure ages out
    assert not throttle.blocked("10.0.0.1")
    clock.now += 30
    assert not throttle.blocked("10.0.0.1") and throttle._failures == {}
    off = LoginThrottle(limit=0, window=60)
    for _ in range(100):
        off.failed("h")
    assert not off.blocked("h")


def test_order_limits() -> None:
    instruments = (InstrumentConfig("A", max_qty=10, max_notional=1000), InstrumentConfig("B"))
    ol = OrderLimits(instruments, LimitsConfig(max_open_orders=2))
    assert ol.check_order(0, 10, 100) is None
    assert ol.check_order(0, 11, 1)[0] == "max_qty_exceeded"  # type: ignore[index]
    assert ol.check_order(0, 10, 101)[0] == "max_notional_exceeded"  # type: ignore[index]
    assert ol.check_order(0, 10, None) is None  # a market order: qty only
    assert ol.check_order(1, 10**9, 10**9) is None  # no limits on B
    assert ol.check_order(7, 1, 1) is None  # unknown instrument: the engine's reject
    ol.open[5] = 1
    assert ol.check_open(5) is None
    ol.in_flight[5] = 1
    assert ol.check_open(5)[0] == "max_open_orders_exceeded"  # type: ignore[index]
    assert ol.check_open(6) is None
    assert OrderLimits(instruments, LimitsConfig(max_open_orders=0)).check_open(5) is None

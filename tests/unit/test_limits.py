"""The server's limits on their own: a Link's token bucket, per-host windows, login checks, order limits."""

from __future__ import annotations

import threading

import gevent
import pytest

from pyengine.server import limits
from pyengine.server.config import InstrumentConfig, LimitsConfig
from pyengine._server import Link
from pyengine.server.limits import HostWindow, LoginChecks, OrderLimits, login_source


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


class Sink:
    def send(self, frame: bytes) -> None: ...


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket, now = Link(1, Sink(), 8, 3), 1000.0
    assert [bucket.take_token(now) for _ in range(4)] == [True, True, True, False]
    now += 1 / 16  # half a token (binary fractions: exact arithmetic)
    assert not bucket.take_token(now)
    now += 1 / 16
    assert bucket.take_token(now) and not bucket.take_token(now)
    now += 100  # never more than the burst saved
    assert [bucket.take_token(now) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_rate_zero_is_unlimited() -> None:
    bucket = Link(1, Sink(), 0, 0)
    assert all(bucket.take_token() for _ in range(10_000))
    bucket.spend(1e9)
    assert bucket.take_token()


def test_token_bucket_spends_into_debt_and_refills_from_it() -> None:
    bucket, now = Link(1, Sink(), 8, 4), 1000.0
    assert bucket.take_token(now)
    bucket.spend(2.5, now)  # 0.5 left
    assert not bucket.take_token(now)
    bucket.spend(4, now)  # 3.5 owed
    now += 4 / 8  # refilled to 0.5
    assert not bucket.take_token(now)
    now += 1 / 16
    assert bucket.take_token(now) and not bucket.take_token(now)
    now += 100
    bucket.spend(1, now)  # from the burst, never more
    assert [bucket.take_token(now) for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError, match="tokens must be 0 or more"):
        bucket.spend(-1, now)
    with pytest.raises(ValueError):
        bucket.spend(float("nan"), now)


def test_host_window_per_host_and_window(clock: Clock) -> None:
    window = HostWindow(limit=2, window=60)
    window.add("10.0.0.1")
    assert not window.full("10.0.0.1")
    clock.now += 30
    window.add("10.0.0.1")
    assert window.full("10.0.0.1") and not window.full("10.0.0.2")
    clock.now += 30  # the first event ages out
    assert not window.full("10.0.0.1")
    clock.now += 30
    assert not window.full("10.0.0.1") and not window._events
    off = HostWindow(limit=0, window=60)
    for _ in range(100):
        off.add("h")
    assert not off.full("h")


def test_host_window_forgets_hosts_gone_quiet(clock: Clock) -> None:
    window = HostWindow(limit=5, window=10)
    for i in range(1000):
        window.add(f"10.0.{i // 256}.{i % 256}")
        clock.now += 1 / 8
    # Only the hosts of the last 10 s are held, without asking for the others.
    assert len(window._events) == 80
    window.add("10.9.9.9")
    assert len(window._events) == 80 and "10.9.9.9" in window._events


def test_login_checks_run_on_their_own_threads_and_count_what_is_pending() -> None:
    held = threading.Event()
    threads: list[int] = []

    def check(stored: str, given: str) -> bool:
        threads.append(threading.get_ident())
        held.wait(10)
        return given == stored

    checks = LoginChecks(workers=1, max_pending=2, dummy="dummy", check=check)
    try:
        first = gevent.spawn(checks.verify, "s", "s")
        second = gevent.spawn(checks.verify, "s", "wrong")
        gevent.sleep(0)  # both started: one on the worker, one waiting for it
        assert (checks.pending, checks.busy) == (2, True)
        # Other greenlets run meanwhile: the event loop is not held.
        assert gevent.spawn(lambda: "served").get(timeout=5) == "served"
        assert not first.ready() and not second.ready()
        held.set()
        assert (first.get(timeout=10), second.get(timeout=10)) == (True, False)
        assert (checks.pending, checks.busy) == (0, False)
        assert threads and threading.get_ident() not in threads
    finally:
        held.set()
        checks.close()


def test_order_limits_are_the_engines_pairs_and_the_intakes_count() -> None:
    # Per instrument (max_qty, max_notional), 0 for none, as SET_LIMITS takes
    # them; the open-order limit is the Intake's (tests/unit/test_intake.py).
    instruments = (InstrumentConfig("A", max_qty=10, max_notional=1000), InstrumentConfig("B", max_notional=5))
    ol = OrderLimits(instruments, LimitsConfig(max_open_orders=2))
    assert (ol.per_instrument, ol.max_open_orders) == ([(10, 1000), (0, 5)], 2)


def test_logins_from_one_ipv6_network_count_as_one_source() -> None:
    assert login_source("203.0.113.7") == "203.0.113.7"
    assert login_source("::ffff:203.0.113.7") == "203.0.113.7"
    # Every address of a /64 is one source: its holder could draw a new one for each login.
    assert login_source("2001:db8:1:2:aaaa::1") == login_source("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert login_source("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert login_source("::1") == "::/64"
    assert login_source("a-unix-socket") == "a-unix-socket"  # not an address: as it is
    window = HostWindow(2, 60.0)
    for host in ("2001:db8::1", "2001:db8::2"):
        window.add(login_source(host))
    assert window.full(login_source("2001:db8::3"))

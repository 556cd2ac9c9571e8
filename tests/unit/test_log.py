"""Structured log lines."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from pyengine.log import Throttle, fields, setup_logging


def test_key_value_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    setup_logging("debug", stream=out)
    log = logging.getLogger("pyengine.test")
    log.debug("thing_happened", extra=fields(port=7001, text="two words", empty=""))
    line = out.getvalue().strip()
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=debug event=thing_happened port=7001 text="two words" empty=""',
        line,
    ), line


def test_level_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setenv("PYENGINE_LOG", "warning")
    setup_logging(None, stream=out)
    log = logging.getLogger("pyengine.test")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in out.getvalue() and "event=shown" in out.getvalue()
    with pytest.raises(ValueError):
        setup_logging("chatty")


def test_a_throttle_lets_one_line_through_an_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert throttle.allow() == 0  # the first at once
    assert [throttle.allow() for _ in range(5)] == [None] * 5
    now[0] = 100.999
    assert throttle.allow() is None
    now[0] = 101.0
    assert throttle.allow() == 6  # and the six held back since
    assert throttle.allow() is None
    now[0] = 105.0
    assert throttle.allow() == 1 and throttle.allow() is None
    # Another kind of failure is not held back by the first: each its own line a second.
    assert throttle.allow(OSError) == 0 and throttle.allow(OSError) is None and throttle.allow() is None
    now[0] = 106.0
    assert throttle.allow(OSError) == 1 and throttle.allow() == 2


def test_a_throttle_of_several_lines_an_interval_counts_the_rest_on_the_next() -> None:
    now = [100.0]
    throttle = Throttle(1.0, clock=lambda: now[0], lines=3)
    assert [throttle.allow("a") for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.allow("b") == 0  # its own three
    now[0] = 100.5
    assert throttle.allow("a") is None
    now[0] = 101.0
    assert [throttle.allow("a") for _ in range(4)] == [3, 0, 0, None]


def test_a_failing_turn_is_logged_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    """PollerEvents.turn_failed, as a turn that fails every time calls it."""
    from pyengine.server.app import Server
    from pyengine.server.config import ServerConfig

    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    try:
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="pyengine"):
            for _ in range(1000):
                server.turn_failed(MemoryError("a turn"))
        seconds = time.monotonic() - began
        lines = [r for r in caplog.records if r.getMessage() == "turn_failed"]
        assert 1 <= len(lines) <= seconds + 1  # a line a second at most: the first at once
        assert lines[0].exc_info is not None and lines[0].exc_info[0] is MemoryError
        assert lines[0].kv == {"held_back": 0}  # type: ignore[attr-defined]
        assert len(lines) + sum(r.kv["held_back"] for r in lines[1:]) <= 1000  # type: ignore[attr-defined]
        server.turn_failed(OSError("another kind"))  # not held back by the first kind
        (other,) = [r for r in caplog.records if r.getMessage() == "turn_failed" and r.exc_info
                    and r.exc_info[0] is OSError]
        assert other.kv == {"held_back": 0}  # type: ignore[attr-defined]
    finally:
        server.stop()

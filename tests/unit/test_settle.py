"""Settling (pyengine/server/settle.py): a request that reads a session's
orders waits in the session's greenlet until its earlier commands are
answered, is woken by the routing that answers the last of them, and is
dropped when the session closes meanwhile. The session here is a plain
object with the three attributes Settling reads; the real sessions' waits
are tested over TCP in tests/integration/test_pipelined.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import gevent
import pytest

from pyengine.server.settle import Settling


@dataclass
class Link:
    pending_count: int = 0


@dataclass(eq=False)
class Session:
    sid: int = 1
    closed: bool = False
    link: Link = field(default_factory=Link)


def test_no_command_in_flight_no_wait() -> None:
    assert Settling().wait(Session()) is True
    assert Settling().wait(Session(closed=True)) is False


def test_the_routing_that_answers_the_last_command_wakes_it() -> None:
    settling, session = Settling(), Session(link=Link(pending_count=2))
    waiter = gevent.spawn(settling.wait, session)
    gevent.sleep(0)
    settling.routed()  # two still in flight: it sleeps on
    gevent.sleep(0)
    assert not waiter.ready()
    session.link.pending_count = 0
    settling.routed()
    assert waiter.get(timeout=1) is True


def test_a_session_that_closes_while_it_waits_drops_the_request() -> None:
    settling, session = Settling(), Session(link=Link(pending_count=1))
    waiter = gevent.spawn(settling.wait, session)
    gevent.sleep(0)
    session.closed = True
    settling.closed(session)
    assert waiter.get(timeout=1) is False


def test_an_answer_that_never_comes_holds_it_no_longer_than_its_patience(caplog: pytest.LogCaptureFixture) -> None:
    settling, session = Settling(patience=0.05), Session(sid=7, link=Link(pending_count=1))
    with caplog.at_level(logging.WARNING, logger="pyengine.server"):
        assert settling.wait(session) is True
    assert [r.getMessage() for r in caplog.records] == ["settle_timeout"]
    settling.routed()  # nobody waits any more: nothing to wake

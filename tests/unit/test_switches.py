"""The dead-man switches a cluster keeps in a shard's log, without a NATS
server: the body of a switches message, a follower taking them from the
log, and what a leader gives it while a switch's cancel-all is under way."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import gevent
import pytest

from pyengine.cluster.config import ClusterConfig
from pyengine.cluster.link import Link
from pyengine.cluster.replica import Position, Replica
from pyengine.cluster.shardlog import KIND_RECORDS, KIND_SWITCHES, KIND_TERM, LogMessage, switches_body, \
    switches_of
from pyengine.server.dead_man import DeadManSwitches


class Host:
    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply_log(self, body: bytes) -> None:
        self.applied.append(body)

    def promoted(self, term: int, switches: dict[int, float]) -> None: ...

    def lost_leadership(self, reason: str) -> None:
        raise AssertionError(reason)

    def snapshot_stored(self, seq: int, name: str | None) -> None: ...


def follower() -> Replica:
    link = cast(Link, SimpleNamespace(kv=None))
    return Replica(ClusterConfig(shard="a", node="a2"), link, cast(Any, None), Host(), Position(0, 1), "", ())


def test_a_switches_body_holds_every_switch_and_reads_back() -> None:
    switches = {7: 2, 12: 0.5, 4_000_000_000: 86_400.0}
    assert switches_of(switches_body(switches)) == switches
    assert switches_of(switches_body({})) == {}


@pytest.mark.parametrize("body", [b"", b"[]", b'{"x": 1}', b'{"7": 0}', b'{"7": -1}', b'{"7": "2"}',
                                  b'{"7": true}', b'{"7": null}', b'{"7": 1e400}'])
def test_a_switches_body_that_is_not_switches_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        switches_of(body)


def test_a_follower_keeps_the_last_switches_of_the_log_and_passes_over_a_stale_leaders(
        caplog: pytest.LogCaptureFixture) -> None:
    r = follower()
    r._take(LogMessage(1, KIND_TERM, "a1", 1, 0, b""))
    r._take(LogMessage(2, KIND_SWITCHES, "a1", 1, 0, switches_body({7: 2, 8: 5})))
    assert r.switches == {7: 2, 8: 5} and r.status()["dead_man_armed"] == 2
    r._take(LogMessage(3, KIND_TERM, "a3", 2, 0, b""))  # a new term does not change them ...
    assert r.switches == {7: 2, 8: 5}
    r._take(LogMessage(4, KIND_SWITCHES, "a1", 1, 0, switches_body({})))  # ... nor the deposed leader's
    assert r.switches == {7: 2, 8: 5}
    r._take(LogMessage(5, KIND_SWITCHES, "a3", 2, 0, switches_body({8: 5})))
    assert r.switches == {8: 5}
    caplog.clear()
    with caplog.at_level(logging.ERROR, "pyengine.cluster"):
        r._take(LogMessage(6, KIND_SWITCHES, "a3", 2, 0, b"{"))
    assert r.switches == {8: 5} and r.applied == 6
    assert [rec.getMessage() for rec in caplog.records] == ["switches_unreadable"]
    r._take(LogMessage(7, KIND_RECORDS, "a3", 2, 0, b""))
    assert r.switches == {8: 5}


def test_a_switch_that_ran_out_stays_in_the_table_until_its_cancel_all_is_done() -> None:
    fired: list[int] = []
    switches = DeadManSwitches(fired.append)
    for account, seconds in ((7, 0.01), (8, 60), (9, 0.01)):
        switches.arm(account, seconds)
    gevent.sleep(0.05)
    assert sorted(fired) == [7, 9] and switches.armed() == 1
    assert switches.table() == {7: 0.01, 8: 60, 9: 0.01}
    switches.ran_out(9)
    assert switches.table() == {7: 0.01, 8: 60}
    switches.arm(7, 30)  # armed again before its cancel-all is done: its new seconds, after it too
    switches.ran_out(7)
    assert switches.table() == {7: 30, 8: 60}
    switches.arm(7, 0)
    assert switches.table() == {8: 60}
    switches.close()
    assert switches.table() == {}

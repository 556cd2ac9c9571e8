"""The dead-man switches a cluster keeps in a shard's log, without a NATS
server: the body of a switches message, a follower taking them from the
log, and a leader's side (a real server, not started, whose shard holds
each share until the test says it is stored): when it shares them, what it
shares, when it answers."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import gevent
import orjson
import pytest

from pyengine.cluster.config import ClusterConfig
from pyengine.cluster.link import Link
from pyengine.cluster.replica import Position, Replica
from pyengine.cluster.shardlog import KIND_RECORDS, KIND_SWITCHES, KIND_TERM, LogMessage, switches_body, \
    switches_of
from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.dead_man import DeadManSwitches
from pyengine.server.session import Session

from .conftest import add_session


class Host:
    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply_log(self, body: bytes) -> None:
        self.applied.append(body)

    def promoted(self, term: int, switches: dict[int, float]) -> None: ...

    def lost_leadership(self, reason: str) -> None:
        raise AssertionError(reason)

    def snapshot_stored(self, seq: int, name: str | None) -> None: ...


def until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the hub run until done() (a switch's timer has fired, say)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        gevent.sleep(0.005)


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
    until(lambda: len(fired) == 2)
    assert sorted(fired) == [7, 9] and switches.armed() == 1
    assert switches.table() == {7: 0.01, 8: 60, 9: 0.01}
    assert switches.ran_out(9) is True
    assert switches.table() == {7: 0.01, 8: 60}
    switches.arm(7, 30)  # armed again before its cancel-all is done: its new seconds, after it too
    assert switches.ran_out(7) is False  # the table stays as it was
    assert switches.table() == {7: 30, 8: 60} and switches.table_size() == 2
    switches.arm(7, 0)
    assert switches.table() == {8: 60}
    assert switches.ran_out(8) is False  # none of 8's is under way
    switches.close()
    assert switches.table() == {} and switches.table_size() == 0


def test_a_switch_that_ran_out_twice_stays_until_both_cancel_alls_are_done_and_a_disarm_takes_it_out() -> None:
    fired: list[int] = []
    switches = DeadManSwitches(fired.append)
    switches.arm(7, 0.01)
    until(lambda: len(fired) == 1)
    switches.arm(7, 0.01)  # armed again, and runs out again, before the first cancel-all is done
    until(lambda: len(fired) == 2)
    assert switches.ran_out(7) is False and switches.table() == {7: 0.01} and switches.in_table(7) == 0.01
    assert switches.ran_out(7) is True and switches.table() == {} and switches.in_table(7) is None
    switches.arm(9, 0.01)
    until(lambda: len(fired) == 3)
    assert switches.in_table(9) == 0.01
    switches.arm(9, 0)  # a disarm while its cancel-all is under way (or was refused): out of the table now
    assert switches.table() == {} and switches.ran_out(9) is False


class Shard:
    """A cluster node's side of the switches, as the server sees it: each
    share is held until `store()` says the log has it."""

    def __init__(self) -> None:
        self.leading = True
        self.shares: list[tuple[dict[int, float], Callable[[], None]]] = []

    def share_switches(self, switches: dict[int, float], stored: Callable[[], None]) -> None:
        self.shares.append((switches, stored))

    def close(self) -> None:
        self.leading = False

    def store(self) -> dict[int, float]:
        gevent.sleep(0)  # a turn's changes go at its end
        switches, stored = self.shares.pop(0)
        stored()
        return switches


@pytest.fixture
def leader() -> Iterator[tuple[Server, Shard, Callable[[], list[dict[str, Any]]], Session]]:
    """A server (not started) leading a shard, and a session of account 7
    on a socketpair: (server, its shard, what the session received, the session)."""
    server = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1))
    shard = Shard()
    server.cluster = cast(Any, shard)
    ours, theirs = socket.socketpair()
    theirs.settimeout(0.2)
    session = add_session(server, ours, 1)
    session.link.login(7, False)

    def received() -> list[dict[str, Any]]:
        server.flush_sessions()
        gevent.sleep(0.01)
        got = b""
        try:
            while chunk := theirs.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        replies = []
        while got:
            n = int.from_bytes(got[:4], "big")
            replies.append(orjson.loads(got[4:4 + n]))
            got = got[4 + n:]
        return replies

    try:
        yield server, shard, received, session
    finally:
        server.cluster = None
        server.stop()
        ours.close()
        theirs.close()


def arm(server: Server, session: Session, req_id: int, seconds: float) -> None:
    server.request(session, {"type": "cancel_all_after", "req_id": req_id, "seconds": seconds})


def test_a_leader_answers_an_arming_once_the_log_has_it_and_a_renewal_after_it(leader: Any) -> None:
    server, shard, received, session = leader
    arm(server, session, 1, 2)
    arm(server, session, 2, 2)  # a renewal, while the arming is not stored yet
    assert received() == []
    assert shard.store() == {7: 2}
    assert [(m["req_id"], m["armed"]) for m in received()] == [(1, True), (2, True)]
    assert shard.shares == []  # the renewal waited for the arming: it appends nothing
    arm(server, session, 3, 2)  # settled: answered at once
    assert [(m["req_id"], m["armed"]) for m in received()] == [(3, True)] and shard.shares == []
    arm(server, session, 4, 0)
    assert shard.store() == {}
    assert [(m["req_id"], m["armed"]) for m in received()] == [(4, False)]


def test_the_changes_of_a_turn_go_as_one_table_and_hold_up_no_other_accounts_renewal(leader: Any) -> None:
    server, shard, received, session = leader
    ours, theirs = socket.socketpair()
    try:
        other = add_session(server, ours, 2)
        other.link.login(8, False)
        arm(server, session, 1, 2)
        arm(server, other, 1, 5)
        gevent.sleep(0)
        assert [switches for switches, _ in shard.shares] == [{7: 2, 8: 5}]
        arm(server, session, 2, 2)  # 7's renewal while 8's arming is on its way too: after 7's
        arm(server, other, 2, 6)
        assert [(m["req_id"], m["armed"]) for m in received()] == []
        assert shard.store() == {7: 2, 8: 5}
        assert [(m["req_id"], m["armed"]) for m in received()] == [(1, True), (2, True)]
        arm(server, session, 3, 2)  # 8's new seconds are on their way: 7's renewal is answered at once
        assert [m["req_id"] for m in received()] == [3]
        assert shard.store() == {7: 2, 8: 6}
        other.close("done")  # what it was sent is not read: the stop would wait for it
    finally:
        ours.close()
        theirs.close()


def test_a_switch_that_ran_out_leaves_the_log_when_its_cancel_all_is_done_and_only_then(leader: Any) -> None:
    server, shard, received, session = leader
    arm(server, session, 1, 0.01)
    shard.store()
    until(lambda: server.dead_man.armed() == 0)  # it runs out: its cancel-all goes to the engine
    assert server.dead_man.armed() == 0 and shard.shares == []
    server.switch_ran_out(8)  # a cancel-all of a switch this server did not fire (a backlog's): nothing to tell
    assert shard.shares == []
    server.switch_ran_out(7)
    assert shard.store() == {}


def test_a_disarm_of_a_switch_that_ran_out_goes_into_the_log(leader: Any) -> None:
    """Its cancel-all under way (or refused by the engine), a switch is in
    the table; the account disarms it: the log is told, and its answer waits
    for that. The cancel-all done after tells the log nothing more."""
    server, shard, received, session = leader
    arm(server, session, 1, 0.01)
    shard.store()
    until(lambda: server.dead_man.armed() == 0)
    assert [m["req_id"] for m in received()] == [1]
    arm(server, session, 2, 0)
    assert received() == []
    assert shard.store() == {}
    assert [(m["req_id"], m["armed"]) for m in received()] == [(2, False)]
    server.switch_ran_out(7)
    gevent.sleep(0)
    assert shard.shares == []


def test_a_stopping_leader_leaves_the_logs_switches_as_they_are(leader: Any) -> None:
    server, shard, received, session = leader
    arm(server, session, 1, 0.01)
    shard.store()
    until(lambda: server.dead_man.armed() == 0)  # it runs out: its cancel-all is under way
    told: list[int] = []
    server.dead_man.arm(8, 60)
    server.switch_changed(8, lambda: told.append(8))  # its table would go at the end of the turn ...
    server.stop()  # ... in which the server starts to stop, and empties its switches: they are not the shard's
    server.switch_ran_out(7)  # 7's cancel-all, done as the server stops
    server.switch_changed(9, lambda: told.append(9))  # a cancel_all_after taken as it stops
    gevent.sleep(0)
    assert server.dead_man.arm(10, 60) is None
    assert shard.shares == [] and told == [] and server.dead_man.table() == {}


def test_a_shard_holds_at_most_so_many_switches(leader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, shard, received, session = leader
    monkeypatch.setattr("pyengine.server.requests.MAX_KEPT_SWITCHES", 2)
    server.dead_man.arm(8, 60)
    server.dead_man.arm(9, 60)
    arm(server, session, 1, 60)
    (refused,) = received()
    assert (refused["type"], refused["code"], refused["req_id"]) == ("error", "too_many_switches", 1)
    server.dead_man.arm(9, 0)
    arm(server, session, 2, 60)
    assert shard.store() == {7: 60, 8: 60}
    server.dead_man.arm(9, 60)
    arm(server, session, 3, 30)  # new seconds for an armed one: not one more
    assert shard.store() == {7: 30, 8: 60, 9: 60}
    assert [m["req_id"] for m in received()] == [2, 3]

"""A single server's dead-man switches in its data directory
(pyengine/server/switch_file.py): replaced whole, read back, a store a kill
cut short leaving the table before it, an unreadable file taken as none;
and the server's writes of it (Server._share_switches): the newest table
only, none after a planned stop began, a failure to write one a failure of
the server's."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from pyengine.server.app import Server
from pyengine.server.config import ServerConfig
from pyengine.server.switch_file import FILE, SwitchFile


def test_a_table_is_stored_whole_and_read_back(tmp_path: Path) -> None:
    kept = SwitchFile(tmp_path)
    assert kept.load() == {}  # none yet
    kept.store({8: 30.0, 7: 1.5})
    assert SwitchFile(tmp_path).load() == {7: 1.5, 8: 30.0}
    kept.store({})
    assert SwitchFile(tmp_path).load() == {}
    kept.clear()
    assert not (tmp_path / FILE).exists() and SwitchFile(tmp_path).load() == {}
    kept.clear()  # cleared twice: nothing to do


def test_a_store_a_kill_cut_short_leaves_the_table_before_it(tmp_path: Path) -> None:
    SwitchFile(tmp_path).store({7: 2.0})
    (tmp_path / f"{FILE}.tmp").write_bytes(b'{"9": 1')  # what a kill in the middle of the next store leaves
    assert SwitchFile(tmp_path).load() == {7: 2.0}
    assert not (tmp_path / f"{FILE}.tmp").exists()


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'{"7": 0}', b'{"7": "soon"}', b'{"x": 1}', b"\xff"])
def test_an_unreadable_file_is_logged_and_taken_as_no_switch(tmp_path: Path, body: bytes,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE).write_bytes(body)
    with caplog.at_level(logging.ERROR, logger="pyengine.server"):
        assert SwitchFile(tmp_path).load() == {}
    assert [r.getMessage() for r in caplog.records] == ["switches_unreadable"]


@pytest.mark.parametrize("body", [b'{"-3": 1}', b'{"4294967296": 1}', b'{"7": 86400.5}', b'{"7": 1e300}'])
def test_a_file_with_an_account_or_seconds_out_of_range_is_taken_as_no_switch(tmp_path: Path, body: bytes) -> None:
    (tmp_path / FILE).write_bytes(body)
    assert SwitchFile(tmp_path).load() == {}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with a data directory, not started: its switches' writes are
    run by hand (gevent.sleep), the tables written recorded."""
    srv = Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1, data_dir=str(tmp_path / "data")))
    assert srv.switch_file is not None
    try:
        yield srv
    finally:
        srv.stop()


def recording(server: Server) -> list[dict[int, float]]:
    assert server.switch_file is not None
    written: list[dict[int, float]] = []
    store = server.switch_file.store

    def recorded(table: dict[int, float]) -> None:
        written.append(dict(table))
        store(table)
    server.switch_file.store = recorded  # type: ignore[method-assign]
    return written


def test_the_tables_of_changes_that_come_while_one_is_written_are_written_once_the_newest(server: Server) -> None:
    written, answered = recording(server), []
    server._share_switches({7: 1.0}, lambda: answered.append(1))
    gevent.sleep(0)  # the writer takes the first table, and writes it in a thread
    server._share_switches({7: 1.0, 8: 2.0}, lambda: answered.append(2))
    server._share_switches({8: 2.0}, lambda: answered.append(3))
    deadline = time.monotonic() + 30
    while len(answered) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert written == [{7: 1.0}, {8: 2.0}]  # the table between them never written
    assert answered == [1, 2, 3]
    assert server.switch_file is not None and server.switch_file.load() == {8: 2.0}


def test_a_planned_stop_leaves_no_switch_a_write_on_its_way_would_put_back(server: Server) -> None:
    written, answered = recording(server), []
    server._share_switches({7: 1.0}, lambda: answered.append(1))  # its writer not run yet
    server.stop()
    gevent.sleep(0.05)
    assert (written, answered) == ([], [])
    assert server.switch_file is not None and not server.switch_file.path.exists()


def test_a_table_that_cannot_be_written_stops_the_server_unanswered(server: Server,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert server.switch_file is not None
    server.switch_file.path.mkdir()
    (server.switch_file.path / "x").touch()  # a directory where the file goes: it cannot be replaced
    answered: list[int] = []
    with caplog.at_level(logging.ERROR, logger="pyengine.server"):
        server._share_switches({7: 1.0}, lambda: answered.append(1))
        server.stopped.wait(30)
    assert server.failed and answered == []
    assert "switches_not_stored" in [r.getMessage() for r in caplog.records]
    assert server.switch_file.path.is_dir()  # a stop for a failure keeps what is there


def test_a_file_a_planned_stop_cannot_remove_is_logged_and_the_stop_ends(server: Server,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    assert server.switch_file is not None
    server.switch_file.path.mkdir()
    (server.switch_file.path / "x").touch()
    with caplog.at_level(logging.ERROR, logger="pyengine.server"):
        server.stop()
    assert server.stopped.is_set() and server.failed  # the next start would arm them again: not a clean stop
    assert "switches_not_cleared" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), MemoryError()])
def test_a_write_that_fails_as_a_planned_stop_waits_for_it_keeps_the_file(server: Server, error: Exception) -> None:
    """The stop, begun while a write was on its way, finds it failed: a stop
    for a failure, which keeps the switches the file last held."""
    assert server.switch_file is not None
    server.switch_file.store({7: 1.0})
    go = threading.Event()

    def failing(table: dict[int, float]) -> None:
        go.wait(30)
        raise error
    server.switch_file.store = failing  # type: ignore[method-assign]
    answered: list[int] = []
    server._share_switches({7: 1.0, 8: 2.0}, lambda: answered.append(1))
    gevent.sleep(0)  # the writer is in its thread, waiting
    stopping = gevent.spawn(server.stop)
    gevent.sleep(0.05)
    assert server.stopping and not server.stopped.is_set()  # the stop waits for the write
    go.set()
    stopping.join(30)
    assert server.stopped.is_set() and server.failed and answered == []
    assert SwitchFile(server.switch_file.dir).load() == {7: 1.0}

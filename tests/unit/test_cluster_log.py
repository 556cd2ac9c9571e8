"""The rules every reader of a shard's log applies, without a NATS server:
records in the journal's format, terms that only grow."""

from __future__ import annotations

import struct

import pytest

from pyengine import Accepted, Engine, pack_new_order
from pyengine.cluster.audit import records_of, replay
from pyengine.cluster.shardlog import KIND_RECORDS, KIND_TERM, RECORD_SIZE, LogMessage, TermOrder
from pyengine.server.cli import _with_port


def record(seq: int, command: bytes) -> bytes:
    """A journal record as the runner hands it out (the checksum is not read here)."""
    body = struct.pack("<Qq", seq, 0) + command
    return struct.pack("<II", RECORD_SIZE, 0) + body


def order(engine: Engine, price: int, coid: str) -> bytes:
    return pack_new_order(engine.instrument_id("X"), "buy", 1, price, account=1, client_order_id=coid)


def test_a_stale_leaders_message_after_a_newer_term_is_passed_over_by_every_reader() -> None:
    engine = Engine()
    engine.add_instrument("X")
    log = [
        LogMessage(1, KIND_TERM, "a1", 1, 0, b""),
        LogMessage(2, KIND_RECORDS, "a1", 1, 1, record(1, order(engine, 100, "first"))),
        LogMessage(3, KIND_TERM, "a2", 2, 1, b""),
        LogMessage(4, KIND_RECORDS, "a1", 1, 2, record(2, order(engine, 101, "stale"))),  # the deposed a1's
        LogMessage(5, KIND_RECORDS, "a2", 2, 2, record(2, order(engine, 102, "second"))),
    ]
    assert [r.seq for r in records_of(log[1])] == [1]
    events = engine.decode_events(replay(log, engine).events)
    accepted = [(e.seq, e.client_order_id) for e in events if isinstance(e, Accepted)]
    assert accepted == [(1, "first"), (2, "second")]
    terms = TermOrder()
    assert [terms.stale(m) for m in log] == [False, False, False, True, False]


def test_a_log_whose_first_messages_were_purged_is_not_replayed_into_an_empty_engine() -> None:
    engine = Engine()
    engine.add_instrument("X")
    purged = [LogMessage(7, KIND_RECORDS, "a1", 1, 9, record(9, order(engine, 100, "late")))]
    with pytest.raises(ValueError, match="the log starts at message 7: the ones before were purged"):
        replay(purged, engine)
    assert engine.open_orders() == []


def test_a_node_restarting_in_place_keeps_one_port() -> None:
    argv = ["-m", "pyengine.server.cli", "--port", "0", "--shard", "a", "--port=7", "--node", "a1"]
    assert _with_port(argv, ("127.0.0.1", 7301)) == ["-m", "pyengine.server.cli", "--shard", "a", "--node", "a1",
                                                      "--port", "7301"]
    assert _with_port(_with_port(argv, ("h", 1)), ("h", 1)).count("--port") == 1
    assert _with_port(argv, None) == argv

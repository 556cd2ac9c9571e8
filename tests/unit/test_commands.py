"""The server's command queue (pyengine/server/commands.py)."""

from __future__ import annotations

import pytest

from pyengine._ffi import lib
from pyengine._server import Ledger
from pyengine.server.commands import CommandQueue


def test_a_command_with_a_field_out_of_range_is_not_queued() -> None:
    q = CommandQueue(None, Ledger(), capacity=4)
    q.add(lib.ENG_CMD_CANCEL, 5, order_id=11, account=7)
    with pytest.raises(OverflowError):
        q.add(lib.ENG_CMD_SET_LIMITS, 6, instrument=1, qty=2**63)  # half written when it raised
    assert q.buffer.queued == 1
    q.add(lib.ENG_CMD_CANCEL, 7, order_id=12, account=7)
    assert q.buffer.queued == 2
    records = q._c
    assert [(r.tag, r.cmd.type, r.cmd.order_id) for r in (records[0], records[1])] == [
        (5, lib.ENG_CMD_CANCEL, 11), (7, lib.ENG_CMD_CANCEL, 12)]


def test_only_a_record_not_yet_in_the_ring_is_taken_back() -> None:
    q = CommandQueue(None, Ledger(), capacity=4)
    with pytest.raises(ValueError, match="unreserve"):
        q.buffer.unreserve()
    assert q.buffer.reserve() == 0
    q.buffer.unreserve()
    assert (q.buffer.queued, q.buffer.sent) == (0, 0)

"""A leader's market-data feed on NATS, without a NATS server: when it
publishes a heartbeat (pyengine/cluster/mdfeed.py)."""

from __future__ import annotations

import json
from typing import Any

from pyengine.cluster.mdfeed import HEARTBEAT_TURNS, SymbolFeed


def test_a_heartbeat_comes_at_once_and_then_after_each_quiet_second_never_on_a_busy_one() -> None:
    feed = SymbolFeed(None, None, "ESZ6", term=3)  # type: ignore[arg-type]  # nothing published here
    sent: list[dict[str, Any]] = []
    feed.send_to = lambda subject, body: sent.append(json.loads(body))  # type: ignore[method-assign]

    def turns(n: int, seq: int) -> list[dict[str, Any]]:
        sent.clear()
        for _ in range(n):
            feed.heartbeat(seq)
        return list(sent)

    def message(seq: int) -> None:
        body = json.dumps({"type": "trade", "seq": seq}).encode()
        feed.send(len(body).to_bytes(4, "big") + body)

    feed.heartbeat(0, always=True)  # taking over
    assert sent == [{"type": "heartbeat", "symbol": "ESZ6", "seq": 0, "term": 3}]
    message(1)
    assert turns(HEARTBEAT_TURNS - 1, 1) == []
    assert turns(1, 1) == [{"type": "heartbeat", "symbol": "ESZ6", "seq": 1, "term": 3}]
    assert turns(HEARTBEAT_TURNS, 1) == [{"type": "heartbeat", "symbol": "ESZ6", "seq": 1, "term": 3}]
    for seq in range(2, 2 + 3 * HEARTBEAT_TURNS):  # a message each turn: no heartbeat
        message(seq)
        assert turns(1, seq) == []

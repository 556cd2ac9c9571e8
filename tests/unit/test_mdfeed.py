"""A leader's market-data feed on NATS, without a NATS server: when it
publishes a heartbeat (pyengine/cluster/mdfeed.py)."""

from __future__ import annotations

import asyncio
import gc
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


def test_a_publishing_task_that_finds_the_queue_taken_by_the_next_one_stops() -> None:
    """A publish that waits for room in the client's buffer lets the next
    task run, which may take what the first had counted: every message is
    still published once, in order, and no task fails."""
    async def scenario() -> tuple[list[bytes], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        failures: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: failures.append(context))
        published: list[bytes] = []
        room = asyncio.Event()

        class Client:
            async def publish(self, subject: str, body: bytes) -> None:
                published.append(body)  # nats-py buffers it, then may wait for room
                if body == b"1":
                    await room.wait()

        class Thread:
            def __init__(self) -> None:
                self.loop = loop

            def call_soon(self, call: Any) -> None:
                loop.call_soon(call)

        async def turns() -> None:
            for _ in range(10):
                await asyncio.sleep(0)

        feed = SymbolFeed(Thread(), Client(), "ESZ6", term=1)  # type: ignore[arg-type]
        feed.send_to("s", b"1")
        feed.send_to("s", b"2")
        await turns()  # the first task counts two, publishes "1" and waits for room
        feed.send_to("s", b"3")
        await turns()  # a second task takes "2" and "3"
        room.set()
        await turns()  # the first finds nothing more to take
        gc.collect()  # a failed task's exception is reported when it is collected
        return published, failures

    published, failures = asyncio.run(scenario())
    assert published == [b"1", b"2", b"3"] and failures == []

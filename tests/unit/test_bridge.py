"""The cluster's asyncio thread (pyengine.cluster.bridge.LoopThread)."""

from __future__ import annotations

import asyncio
import threading

from pyengine.cluster.bridge import LoopThread


def test_a_stopped_loop_thread_leaves_no_thread_behind() -> None:
    """A name lookup (as connecting to NATS does) starts the loop's default
    executor: stopping the loop thread stops its threads too."""
    before = set(threading.enumerate())
    loop = LoopThread("pyengine-test-loop")
    loop.start()

    async def look_up() -> list[object]:
        return list(await asyncio.get_running_loop().getaddrinfo("localhost", 4222))

    assert loop.run(look_up(), timeout=10)
    assert len(set(threading.enumerate()) - before) >= 2  # the loop's thread and its executor's
    loop.stop()
    assert set(threading.enumerate()) - before == set()

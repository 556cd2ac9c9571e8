"""The cluster's asyncio thread (pyengine.cluster.bridge.LoopThread)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

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


def test_a_wait_cut_short_cancels_its_coroutine_and_the_stop_ends_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    """What a start left waiting when it was stopped (a wait whose time ran
    out, Ctrl-C) does not stay pending on the loop: the wait cancels its
    coroutine, the stop cancels any other task and logs one that fails as
    it ends, rather than "Task was destroyed but it is pending"."""
    loop = LoopThread("pyengine-test-loop")
    loop.start()
    ended: list[str] = []

    async def forever(name: str, fail: bool) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            ended.append(name)
            if fail:
                raise RuntimeError("closing failed") from None
            raise

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(forever("spawned", fail=True))

    with pytest.raises(concurrent.futures.TimeoutError):
        loop.run(forever("waited", fail=False), timeout=0.1)
    loop.run(spawn(), timeout=10)
    with caplog.at_level("WARNING", logger="pyengine.cluster"):
        loop.stop()
    assert sorted(ended) == ["spawned", "waited"]
    assert [r.getMessage() for r in caplog.records] == ["loop_task_failed"]
    assert caplog.records[0].kv["error"] == "RuntimeError: closing failed"

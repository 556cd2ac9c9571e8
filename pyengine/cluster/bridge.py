"""Two threads that meet without blocking each other: an asyncio loop for
NATS on an OS thread of its own, and the server's gevent event loop.

nats-py is asyncio; the server is gevent, and never monkey-patches, so
asyncio runs on a real thread with real sockets. Work goes into the loop
with ``LoopThread.submit`` / ``call_soon`` (thread-safe); calls come back
into the gevent thread through a ``Mailbox``: ``post`` from any thread, and
one greenlet runs the calls in order. Neither side ever waits on the other.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

import gevent
import gevent.event

from ..log import fields

__all__ = ["LoopThread", "Mailbox"]

log = logging.getLogger("pyengine.cluster")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class LoopThread:
    """An asyncio event loop running on a daemon OS thread."""

    def __init__(self, name: str = "pyengine-nats") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # What a stop cut short (a start waiting for NATS when the process
        # is told to stop) ends cancelled, not destroyed while pending.
        if pending := asyncio.all_tasks(self.loop):
            for task in pending:
                task.cancel()
            ended = self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for error in ended:
                if isinstance(error, Exception):  # not the CancelledError each was asked for
                    log.warning("loop_task_failed", extra=fields(error=f"{type(error).__name__}: {error}"))
        # The loop's default executor (name lookups when connecting) has a
        # thread of its own that would outlive this one. The loop stays open:
        # a call posted to it late is dropped, not an error in its sender.
        self.loop.run_until_complete(self.loop.shutdown_default_executor())

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the loop; its future may be waited on from any thread
        but the gevent thread (which must never block)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` and wait for it: for start-up and shutdown only, before
        or after the gevent thread serves. A wait cut short (its timeout, a
        Ctrl-C) cancels it: nothing is left running on the loop."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


class Mailbox:
    """Calls into the gevent thread from other threads, run in order by one
    greenlet. A call that raises is logged and stops nothing else."""

    def __init__(self) -> None:
        self._calls: collections.deque[tuple[Callable[..., object], tuple[object, ...]]] = collections.deque()
        self._ready = gevent.event.Event()
        # An async watcher is libev's thread-safe wake-up; kept started, so a
        # send while the greenlet is busy is not lost.
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._ready.set)
        self._greenlet: gevent.Greenlet[[], None] | None = None

    def post(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """From any thread: call fn(*args) on the gevent thread, soon."""
        self._calls.append((fn, args))
        self._watcher.send()

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            while self._calls:
                fn, args = self._calls.popleft()
                try:
                    fn(*args)
                except Exception:
                    log.exception("mailbox_call_failed", extra=fields(call=getattr(fn, "__qualname__", repr(fn))))

    def close(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        self._watcher.stop()
        self._watcher.close()

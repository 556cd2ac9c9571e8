"""The command queue: engine commands gathered by the sessions, pushed to
the engine thread's input ring in batches."""

from __future__ import annotations

import time
from typing import Any, Protocol

import gevent
from gevent.event import Event

from .._ffi import ffi
from .._server import CommandBuffer, Ledger

__all__ = ["CommandQueue", "CommandSink"]


class CommandSink(Protocol):
    """Where a CommandQueue's records go (the EngineThread)."""

    def feed(self, buffer: CommandBuffer, ledger: Ledger) -> None: ...


class CommandQueue:
    """Commands gathered by the sessions, pushed to the engine thread in
    batches: one ring operation (and at most one wake-up) per flush. The
    records are in a ``CommandBuffer`` (C), where the Intake writes the
    per-order commands directly and ``add`` the others, and which pushes
    them into the engine thread's input ring itself (the Poller has it do so
    at the end of each loop turn, in C)."""

    def __init__(self, engine: CommandSink | None, ledger: Ledger, capacity: int = 4096) -> None:
        self.buffer = CommandBuffer(capacity)
        if engine is not None:
            engine.feed(self.buffer, ledger)
        self._c = ffi.from_buffer("struct runner_cmd[]", self.buffer)
        self._room = Event()
        self._room.set()

    def add(self, typ: int, tag: int, **fields: Any) -> None:
        """Queue one command: ``struct runner_cmd`` with its ``cmd.type``,
        its ``tag`` and the named fields of ``struct eng_cmd`` (the rest
        zero; ``ts`` the time now). A field that cannot be set (a value out
        of its type's range) raises, and nothing is queued."""
        i = self.buffer.reserve()
        while i < 0:
            self.make_room()
            i = self.buffer.reserve()
        rec = self._c[i]
        try:
            rec.tag = tag
            cmd = rec.cmd
            cmd.type = typ
            cmd.ts = time.time_ns()
            for name, value in fields.items():
                setattr(cmd, name, value)
        except BaseException:
            self.buffer.unreserve()  # half written: the engine must never run it
            raise

    def make_room(self) -> None:
        """Wait (cooperatively) until the buffer has room for a record."""
        while self.buffer.full:
            self._room.clear()
            self.flush()
            if self.buffer.full:
                self._room.wait()

    def push(self) -> bool:
        """Push what fits in the input ring now, without waiting; True when
        everything queued is in. Nothing while a waiting flush holds the
        records (``CommandBuffer.held``)."""
        if not self.buffer.push():
            return False
        if not self._room.is_set():
            self._room.set()
        return True

    def flush(self) -> None:
        """Push everything queued, waiting (cooperatively) while the input
        ring is full. A flush that is running already takes new records too."""
        buf = self.buffer
        if buf.held:
            return
        buf.held = True
        try:
            while buf.queued:
                buf.submit()
                if buf.queued:
                    gevent.sleep(0.0002)  # the engine thread is behind: let it drain
        finally:
            buf.held = False
            self._room.set()  # even if the flush ended early: a waiter looks at the buffer again

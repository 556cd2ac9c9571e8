"""The command queue: engine commands gathered by the sessions, pushed to
the engine thread's input ring in batches."""

from __future__ import annotations

import time
from typing import Any, Protocol

import gevent
from gevent.event import Event

from .._ffi import ffi

__all__ = ["CommandQueue", "CommandSink"]

_CMD_SIZE = ffi.sizeof("struct runner_cmd")
_BLANK = bytes(_CMD_SIZE)


class CommandSink(Protocol):
    """Where a CommandQueue pushes its records (the EngineThread)."""

    def submit(self, cmds: Any, n: int) -> int: ...


class CommandQueue:
    """Commands gathered by the sessions, pushed to the engine thread in
    batches: one ring operation (and at most one wake-up) per flush."""

    def __init__(self, engine: CommandSink | None, capacity: int = 4096) -> None:
        self._engine = engine
        self._cap = capacity
        self._buf = bytearray(capacity * _CMD_SIZE)
        self._c = ffi.from_buffer("struct runner_cmd[]", self._buf)
        self._n = 0  # records in the buffer
        self._sent = 0  # of them already in the ring
        self._flushing = False
        self._room = Event()
        self._room.set()

    def add(self, typ: int, tag: int, **fields: Any) -> None:
        """Queue one command: ``struct runner_cmd`` with its ``cmd.type``,
        its ``tag`` and the named fields of ``struct eng_cmd`` (the rest
        zero; ``ts`` the time now)."""
        while self._n == self._cap:
            self._room.clear()
            self.flush()
            if self._n == self._cap:
                self._room.wait()
        at = self._n * _CMD_SIZE
        self._buf[at : at + _CMD_SIZE] = _BLANK
        rec = self._c[self._n]
        rec.tag = tag
        cmd = rec.cmd
        cmd.type = typ
        cmd.ts = time.time_ns()
        for name, value in fields.items():
            setattr(cmd, name, value)
        self._n += 1

    def push(self) -> bool:
        """Push what fits in the input ring now, without waiting; True when
        everything queued is in."""
        if self._flushing:
            return False  # a waiting flush holds the records
        if self._sent < self._n:
            self._sent += self._submit()
            if self._sent < self._n:
                return False
        self._n = self._sent = 0
        if not self._room.is_set():
            self._room.set()
        return True

    def flush(self) -> None:
        """Push everything queued, waiting (cooperatively) while the input
        ring is full. A flush that is running already takes new records too."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._sent < self._n:
                self._sent += self._submit()
                if self._sent < self._n:
                    gevent.sleep(0.0002)  # the engine thread is behind: let it drain
            self._n = self._sent = 0
            self._room.set()
        finally:
            self._flushing = False

    def _submit(self) -> int:
        assert self._engine is not None, "a CommandQueue without an engine only gathers"
        return self._engine.submit(self._c + self._sent, self._n - self._sent)

"""A watcher handled in the hub, and the greenlet it hands over to.

The dispatcher handles the engine thread's wake-up in the gevent hub
itself (a libev watcher's callback: no greenlet switch per event). What may
wait -- the journal's failure, the stop -- cannot run in the hub, so the
callback hands it over to the greenlet that owns the watcher, which carries
it out and lets the hub have the watcher again. So does anything the
callback raises: in the hub it would only be logged, the watcher stopped,
and its owner left hanging. (The session sockets are the Poller's,
csrc/binding/poller.c, which hands over the same way through
PollerEvents.handed.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.event import Event

__all__ = ["Handoff"]


class Handoff:
    """`callback` runs in the hub each time `fd` turns readable, until it
    calls ``hand_over``; the owning greenlet waits in ``wait``."""

    def __init__(self, loop: Any, fd: int, callback: Callable[[], None]) -> None:
        self._watcher = loop.io(fd, 1)
        self._callback = callback
        self._turn = Event()
        self._handed: Any = None

    def wait(self) -> Any:
        """In the owning greenlet: let the hub run the callback until it
        hands something over (or ``wake`` is called); what it handed, which
        is raised if it is an exception."""
        self._watcher.start(self._callback)
        self._turn.wait()
        self._turn.clear()
        self._watcher.stop()
        handed, self._handed = self._handed, None
        if isinstance(handed, BaseException):
            raise handed
        return handed

    @property
    def waiting(self) -> bool:
        """The owning greenlet waits in ``wait``, and nothing was handed
        over yet: the callback's (and the hub's) turn."""
        return bool(self._watcher.active)

    def hand_over(self, value: Any) -> None:
        """In the callback: stop, and have ``wait`` return `value` (raise it,
        if an exception)."""
        self._watcher.stop()
        self._handed = value
        self._turn.set()

    def wake(self) -> None:
        """Have ``wait`` return (None) even if the callback handed nothing."""
        self._turn.set()

    def close(self) -> None:
        self._watcher.close()

"""A single server's dead-man switches, kept in its data directory
(``SWITCHES``), so that a crash does not take them away.

An account whose program dies with the server's machine (the same rack,
the same outage) is what the switch is for: without the switches kept, the
restart would leave its orders in the book for good. As a cluster's log
does for a new leader (cluster.md, "Dead-man switches are the shard's"), the
file holds the table of armed switches (account -> seconds), replaced whole
at every change (not at renewals, which change nothing) and synced as the
journal is (not with fsync off; its removal at a planned stop always), and a
start after a crash arms each again for its whole seconds. A planned stop
disarms every switch and empties the file, as before: orders outlive a
planned restart, as with cancel-on-disconnect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore

from ..log import fields
from ..switch_table import switches_body, switches_of

__all__ = ["SwitchFile", "SwitchWriter", "FILE"]

FILE = "SWITCHES"

log = logging.getLogger("pyengine.server")


class SwitchFile:
    """The switches' file of one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], *, sync: bool = True) -> None:
        """`sync` False (the journal's fsync off): written, never synced, as
        the journal then is (a crash of the server loses nothing, one of the
        machine may)."""
        self.dir = Path(data_dir)
        self.path = self.dir / FILE
        self.sync = sync
        self._partial = self.dir / f"{FILE}.tmp"

    def load(self) -> dict[int, float]:
        """The switches the file holds ({} when there is none): a file that
        cannot be read is logged and taken as none."""
        if self._partial.exists():  # a store a kill cut short: the file before it stands
            self._partial.unlink()
            log.info("unfinished_write_removed", extra=fields(path=str(self._partial)))
        try:
            return switches_of(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("switches_unreadable", extra=fields(path=str(self.path), error=str(exc)))
            return {}

    def store(self, switches: dict[int, float]) -> None:
        """Replace the file with `switches`, synced unless `sync` is off
        (OSError if it cannot be): a crash leaves the old table or the new one."""
        with open(self._partial, "wb") as f:
            f.write(switches_body(switches))
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        os.replace(self._partial, self.path)
        self._sync_dir()

    def clear(self) -> None:
        """No switch is kept (a planned stop disarmed them all): synced even
        with `sync` off, as a clean stop syncs the journal, so that no crash
        of the machine brings back the switches the stop disarmed."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        self._sync_dir(always=True)

    def _sync_dir(self, always: bool = False) -> None:
        if not (self.sync or always):
            return
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SwitchWriter:
    """The writes of a SwitchFile for a server: only the newest table is
    written, again while a newer one comes, each change answered once a
    table that holds it is; one writer greenlet at a time, holding the lock
    while it writes, the write in a thread of its own (`in_thread`: the
    event loop serves during the syncs; the encoding holds the GIL, some
    milliseconds for MAX_KEPT_SWITCHES switches). A table that cannot be
    written is a failure of the data directory, as the journal's: failed()
    is called, and the change is not answered."""

    def __init__(self, file: SwitchFile, in_thread: Callable[[Callable[..., Any], tuple[Any, ...]], Any],
                 stopping: Callable[[], bool], failed: Callable[[], None]) -> None:
        self.file = file
        self._in_thread = in_thread
        self._stopping = stopping
        self._failed = failed
        self._unwritten: tuple[dict[int, float], list[Callable[[], None]]] | None = None  # the newest, its answers
        self._writing = Semaphore()

    def write(self, switches: dict[int, float], done: Callable[[], None]) -> None:
        """Write `switches`, then done(), or with a newer table."""
        pending = self._unwritten
        self._unwritten = (switches, (pending[1] if pending else []) + [done])
        if pending is None and not self._writing.locked():
            gevent.spawn(self._write)

    def _write(self) -> None:
        with self._writing:
            while self._unwritten is not None and not self._stopping():
                (switches, answers), self._unwritten = self._unwritten, None
                try:
                    self._in_thread(self.file.store, (switches,))
                except Exception as exc:  # an OSError, or no memory: no later table would be written either
                    log.error("switches_not_stored", extra=fields(path=str(self.file.path),
                                                                  error=str(exc) or type(exc).__name__))
                    self._failed()
                    return
                for answer in answers:
                    answer()

    def forget(self, failed: Callable[[], bool]) -> bool:
        """At the end of a planned stop, after a write on its way (which may
        fail): no switch is kept, unless failed() (a stop for a failure keeps
        them, as a crash does). False when the file could not be removed:
        the next start would arm them again, so the stop is not a clean one."""
        with self._writing:
            if failed():
                return True
            try:
                self.file.clear()
            except OSError as exc:
                log.error("switches_not_cleared", extra=fields(path=str(self.file.path), error=str(exc)))
                return False
            return True

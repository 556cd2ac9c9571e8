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
from pathlib import Path

from ..log import fields
from ..switch_table import switches_body, switches_of

__all__ = ["SwitchFile", "FILE"]

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

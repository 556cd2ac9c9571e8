"""The dead-man switch: ``cancel_all_after`` (docs/protocol.md).

An account arms it with a number of seconds and renews it by sending
``cancel_all_after`` again before they run out; 0 disarms it. If they run
out, every open order of the account is cancelled by the engine: one
sequenced CANCEL_ALL command for every instrument, flagged as the dead-man
switch's (the orders leave with reason ``dead_man``), journaled and replayed
like any command. The switch belongs to the account, not to a connection: it
fires whether the connection that armed it is open and silent, or gone.
It fires once, then is disarmed. In a cluster the armed switches are in
the shard's log (``Server.switch_changed``): a new leader arms them again;
a single server with a data directory keeps them there (switch_file.py),
and arms them again after a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

from ..log import fields

__all__ = ["DeadManSwitches", "MAX_KEPT_SWITCHES"]

log = logging.getLogger("pyengine.server")

# The armed switches are kept as one table (a shard's log message, a data
# directory's file: pyengine/switch_table.py), up to 36 bytes a switch: 720
# KB for 20,000, under NATS's 1 MB payload, and a few ms to write.
MAX_KEPT_SWITCHES = 20_000


class DeadManSwitches:
    """The armed switches, one timer greenlet per account; and, for the
    shard's log in a cluster, their table: the armed ones and those that ran
    out whose cancel-all is not done yet."""

    def __init__(self, fire: Callable[[int], None]) -> None:
        self._fire = fire
        self._timers: dict[int, tuple[gevent.Greenlet[..., None], float]] = {}  # account -> (timer, seconds)
        # account -> (seconds, cancel-alls under way): ran out, and not done yet
        self._firing: dict[int, tuple[float, int]] = {}
        self.fired = 0
        self.closed = False

    def arm(self, account: int, seconds: float) -> float | None:
        """Arm (or renew) ``account``'s switch to fire in ``seconds``; 0
        disarms it, and takes out of the table a switch that ran out (its
        cancel-all goes on). Returns the deadline (Unix time), or None when
        disarmed (or closed: the server stops, and arms nothing more)."""
        old = self._timers.pop(account, None)
        if old is not None:
            old[0].kill(block=False)
        if seconds <= 0 or self.closed:
            self._firing.pop(account, None)
            return None
        self._timers[account] = (gevent.spawn_later(seconds, self._expired, account), seconds)
        return time.time() + seconds

    def armed(self) -> int:
        """The switches armed: their timers run."""
        return len(self._timers)

    def table(self) -> dict[int, float]:
        """The armed switches, and those that ran out whose cancel-all is not
        done yet (ran_out): account -> the seconds each was last armed with."""
        return {**{account: seconds for account, (seconds, _) in self._firing.items()},
                **{account: seconds for account, (_, seconds) in self._timers.items()}}

    def in_table(self, account: int) -> float | None:
        """table().get(account), without making the table."""
        armed = self._timers.get(account)
        if armed is not None:
            return armed[1]
        firing = self._firing.get(account)
        return firing[0] if firing is not None else None

    def table_size(self) -> int:
        """len(table()), without making it."""
        return len(self._timers) + sum(1 for account in self._firing if account not in self._timers)

    def ran_out(self, account: int) -> bool:
        """A cancel-all of `account`'s switch, which ran out, is done: True
        if that takes the switch out of the table (no other is under way,
        and it was not disarmed since)."""
        firing = self._firing.get(account)
        if firing is None:
            return False
        seconds, under_way = firing
        if under_way > 1:
            self._firing[account] = (seconds, under_way - 1)
            return False
        del self._firing[account]
        return account not in self._timers

    def seconds(self, account: int) -> float | None:
        """The seconds ``account``'s switch was last armed with; None while disarmed."""
        armed = self._timers.get(account)
        return armed[1] if armed is not None else None

    def _expired(self, account: int) -> None:
        seconds = self._timers.pop(account)[1]
        self._firing[account] = (seconds, self._firing.get(account, (seconds, 0))[1] + 1)
        self.fired += 1
        log.warning("dead_man", extra=fields(account=account, detail="not renewed in time: cancelling all"))
        self._fire(account)

    def close(self) -> None:
        """Disarm every switch, and arm none from now on (the server stops:
        orders outlive a planned restart)."""
        self.closed = True
        for timer, _ in self._timers.values():
            timer.kill(block=False)
        self._timers.clear()
        self._firing.clear()

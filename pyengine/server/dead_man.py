"""The dead-man switch: ``cancel_all_after`` (docs/protocol.md).

An account arms it with a number of seconds and renews it by sending
``cancel_all_after`` again before they run out; 0 disarms it. If they run
out, every open order of the account is cancelled by the engine: one
sequenced CANCEL_ALL command for every instrument, flagged as the dead-man
switch's (the orders leave with reason ``dead_man``), journaled and replayed
like any command. The switch belongs to the account, not to a connection: it
fires whether the connection that armed it is open and silent, or gone.
It fires once, then is disarmed. In a cluster the armed switches are in
the shard's log (``Server.share_switches``): a new leader arms them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

from ..log import fields

__all__ = ["DeadManSwitches", "MAX_SWITCHES_IN_A_CLUSTER"]

log = logging.getLogger("pyengine.server")

# A shard's armed switches go into its log as one message (about 21 bytes
# each), which must stay well under NATS's 1 MB payload.
MAX_SWITCHES_IN_A_CLUSTER = 20_000

class DeadManSwitches:
    """The armed switches, one timer greenlet per account."""

    def __init__(self, fire: Callable[[int], None]) -> None:
        self._fire = fire
        self._timers: dict[int, tuple[gevent.Greenlet[..., None], float]] = {}  # account -> (timer, seconds)
        self._firing: dict[int, float] = {}  # account -> seconds: ran out, its cancel-all not done yet
        self.fired = 0
        self.closed = False

    def arm(self, account: int, seconds: float) -> float | None:
        """Arm (or renew) ``account``'s switch to fire in ``seconds``; 0
        disarms it. Returns the deadline (Unix time), or None when disarmed
        (or closed: the server stops, and arms nothing more)."""
        old = self._timers.pop(account, None)
        if old is not None:
            old[0].kill(block=False)
        if seconds <= 0 or self.closed:
            return None
        self._timers[account] = (gevent.spawn_later(seconds, self._expired, account), seconds)
        return time.time() + seconds

    def armed(self) -> int:
        return len(self._timers)

    def table(self) -> dict[int, float]:
        """The armed switches, and those that ran out whose cancel-all is not
        done yet (ran_out): account -> the seconds each was last armed with."""
        return {**self._firing, **{account: seconds for account, (_, seconds) in self._timers.items()}}

    def count(self) -> int:
        """len(table()), without making it."""
        return len(self._timers) + sum(1 for account in self._firing if account not in self._timers)

    def ran_out(self, account: int) -> bool:
        """The cancel-all of `account`'s switch, which ran out, is done;
        False if none of this server's was under way."""
        return self._firing.pop(account, None) is not None

    def seconds(self, account: int) -> float | None:
        """The seconds ``account``'s switch was last armed with; None while disarmed."""
        armed = self._timers.get(account)
        return armed[1] if armed is not None else None

    def _expired(self, account: int) -> None:
        self._firing[account] = self._timers.pop(account)[1]
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

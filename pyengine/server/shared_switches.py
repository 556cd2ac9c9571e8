"""The dead-man switches on their way to where they are kept: a cluster
leader's shard log (docs/cluster.md, "Dead-man switches are the shard's"),
or a single server's data directory (switch_file.py); "the log" below.

The changes of one turn of the event loop (armings, disarmings, new
seconds, switches whose cancel-all is done) go into the log as one table,
built once. A change is answered once the log holds it; a renewal, which
changes nothing, at once, unless a change of its own account is on its way:
then after it, so that no answer says "armed" before the log has the switch.
Changes of other accounts hold no renewal up.
"""

from __future__ import annotations

from collections.abc import Callable

from .dead_man import DeadManSwitches

__all__ = ["SharedSwitches", "Share"]

Share = Callable[[dict[int, float], Callable[[], None]], None]
"""share(table, stored): put the table into the log; stored() once it is there (never, if the lead is lost)."""


class SharedSwitches:
    """The switch changes on their way into the log, and the answers waiting for them."""

    def __init__(self, switches: DeadManSwitches, at_end_of_turn: Callable[[Callable[[], None]], object],
                 share: Share) -> None:
        self._switches = switches
        self._at_end_of_turn = at_end_of_turn
        self._share = share
        self._due: list[Callable[[], None]] = []  # what to call once this turn's table is stored
        self._on_the_way: dict[int, int] = {}  # account -> its changes not stored yet
        self._waiting: dict[int, list[Callable[[], None]]] = {}  # account -> renewals' answers waiting for them

    def changed(self, account: int | None, then: Callable[[], None]) -> None:
        """`account`'s switch changed (None: a change of no one's asking):
        then(), once the log holds the switches as they are at the end of
        this turn."""
        if account is not None:
            self._on_the_way[account] = self._on_the_way.get(account, 0) + 1
        if not self._due:
            self._at_end_of_turn(self._send)
        self._due.append(lambda: self._stored(account, then))

    def settled(self, account: int, then: Callable[[], None]) -> None:
        """then() once no change of `account`'s is on its way into the log
        (at once if none is)."""
        if account in self._on_the_way:
            self._waiting.setdefault(account, []).append(then)
        else:
            then()

    def _send(self) -> None:
        due, self._due = self._due, []

        def stored() -> None:
            for call in due:
                call()
        self._share(self._switches.table(), stored)

    def _stored(self, account: int | None, then: Callable[[], None]) -> None:
        then()
        if account is None:
            return
        left = self._on_the_way[account] - 1
        if left:
            self._on_the_way[account] = left
            return
        del self._on_the_way[account]
        for waiting in self._waiting.pop(account, []):
            waiting()

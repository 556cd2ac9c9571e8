"""The contract between the server's C per-order path and its Python.

``pyengine._server`` (csrc/binding/server.h) owns the per-order state --
each session's ``Link`` (request numbers, pending requests, token bucket,
owned orders), the ``Ledger`` (sessions by id, the owner of each open order,
open and in-flight orders per account) and the ``CommandBuffer`` -- and
carries out the per-order requests (``Intake``) and the usual events
(``Router``) itself, reads the sessions' sockets a loop turn at a time
(``Poller``), and queues and writes each session's output
(csrc/binding/outbox.c). It calls Python through ``IntakeEvents``,
``RouterEvents`` and ``PollerEvents`` below and nothing else (none of their
methods waits for anything): their methods are looked up by these names
once, when the Intake, Router or Poller is built (a missing one fails
there), and called with the arguments shown. ``FrameSink`` is Python's own: what market data is sent
to.

A request, as the C side hands it back, is ``(kind, req_id, extra)``: what
the session asked (``"new_order"``, ``"cancel"``, ``"modify"``,
``"mass_cancel"``, ``"snapshot"``, ``"trading_state"``), the ``req_id`` to
echo, and the kind's extra (a client order id, or a mass cancel's state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FrameSink", "IntakeEvents", "PollerEvents", "RouterEvents", "PendingRequest"]

PendingRequest = tuple[str, Any, Any]


class FrameSink(Protocol):
    """A market-data subscriber (MarketData): a Session, or the web view's
    feed."""

    def send(self, frame: bytes) -> None:
        """Queue one whole frame for the client."""


class IntakeEvents(Protocol):
    """What ``Intake.take`` calls in Python: replies, nothing that waits.
    (A message that is not a per-order request, ``take`` gives back
    decoded, for the reader to carry out: ``Requests.request``.)"""

    def undecodable(self, session: Session, error: ValueError) -> None:
        """A frame that is not JSON (``error``: the decoder's)."""

    def refused(self, session: Session, req_id: Any, code: str, message: str) -> None:
        """A per-order request refused before it reached the engine: reply
        an ``error`` with this code and message (e.g. ``not_logged_in``)."""

    def rejected(self, session: Session, req_id: Any, code: str, message: str, client_order_id: str | None,
                 order_id: int | None, limit: bool) -> None:
        """A per-order request rejected by the server's own rules: reply a
        ``reject``; ``limit``: an order limit was broken (logged as such)."""

    def over_rate(self, session: Session, req_id: Any) -> None:
        """A per-order request over the session's message rate."""


class PollerEvents(Protocol):
    """What ``Poller.turn`` hands to Python (csrc/binding/poller.c), in the
    hub. A turn never raises: what fails in it goes to ``turn_failed``."""

    def handed(self, session: Session, value: Any) -> None:
        """The session's socket is watched no more: its reader greenlet
        takes `value` over and watches it again. `value` is what
        ``Intake.drain`` stopped at (``(message,)`` for Python, ``False``
        for a full command buffer, ``True`` when it held the loop for its
        ``turn_after`` with frames left), ``None`` when the peer closed its side,
        or an exception to raise (a failed read, a broken frame, an
        IntakeEvents callback's)."""

    def push_short(self) -> None:
        """The turn's commands did not all fit in the engine thread's input
        ring (or a flush waiting for room holds them): push the rest once
        there is room."""

    def flushed(self, report: list[tuple[Session, int]]) -> None:
        """``Ledger.flush``'s report at the turn's end: tell each session
        (``Session.flushed``)."""

    def turn_failed(self, error: BaseException) -> None:
        """Something in a turn failed (a PollerEvents method raised, the
        flush's report ran out of memory, ...); the turn went on."""


class RouterEvents(Protocol):
    """What ``Router.route`` hands to Python: the rare events."""

    def cancelled(self, owner: Session | None, order_id: int, leaves: int, reason: int, seq: int,
                  session: Session | None, request: PendingRequest | None, first: bool) -> None:
        """A cancel the Router does not answer itself: one by someone other
        than the owner, a mass cancel's first, or one of an order no session
        holds. ``first``: the first event of its command."""

    def modified(self, owner: Session | None, order_id: int, price: int, qty: int, priority_kept: bool, seq: int,
                 session: Session | None, request: PendingRequest | None, first: bool) -> None:
        """An order was modified."""

    def rejected(self, session: Session | None, request: PendingRequest | None, reason: int, coid_raw: bytes,
                 order_id: int, seq: int) -> None:
        """The engine rejected a command (``reason``: enum eng_err)."""

    def trading_state(self, session: Session | None, request: PendingRequest | None, instrument: int,
                      halted: bool, seq: int) -> None:
        """An instrument was halted or resumed."""

    def mmp(self, session: Session | None, request: PendingRequest | None, account: int, instrument: int,
            qty_limit: int, window: int, filled: int, tripped: bool, seq: int) -> None:
        """An account's market-maker protection was set, reset, or tripped."""

    def order_limits(self, session: Session | None, request: PendingRequest | None, instrument: int,
                     max_qty: int, max_notional: int, seq: int) -> None:
        """An instrument's order limits were set (0: none)."""

    def mass_cancelled(self, session: Session | None, request: PendingRequest | None, account: int | None,
                       instrument: int, all_instruments: bool, count: int, reason: int, seq: int) -> None:
        """The engine cancelled `count` open orders of an account, or of
        every account (None), after their ``cancelled`` events (CANCEL_ALL)."""

    def snapshot_done(self, session: Session | None, request: PendingRequest | None, seq: int, err: int) -> None:
        """A snapshot was written (``err`` 0) or failed (an errno)."""

    def state_hash(self, seq: int, value: int, checked: bool, expected: int) -> None:
        """A replica's state hash (cluster mode)."""

    def accepted_late(self, session: Session, order_id: int, instrument: int, account: int,
                      client_order_id: str | None) -> None:
        """An order accepted after its session closed."""

    def accepted_unowned(self, order_id: int, instrument: int, account: int, client_order_id: str | None) -> None:
        """An order accepted for no session (a replica applying its log)."""

    def unowned_gone(self, order_id: int) -> None:
        """An order no session holds filled completely."""

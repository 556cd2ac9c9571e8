"""Requests that read a session's orders wait for its earlier commands.

``mass_cancel`` of the session's own orders, ``orders`` and ``order_status``
are carried out by the event loop from what it knows of the session's
orders, and the event loop knows an order once its ack is routed (a
``mass_cancel`` of an account is the engine's, which takes every order that
came before it, and does not wait). A client that sends a new order and
a mass cancel in one write (or a query right after an order) must not find
the order missed: the order would stay open after a mass cancel that came
after it, and the reply would come before the order's ack, out of the order
the client sent them in (docs/protocol.md). So such a request first waits,
in the session's reader greenlet, until every command the session sent
before it has its answer: all its events, the last of which (the runner
marks it) takes it out of the Link's pending requests (a sweep's fills or a
CANCEL_ALL's cancels may come in more than one batch). Later frames of the
session wait with it (the reader has its socket meanwhile); other sessions
go on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gevent.event import Event

from ..log import fields

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Settling"]

log = logging.getLogger("pyengine.server")


class Settling:
    """The sessions waiting for their commands' answers, each with the
    Event that wakes it."""

    def __init__(self, patience: float = 5.0) -> None:
        # A safety valve, not a timing rule: an answer that never came (a bug,
        # an engine thread gone) must not hold the session forever. Then the
        # request goes on with what is known, and the log says so.
        self.patience = patience
        self._waiting: dict[Session, Event] = {}

    def wait(self, session: Session) -> bool:
        """In the session's reader greenlet: once the session has no command
        without its answer, True; False if it closed meanwhile (nobody is
        left to answer: the request is dropped). Its commands must be on
        their way (pushed, or to be pushed when the loop next turns)."""
        link = session.link
        if session.closed:
            return False
        if not link.pending_count:
            return True
        woken = self._waiting[session] = Event()
        try:
            while link.pending_count and not session.closed:
                if not woken.wait(self.patience):
                    log.warning("settle_timeout", extra=fields(sid=session.sid, pending=link.pending_count,
                                                                 waited_s=self.patience))
                    break
                woken.clear()
        finally:
            del self._waiting[session]
        return not session.closed

    def routed(self) -> None:
        """After events were routed: wake the sessions they settled."""
        for session, woken in self._waiting.items():
            if not session.link.pending_count:
                woken.set()

    def closed(self, session: Session) -> None:
        """The session closed: it waits no more."""
        woken = self._waiting.get(session)
        if woken is not None:
            woken.set()

"""The dispatcher: the one greenlet that takes events from the engine thread
and routes them.

It waits on the engine thread's eventfd through the gevent hub, drains the
output ring in batches, and for each event: replies to the session whose
request caused it (matched by the command's tag, echoing its ``req_id``),
sends fills to both sides' sessions, and feeds market data. The loop over the
events is the Router's (csrc/binding/route.c), in C; it calls the methods
here for the rare events. Sessions, owners and books change only here and in
the session greenlets of the same OS thread, so nothing needs a lock.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import gevent
import orjson

from .._ffi import ffi
from .._route import Router
from ..log import fields
from .codes import CANCEL_REASONS, NO_COID, REJECTS, SIDE_NAMES
from .session import MassCancelState

if TYPE_CHECKING:
    from .app import Server
    from .session import Session

__all__ = ["Dispatcher", "JournalFailed"]

log = logging.getLogger("pyengine.server")

_BATCH = 4096


class JournalFailed(OSError):
    """The journal cannot be written: nothing from here on would be durable."""

    def __init__(self, err: int) -> None:
        super().__init__(err, f"the journal failed: {os.strerror(err)}; no further events are released")


def _coid(raw: bytes) -> str | None:
    return None if raw == NO_COID else raw.rstrip(b"\0").decode("ascii", "backslashreplace")


class Dispatcher:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.owners: dict[int, Session] = {}  # open order id -> the session that entered it
        self._buf = ffi.new("struct runner_event[]", _BATCH)
        self._raw = memoryview(ffi.buffer(self._buf))
        self._cod: list[int] = []  # orders of closed sessions, to cancel
        self._router = Router((
            self, server.sessions, self.owners, server.limits.open, server.limits.in_flight, server.unclaimed,
            *server.marketdata.router_tables(),
            tuple(orjson.dumps(symbol) for symbol in server.engine.symbols),
            tuple(orjson.dumps(name) if name else b"" for name in SIDE_NAMES),
            tuple(orjson.dumps(reason) for reason in CANCEL_REASONS),
            orjson.dumps,
        ))

    @property
    def trades(self) -> int:
        """Trades routed so far."""
        return int(self._router.trades)

    @property
    def orders(self) -> int:
        """Orders accepted so far."""
        return int(self._router.orders)

    def owner(self, order_id: int) -> Session | None:
        return self.owners.get(order_id)

    def run(self) -> None:
        """Route events until the engine thread has stopped and nothing is left."""
        engine = self.server.engine
        hub = self.server.hub
        watcher = hub.loop.io(engine.fd, 1)
        try:
            while True:
                n = engine.poll(self._buf, _BATCH)
                if n:
                    self.route(n)
                    continue
                err = engine.journal_error()
                if err:
                    self._drain_failed()
                    raise JournalFailed(err)
                if self.server.stopping and not engine.stats()["running"]:
                    n = engine.poll(self._buf, _BATCH)
                    if not n:
                        return
                    self.route(n)
                    continue
                hub.wait(watcher)
                try:
                    os.read(engine.fd, 8)
                except BlockingIOError:
                    pass
        finally:
            watcher.close()

    def _drain_failed(self, patience: float = 1.0) -> None:
        """The journal failed: stop the engine thread and route what it
        still releases (answers that need no journal, such as a failed
        snapshot's) before the server stops. The engine thread may be
        publishing such an answer just as the failure shows, so wait for it
        to stop, a while at most: unreleased events can keep it from ever
        stopping."""
        engine = self.server.engine
        engine.request_stop()
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            n = engine.poll(self._buf, _BATCH)
            if n:
                self.route(n)
            elif not engine.stats()["running"]:
                return
            else:
                gevent.sleep(0.002)

    def route(self, n: int) -> None:
        """Route the first `n` events of the buffer: the Router (C) runs the
        loop and calls the methods below for the rare events."""
        self._router.route(self._raw, n)
        self.server.marketdata.flush()
        self.server.flush_sessions()
        if self._cod and not self.server.stopping:
            self._cancel_orphans()
        if self.server.closed_sessions:
            self.server.sweep_closed()

    def _accepted_late(self, session: Session, oid: int, inst: int, account: int, coid: str | None) -> None:
        """An order accepted for a session that has closed meanwhile: kept
        for the account's next session without cancel-on-disconnect, else
        cancelled (once this batch is routed)."""
        if not session.cancel_on_disconnect:
            self.server.unclaimed.add(oid, inst, account, coid)
            return
        self.owners[oid] = session
        session.orders[oid] = (inst, coid)
        if coid is not None:
            session.coids[coid] = oid
        self._cod.append(oid)

    def _cancelled(self, owner: Session | None, oid: int, leaves: int, reason: int, seq: int,
                   session: Session | None, info: tuple[str, Any, Any] | None, first: bool) -> None:
        """To the order's session; and, when someone else (an administrator)
        cancelled it, the direct reply to them."""
        req_id = mass = None
        if info and first:
            kind, req_id, extra = info
            if kind == "mass_cancel":
                # Its one reply is mass_cancelled; the cancels are pushes.
                req_id, mass = None, extra
        o = owner.orders.get(oid) if owner is not None else None
        message = {
            "type": "cancelled",
            "req_id": None,
            "order_id": oid,
            "client_order_id": o[1] if o else None,
            "leaves": leaves,
            "reason": CANCEL_REASONS[reason],
            "seq": seq,
        }
        if owner is not None:
            message["req_id"] = req_id if owner is session else None
            owner.reply(message)
            self._forget(owner, oid)
        elif self.server.unclaimed:
            self.server.unclaimed.gone(oid)
        if req_id is not None and session is not None and session is not owner:
            session.reply(dict(message, req_id=req_id))
        if mass is not None:
            mass.cancelled += 1
            self._mass_part_done(session, mass)  # type: ignore[arg-type]

    def _modified(self, owner: Session | None, oid: int, price: int, qty: int, kept: bool, seq: int,
                  session: Session | None, info: tuple[str, Any, Any] | None, first: bool) -> None:
        req_id = info[1] if info and first else None
        o = owner.orders.get(oid) if owner is not None else None
        message = {
            "type": "modified",
            "req_id": None,
            "order_id": oid,
            "client_order_id": o[1] if o else None,
            "price": price,
            "qty": qty,
            "priority_kept": kept,
            "seq": seq,
        }
        if owner is not None:
            message["req_id"] = req_id if owner is session else None
            owner.reply(message)
        if req_id is not None and session is not None and session is not owner:
            session.reply(dict(message, req_id=req_id))

    def _rejected(self, session: Session | None, info: tuple[str, Any, Any] | None, reason: int,
                  coid_raw: bytes, oid: int, seq: int) -> None:
        if session is None or info is None:
            return
        kind, req_id, extra = info
        if kind == "mass_cancel":
            self._mass_part_done(session, extra)  # the order was gone already
            return
        code, message = REJECTS[reason]
        log.debug("reject", extra=fields(sid=session.sid, code=code, req_id=req_id))
        session.reply(
            {
                "type": "reject",
                "req_id": req_id,
                "code": code,
                "message": message,
                "client_order_id": _coid(coid_raw),
                "order_id": oid or None,
                "seq": seq,
            }
        )

    def _trading_state(self, session: Session | None, info: tuple[str, Any, Any] | None, inst: int,
                       halted: bool, seq: int) -> None:
        symbol = self.server.engine.symbols[inst]
        state = "halted" if halted else "open"
        log.info("trading_state_set", extra=fields(symbol=symbol, state=state, seq=seq))
        self.server.marketdata.trading_state(inst, halted)
        if session is not None and info is not None:
            session.reply({"type": "trading_state", "req_id": info[1], "symbol": symbol, "state": state, "seq": seq})

    def _snapshot_done(self, session: Session | None, info: tuple[str, Any, Any] | None, seq: int, err: int) -> None:
        engine = self.server.engine
        err = err or engine.journal_error()
        if err:
            log.error("snapshot_failed", extra=fields(seq=seq, error=os.strerror(err)))
        else:
            log.info("snapshot", extra=fields(seq=seq, requested=session is not None))
        if session is None or info is None:
            return
        req_id = info[1]
        if err:
            session.error("snapshot_failed", f"the snapshot at seq {seq} failed: {os.strerror(err)}", req_id)
        elif self.server.cluster is not None:
            # Taken; the answer once the object store holds it (the acks go on meanwhile).
            def stored(name: str | None) -> None:
                if name is None:
                    session.error("snapshot_failed", f"the snapshot at seq {seq} could not be stored", req_id)
                else:
                    session.reply({"type": "snapshot", "req_id": req_id, "seq": seq, "path": name})
                self.server.flush_sessions()
            self.server.cluster.when_stored(seq, stored)
        else:
            session.reply({"type": "snapshot", "req_id": req_id, "seq": seq, "path": engine.snapshot_path(seq)})

    def _state_hash(self, seq: int, value: int, checked: bool, expected: int) -> None:
        """A replica's state hash: a checkpoint it wrote, or one of the
        leader's it checked (cluster mode)."""
        if self.server.cluster is not None:
            self.server.cluster.state_hash(seq, value, checked, expected)

    @staticmethod
    def _mass_part_done(session: Session, state: MassCancelState) -> None:
        state.remaining -= 1
        if state.remaining == 0:
            session.reply({"type": "mass_cancelled", "req_id": state.req_id, "count": state.cancelled})

    def _forget(self, s: Session, oid: int) -> None:
        self.owners.pop(oid, None)
        o = s.orders.pop(oid, None)
        if o is not None and o[1] is not None and s.coids.get(o[1]) == oid:
            del s.coids[o[1]]

    def _cancel_orphans(self) -> None:
        """Orders accepted for sessions that had already closed with
        cancel-on-disconnect: cancel those still open."""
        orders, self._cod = self._cod, []
        for oid in orders:
            if oid in self.owners:
                self.server.cancel_order(oid)
        self.server.commands.flush()

"""The dispatcher: takes events from the engine thread and routes them.

The gevent hub drains the output ring in batches itself, with no greenlet
switch (the greenlet does what may wait): at the end of each of the Poller's
turns, right after it pushed the turn's commands (the engine thread shares
the event loop's CPU and has often answered by then, so the answers go out
with the turn's output and the loop is not woken again for them), and
whenever the engine thread's eventfd wakes it. For each event: replies to the
session whose request caused it (matched by the command's tag, echoing its
``req_id``), sends fills to both sides' sessions, and feeds market data. The
taking and the loop over the events are the Router's (csrc/binding/route.c),
in C; the Dispatcher is its ``RouterEvents`` (seam.py): the Router calls the
methods below, by those names, for the rare events. Sessions, owners and
books change only here and in the session greenlets of the same OS thread,
so nothing needs a lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import orjson

from .._ffi import lib
from .._server import Ledger, OrderStatus, Router
from ..log import fields
from .codes import CANCEL_REASONS, NO_COID, REJECTS, SIDE_NAMES
from .commands import CommandQueue
from .engine_thread import EngineThread
from .handoff import Handoff
from .marketdata import MarketData
from .unclaimed import UnclaimedOrders
from .requests import MassCancelState
from .seam import PendingRequest

if TYPE_CHECKING:
    from .cluster_node import ClusterNode
    from .session import Session
    from .settle import Settling


class DispatchHost(Protocol):
    """What the dispatcher needs of the server."""

    hub: Any  # gevent's Hub
    engine: EngineThread
    ledger: Ledger
    order_status: OrderStatus
    marketdata: MarketData
    unclaimed: UnclaimedOrders
    commands: CommandQueue
    cluster: ClusterNode | None
    settling: Settling
    stopping: bool
    closed_sessions: int  # closed sessions not forgotten yet

    def flush_sessions(self) -> None: ...

    def sweep_closed(self) -> None: ...

    def cancel_order(self, order_id: int) -> None: ...

    def sessions_of(self, account: int) -> list[Session]: ...

    def route_in_turns(self, callback: Callable[[], None] | None) -> None: ...

    def switch_ran_out(self, account: int) -> None: ...

__all__ = ["Dispatcher", "DispatchHost", "JournalFailed"]

log = logging.getLogger("pyengine.server")


class JournalFailed(OSError):
    """The journal cannot be written: nothing from here on would be durable."""

    def __init__(self, err: int) -> None:
        super().__init__(err, f"the journal failed: {os.strerror(err)}; no further events are released")


def _coid(raw: bytes) -> str | None:
    return None if raw == NO_COID else raw.rstrip(b"\0").decode("ascii", "backslashreplace")


def _order_coid(owner: Session | None, ledger: Ledger, unclaimed: UnclaimedOrders, order_id: int) -> str | None:
    """The client order id of an order its owner holds, or that no session
    holds (None if it has none)."""
    if owner is None:
        return unclaimed.client_order_id(order_id)
    o = ledger.order(order_id)
    return o[1] if o else None


class Dispatcher:
    """The engine's events, routed; the Router's ``RouterEvents``."""

    def __init__(self, server: DispatchHost) -> None:
        self.server = server
        self.ledger = server.ledger
        self._cod: list[int] = []  # orders of closed sessions, to cancel
        self.mmp_trips = 0  # market-maker protection trips routed
        self._handoff: Handoff | None = None  # run()'s (handoff.py)
        self._router = Router(
            ledger=server.ledger,
            events=self,
            market_data=server.marketdata.router_tables(),
            symbols_json=tuple(orjson.dumps(symbol) for symbol in server.engine.symbols),
            sides_json=tuple(orjson.dumps(name) if name else b"" for name in SIDE_NAMES),
            reasons_json=tuple(orjson.dumps(reason) for reason in CANCEL_REASONS),
            dumps=orjson.dumps,
            status=server.order_status,
        )
        server.engine.drain_into(self._router, server.marketdata.flush)

    @property
    def trades(self) -> int:
        """Trades routed so far."""
        return int(self._router.trades)

    @property
    def orders(self) -> int:
        """Orders accepted so far."""
        return int(self._router.orders)

    def run(self) -> None:
        """Route events until the engine thread has stopped and nothing is
        left. The hub routes while this greenlet waits (_on_events, _in_turn:
        no greenlet switch); this greenlet takes over for the journal's
        failure and the stop, and whenever the hub hands it something to
        raise."""
        engine = self.server.engine
        handoff = self._handoff = Handoff(self.server.hub.loop, engine.fd, self._on_events)
        try:
            while True:
                if self._route_ready():
                    continue
                err = self._router.journal_error
                if err:
                    self._drain_failed()
                    raise JournalFailed(err)
                if self.server.stopping and not engine.stats()["running"]:
                    if self._route_ready():
                        continue
                    # The journal's last sync (fsync off) may fail as the runner ends.
                    err = self._router.journal_error
                    if err:
                        raise JournalFailed(err)
                    return
                # Nothing there, the wake-up armed: the hub routes from here.
                self.server.route_in_turns(self._in_turn)
                try:
                    handoff.wait()
                finally:
                    self.server.route_in_turns(None)
        finally:
            handoff.close()

    def _on_events(self) -> None:
        """The engine thread's wake-up, in the hub: route every event there."""
        handoff = self._handoff
        assert handoff is not None  # run() set it before starting the watcher
        try:
            while self._route_ready():
                pass
            self._hand_over_if_due(handoff)
        except BaseException as exc:  # the dispatcher greenlet raises it
            handoff.hand_over(exc)

    def _in_turn(self) -> None:
        """The Poller's after_push, in the hub while the greenlet waits:
        route what the engine thread has answered so far; the Poller writes
        it out next, with the rest of its turn's output."""
        handoff = self._handoff
        if handoff is None or not handoff.waiting:
            return  # handed over earlier in this turn of the loop
        try:
            router, routed = self._router, 0
            while n := router.route_ready():
                routed += n
                if n == router.batch:  # more may follow: these go out first, as _route_ready's do
                    self.server.flush_sessions()
            if routed:
                if self.server.closed_sessions:
                    self.server.sweep_closed()
                self.server.settling.routed()
            self._hand_over_if_due(handoff)
        except BaseException as exc:  # the dispatcher greenlet raises it
            handoff.hand_over(exc)

    def _hand_over_if_due(self, handoff: Handoff) -> None:
        """After the hub routed everything there (route_ready gave 0): the
        greenlet's turn if the server stops or the journal failed, whose
        wake-ups the last look at the ring may have taken."""
        if self.server.stopping or self._router.journal_error:
            handoff.hand_over(None)

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
            if self._route_ready():
                continue
            if not engine.stats()["running"]:
                return
            gevent.sleep(0.002)

    def _route_ready(self) -> int:
        """Route a batch of what the engine thread has ready (the Router
        takes it and runs the loop, in C, calling the RouterEvents methods
        below for the rare events) and write it out; how many events.
        Nothing here waits."""
        n = self._router.route_ready()
        if n:
            self.server.flush_sessions()
            if self.server.closed_sessions:
                self.server.sweep_closed()
            self.server.settling.routed()
        return n

    # ---- RouterEvents ------------------------------------------------------

    def accepted_late(self, session: Session, order_id: int, instrument: int, account: int,
                      client_order_id: str | None) -> None:
        """An order accepted for a session that has closed meanwhile: kept
        for the account's next session without cancel-on-disconnect, else
        cancelled (once this batch is routed), in a greenlet of its own:
        queueing the cancels may wait for room in the command buffer, and
        routing must go on meanwhile."""
        if not session.cancel_on_disconnect:
            self.server.unclaimed.add(order_id, instrument, account, client_order_id)
            return
        self.ledger.own(session.link, order_id, instrument, client_order_id)
        self._cod.append(order_id)
        if len(self._cod) == 1:
            gevent.spawn(self._cancel_orphans)

    def accepted_unowned(self, order_id: int, instrument: int, account: int, client_order_id: str | None) -> None:
        """Nobody's yet (a replica applying its shard's log): the account's
        next session takes it."""
        self.server.unclaimed.add(order_id, instrument, account, client_order_id)

    def unowned_gone(self, order_id: int) -> None:
        if self.server.unclaimed:
            self.server.unclaimed.gone(order_id)

    def cancelled(self, owner: Session | None, order_id: int, leaves: int, reason: int, seq: int,
                  session: Session | None, request: PendingRequest | None, first: bool) -> None:
        """To the order's session; and, when someone else (an administrator)
        cancelled it, the direct reply to them."""
        req_id = mass = None
        if request and first:
            kind, req_id, extra = request
            if kind == "mass_cancel":
                # Its one reply is mass_cancelled; the cancels are pushes.
                req_id, mass = None, extra
        message = {
            "type": "cancelled",
            "req_id": None,
            "order_id": order_id,
            "client_order_id": _order_coid(owner, self.ledger, self.server.unclaimed, order_id),
            "leaves": leaves,
            "reason": CANCEL_REASONS[reason],
            "seq": seq,
        }
        if owner is not None:
            message["req_id"] = req_id if owner is session else None
            owner.reply(message)
            self.ledger.forget(owner.link, order_id)
        elif self.server.unclaimed:
            self.server.unclaimed.gone(order_id)
        if req_id is not None and session is not None and session is not owner:
            session.reply(dict(message, req_id=req_id))
        if mass is not None and session is not None and mass.per_order:
            mass.cancelled += 1
            self._mass_part_done(session, mass, seq)

    def modified(self, owner: Session | None, order_id: int, price: int, qty: int, priority_kept: bool, seq: int,
                 session: Session | None, request: PendingRequest | None, first: bool) -> None:
        req_id = request[1] if request and first else None
        message = {
            "type": "modified",
            "req_id": None,
            "order_id": order_id,
            "client_order_id": _order_coid(owner, self.ledger, self.server.unclaimed, order_id),
            "price": price,
            "qty": qty,
            "priority_kept": priority_kept,
            "seq": seq,
        }
        if owner is not None:
            message["req_id"] = req_id if owner is session else None
            owner.reply(message)
        if req_id is not None and session is not None and session is not owner:
            session.reply(dict(message, req_id=req_id))

    def rejected(self, session: Session | None, request: PendingRequest | None, reason: int, coid_raw: bytes,
                 order_id: int, seq: int) -> None:
        if session is None or request is None:
            return
        kind, req_id, extra = request
        if kind == "mass_cancel":
            if not extra.per_order:  # a CANCEL_ALL refused: the mass cancel did not happen
                extra.refused = REJECTS[reason]
            self._mass_part_done(session, extra, seq)  # the order was gone already
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
                "order_id": order_id or None,
                "seq": seq,
            }
        )

    def trading_state(self, session: Session | None, request: PendingRequest | None, instrument: int,
                      halted: bool, seq: int) -> None:
        inst = instrument
        symbol = self.server.engine.symbols[inst]
        state = "halted" if halted else "open"
        log.info("trading_state_set", extra=fields(symbol=symbol, state=state, seq=seq))
        self.server.marketdata.trading_state(inst, halted)
        if session is not None and request is not None:
            session.reply({"type": "trading_state", "req_id": request[1], "symbol": symbol, "state": state, "seq": seq})

    def order_limits(self, session: Session | None, request: PendingRequest | None, instrument: int,
                     max_qty: int, max_notional: int, seq: int) -> None:
        """An instrument's limits were set: from the configuration, by this
        server as it started or took the lead, or (a follower) by its
        leader."""
        log.info("order_limits_set", extra=fields(symbol=self.server.engine.symbols[instrument], max_qty=max_qty,
                                                  max_notional=max_notional, seq=seq))

    def mmp(self, session: Session | None, request: PendingRequest | None, account: int, instrument: int,
            qty_limit: int, window: int, filled: int, tripped: bool, seq: int) -> None:
        """The reply to set_mmp/reset_mmp; when protection trips (no one asked:
        a trade did), a push to every session of the account."""
        symbol = self.server.engine.symbols[instrument]
        message = {"type": "mmp", "req_id": None, "symbol": symbol, "qty_limit": qty_limit,
                   "window_ms": window // 1_000_000, "filled": filled, "tripped": tripped, "seq": seq}
        if session is not None and request is not None and request[0] == "mmp":
            session.reply({**message, "req_id": request[1]})
        if tripped:
            self.mmp_trips += 1
            log.warning("mmp_tripped", extra=fields(account=account, symbol=symbol, filled=filled,
                                                    qty_limit=qty_limit, seq=seq))
            for s in self.server.sessions_of(account):
                s.reply(message)

    def mass_cancelled(self, session: Session | None, request: PendingRequest | None, account: int | None,
                       instrument: int, all_instruments: bool, count: int, reason: int, seq: int) -> None:
        """The end of a CANCEL_ALL (logged): a mass cancel of an account (or
        of every account: `account` None), whose count is the engine's, or
        the dead-man switch's."""
        symbol = None if all_instruments else self.server.engine.symbols[instrument]
        asker = session if request is not None and request[0] == "mass_cancel" else None
        log.info("mass_cancelled", extra=fields(account=account, symbol=symbol, reason=CANCEL_REASONS[reason],
                                                count=count, seq=seq, sid=asker.sid if asker else None))
        if asker is not None and request is not None:
            state: MassCancelState = request[2]
            state.cancelled += count
            self._mass_part_done(asker, state, seq)
        elif reason == lib.ENG_CANCEL_DEAD_MAN and account is not None:
            self.server.switch_ran_out(account)

    def snapshot_done(self, session: Session | None, request: PendingRequest | None, seq: int, err: int) -> None:
        engine = self.server.engine
        err = err or engine.journal_error()
        if err:
            log.error("snapshot_failed", extra=fields(seq=seq, error=os.strerror(err)))
        else:
            log.info("snapshot", extra=fields(seq=seq, requested=session is not None))
        if session is None or request is None:
            return
        req_id = request[1]
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

    def state_hash(self, seq: int, value: int, checked: bool, expected: int) -> None:
        """A replica's state hash: a checkpoint it wrote, or one of the
        leader's it checked (cluster mode)."""
        if self.server.cluster is not None:
            self.server.cluster.state_hash(seq, value, checked, expected)

    @staticmethod
    def _mass_part_done(session: Session, state: MassCancelState, seq: int) -> None:
        state.remaining -= 1
        state.seq = max(state.seq, seq)
        if state.remaining:
            return
        if state.refused is not None:
            code, message = state.refused
            session.reply({"type": "error", "req_id": state.req_id, "code": code, "message": message})
        else:
            session.reply({"type": "mass_cancelled", "req_id": state.req_id, "count": state.cancelled,
                           "seq": state.seq})

    def _cancel_orphans(self) -> None:
        """Orders accepted for sessions that had already closed with
        cancel-on-disconnect: cancel those still open (not when the server
        stops: orders outlive a planned restart)."""
        orders, self._cod = self._cod, []
        if self.server.stopping:
            return
        try:
            for oid in orders:
                if self.ledger.owner(oid) is not None:
                    self.server.cancel_order(oid)
            self.server.commands.flush()
        except Exception:  # in a greenlet of its own: say so, or only gevent would print it
            log.exception("cancel_orphans_failed", extra=fields(orders=len(orders)))
            return
        log.info("cancel_orphans", extra=fields(orders=len(orders)))

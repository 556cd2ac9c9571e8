"""One client connection: its reader and writer greenlets and what it owns.

The reader splits frames, checks each request and queues engine commands
(tagged with the session and a request number) for the dispatcher's engine
thread -- the usual new orders and cancels through the server's Intake
(csrc/binding/intake.c), everything else and anything it doubts through
``handle``; the writer sends everything queued for the session in one ``sendall``
per wake-up. A session whose unsent output passes ``max_unsent`` is
disconnected rather than buffered without end.

A session owns the orders it entered: ``orders`` (order id -> (instrument,
client order id)) and ``coids`` (client order id -> order id) are kept by the
dispatcher from the events.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from gevent.event import Event

from .._ffi import lib
from ..log import fields
from .codes import NO_COID, NOT_OWNER, ORDER_TYPE_CODES, SIDE_CODES, STP_CODES, TIF_CODES
from .engine_thread import SNAPSHOT_COMMAND, UNKNOWN_INSTRUMENT
from .limits import TokenBucket
from .protocol import (
    Cancel,
    FrameError,
    FrameReader,
    Login,
    MassCancel,
    Modify,
    NewOrder,
    Ping,
    Snapshot,
    RequestError,
    SetTradingState,
    Status,
    Subscribe,
    Unsubscribe,
    encode,
    parse,
    shown,
)

if TYPE_CHECKING:
    from .app import Server

__all__ = ["Session", "MassCancelState"]

log = logging.getLogger("pyengine.server")



class Session:
    def __init__(self, server: Server, sock: socket.socket, peer: str, sid: int) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.sid = sid
        self.account: int | None = None
        self.admin = False
        self.cancel_on_disconnect = True
        self.closed = False
        self.orders: dict[int, tuple[int, str | None]] = {}
        self.coids: dict[str, int] = {}
        # Request number -> (kind, req_id, extra) until its first event.
        self.pending: dict[int, tuple[str, Any, Any]] = {}
        self._next = 0
        self._out: list[bytes] = []
        self.unsent = 0
        self._dirty = False
        self._writer_busy = False
        self._fd = sock.fileno()
        self._wake = Event()
        self._reader = FrameReader(server.config.max_frame)
        self.close_reason = ""
        limits = server.config.limits
        self._bucket = TokenBucket(limits.rate, limits.burst)
        self.last_active = time.monotonic()

    # ---- output ------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a frame; it goes out at the next flush point (the end of the
        dispatcher's batch or of the reader's), in one write with the rest."""
        if self.closed:
            return
        self._out.append(frame)
        self.unsent += len(frame)
        if self.unsent > self.server.config.max_unsent:
            self.close("slow_reader")
            return
        if not self._dirty:
            self._dirty = True
            self.server.dirty.append(self)

    def reply(self, message: dict[str, Any]) -> None:
        self.send(encode(message))

    def error(self, code: str, message: str, req_id: Any = None, extra: dict[str, Any] | None = None) -> None:
        self.reply({"type": "error", "req_id": req_id, "code": code, "message": message, **(extra or {})})

    def flush(self) -> None:
        """Write what is queued without blocking. The socket is non-blocking
        (gevent's), so a plain write takes what fits; the rest, if any, goes
        to the writer greenlet, which waits for the socket to drain. Most
        flushes thus cost one write and no greenlet switch."""
        self._dirty = False
        if self._writer_busy or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.close(f"send_failed:{exc.__class__.__name__}")
            return
        self.unsent -= n
        if n < len(data):
            self._out.append(data[n:])
            self._writer_busy = True
            self._wake.set()

    def writer(self) -> None:
        """Sends what a flush could not: waits until the socket drains."""
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._out:
                data = b"".join(self._out)
                self._out.clear()
                try:
                    self.sock.sendall(data)
                except OSError as exc:
                    self.close(f"send_failed:{exc.__class__.__name__}")
                    return
                self.unsent -= len(data)
            self._writer_busy = False
            if self.closed:
                return

    # ---- input -------------------------------------------------------------

    def reader(self) -> None:
        """Reads once each time the socket turns readable: no failing read
        after it, as a loop reading until the socket would block makes."""
        hub, fd, frames_of = self.server.hub, self._fd, self._reader.feed
        take = self.server.intake.take  # new orders and cancels in C; the rest, and any doubt, below
        buf = self.server.recv_buffer
        view = memoryview(buf)
        watcher = hub.loop.io(fd, 1)
        try:
            while not self.closed:
                hub.wait(watcher)
                try:
                    n = os.readv(fd, (buf,))
                except BlockingIOError:
                    continue
                self.last_active = time.monotonic()
                if not n:
                    self._reader.close()
                    self.close("peer_closed")
                    return
                for frame in frames_of(view[:n]):
                    if not take(self, frame):
                        self.handle(frame)
                self.server.flush_soon()
        except FrameError as exc:
            for frame in exc.frames:
                self.handle(frame)
            self.server.commands.flush()
            self.error(exc.code, str(exc))
            self.close(exc.code)
        except OSError as exc:
            self.close(f"recv_failed:{exc.__class__.__name__}")
        finally:
            watcher.close()

    def handle(self, frame: bytes) -> None:
        """Carry out one request (the reference for the server's Intake,
        which takes the usual new orders and cancels first)."""
        try:
            req = parse(frame)
            if not self._bucket.take():
                raise self._over_rate_error(req.req_id)
            if type(req) is NewOrder:
                self.new_order(req)
            elif type(req) is Cancel:
                self.cancel(req)
            elif type(req) is Modify:
                self.modify(req)
            elif type(req) is Ping:
                self.reply({"type": "pong", "req_id": req.req_id})
            elif type(req) is Login:
                self.login(req)
            elif type(req) is MassCancel:
                self.mass_cancel(req)
            elif type(req) is Subscribe:
                self.subscribe(req)
            elif type(req) is Unsubscribe:
                self.unsubscribe(req)
            elif type(req) is Snapshot:
                self.snapshot(req)
            elif type(req) is SetTradingState:
                self.set_trading_state(req)
            elif type(req) is Status:
                self.reply({"type": "status", "req_id": req.req_id, **self.server.status()})
        except RequestError as exc:
            self._request_error(exc)

    def _request_error(self, exc: RequestError) -> None:
        log.warning("request_error", extra=fields(sid=self.sid, code=exc.code, message=str(exc)))
        self.error(exc.code, str(exc), exc.req_id, exc.extra)

    def _over_rate_error(self, req_id: Any) -> RequestError:
        return RequestError("rate_limited", f"over {self.server.config.limits.rate:g} messages a second", req_id)

    def over_rate(self, req_id: Any) -> None:
        """The reply to a request over the session's rate (the Intake's, when
        it ran out of tokens for one)."""
        self._request_error(self._over_rate_error(req_id))

    def _tag(self, kind: str, req_id: Any, extra: Any = None) -> int:
        self._next = n = (self._next + 1) & 0xFFFFFFFF
        self.pending[n] = (kind, req_id, extra)
        return (self.sid << 32) | n

    def _account(self, req_id: Any) -> int:
        if self.account is None:
            raise RequestError("not_logged_in", "log in first", req_id)
        return self.account

    def _admin(self, req_id: Any, what: str) -> None:
        """Admin commands need an admin account when the server has accounts."""
        self._account(req_id)
        if self.server.config.auth_required and not self.admin:
            raise RequestError("not_admin", f"only an admin account may {what}", req_id)

    def _order_reject(self, req: NewOrder, code: str, message: str) -> None:
        """A reject decided here rather than by the engine (a limit)."""
        log.info("order_limit", extra=fields(sid=self.sid, account=self.account, code=code))
        self.reply({"type": "reject", "req_id": req.req_id, "code": code, "message": message,
                    "client_order_id": req.client_order_id, "order_id": None, "seq": None})

    # ---- requests ----------------------------------------------------------

    def login(self, req: Login) -> None:
        if self.account is not None:
            raise RequestError("already_logged_in", f"this session is logged in as account {self.account}", req.req_id)
        cluster = self.server.cluster
        if cluster is not None and not cluster.leading:
            leader = cluster.leader_address()
            raise RequestError("not_leader", f"node {cluster.cluster.node} does not lead shard {cluster.cluster.shard}; "
                               + (f"its leader is at {leader}" if leader else "it has no leader right now: try again"),
                               req.req_id, {"leader": leader})
        if self.server.config.auth_required:
            try:
                self.admin = self._authenticate(req)
            except RequestError as exc:
                # Logged already, as what it is: one line for each refused login, even in a storm of them.
                self.error(exc.code, str(exc), exc.req_id)
                return
            if self.closed:
                return  # closed while its secret was checked: nothing to log in
        # Without accounts every session may make the admin requests (see _admin).
        admin = self.admin or not self.server.config.auth_required
        self.account = req.account
        self.cancel_on_disconnect = req.cancel_on_disconnect
        claimed = self.server.claim_orders(self)
        log.info("login", extra=fields(sid=self.sid, account=req.account, admin=admin, claimed_orders=claimed))
        self.reply(
            {
                "type": "logged_in",
                "req_id": req.req_id,
                "account": req.account,
                "admin": admin,
                "cancel_on_disconnect": req.cancel_on_disconnect,
                "claimed_orders": claimed,
                **self.server.node_identity(),
            }
        )

    def _authenticate(self, req: Login) -> bool:
        """Check a login against the configured accounts; whether the account
        is an admin, or a RequestError. The secret is checked off the event
        loop (this greenlet waits); an unknown account or a missing secret is
        checked against a dummy, so every failure costs the same and reads
        the same."""
        server, host = self.server, self.peer.rpartition(":")[0]
        if server.login_failures.full(host):
            raise self._login_refused(req, "login_throttled", "failures",
                                      f"too many failed logins from {host}; try again later")
        entry = server.config.account(req.account)
        if entry is not None and entry.secret is None:
            return entry.admin  # listed without a secret: nothing to check, any will do
        if server.host_logins.full(host):
            raise self._login_refused(req, "login_throttled", "logins", f"too many logins from {host}; try again later")
        checks = server.login_checks
        if checks.busy:
            raise self._login_refused(req, "login_busy", "pending",
                                      f"{checks.max_pending} logins are being checked; try again shortly")
        server.host_logins.add(host)
        stored = entry.secret if entry is not None and req.secret is not None else None
        matched = checks.verify(stored or checks.dummy, req.secret or "")
        if matched and entry is not None and stored is not None:
            return entry.admin
        server.login_failures.add(host)
        log.warning("login_failed", extra=fields(sid=self.sid, peer=self.peer, account=req.account))
        raise RequestError("auth_failed", "unknown account or wrong secret", req.req_id)

    def _login_refused(self, req: Login, code: str, reason: str, message: str) -> RequestError:
        """Log a login refused before its secret is checked; the error for it."""
        log.warning(code, extra=fields(sid=self.sid, peer=self.peer, account=req.account, reason=reason))
        return RequestError(code, message, req.req_id)

    def new_order(self, req: NewOrder) -> None:
        account = self._account(req.req_id)
        inst = self.server.engine.instrument_ids.get(req.symbol, UNKNOWN_INSTRUMENT)
        limits = self.server.limits
        broken = limits.check_order(inst, req.qty, req.price) or limits.check_open(account)
        if broken is not None:
            self._order_reject(req, *broken)
            return
        limits.in_flight[account] += 1
        self.server.commands.add(
            lib.ENG_CMD_NEW,
            self._tag("new_order", req.req_id, req.client_order_id),
            side=SIDE_CODES[req.side],
            order_type=ORDER_TYPE_CODES[req.order_type],
            tif=TIF_CODES[req.tif],
            stp=STP_CODES[req.stp],
            flags=lib.ENG_CMD_F_POST_ONLY if req.post_only else 0,
            instrument=inst,
            account=account,
            price=req.price or 0,
            qty=req.qty,
            coid=_coid_bytes(req.client_order_id),
        )

    def _target(self, order_id: int | None, client_order_id: str | None, req_id: Any) -> tuple[int, int, bytes] | None:
        """(order id, flags, coid) for a cancel or modify by this session, or
        None (having replied) when the order is another session's."""
        if order_id is not None:
            owner = self.server.dispatcher.owner(order_id)
            if owner is not None and owner is not self and not self.admin:
                # The engine checks accounts; sessions of one account are
                # kept apart here, with the engine's reject for it.
                self.reply({"type": "reject", "req_id": req_id, "code": NOT_OWNER,
                            "message": "order belongs to another session", "client_order_id": None,
                            "order_id": order_id, "seq": None})
                return None
        return order_id or 0, lib.ENG_CMD_F_ANY_ACCOUNT if self.admin else 0, _coid_bytes(client_order_id)

    def cancel(self, req: Cancel) -> None:
        account = self._account(req.req_id)
        target = self._target(req.order_id, req.client_order_id, req.req_id)
        if target is None:
            return
        order_id, flags, coid = target
        self.server.commands.add(lib.ENG_CMD_CANCEL, self._tag("cancel", req.req_id, req.client_order_id),
                                 flags=flags, account=account, order_id=order_id, coid=coid)

    def modify(self, req: Modify) -> None:
        account = self._account(req.req_id)
        target = self._target(req.order_id, req.client_order_id, req.req_id)
        if target is None:
            return
        order_id, flags, coid = target
        if req.price is None:
            flags |= lib.ENG_CMD_F_KEEP_PRICE
        if req.qty is None:
            flags |= lib.ENG_CMD_F_KEEP_QTY
        self.server.commands.add(lib.ENG_CMD_MODIFY, self._tag("modify", req.req_id, req.client_order_id),
                                 flags=flags, account=account, order_id=order_id, price=req.price or 0,
                                 qty=req.qty or 0, coid=coid)

    def mass_cancel(self, req: MassCancel) -> None:
        own = req.account is None and not req.all_accounts
        if own:
            self._account(req.req_id)
        else:
            self._admin(req.req_id, "cancel the orders of other accounts")
        inst = None
        if req.symbol is not None:
            inst = self.server.engine.instrument_ids.get(req.symbol)
            if inst is None:
                raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        if own:
            orders = [(oid, order_inst) for oid, (order_inst, _) in self.orders.items()]
        else:
            orders = self.server.open_orders_of(req.account)
        targets = [oid for oid, order_inst in orders if inst is None or order_inst == inst]
        if not targets:
            self.reply({"type": "mass_cancelled", "req_id": req.req_id, "count": 0})
            return
        state = MassCancelState(req.req_id, len(targets))
        for oid in targets:
            self.server.commands.add(lib.ENG_CMD_CANCEL, self._tag("mass_cancel", req.req_id, state),
                                     flags=lib.ENG_CMD_F_ANY_ACCOUNT, order_id=oid)

    def subscribe(self, req: Subscribe) -> None:
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        self.reply(self.server.marketdata.subscribe(self, inst, req.req_id))

    def unsubscribe(self, req: Unsubscribe) -> None:
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None or not self.server.marketdata.unsubscribe(self, inst):
            raise RequestError("not_subscribed", f"not subscribed to {shown(req.symbol)}", req.req_id)
        self.reply({"type": "unsubscribed", "req_id": req.req_id, "symbol": req.symbol})

    def snapshot(self, req: Snapshot) -> None:
        self._admin(req.req_id, "ask for a snapshot")
        if not self.server.engine.journaling and not self.server.engine.replicating:
            raise RequestError("no_data_dir", "the server runs without a data directory: nothing to snapshot to",
                               req.req_id)
        self.server.commands.add(SNAPSHOT_COMMAND, self._tag("snapshot", req.req_id))

    def set_trading_state(self, req: SetTradingState) -> None:
        self._admin(req.req_id, "halt or resume an instrument")
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        state = lib.ENG_STATE_HALTED if req.halt else lib.ENG_STATE_OPEN
        log.info("trading_state", extra=fields(sid=self.sid, account=self.account, symbol=req.symbol,
                                                  state="halted" if req.halt else "open"))
        self.server.commands.add(lib.ENG_CMD_SET_STATE, self._tag("trading_state", req.req_id),
                                 instrument=inst, account=self.account, qty=state)

    # ---- end ---------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Stop the session; its writer sends what is queued, then ends. With
        cancel-on-disconnect, its open orders are cancelled."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if reason == "slow_reader":
            self._out.clear()  # it would not read them anyway
        else:
            self.flush()  # what is queued (an error saying why) still goes out
        self._wake.set()
        self.server.session_closed(self)
        try:
            # A slow reader's writer may be blocked in sendall on a full
            # socket: shutting the write side too ends that at once.
            self.sock.shutdown(socket.SHUT_RDWR if reason == "slow_reader" else socket.SHUT_RD)
        except OSError:
            pass


def _coid_bytes(client_order_id: str | None) -> bytes:
    """A client order id as struct eng_cmd holds it: NUL-padded bytes."""
    return NO_COID if client_order_id is None else client_order_id.encode().ljust(len(NO_COID), b"\0")


class MassCancelState:
    """Counts the answers to a mass cancel, to reply once they are all in."""

    __slots__ = ("req_id", "remaining", "cancelled")

    def __init__(self, req_id: Any, remaining: int) -> None:
        self.req_id = req_id
        self.remaining = remaining
        self.cancelled = 0


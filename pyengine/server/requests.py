"""Requests that are not per-order: login, ping, status, subscriptions,
mass cancels, snapshots, trading states, order status -- and the replies the server's
Intake (csrc/binding/intake.c) leaves to Python.

The Intake decodes every frame and carries out the per-order requests
(new_order, cancel, modify) with every rule the server applies to them,
answering through the ``IntakeEvents`` methods here (see seam.py); any
other message it gives back to the session's reader, decoded, for
``request``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._ffi import lib
from .._server import Ledger, OrderStatus
from ..log import Throttle, fields
from .commands import CommandQueue
from .config import ServerConfig
from .engine_thread import EngineThread
from .limits import HostWindow, LoginChecks, login_source
from .marketdata import MarketData
from .order_status import order_status_reply, orders_reply
from .dead_man import MAX_KEPT_SWITCHES, DeadManSwitches
from .protocol import (
    Cancel,
    CancelAllAfter,
    Login,
    MassCancel,
    Modify,
    NewOrder,
    OrderQuery,
    Orders,
    Ping,
    RequestError,
    ResetMmp,
    SetMmp,
    SetTradingState,
    Snapshot,
    Status,
    Subscribe,
    Unsubscribe,
    parse_message,
    shown,
    undecodable,
)

from .session import Session

if TYPE_CHECKING:
    from .cluster_node import ClusterNode

__all__ = ["Requests", "RequestHost", "MassCancelState"]

log = logging.getLogger("pyengine.server")

_PER_ORDER = (NewOrder, Cancel, Modify)


class RequestHost(Protocol):
    """What the requests need of the server."""

    config: ServerConfig
    engine: EngineThread
    commands: CommandQueue
    marketdata: MarketData
    order_status: OrderStatus
    ledger: Ledger
    cluster: ClusterNode | None
    login_failures: HostWindow
    host_logins: HostWindow
    login_checks: LoginChecks
    dead_man: DeadManSwitches

    @property
    def keeps_switches(self) -> bool: ...

    def claim_orders(self, session: Session) -> int: ...

    def has_orders(self, account: int | None) -> bool: ...

    def settle(self, session: Session) -> bool: ...

    def account_sessions_changed(self, account: int) -> None: ...

    def node_identity(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def switch_changed(self, account: int | None, then: Callable[[], None]) -> None: ...

    def switch_settled(self, account: int, then: Callable[[], None]) -> None: ...


# A message costs one token of the session's rate, about what a new order or a
# ping costs the server (3-6.5 µs of its CPU); a request that goes through more
# costs more, in the same coin, so the rate bounds a session's share of the
# server whatever it asks (perf/request_costs.py measures each): an `orders`
# reply one token for each 4 orders it lists (1.6 µs each) and, of one symbol,
# each 128 of the account's open orders it skips (33-50 ns each); a
# `mass_cancel` of one symbol one for each 512 of the session's orders it
# skips (10 ns each); a `book_snapshot` one for each 32 levels (0.2 µs each).
ORDERS_PER_TOKEN = 4
ORDERS_SKIPPED_PER_TOKEN = 128
MASS_CANCEL_SKIPPED_PER_TOKEN = 512
LEVELS_PER_TOKEN = 32
# What `rate_limited` adds to "over N messages a second": why a session that
# sent fewer may still be over.
_WORTH = " (or their worth: a request that goes through many orders or levels counts as more)"


class Requests:
    """The server's ``IntakeEvents``: what the Intake hands to Python."""

    def __init__(self, server: RequestHost) -> None:
        self.server = server
        # A client may send refused requests as fast as its rate allows (one
        # over its rate, as fast as the wire goes), and orders over its
        # open-order limit: each still gets its error or reject, the log a
        # line a second at most for each code.
        self._error_lines = Throttle()
        # So do logins refused before their secret is checked, which cost
        # the server no check (a line a second for each code and reason).
        self._refused_login_lines = Throttle()

    def request(self, session: Session, message: Any) -> None:
        """Carry out a decoded message that the Intake gave back: one that is
        not a per-order request, or not a request at all."""
        try:
            try:
                req = parse_message(message)
            except RequestError as exc:
                # A message that is not a request spends a token too (as in the Intake).
                if not session.link.take_token():
                    raise self._over_rate_error(exc.req_id) from None
                raise
            if type(req) in _PER_ORDER:
                # The Intake carries out every one it is given.
                raise AssertionError(f"the Intake gave back a {type(req).__name__}")
            if not session.link.take_token():
                raise self._over_rate_error(req.req_id)
            if type(req) is Ping:
                session.reply({"type": "pong", "req_id": req.req_id})
            elif type(req) is Login:
                self.login(session, req)
            elif type(req) is MassCancel:
                # An account's needs no wait: the engine takes what came before it.
                if req.account is not None or req.all_accounts or self.server.settle(session):
                    self.mass_cancel(session, req)
            elif type(req) is Subscribe:
                self.subscribe(session, req)
            elif type(req) is Unsubscribe:
                self.unsubscribe(session, req)
            elif type(req) is Snapshot:
                self.snapshot(session, req)
            elif type(req) is SetTradingState:
                self.set_trading_state(session, req)
            elif type(req) is Status:
                session.reply({"type": "status", "req_id": req.req_id, **self.server.status()})
            elif type(req) is Orders:
                if self.server.settle(session):
                    engine = self.server.engine
                    reply, skipped = orders_reply(self.server.order_status, self._account(session, req.req_id), req,
                                                  engine.instrument_ids, engine.symbols)
                    session.link.spend(len(reply["orders"]) / ORDERS_PER_TOKEN + skipped / ORDERS_SKIPPED_PER_TOKEN)
                    session.reply(reply)
            elif type(req) is SetMmp or type(req) is ResetMmp:
                self.mmp(session, req)
            elif type(req) is CancelAllAfter:
                self.cancel_all_after(session, req)
            elif type(req) is OrderQuery:
                if self.server.settle(session):
                    session.reply(order_status_reply(self.server.order_status, self._account(session, req.req_id),
                                                     req, self.server.engine.symbols))
        except RequestError as exc:
            self._request_error(session, exc)

    # ---- IntakeEvents ------------------------------------------------------

    def undecodable(self, session: Session, error: ValueError) -> None:
        self._request_error(session, undecodable(error))

    def refused(self, session: Session, req_id: Any, code: str, message: str) -> None:
        self._request_error(session, RequestError(code, message, req_id))

    def rejected(self, session: Session, req_id: Any, code: str, message: str, client_order_id: str | None,
                 order_id: int | None, limit: bool) -> None:
        if limit and (held := self._error_lines.allow(code)) is not None:
            log.info("order_limit", extra=fields(sid=session.sid, account=session.account, code=code,
                                                 held_back=held))
        session.reply({"type": "reject", "req_id": req_id, "code": code, "message": message,
                       "client_order_id": client_order_id, "order_id": order_id, "seq": None})

    def over_rate(self, session: Session, req_id: Any) -> None:
        self._request_error(session, self._over_rate_error(req_id))

    # ---- helpers -----------------------------------------------------------

    def _request_error(self, session: Session, exc: RequestError) -> None:
        if (held := self._error_lines.allow(exc.code)) is not None:
            log.warning("request_error", extra=fields(sid=session.sid, code=exc.code, message=str(exc),
                                                      held_back=held))
        session.error(exc.code, str(exc), exc.req_id, exc.extra)

    def _over_rate_error(self, req_id: Any) -> RequestError:
        rate = self.server.config.limits.rate
        return RequestError("rate_limited", f"over {rate:g} messages a second{_WORTH}", req_id)

    @staticmethod
    def _account(session: Session, req_id: Any) -> int:
        account = session.account
        if account is None:
            raise RequestError("not_logged_in", "log in first", req_id)
        return account

    def _admin(self, session: Session, req_id: Any, what: str) -> None:
        """Admin commands need an admin account when the server has accounts."""
        self._account(session, req_id)
        if self.server.config.auth_required and not session.link.admin:
            raise RequestError("not_admin", f"only an admin account may {what}", req_id)

    # ---- requests ----------------------------------------------------------

    def login(self, session: Session, req: Login) -> None:
        if session.account is not None:
            raise RequestError("already_logged_in", f"this session is logged in as account {session.account}",
                               req.req_id)
        cluster = self.server.cluster
        if cluster is not None and not cluster.leading:
            leader = cluster.leader_address()
            raise RequestError("not_leader",
                               f"node {cluster.cluster.node} does not lead shard {cluster.cluster.shard}; "
                               + (f"its leader is at {leader}" if leader else "it has no leader right now: try again"),
                               req.req_id, {"leader": leader})
        if cluster is not None and self.server.ledger.catch_up_seq:
            # Taking the lead: until the answers of its log are routed, an
            # order id is not yet known to be another session's (Ledger.catch_up).
            raise RequestError("not_leader", f"node {cluster.cluster.node} is taking the lead of shard "
                               f"{cluster.cluster.shard}: try again", req.req_id, {"leader": None})
        granted = False  # an administrator's account
        if self.server.config.auth_required:
            try:
                granted = self._authenticate(session, req)
            except RequestError as exc:
                # Logged already, as what it is (login_failed, or a refusal's line): no request_error line.
                session.error(exc.code, str(exc), exc.req_id)
                return
            if session.closed:
                return  # closed while its secret was checked: nothing to log in
        # Without accounts every session may make the admin requests (see _admin).
        admin = granted or not self.server.config.auth_required
        session.link.login(req.account, granted)
        self.server.account_sessions_changed(req.account)
        session.cancel_on_disconnect = req.cancel_on_disconnect
        claimed = self.server.claim_orders(session)
        log.info("login", extra=fields(sid=session.sid, account=req.account, admin=admin, claimed_orders=claimed))
        session.reply(
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

    def _authenticate(self, session: Session, req: Login) -> bool:
        """Check a login against the configured accounts; whether the account
        is an admin, or a RequestError. The secret is checked off the event
        loop (this greenlet waits); an unknown account or a missing secret is
        checked against a dummy, so every failure costs the same and reads
        the same."""
        server, host = self.server, login_source(session.peer.rpartition(":")[0])
        if server.login_failures.full(host):
            raise self._login_refused(session, req, "login_throttled", "failures",
                                      f"too many failed logins from {host}; try again later")
        entry = server.config.account(req.account)
        if entry is not None and entry.secret is None:
            return entry.admin  # listed without a secret: nothing to check, any will do
        if server.host_logins.full(host):
            raise self._login_refused(session, req, "login_throttled", "logins",
                                      f"too many logins from {host}; try again later")
        checks = server.login_checks
        if checks.busy:
            raise self._login_refused(session, req, "login_busy", "pending",
                                      f"{checks.max_pending} logins are being checked; try again shortly")
        server.host_logins.add(host)
        stored = entry.secret if entry is not None and req.secret is not None else None
        matched = checks.verify(stored or checks.dummy, req.secret or "")
        if matched and entry is not None and stored is not None:
            return entry.admin
        server.login_failures.add(host)
        log.warning("login_failed", extra=fields(sid=session.sid, peer=session.peer, account=req.account))
        raise RequestError("auth_failed", "unknown account or wrong secret", req.req_id)

    def _login_refused(self, session: Session, req: Login, code: str, reason: str, message: str) -> RequestError:
        """Log a login refused before its secret is checked (a line a second
        at most for each code and reason); the error for it."""
        if (held := self._refused_login_lines.allow((code, reason))) is not None:
            log.warning(code, extra=fields(sid=session.sid, peer=session.peer, account=req.account, reason=reason,
                                           held_back=held))
        return RequestError(code, message, req.req_id)

    def mass_cancel(self, session: Session, req: MassCancel) -> None:
        """The session's own orders: a cancel each, of the orders it holds
        once its earlier requests are answered. An account's (or every
        account's): one CANCEL_ALL, which the engine carries out on every
        order of the account open when it comes to it, those of requests
        read before this one but not yet answered too."""
        own_account = self._account(session, req.req_id)
        if req.all_accounts or (req.account is not None and req.account != own_account):
            self._admin(session, req.req_id, "cancel the orders of other accounts")
        inst = None
        if req.symbol is not None:
            inst = self.server.engine.instrument_ids.get(req.symbol)
            if inst is None:
                raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        if req.account is None and not req.all_accounts:
            self._cancel_each(session, req.req_id, inst)
            return
        if not self.server.has_orders(req.account):  # nothing to cancel: no command, nothing journaled
            session.reply({"type": "mass_cancelled", "req_id": req.req_id, "count": 0, "seq": None})
            return
        state = MassCancelState(req.req_id, 1, per_order=False)
        flags = (lib.ENG_CMD_F_ALL_INSTRUMENTS if inst is None else 0) | (
            lib.ENG_CMD_F_ALL_ACCOUNTS if req.all_accounts else 0)
        self.server.commands.add(lib.ENG_CMD_CANCEL_ALL, session.link.tag("mass_cancel", req.req_id, state),
                                 account=req.account or 0, flags=flags, instrument=inst or 0)

    def _cancel_each(self, session: Session, req_id: Any, inst: int | None) -> None:
        targets = session.link.order_ids(inst)
        session.link.spend((session.link.order_count - len(targets)) / MASS_CANCEL_SKIPPED_PER_TOKEN)
        if not targets:
            session.reply({"type": "mass_cancelled", "req_id": req_id, "count": 0, "seq": None})
            return
        state = MassCancelState(req_id, len(targets), per_order=True)
        for oid in targets:
            self.server.commands.add(lib.ENG_CMD_CANCEL, session.link.tag("mass_cancel", req_id, state),
                                     flags=lib.ENG_CMD_F_ANY_ACCOUNT, order_id=oid)

    def subscribe(self, session: Session, req: Subscribe) -> None:
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        reply = self.server.marketdata.subscribe(session, inst, req.req_id)
        session.link.spend((len(reply["bids"]) + len(reply["asks"])) / LEVELS_PER_TOKEN)
        session.reply(reply)

    def unsubscribe(self, session: Session, req: Unsubscribe) -> None:
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        if not self.server.marketdata.unsubscribe(session, inst):
            raise RequestError("not_subscribed", f"not subscribed to {shown(req.symbol)}", req.req_id)
        session.reply({"type": "unsubscribed", "req_id": req.req_id, "symbol": req.symbol})

    def snapshot(self, session: Session, req: Snapshot) -> None:
        self._admin(session, req.req_id, "ask for a snapshot")
        if not self.server.engine.journaling and not self.server.engine.replicating:
            raise RequestError("no_data_dir", "the server runs without a data directory: nothing to snapshot to",
                               req.req_id)
        self.server.commands.add(lib.RUNNER_CTL_SNAPSHOT, session.link.tag("snapshot", req.req_id))

    @staticmethod
    def _changed(session: Session, event: str, **kv: object) -> None:
        """A setting a session changed (its market-maker protection, its
        dead-man switch, an instrument's trading state): an info line,
        session.CHANGE_LINES a second at most for each kind of change a session
        makes, with how many were held back before it (a client may make
        them as fast as its rate allows; the journal keeps every engine
        command)."""
        if (held := session.change_lines.allow(event)) is not None:
            log.info(event, extra=fields(sid=session.sid, **kv, held_back=held))

    def mmp(self, session: Session, req: SetMmp | ResetMmp) -> None:
        """Set or reset the account's market-maker protection: a sequenced
        command; the engine's MMP event is the reply (Dispatcher.mmp). The
        window is in the commands' ts units, which the server stamps in ns."""
        account = self._account(session, req.req_id)
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        tag = session.link.tag("mmp", req.req_id)
        if type(req) is SetMmp:
            self._changed(session, "set_mmp", account=account, symbol=req.symbol, qty_limit=req.qty_limit,
                          window_ms=req.window_ms)
            self.server.commands.add(lib.ENG_CMD_SET_MMP, tag, instrument=inst, account=account,
                                     qty=req.qty_limit, price=req.window_ms * 1_000_000)
        else:
            self.server.commands.add(lib.ENG_CMD_RESET_MMP, tag, instrument=inst, account=account)

    def cancel_all_after(self, session: Session, req: CancelAllAfter) -> None:
        account = self._account(session, req.req_id)
        switches = self.server.dead_man
        before = switches.in_table(account)
        if (before is None and req.seconds and self.server.keeps_switches
                and switches.table_size() >= MAX_KEPT_SWITCHES):
            raise RequestError("too_many_switches", f"{MAX_KEPT_SWITCHES} accounts have a dead-man switch armed, "
                               "the most that are kept", req.req_id)
        # Renewing the switch as it is, its everyday use (as often as a client
        # likes), is a debug line; arming, disarming or new seconds are info.
        unchanged = switches.seconds(account) == (req.seconds or None)
        deadline = switches.arm(account, req.seconds)
        if unchanged:
            log.debug("cancel_all_after", extra=fields(sid=session.sid, account=account, seconds=req.seconds))
        else:
            self._changed(session, "cancel_all_after", account=account, seconds=req.seconds)
        reply = {"type": "cancel_all_after", "req_id": req.req_id, "seconds": req.seconds,
                 "armed": deadline is not None, "deadline": deadline}
        # In a cluster, once the shard's log has the table as it is now (a new leader arms its switches
        # again); a renewal, or an arming of a switch whose cancel-all is under way, may leave it as it was.
        if switches.in_table(account) == before:
            self.server.switch_settled(account, lambda: session.reply(reply))
        else:
            self.server.switch_changed(account, lambda: session.reply(reply))

    def set_trading_state(self, session: Session, req: SetTradingState) -> None:
        self._admin(session, req.req_id, "halt or resume an instrument")
        inst = self.server.engine.instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
        state = lib.ENG_STATE_HALTED if req.halt else lib.ENG_STATE_OPEN
        self._changed(session, "trading_state", account=session.account, symbol=req.symbol,
                      state="halted" if req.halt else "open")
        self.server.commands.add(lib.ENG_CMD_SET_STATE, session.link.tag("trading_state", req.req_id),
                                 instrument=inst, account=session.account, qty=state)


class MassCancelState:
    """Counts the answers to a mass cancel, to reply once they are all in:
    its parts are a CANCEL per order (`per_order`: each cancel counts one)
    or one CANCEL_ALL (the engine's MASS_CANCELLED counts them; `refused`,
    the (code, message) of the engine's refusal). `seq`: the engine's seq of
    the last part answered so far."""

    __slots__ = ("req_id", "remaining", "cancelled", "per_order", "refused", "seq")

    def __init__(self, req_id: Any, remaining: int, *, per_order: bool) -> None:
        self.req_id = req_id
        self.remaining = remaining
        self.cancelled = 0
        self.per_order = per_order
        self.refused: tuple[str, str] | None = None
        self.seq = 0


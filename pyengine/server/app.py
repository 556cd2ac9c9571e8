"""The server: listener, sessions, the command queue, the dispatcher, shutdown.

Threads: the gevent hub runs on the main OS thread with one reader and one
writer greenlet per connection, the dispatcher greenlet and a stats greenlet
(and with a metrics port the endpoint's, metrics.py; with an http port the
web view's, webview.py);
the engine runs on its own OS thread (``EngineThread``), login secrets are
checked on a few threads of their own (``LoginChecks``). Commands from all
sessions go through one ``CommandQueue`` into the engine thread's input ring
in batches; the dispatcher brings the events back.

Shutdown, on SIGINT/SIGTERM or ``stop()``: stop accepting, close every
session (each writer sends what is queued, with a deadline), let the engine
thread finish the commands it has, drain its events, then free it.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

import orjson

from .._ffi import lib
from .._keepalive import give_up_after, keep_alive, unacknowledged_for
from .._server import Intake, Ledger, OrderStatus, Poller
from ..errors import EngineError
from ..log import Throttle, fields
from .config import ServerConfig, check_secret, unmatchable_secret
from .dispatch import Dispatcher, JournalFailed
from .commands import CommandQueue
from .engine_thread import EngineThread, instrument_spec
from .marketdata import MarketData
from .limits import HostWindow, LoginChecks, OrderLimits
from .dead_man import DeadManSwitches
from .shared_switches import SharedSwitches
from .switch_file import SwitchFile, SwitchWriter
from .requests import Requests
from .recovered_status import rebuild_order_status, seed_from_books
from .unclaimed import UnclaimedOrders
from .session import HOLD, Session
from .settle import Settling
from .stats import stats_loop
from .latency_trace import CollectorPauses, log_breakdown, start_trace
from .listen import bind
from .descriptors import reserve_descriptors
from .metrics import MAX_CONNECTIONS as METRICS_CONNECTIONS, metrics_server, request_type
from .webview import MAX_CONNECTIONS as WEB_CONNECTIONS, WebView

if TYPE_CHECKING:
    from .cluster_node import ClusterNode

__all__ = ["Server", "STOP_SIGNALS"]

log = logging.getLogger("pyengine.server")

_SNDBUF = 256 * 1024  # bytes; the kernel doubles it for its own bookkeeping
# Each stops the server for good. A hangup (the terminal it was started from
# closed) too, unless the server was started to ignore it (nohup): an ignored
# SIGHUP stays ignored.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM} | (
    {signal.SIGHUP} if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL else set()))


def _cluster_node(config: ServerConfig) -> ClusterNode:
    """Cluster mode's part of the server; its modules need the cluster extra."""
    from ..cluster.localnats import CLUSTER_EXTRA  # needs nothing of the extra

    try:
        from .cluster_node import ClusterNode
    except ImportError as exc:
        raise EngineError(f"cluster mode needs the cluster extra ({CLUSTER_EXTRA}): {exc}") from None
    assert config.cluster is not None
    return ClusterNode(config.cluster, config.data_dir)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        if config.cluster is not None:
            # A node serves its own shard's instruments alone.
            mine = set(config.cluster.shard_symbols([i.symbol for i in config.instruments]))
            config = dataclasses.replace(config, instruments=tuple(i for i in config.instruments if i.symbol in mine))
        self.config = config
        self.hub = gevent.get_hub()
        self.cluster: ClusterNode | None = None
        self.rejoin_reason: str | None = None  # set when a cluster node must start again as a follower
        self._told_to_stop = False  # by a signal: it does not start again
        self._serving = False  # serve_forever has started it
        # Before a file is opened: room for every connection it may hold.
        reserve_descriptors(config.max_connections
                            + (METRICS_CONNECTIONS if config.metrics_port is not None else 0)
                            + (WEB_CONNECTIONS if config.http_port is not None else 0))
        # The port first: a port in use fails before recovery and the engine thread.
        self._listener = self._bind()
        try:
            if config.cluster is not None:
                self.cluster = _cluster_node(config)
                self.engine = EngineThread(config, replica=self.cluster.prepare(
                    [instrument_spec(i) for i in config.instruments]))
            else:
                self.engine = EngineThread(config)
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            self._listener.close()
            raise
        self.ledger = Ledger()
        self.commands = CommandQueue(self.engine, self.ledger)
        self.trace = start_trace(config.trace_latency, self.ledger, self.engine)
        self.pauses = CollectorPauses() if self.trace is not None else None
        self.order_status = OrderStatus(keep=config.finished_orders)
        self.marketdata = MarketData(self.engine.symbols)
        self.unclaimed = UnclaimedOrders()
        self.limits = OrderLimits(config.instruments, config.limits)
        self.login_failures = HostWindow(config.limits.login_failures, config.limits.login_window)
        self.host_logins = HostWindow(config.limits.host_logins, config.limits.host_login_window)
        self.login_checks = LoginChecks(config.login_workers, config.max_pending_logins,
                                        unmatchable_secret(a.secret for a in config.accounts), check_secret)
        # What the engine holds now, read before its thread runs (cluster mode:
        # a leader sets them all as it takes the lead; the log may change them).
        self._engine_limits = self.engine.order_limits() if self.cluster is None else None
        if self.engine.recovery is not None or self.engine.seq:
            # The engine is not running yet: read the recovered books directly.
            self.ledger.known_order_id = self.engine.last_order_id  # ids a client may have been told
            recovered = self.engine.open_orders()
            self.unclaimed = UnclaimedOrders(recovered)
            for _, _, account, _ in recovered:
                self.ledger.count_open(account, 1)
            self._recover_order_status(config)
            for inst, state in enumerate(self.engine.trading_states()):
                self.marketdata.halted[inst] = state == lib.ENG_STATE_HALTED
            for inst in range(len(self.engine.symbols)):
                for side in (lib.ENG_BUY, lib.ENG_SELL):
                    for price, total, count in self.engine.book_levels(inst, side):
                        self.marketdata.level(inst, side, price, total, count)
        if not self.config.data_dir and self.cluster is None:
            log.warning("no_journal", extra=fields(
                detail="no data directory: acknowledged orders live in memory only (use --data-dir)"))
        self.sessions: dict[int, Session] = {}
        self.settling = Settling()
        self.dispatcher = Dispatcher(self)
        self.dead_man = DeadManSwitches(self._dead_man_fired)
        self.shared_switches = SharedSwitches(self.dead_man, self.hub.loop.run_callback, self._share_switches)
        # A single server with a data directory keeps its switches there: a start after a crash arms them again.
        self.switch_file = (SwitchFile(config.data_dir, sync=config.fsync != "off")
                            if config.data_dir is not None and self.cluster is None else None)
        self._kept_switches = self.switch_file.load() if self.switch_file is not None else {}
        self._switch_writer = (SwitchWriter(self.switch_file, self.hub.threadpool.apply, self._is_stopping,
                                            self._switches_failed) if self.switch_file is not None else None)
        self.requests = Requests(self)
        self.intake = Intake(
            ledger=self.ledger, commands=self.commands.buffer, events=self.requests,
            instruments=self.engine.instrument_ids, max_open=self.limits.max_open_orders, loads=orjson.loads,
            turn_after=HOLD,
        )
        self.poller = Poller(self.intake, self)
        self._poll_watcher: Any = None  # start()'s: the hub's watcher of the Poller
        self._spin_watcher: Any = None  # start()'s with server_spin_us: the idle watcher that keeps the loop polling
        self._flush_wanted = Event()
        self._turn_failures = Throttle()  # PollerEvents.turn_failed's log lines
        self._flush_failures = Throttle()  # the flusher's
        self._refused_lines = Throttle(lines=10)  # connections refused, too many
        self._flush_scheduled = False
        self.closed_sessions = 0  # closed sessions still in `sessions`
        self._session_sockets = 0  # client sockets of sessions, open until closed (at most max_connections)
        self._next_sid = 0
        self._greenlets: list[gevent.Greenlet[..., Any]] = []
        self.stopping = False
        self.failed = False
        self.stopped = Event()
        self.address: tuple[str, int] | None = None
        self.requests_by_type: dict[str, int] = {}  # the requests Python carries out (metrics.py)
        self._metrics: WSGIServer | None = None
        self._web: WebView | None = None
        if config.metrics_port is not None or config.http_port is not None:
            try:
                if config.metrics_port is not None:
                    self._metrics = metrics_server(self, config.metrics_host, config.metrics_port)
                if config.http_port is not None:
                    self._web = WebView(self, config.http_host, config.http_port)
            except OSError:
                if self._metrics is not None:
                    self._metrics.close()
                self.engine.close()
                if self.cluster is not None:
                    self.cluster.close()
                self._listener.close()
                raise

    # ---- lifecycle ---------------------------------------------------------

    def _recover_order_status(self, config: ServerConfig) -> None:
        """The orders' status after a start that recovered a state: from the
        data directory's snapshot and journal (recovered_status.py) when the
        state came from them, else (a cluster's log, or a copy of the state
        that cannot be made or run) from the books alone."""
        recovery = self.engine.recovery
        if recovery is not None and config.data_dir is not None:
            try:
                rebuild_order_status(self.order_status, config.data_dir, recovery,
                                     [instrument_spec(i) for i in config.instruments])
                return
            except (EngineError, MemoryError, OSError) as exc:  # EngineError: RecoveryError, no memory for the copy
                log.warning("order_status_from_books", extra=fields(detail=str(exc)))
                self.order_status = OrderStatus(keep=config.finished_orders)
        seed_from_books(self.order_status, self.engine.resting_orders())

    def start(self) -> None:
        # What exists now (modules, configuration, recovered state) lives as
        # long as the server: keep the collector from walking it every time.
        gc.freeze()
        self.engine.start()
        if self.config.auth_required:
            self.login_checks.start()
        # After the engine's and the login checks' threads exist: they must
        # not inherit this mask.
        self._pin(self.config.server_cpu)
        dispatcher = gevent.spawn(self.dispatcher.run)
        dispatcher.link_exception(self._dispatcher_failed)
        self._greenlets.append(dispatcher)
        self._greenlets.append(gevent.spawn(self._flusher))
        if self.cluster is None:
            self.set_order_limits(self._engine_limits)
        self.start_reading()
        self._listener.start()
        bound = self._listener.address
        assert isinstance(bound, tuple)  # a TCP listener's (host, port, ...)
        host, port = self.address = (bound[0], bound[1])
        if self.cluster is not None:
            assert self.config.cluster is not None  # a cluster node has its configuration
            listening = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 host in brackets
            self.cluster.start(self, self.config.cluster.advertise or listening)
        if self._metrics is not None:
            self._metrics.start()
            bound = self._metrics.address
            assert isinstance(bound, tuple)  # a TCP listener's (host, port, ...)
            log.info("metrics_listening", extra=fields(host=bound[0], port=bound[1], path="/metrics"))
        if self._web is not None:
            self._web.start()
        if self.config.stats_interval > 0:
            self._greenlets.append(gevent.spawn(stats_loop, self))
        if self.config.limits.idle_timeout > 0:
            self._greenlets.append(gevent.spawn(self._idle_loop))
        if self.config.limits.keepalive:
            self._greenlets.append(gevent.spawn(self._unacknowledged_loop))
        if self.pauses is not None:
            self.pauses.start()  # the running server's collections: from here to stop()
        if self._kept_switches:
            self.rearm_switches(self._kept_switches)  # armed when the last process ended without a stop: a crash
        log.info("listening", extra=fields(host=host, port=port,
                                          instruments=",".join(self.engine.symbols),
                                          auth=self.config.auth_required))
        if not self.config.auth_required:
            log.warning("no_auth", extra=fields(
                detail="no [[accounts]] in the configuration: any client may log in as any account, with admin rights"))
        for account in self.config.accounts:
            if account.admin and account.secret is None:
                log.warning("no_auth", extra=fields(account=account.account, detail="an admin account without a "
                                                    "secret: any client may log in as it, with admin rights"))

    def start_reading(self) -> None:
        """Have the hub read the sessions' sockets: a loop turn at a time, in
        C (the Poller), with no greenlet switch (start() does it)."""
        if self._poll_watcher is None:
            self._poll_watcher = self.hub.loop.io(self.poller.fileno(), 1)
            self._poll_watcher.start(self.poller.turn)
            if self.config.server_spin_us:
                # Unreferenced: it never keeps the loop running by itself.
                self._spin_watcher = self.hub.loop.idle(ref=False)
                self.poller.spin_for(self.config.server_spin_us * 1000, self._spin_switch)

    def _spin_switch(self, on: bool) -> None:
        """The Poller's (spin_for): while the idle watcher is active, libev
        polls without sleeping, calling Poller.spin, which yields the CPU
        between polls; a request that comes then needs no wake-up."""
        if on:
            self._spin_watcher.start(self.poller.spin)
        else:
            self._spin_watcher.stop()

    def route_in_turns(self, callback: Callable[[], None] | None) -> None:
        """Have the Poller call `callback` at the end of each of its turns,
        after it pushed the turn's commands and before it writes the output
        (the dispatcher's, while the hub routes); None: no more."""
        self.poller.after_push = callback

    def _bind(self) -> StreamServer:
        """The listening socket, bound; accepting starts with `start`."""
        host, port = self.config.host, self.config.port
        listener = StreamServer((host, port), self._handle)
        bind(listener, f"port {port} on {host} is in use (another server?)")
        listener.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener

    @staticmethod
    def _pin(cpu: int) -> None:
        """Pin the calling (event-loop) thread to `cpu`; -1: leave it."""
        if cpu < 0:
            return
        try:
            os.sched_setaffinity(0, {cpu})  # 0: this thread alone
        except (OSError, ValueError) as exc:
            log.warning("server_cpu_not_pinned", extra=fields(cpu=cpu, error=str(exc)))
            return
        log.info("server_thread_pinned", extra=fields(cpu=cpu))

    def serve_forever(self) -> None:
        # The handlers before start(): whoever runs the server may stop it
        # the moment it logs `listening`, and the signal's default action
        # would end it with nothing flushed. One that comes while it starts
        # stops it once started.
        for sig in STOP_SIGNALS:
            gevent.signal_handler(sig, self._on_signal, sig)
        # Always: SIGUSR1's default action would kill the server.
        gevent.signal_handler(signal.SIGUSR1, self._on_usr1)
        self.start()
        self._serving = True
        if self._told_to_stop:
            gevent.spawn(self.stop)
        self.stopped.wait()

    def _on_usr1(self) -> None:
        if self.trace is not None:
            log_breakdown(self.trace, self.pauses)
        else:
            log.info("trace_off", extra=fields(
                detail="SIGUSR1 logs the latency trace, and this server traces nothing (--trace-latency N)"))

    def _dispatcher_failed(self, greenlet: gevent.Greenlet[..., Any]) -> None:
        """A bug in routing: events could be lost from here on, so the server
        stops (and exits non-zero) rather than serve half-broken."""
        exc = greenlet.exception
        if isinstance(exc, JournalFailed):
            log.error("journal_failed", extra=fields(error=exc.strerror, data_dir=self.config.data_dir))
        else:
            log.error("dispatcher_failed", exc_info=exc)
        self.failed = True
        gevent.spawn(self.stop)

    def node_identity(self) -> dict[str, Any]:
        """Who answers: node, shard and role (a single server: "standalone")."""
        if self.cluster is None:
            return {"node": None, "shard": None, "role": "standalone"}
        c = self.cluster.cluster
        return {"node": c.node, "shard": c.shard, "role": self.cluster.status()["role"]}

    def status(self) -> dict[str, Any]:
        """The ``status`` reply: the node's place in its shard, and how far it is."""
        if self.cluster is not None:
            return self.cluster.status()
        return {"node": None, "shard": None, "role": "standalone", "leader": None,
                "commands": self.engine.stats()["commands"]}

    def rejoin(self, reason: str) -> None:
        """Cluster mode: this node no longer leads (or cannot follow): stop,
        and let the command line start it again as a follower (not when it
        was told to stop: a leader told to stop loses its lease on the way)."""
        if self.rejoin_reason is None and not self._told_to_stop:
            self.rejoin_reason = reason
            gevent.spawn(self.stop)

    def _on_signal(self, sig: int) -> None:
        log.info("signal", extra=fields(signal=signal.Signals(sig).name))
        self._told_to_stop = True
        self.rejoin_reason = None  # it stops for good, whatever stopped it first
        if self._serving:  # else serve_forever stops it once started
            gevent.spawn(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop in stages; safe to call more than once."""
        if self.stopping:
            self.stopped.wait()
            return
        self.stopping = True
        if self.pauses is not None:
            self.pauses.stop()
        self.dead_man.close()
        self._listener.close()
        if self._metrics is not None:
            self._metrics.stop(timeout=1)
        if self._web is not None:
            self._web.stop()
        # Sessions that closed before the stop still cancel their orders,
        # those in flight too (_cancel_on_disconnect and the orphans' cancels
        # stop with it); those the stop closes keep theirs.
        gone = [s for s in self.sessions.values() if s.closed and s.cancel_on_disconnect]
        for session in list(self.sessions.values()):
            session.close("server_stopping")
        deadline = time.monotonic() + timeout
        self._cancel_before_stopping(gone, deadline)
        while any(s.unsent for s in self.sessions.values()) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.commands.flush()
        self.engine.request_stop()
        dispatcher = self._greenlets[0] if self._greenlets else None
        if dispatcher is not None:
            dispatcher.join(timeout=max(0.1, deadline - time.monotonic()))
        gevent.killall(self._greenlets[1:], timeout=1)
        self.login_checks.close()
        if self._poll_watcher is not None:
            self._poll_watcher.close()
        if self._spin_watcher is not None:
            try:
                self.poller.spin_for(0, None)
            except Exception:  # the rest of the stop must happen all the same
                log.exception("spin_stop_failed")
            self._spin_watcher.close()
        self.poller.close()
        if self.cluster is not None:
            self.cluster.close()  # its thread takes from the runner: first
        st = self.engine.stats()
        err = self.engine.close()
        if err and not self.failed:  # the journal's last sync, at the stop, failed after the dispatcher stopped
            log.error("journal_failed", extra=fields(error=os.strerror(err), data_dir=self.config.data_dir))
            self.failed = True
        self._forget_switches()
        if self.trace is not None:
            log_breakdown(self.trace, self.pauses)
        log.info("stopped", extra=fields(commands=st["commands"], events=st["events"]))
        self.stopped.set()

    # ---- sessions ----------------------------------------------------------

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        peer = f"{address[0]}:{address[1]}"
        # Sockets, not sessions: a closed session's socket stays open while
        # its writer drains (5 s at most), and each holds a descriptor.
        if self.stopping or self._session_sockets >= self.config.max_connections:
            self._refuse(sock, peer)
            return
        self._session_sockets += 1
        try:
            self._serve(sock, peer)
        finally:
            sock.close()
            self._session_sockets -= 1

    def _serve(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A fixed kernel send buffer: with autotuning the kernel takes
        # megabytes for a client that does not read before max_unsent counts
        # a byte, and a slow reader holds that much memory for long.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
        if self.config.limits.keepalive:
            # A client machine gone without a word: its reads fail (ETIMEDOUT) and
            # cancel-on-disconnect acts in seconds, not at idle_timeout. Not
            # TCP_USER_TIMEOUT: it ends a client that reads, slower than it is
            # sent to; _unacknowledged_loop finds one gone while data was on its way.
            keep_alive(sock, self.config.limits.keepalive, user_timeout=False)
        self._next_sid += 1
        session = Session(self, sock, peer, self._next_sid)
        self.sessions[session.sid] = session
        self.ledger.attach(session.link)
        log.info("session_open", extra=fields(sid=session.sid, peer=peer))
        writer = gevent.spawn(session.writer)
        try:
            session.reader()
        finally:
            session.close(session.close_reason or "reader_done")
            writer.join(timeout=5)
            writer.kill()
            self.poller.unwatch(session.link)  # the reader has; forget_socket refuses a watched Link
            session.link.forget_socket()  # its number may be another connection's next (_handle closes it)
            log.info("session_close", extra=fields(sid=session.sid, peer=peer, reason=session.close_reason,
                                                   account=session.account))

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        from .protocol import encode

        # Ten lines a second at most: a client can open connections as fast as it likes.
        if (held := self._refused_lines.allow()) is not None:
            log.warning("connection_refused", extra=fields(peer=peer, reason="too_many_connections", held_back=held))
        try:
            sock.sendall(encode({"type": "error", "req_id": None, "code": "too_many_connections",
                                 "message": f"the server serves at most {self.config.max_connections} connections"}))
        except OSError:
            pass
        sock.close()

    @property
    def sessions_opened(self) -> int:
        """Client connections accepted so far (refused ones aside)."""
        return self._next_sid

    def flush_soon(self) -> None:
        """Have the commands and replies queued so far in Python (a reader
        greenlet's request, a login's answer) go out at the end of this turn
        of the event loop, with whatever else the turn queues: one ring
        operation and one engine wake-up for all of them. It runs as a loop
        callback, in the hub: no greenlet switch for it. (The Poller pushes
        and flushes at the end of its own turns, in C.)"""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.hub.loop.run_callback(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        if not self.commands.push():
            self._flush_wanted.set()  # the ring is full: the flusher waits for room
        self.flush_sessions()

    def _flusher(self) -> None:
        """Pushes the commands that did not fit in the input ring at the end
        of a turn, waiting for the engine thread to make room (which a loop
        callback may not). It outlives a flush that fails: without it, the
        commands of a later full ring would wait for traffic that may not
        come."""
        wanted = self._flush_wanted
        while True:
            wanted.wait()
            wanted.clear()
            self.commands.flush()
            try:
                self.flush_sessions()
            except Exception as exc:  # a session's failure, re-raised once every session was told
                held = self._flush_failures.allow(type(exc))
                if held is not None:
                    log.exception("flush_failed", extra=fields(held_back=held))

    def flush_sessions(self) -> None:
        """Write out what every session has queued, in C (Ledger.flush: the
        order-to-ack latencies end there); see to the sessions it reports."""
        try:
            report = self.ledger.flush()
        except MemoryError:
            # Everything was written; only the report was lost, and every
            # session it had to tell is listed again: the next flush tells it.
            log.error("flush_report_failed", extra=fields(error="out of memory"))
            return
        if report is not None:
            self.flushed(report)

    # ---- PollerEvents (seam.py): what the Poller hands to Python -------------

    def handed(self, session: Session, value: Any) -> None:
        session.handed(value)

    def push_short(self) -> None:
        self._flush_wanted.set()  # the ring is full: the flusher waits for room

    def flushed(self, report: list[tuple[Session, int]]) -> None:
        failed: BaseException | None = None
        for session, what in report:
            try:
                session.flushed(what)
            except BaseException as exc:  # each is told all the same: a writer never woken stalls
                failed = failed or exc
        if failed is not None:
            raise failed

    def turn_failed(self, error: BaseException) -> None:
        # A lost flush report (MemoryError) is given again by the next flush.
        held = self._turn_failures.allow(type(error))
        if held is not None:
            log.error("turn_failed", extra=fields(held_back=held), exc_info=error)

    def session_closed(self, session: Session) -> None:
        """A session ended: drop its subscriptions and, with cancel-on-disconnect,
        cancel its open orders (not when the whole server stops: orders
        outlive a planned restart); without, leave them to the account's next
        session."""
        self.closed_sessions += 1
        self.settling.closed(session)
        if session.account is not None:
            self.account_sessions_changed(session.account)
        self.marketdata.drop(session)
        link = session.link
        if not link.order_count:
            return
        if session.cancel_on_disconnect and not self.stopping:
            # In a greenlet of its own: a session can close inside the
            # Router's loop (a send to a slow reader), where queueing
            # commands must not wait for the engine, which may be waiting
            # for that very loop to drain its events.
            gevent.spawn(self._cancel_on_disconnect, session.sid, link.order_ids())
        elif not session.cancel_on_disconnect:
            account = session.account
            assert account is not None  # orders are a logged-in session's
            for oid, (inst, coid) in self.ledger.release(link).items():
                self.unclaimed.add(oid, inst, account, coid)

    def settle(self, session: Session) -> bool:
        """In the session's reader greenlet: wait until every command the
        session sent so far has its answer (pyengine/server/settle.py);
        False if the session closed first."""
        if session.link.pending_count:
            self.flush_soon()  # those still in the command buffer go when the loop turns
        return self.settling.wait(session)

    def request(self, session: Session, message: Any) -> None:
        """A decoded message the Intake gives back: see Requests.request."""
        kind = request_type(message)
        self.requests_by_type[kind] = self.requests_by_type.get(kind, 0) + 1
        self.requests.request(session, message)

    def claim_orders(self, session: Session) -> int:
        """Give a session that just logged in the open orders of its account
        that no session holds (see UnclaimedOrders); returns how many."""
        account = session.account
        orders = self.unclaimed.claim(account) if self.unclaimed and account is not None else {}
        for oid, (inst, coid) in orders.items():
            self.ledger.own(session.link, oid, inst, coid)
        return len(orders)

    def has_orders(self, account: int | None) -> bool:
        """Whether `account` (None: any account) has an order open or on its
        way to the engine, by the Ledger's counts. Every account with one is
        a session's (closed ones not yet forgotten too: their answers may
        still be due) or has orders no session holds."""
        if account is not None:
            accounts = {account}
        else:
            accounts = {s.account for s in self.sessions.values() if s.account is not None}
            accounts.update(self.unclaimed.accounts())
        return any(self.ledger.open(a) or self.ledger.in_flight(a) for a in accounts)

    def _cancel_before_stopping(self, sessions: list[Session], deadline: float) -> None:
        """The stop's cancel-on-disconnect of `sessions`, closed before it:
        once their commands are answered (until `deadline` at most), cancel
        every order they still hold, ahead of the engine thread's stop."""
        if not sessions:
            return
        self.commands.flush()
        while any(s.link.pending_count for s in sessions) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        orders = [oid for s in sessions for oid in s.link.order_ids()]
        for oid in orders:
            self.cancel_order(oid)
        if orders:
            log.info("cancel_on_disconnect", extra=fields(sessions=len(sessions), orders=len(orders)))

    def _cancel_on_disconnect(self, sid: int, orders: list[int]) -> None:
        if self.stopping:  # orders outlive a planned restart
            return
        try:
            for oid in orders:
                self.cancel_order(oid)
            self.commands.flush()
        except Exception:  # in a greenlet of its own: say so, or only gevent would print it
            log.exception("cancel_on_disconnect_failed", extra=fields(sid=sid, orders=len(orders)))
            return
        log.info("cancel_on_disconnect", extra=fields(sid=sid, orders=len(orders)))

    def sessions_of(self, account: int) -> list[Session]:
        """The open sessions logged in as ``account``."""
        return [s for s in self.sessions.values() if not s.closed and s.account == account]

    def account_sessions_changed(self, account: int) -> None:
        """A session logged in as ``account``, or one of them closed: tell
        each of them whether it shares the account (Link.account_shared)."""
        mates = self.sessions_of(account)
        for s in mates:
            s.link.account_shared = len(mates) > 1

    def set_order_limits(self, current: list[tuple[int, int]] | None) -> None:
        """Give each instrument the order limits of the configuration: one
        sequenced SET_LIMITS each (tag 0: no one asked; the dispatcher logs
        ``order_limits_set``), queued before any session's order, for the
        instruments whose `current` limits differ (None: not known, every
        instrument)."""
        for inst, (max_qty, max_notional) in enumerate(self.limits.per_instrument):
            if current is None or current[inst] != (max_qty, max_notional):
                self.commands.add(lib.ENG_CMD_SET_LIMITS, 0, instrument=inst, qty=max_qty, price=max_notional)
        self.commands.flush()

    @property
    def keeps_switches(self) -> bool:
        """Whether the armed switches are kept beyond this process: in the
        shard's log (a cluster), or in the data directory (switch_file.py)."""
        return self.cluster is not None or self.switch_file is not None

    def switch_changed(self, account: int | None, then: Callable[[], None]) -> None:
        """`account`'s dead-man switch changed (None: no one asked): then().
        Where the switches are kept, once they are (a new leader, or a start
        after a crash, arms them again: SharedSwitches); never, if this node
        stops leading or starts to stop first."""
        if not self.keeps_switches:
            then()
        elif not self.stopping:
            self.shared_switches.changed(account, then)

    def switch_settled(self, account: int, then: Callable[[], None]) -> None:
        """then() once the switches are kept with `account`'s as it is: at
        once, unless a change of it is on its way there."""
        if not self.keeps_switches:
            then()
        else:
            self.shared_switches.settled(account, then)

    def _share_switches(self, switches: dict[int, float], stored: Callable[[], None]) -> None:
        """SharedSwitches' way into the shard's log, or the data directory."""
        if self.stopping:
            # Emptied as it stops, its switches are not the ones to keep: the
            # log keeps them for the next leader; a single server's stop
            # empties its file.
            return

        def done() -> None:  # on a turn of its own: what it queues goes out with the turn's end
            stored()
            self.flush_soon()
        if self.cluster is not None:
            self.cluster.share_switches(switches, done)
            return
        assert self._switch_writer is not None
        self._switch_writer.write(switches, done)

    def _is_stopping(self) -> bool:
        return self.stopping

    def _switches_failed(self) -> None:
        """The data directory's switches could not be written: the server stops."""
        self.failed = True
        gevent.spawn(self.stop)

    def _forget_switches(self) -> None:
        """At the end of a planned stop, which disarmed every switch: none
        is kept for the next start (a file that cannot be removed makes the
        stop a failure's); a stop for a failure keeps them."""
        if self._switch_writer is not None and not self._switch_writer.forget(lambda: self.failed):
            self.failed = True

    def rearm_switches(self, switches: dict[int, float]) -> None:
        """A new leader, or a start after a crash: arm the switches kept,
        each for its whole seconds from now."""
        for account, seconds in switches.items():
            self.dead_man.arm(account, seconds)
        if switches:
            log.info("dead_man_rearmed", extra=fields(accounts=len(switches)))

    def switch_ran_out(self, account: int) -> None:
        """The cancel-all of `account`'s switch, which ran out, is done:
        stored (journaled, or in a cluster's log), so the kept switches can
        now say it is gone (until then it stays in them: a new leader, or a
        start after a crash, that found it gone before the cancel-all would
        leave the orders)."""
        if self.dead_man.ran_out(account) and self.keeps_switches and (self.cluster is None or self.cluster.leading):
            self.switch_changed(None, lambda: None)

    def _dead_man_fired(self, account: int) -> None:
        """An account's dead-man switch ran out: the engine cancels all its
        orders, as one sequenced command (tag 0: the cancels go to the owners
        of the orders as usual; no one asked)."""
        self.commands.add(lib.ENG_CMD_CANCEL_ALL, 0, account=account,
                          flags=lib.ENG_CMD_F_DEAD_MAN | lib.ENG_CMD_F_ALL_INSTRUMENTS)
        self.commands.flush()

    def cancel_order(self, order_id: int) -> None:
        """Cancel an order as the server itself (tag 0: no one to reply to)."""
        self.commands.add(lib.ENG_CMD_CANCEL, 0, flags=lib.ENG_CMD_F_ANY_ACCOUNT, order_id=order_id)

    def sweep_closed(self) -> None:
        """Forget closed sessions that have nothing left in flight."""
        done = [sid for sid, s in self.sessions.items() if s.closed and not s.link.busy]
        for sid in done:
            self.ledger.detach(sid)
            del self.sessions[sid]
        self.closed_sessions -= len(done)

    def _unacknowledged_loop(self) -> None:
        """Close sessions whose client acknowledged nothing of what was sent
        to it for as long as keepalive gives a quiet connection (keepalive
        probes only those): its machine or the network is gone."""
        limit = give_up_after(self.config.limits.keepalive)
        while True:
            gevent.sleep(1.0)
            now = time.monotonic()
            # A client that sent anything since acknowledged something with it.
            for session in [s for s in self.sessions.values() if not s.closed and now - s.last_active >= limit]:
                if unacknowledged_for(session.sock) >= limit:
                    session.close("peer_unreachable")

    def _idle_loop(self) -> None:
        """Close sessions that have sent nothing for ``idle_timeout`` seconds."""
        timeout = self.config.limits.idle_timeout
        while True:
            gevent.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if not s.closed and now - s.last_active > timeout]:
                session.error("idle_timeout", f"nothing received for {timeout:g} seconds")
                session.close("idle_timeout")

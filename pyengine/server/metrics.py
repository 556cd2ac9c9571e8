"""The metrics endpoint: Prometheus text format at ``/metrics`` (docs/metrics.md).

Nothing here runs on the per-order path. Every figure is one the server
keeps anyway -- the C Intake's and Router's counts (csrc/binding/meters.c,
``Router.trades`` and ``Router.orders``), the engine thread's runner stats,
the market data's books and sequence numbers, the sessions -- and one custom
collector reads them when the endpoint is scraped. The endpoint is
prometheus-client's WSGI app on gevent's WSGIServer: a greenlet of the hub
like the rest of the server, no thread of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import gevent
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .._server import Ledger, Poller
from .config import ServerConfig
from .dead_man import DeadManSwitches
from .dispatch import Dispatcher
from .engine_thread import EngineThread
from .marketdata import MarketData
from .httpd import StartResponse, WsgiApp, http_server
from .protocol import REQUEST_TYPES
from .session import Session

__all__ = ["MAX_CONNECTIONS", "MIN_SCRAPE_INTERVAL", "MetricsHost", "ScrapePacer", "ServerCollector",
           "metrics_server", "request_type"]

_PATH = "/metrics"
MAX_CONNECTIONS = 16  # scrapes served at once; more wait to be accepted
# A scrape holds the event loop, which the order port shares, for about
# 2 ms: scrapes one after another with no pause between them (a scraper
# gone wrong, or anyone who can reach the port) would hold it most of the
# time. Paced, they hold it at most some 2% of the time, whoever scrapes.
MIN_SCRAPE_INTERVAL = 0.1  # seconds from one answer made (ScrapePacer) to the next


def request_type(message: Any) -> str:
    """The type a message handed to Python counts under: its own when the
    protocol knows it, else "other" (the label's values stay few)."""
    typ = message.get("type") if type(message) is dict else None
    return typ if type(typ) is str and typ in REQUEST_TYPES else "other"


class MetricsHost(Protocol):
    """What the collector reads of the server."""

    config: ServerConfig
    engine: EngineThread
    dispatcher: Dispatcher
    ledger: Ledger
    marketdata: MarketData
    sessions: dict[int, Session]
    requests_by_type: dict[str, int]  # the requests Python carries out, by type
    dead_man: DeadManSwitches
    poller: Poller

    @property
    def sessions_opened(self) -> int: ...


class ServerCollector(Collector):
    """The server's figures, read at scrape time."""

    def __init__(self, server: MetricsHost) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server
        meters = s.ledger.meters()
        st = s.engine.stats()
        symbols = s.engine.symbols

        requests = CounterMetricFamily("pyengine_requests", "Requests received, by type", labels=["type"])
        by_type = dict(s.requests_by_type)  # Python's; the Intake's per-order kinds added
        for kind, n in meters["requests"].items():
            by_type[kind] = by_type.get(kind, 0) + n
        for kind, n in sorted(by_type.items()):
            requests.add_metric([kind], n)
        yield requests
        yield CounterMetricFamily("pyengine_acks", "New orders the engine accepted (each acked to its session)",
                                  value=s.dispatcher.orders)
        rejects = CounterMetricFamily("pyengine_rejects", "Rejects, by code (the engine's and the server's)",
                                      labels=["reason"])
        for reason, n in sorted(meters["rejects"].items()):
            rejects.add_metric([reason], n)
        yield rejects
        yield CounterMetricFamily("pyengine_trades", "Trades", value=s.dispatcher.trades)

        open_orders = GaugeMetricFamily("pyengine_open_orders", "Orders resting in the book", labels=["symbol"])
        md_seq = GaugeMetricFamily("pyengine_marketdata_seq", "The last market-data sequence number",
                                   labels=["symbol"])
        for inst, symbol in enumerate(symbols):
            _, bids, asks = s.marketdata.books[inst]
            open_orders.add_metric([symbol], sum(c for _, c in bids.values()) + sum(c for _, c in asks.values()))
            md_seq.add_metric([symbol], s.marketdata.seq[inst])
        yield open_orders
        yield md_seq

        yield GaugeMetricFamily("pyengine_sessions", "Client connections open",
                                value=sum(1 for x in s.sessions.values() if not x.closed))
        yield CounterMetricFamily("pyengine_sessions_opened", "Client connections accepted",
                                  value=s.sessions_opened)

        yield GaugeMetricFamily("pyengine_dead_man_armed", "Accounts whose dead-man switch is armed",
                                value=s.dead_man.armed())
        yield CounterMetricFamily("pyengine_dead_man_fired", "Dead-man switches that ran out (a cancel-all each)",
                                  value=s.dead_man.fired)
        yield CounterMetricFamily("pyengine_mmp_trips", "Market-maker protection trips",
                                  value=s.dispatcher.mmp_trips)

        yield CounterMetricFamily("pyengine_engine_commands", "Commands the engine thread processed",
                                  value=st["commands"])
        yield GaugeMetricFamily("pyengine_engine_seq", "The engine's last sequence number", value=st["seq"])
        rings = GaugeMetricFamily("pyengine_ring_depth", "Records waiting in the engine thread's rings",
                                  labels=["ring"])
        rings.add_metric(["in"], st["in_queued"])
        rings.add_metric(["out"], st["out_queued"])
        yield rings
        if s.config.server_spin_us:
            yield CounterMetricFamily("pyengine_loop_spins", "Polls of the event loop between requests, each yielding "
                                      "the CPU (--server-spin-us)", value=s.poller.spins)
        if s.engine.journaling:
            yield GaugeMetricFamily("pyengine_journal_lag", "Commands sequenced and not yet journaled",
                                    value=max(0, st["seq"] - st["journaled"]))
            yield CounterMetricFamily("pyengine_journal_fsyncs", "The journal's fsyncs", value=st["journal_syncs"])
            yield CounterMetricFamily("pyengine_journal_fsync_seconds", "Time spent in the journal's fsyncs",
                                      value=st["journal_sync_ns"] / 1e9)
            yield CounterMetricFamily("pyengine_snapshot_failures", "Snapshots that could not be taken (out of "
                                      "memory)", value=st["snapshot_failures"])

        counts = meters["latency_counts"]
        buckets, total = [], 0
        for bound, n in zip([*map(floatToGoString, meters["latency_bounds"]), "+Inf"], counts):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily(
            "pyengine_order_ack_latency_seconds",
            "New order to ack: from the frame reaching the server (the socket read's turn) to the ack's write",
            buckets=buckets, sum_value=meters["latency_sum"])


# An answer made: its status, headers and body, and until when it is given again.
_Answer = tuple[str, list[tuple[str, str]], bytes, float]


class ScrapePacer:
    """Makes at most one answer every `interval` seconds, one at a time. A
    request the same as one answered less than `interval` ago (method,
    format and encoding asked for, query) gets that answer again at once;
    any other waits for its turn, on its own connection."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = gevent.sleep) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.turn = Semaphore()
        self.next_at = float("-inf")  # when the next answer may be made
        self.answers: dict[tuple[Any, ...], _Answer] = {}

    def _answered(self, key: tuple[Any, ...]) -> _Answer | None:
        answer = self.answers.get(key)
        return answer if answer is not None and self.clock() < answer[3] else None

    def __call__(self, app: WsgiApp) -> WsgiApp:
        def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            key = tuple(environ.get(k) for k in ("REQUEST_METHOD", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING",
                                                 "QUERY_STRING"))
            answer = self._answered(key)
            if answer is None:
                with self.turn:
                    answer = self._answered(key) or self._make(app, environ, key)
            status, headers, body, _ = answer
            start_response(status, list(headers))  # a copy: the server adds to the list it is given
            return [body]
        return serve

    def _make(self, app: WsgiApp, environ: dict[str, Any], key: tuple[Any, ...]) -> _Answer:
        wait = self.next_at - self.clock()
        if wait > 0:
            self.sleep(wait)
        now = self.clock()
        self.next_at = now + self.interval
        head: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            head[:] = status, headers

        body = b"".join(app(environ, keep))
        self.answers = {k: a for k, a in self.answers.items() if a[3] > now}
        self.answers[key] = answer = (head[0], head[1], body, self.next_at)
        return answer


def _only_metrics(app: WsgiApp) -> WsgiApp:
    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != _PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"the metrics are at /metrics\n"]
        return app(environ, start_response)
    return serve


def metrics_server(server: MetricsHost, host: str, port: int) -> WSGIServer:
    """The endpoint, its socket bound (OSError if it cannot be); serving
    starts with its ``start()``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    paced = ScrapePacer(MIN_SCRAPE_INTERVAL)
    return http_server(host, port, _only_metrics(paced(make_wsgi_app(registry))), MAX_CONNECTIONS,
                       f"metrics port {port} on {host} is in use", table="metrics",
                       allowed_hosts=server.config.metrics_allowed_hosts,
                       request_timeout=server.config.metrics_request_timeout,
                       request_deadline=server.config.metrics_request_deadline)

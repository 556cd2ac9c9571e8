"""The live web view's data: per watched instrument, the state its pages
show, built at most ``rate`` times a second and shared by all of them.

Nothing here runs while no page is open. The first page of an instrument
subscribes the feed to that instrument's market data as one more subscriber
(``MarketData.join``), so its trades reach the feed as the ``trade``
frames every subscriber gets (kept as they are, decoded when the next state
is built), and the instrument's last page unsubscribes it: with no page
open, the per-order path is what it is without the view. The rest of a
state is read where the server keeps it when the state is built: the book
(``MarketData.books``, which the Router keeps for every level event), the
dispatcher's counts, the engine thread's statistics, the sessions.

A state is one JSON object (``InstrumentView.state``): the instrument, its
top ``DEPTH`` levels each side, its last ``TRADES_KEPT`` trades, a price
chart of one point a second, and the server's figures. Each page keeps only
the newest state it has not sent (``Watcher``): a slow page skips states,
it never queues them, and one that sends nothing in a while gets a
keep-alive so that a page that has gone is noticed.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Any, Protocol

import gevent
import orjson
from gevent.event import Event

from .dispatch import Dispatcher
from .engine_thread import EngineThread
from .marketdata import MarketData
from .session import Session

__all__ = ["DEPTH", "TRADES_KEPT", "CHART_POINTS", "WebFeedHost", "Watcher", "InstrumentView", "WebFeed"]

DEPTH = 20  # price levels shown each side
TRADES_KEPT = 50  # the last trades a page shows
CHART_POINTS = 300  # one a second: five minutes of prices
_RATE_WINDOW = 1.0  # seconds the figures' rates are measured over
_TRADE_FRAME = b'{"type":"trade"'  # how protocol.encode starts a trade's frame, after its 4-byte length

Level = tuple[int, int, int]  # price, total quantity, order count


class WebFeedHost(Protocol):
    """What the feed reads of the server."""

    engine: EngineThread
    dispatcher: Dispatcher
    marketdata: MarketData
    sessions: dict[int, Session]

    @property
    def sessions_opened(self) -> int: ...


class Watcher:
    """One open page: the newest state it has not sent yet."""

    def __init__(self, inst: int) -> None:
        self.inst = inst
        self.closed = False
        self._state: bytes | None = None
        self._ready = Event()

    def offer(self, state: bytes) -> None:
        """Replace the unsent state, if any, by `state`."""
        self._state = state
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def next(self, timeout: float) -> bytes | None:
        """The newest state once there is one (None: none came within
        `timeout` seconds, or the watcher is closed)."""
        self._ready.wait(timeout)
        self._ready.clear()
        state, self._state = self._state, None
        return None if self.closed else state


class InstrumentView:
    """One instrument's trades and price chart, as seen while watched; a
    market-data subscriber of that instrument (``FrameSink``) meanwhile."""

    def __init__(self, inst: int) -> None:
        self.inst = inst
        self.watchers: set[Watcher] = set()
        self.unread: list[bytes] = []  # trade frames not yet read (read_trades)
        # (trade id, price, qty, aggressor side, time in ms), the newest last.
        self.trades: deque[tuple[int, int, int, str, int]] = deque(maxlen=TRADES_KEPT)
        # (second in ms, last price, low, high), the newest last.
        self.chart: deque[list[int]] = deque(maxlen=CHART_POINTS)
        self.last_sent = b""

    def send(self, frame: bytes) -> None:
        """A market-data frame (FrameSink), in the dispatcher's turn: a
        trade's is kept for the next state to read, a book update's
        ignored (the state reads the book itself)."""
        if frame.startswith(_TRADE_FRAME, 4):
            self.unread.append(frame)

    def read_trades(self, now: float) -> None:
        """Take in the trades that came since the last call, as of `now`
        (decoding them here keeps the cost out of the dispatcher's turn,
        where the acks of the batch wait to be written); the chart keeps
        the seconds of the last five minutes only, a quiet market's too."""
        ms, second = int(now * 1000), int(now) * 1000
        chart = self.chart
        while chart and chart[0][0] <= second - CHART_POINTS * 1000:
            chart.popleft()
        frames, self.unread = self.unread, []
        if not frames:
            return
        if not chart or chart[-1][0] != second:
            price = orjson.loads(frames[0][4:])["price"]
            chart.append([second, price, price, price])
        point = chart[-1]
        for frame in frames:
            trade = orjson.loads(frame[4:])
            price = trade["price"]
            self.trades.append((trade["trade_id"], price, trade["qty"], trade["aggressor_side"], ms))
            point[1] = price
            point[2] = min(point[2], price)
            point[3] = max(point[3], price)

    def state(self, symbols: list[str], marketdata: MarketData, figures: dict[str, int]) -> bytes:
        """What its pages show now, as JSON."""
        self.read_trades(time.time())
        _, bids, asks = marketdata.books[self.inst]
        return orjson.dumps({
            "symbol": symbols[self.inst],
            "symbols": symbols,
            "state": "halted" if marketdata.halted[self.inst] else "open",
            "seq": marketdata.seq[self.inst],
            "bids": _top(bids, best_is_high=True),
            "asks": _top(asks, best_is_high=False),
            "open_orders": sum(c for _, c in bids.values()) + sum(c for _, c in asks.values()),
            "trades": list(reversed(self.trades)),
            "chart": list(self.chart),
            "figures": figures,
        })


def _top(side: dict[int, tuple[int, int]], best_is_high: bool) -> list[Level]:
    """The side's best DEPTH levels, the best first."""
    pick = heapq.nlargest if best_is_high else heapq.nsmallest
    return [(price, *side[price]) for price in pick(DEPTH, side)]


class WebFeed:
    """The states of the watched instruments, built by one greenlet that
    runs while any page is open."""

    def __init__(self, server: WebFeedHost, rate: float) -> None:
        self.server = server
        self.period = 1.0 / rate
        self.views = [InstrumentView(i) for i in range(len(server.engine.symbols))]
        self.closed = False
        self._ticker: gevent.Greenlet[..., Any] | None = None
        # (monotonic time, orders, trades, commands), to measure rates over _RATE_WINDOW.
        self._samples: deque[tuple[float, int, int, int]] = deque()

    def watch(self, inst: int) -> Watcher:
        """A new page of instrument `inst`; it gets the state now, then as it changes."""
        view = self.views[inst]
        watcher = Watcher(inst)
        if self.closed:
            watcher.close()
            return watcher
        if not view.watchers:
            self.server.marketdata.join(view, inst)
        view.watchers.add(watcher)
        if not view.last_sent:
            view.last_sent = view.state(self.server.engine.symbols, self.server.marketdata, self.figures())
        # The newest state the others have; the next tick brings what changed since.
        watcher.offer(view.last_sent)
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        """A page has gone; its instrument's last one ends the subscription."""
        watcher.close()
        view = self.views[watcher.inst]
        view.watchers.discard(watcher)
        if not view.watchers:
            self.server.marketdata.unsubscribe(view, view.inst)
            view.last_sent = b""
            view.unread.clear()

    def close(self) -> None:
        """Close every page's stream (the server is stopping)."""
        self.closed = True
        for view in self.views:
            for watcher in list(view.watchers):
                self.unwatch(watcher)
        if self._ticker is not None:
            self._ticker.kill()

    def figures(self) -> dict[str, int]:
        """The server's figures now, with rates over the last second or so."""
        s = self.server
        st = s.engine.stats()
        now, orders, trades, commands = time.monotonic(), s.dispatcher.orders, s.dispatcher.trades, st["commands"]
        samples = self._samples
        samples.append((now, orders, trades, commands))
        while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW:
            samples.popleft()
        t0, orders0, trades0, commands0 = samples[0]
        dt = now - t0
        return {
            "orders": orders,
            "orders_per_s": round((orders - orders0) / dt) if dt > 0 else 0,
            "trades": trades,
            "trades_per_s": round((trades - trades0) / dt) if dt > 0 else 0,
            "commands_per_s": round((commands - commands0) / dt) if dt > 0 else 0,
            "sessions": sum(1 for x in s.sessions.values() if not x.closed),
            "sessions_opened": s.sessions_opened,
            "engine_seq": st["seq"],
            "in_ring": st["in_queued"],
            "out_ring": st["out_queued"],
        }

    def _offer(self, view: InstrumentView, figures: dict[str, int]) -> None:
        """Offer the view's state to its pages if it changed since the last offer."""
        state = view.state(self.server.engine.symbols, self.server.marketdata, figures)
        if state != view.last_sent:
            view.last_sent = state
            for watcher in view.watchers:
                watcher.offer(state)

    def _tick(self) -> None:
        """Offer each watched instrument's state to its pages when it has
        changed, every period, until no page is left."""
        try:
            while any(v.watchers for v in self.views):
                gevent.sleep(self.period)
                figures = self.figures()
                for view in self.views:
                    if view.watchers:
                        self._offer(view, figures)
        finally:
            self._ticker = None
            self._samples.clear()

"""The web view's feed (pyengine/server/webfeed.py) against the server's
real MarketData: it subscribes only while a page watches, takes trades from
the market data's own frames, and hands each page the newest state only."""

from __future__ import annotations

from typing import Any

import orjson

from pyengine.server.marketdata import MarketData
from pyengine.server.webfeed import CHART_POINTS, DEPTH, InstrumentView, WebFeed, Watcher

SYMBOLS = ["ESZ6", "NQZ6"]
BUY, SELL = 1, 2


class Engine:
    symbols = SYMBOLS

    @staticmethod
    def stats() -> dict[str, int]:
        return {"commands": 0, "seq": 0, "in_queued": 0, "out_queued": 0}


class Dispatcher:
    orders = 0
    trades = 0


class Host:
    def __init__(self) -> None:
        self.engine = Engine()
        self.dispatcher = Dispatcher()
        self.marketdata = MarketData(SYMBOLS)
        self.sessions: dict[int, Any] = {}

    @property
    def sessions_opened(self) -> int:
        return 0


def trade(md: MarketData, inst: int, trade_id: int, price: int, qty: int, aggressor: int) -> None:
    """A trade as the Router gathers it for subscribers, then the batch's flush."""
    _, _, _, trades = md.router_tables()
    trades.setdefault(inst, []).append((trade_id, price, qty, aggressor))
    md.flush()


def state(watcher: Watcher) -> dict[str, Any]:
    raw = watcher.next(timeout=30)
    assert raw is not None
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


def test_the_feed_subscribes_while_a_page_watches() -> None:
    host = Host()
    feed = WebFeed(host, rate=50)
    subscribers = host.marketdata.subscribers
    assert subscribers == [set(), set()]
    a, b = feed.watch(0), feed.watch(0)
    assert subscribers == [{feed.views[0]}, set()]
    feed.unwatch(a)
    assert subscribers == [{feed.views[0]}, set()]
    feed.unwatch(b)
    assert subscribers == [set(), set()]
    feed.close()


def test_trades_come_from_the_market_datas_frames() -> None:
    host = Host()
    feed = WebFeed(host, rate=50)
    watcher = feed.watch(1)
    assert state(watcher)["trades"] == []
    trade(host.marketdata, 1, 7, 450_000, 3, BUY)
    trade(host.marketdata, 1, 8, 449_975, 1, SELL)
    trade(host.marketdata, 0, 9, 1, 1, SELL)  # no page watches ESZ6: not gathered at all
    got = state(watcher)
    assert got["symbol"] == "NQZ6"
    assert [t[:4] for t in got["trades"]] == [[8, 449_975, 1, "sell"], [7, 450_000, 3, "buy"]]
    assert [p[1:] for p in got["chart"]] == [[449_975, 449_975, 450_000]]  # read at once: one second's point
    assert not feed.views[0].trades
    feed.close()
    assert watcher.next(timeout=30) is None and watcher.closed


def test_the_chart_holds_the_last_five_minutes_only() -> None:
    host = Host()
    feed = WebFeed(host, rate=50)
    feed.watch(1)
    view = feed.views[1]
    t0 = 1_800_000_000.0
    for k, (at, price) in enumerate([(t0, 450_000), (t0 + 200, 450_025), (t0 + 3 * 3600, 450_050)]):
        trade(host.marketdata, 1, 10 + k, price, 1, BUY)
        view.read_trades(at)
        if k == 1:
            assert [p[:2] for p in view.chart] == [[int(t0) * 1000, 450_000], [int(t0 + 200) * 1000, 450_025]]
    assert [p[:2] for p in view.chart] == [[int(t0 + 3 * 3600) * 1000, 450_050]]  # hours apart: not on one chart
    view.read_trades(t0 + 3 * 3600 + CHART_POINTS - 1)
    assert len(view.chart) == 1
    view.read_trades(t0 + 3 * 3600 + CHART_POINTS)  # no trade for five minutes: nothing to chart
    assert not view.chart
    feed.close()


def test_a_page_gets_the_newest_state_only() -> None:
    watcher = Watcher(0)
    watcher.offer(b"1")
    watcher.offer(b"2")
    assert watcher.next(timeout=30) == b"2"
    watcher.close()
    assert watcher.next(timeout=30) is None


def test_the_ladder_is_the_best_levels_best_first() -> None:
    md = MarketData(SYMBOLS)
    for k in range(DEPTH + 5):
        md.level(0, BUY, 1_000 - k, 10 + k, 1)
        md.level(0, SELL, 2_000 + k, 20 + k, 2)
    md.level(0, BUY, 1_000, 0, 0)  # the best bid gone
    got = orjson.loads(InstrumentView(0).state(SYMBOLS, md, {}))
    assert got["bids"] == [[1_000 - k, 10 + k, 1] for k in range(1, DEPTH + 1)]
    assert got["asks"] == [[2_000 + k, 20 + k, 2] for k in range(DEPTH)]
    assert got["open_orders"] == (DEPTH + 4) * 1 + (DEPTH + 5) * 2

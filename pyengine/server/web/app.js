// pyengine's live web view (docs/webview.md).
//
// The page follows one instrument, the one named after the URL's "#" (the
// server's first when none is). It reads the server's event stream,
// /events?symbol=SYM: every event is the instrument's whole state as JSON
// (pyengine/server/webfeed.py), at most a few a second, and the page is
// drawn anew from each. Everything shown is written as text (textContent),
// never as HTML: symbols come from the server's configuration.
"use strict";

(() => {
  const FIGURES = [
    ["orders_per_s", "orders / s"],
    ["trades_per_s", "trades / s"],
    ["commands_per_s", "commands / s"],
    ["orders", "orders accepted"],
    ["trades", "trades"],
    ["open_orders", "open orders here"],
    ["sessions", "sessions open"],
    ["sessions_opened", "sessions since start"],
    ["engine_seq", "engine seq"],
    ["md_seq", "market data seq"],
    ["in_ring", "input ring depth"],
    ["out_ring", "output ring depth"],
  ];

  const byId = (id) => document.getElementById(id);
  let source = null;
  let shownSymbols = "";
  let lastState = null;

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function setConnection(className, text) {
    const el = byId("connection");
    el.className = className;
    el.textContent = text;
  }

  // The instrument named after the "#"; "" (the server's first) for one
  // that is no valid escape ("#%"), which decodeURIComponent throws on.
  function hashSymbol() {
    try {
      return decodeURIComponent(location.hash.slice(1));
    } catch (e) {
      if (e instanceof URIError) return "";
      throw e;
    }
  }

  function connect() {
    if (source) source.close();
    const symbol = hashSymbol();
    source = new EventSource(symbol ? "events?symbol=" + encodeURIComponent(symbol) : "events");
    setConnection("connecting", "connecting");
    source.onopen = () => setConnection("live", "live");
    source.onerror = () => {
      // The browser tries again by itself unless the server refused the stream.
      setConnection("down", source.readyState === EventSource.CLOSED ? "no such instrument" : "reconnecting");
    };
    source.onmessage = (event) => render(JSON.parse(event.data));
    source.addEventListener("refused", (event) => {
      source.close();
      setConnection("down", "refused: " + event.data);
    });
  }

  function renderSymbols(symbols, current) {
    const key = JSON.stringify(symbols);
    const nav = byId("symbols");
    if (key !== shownSymbols) {
      shownSymbols = key;
      nav.replaceChildren(...symbols.map((symbol) => {
        const a = document.createElement("a");
        a.href = "#" + encodeURIComponent(symbol);
        a.textContent = symbol;
        a.dataset.symbol = symbol;
        return a;
      }));
    }
    for (const a of nav.children) {
      if (a.dataset.symbol === current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  // One ladder row; side "bid" fills the left cells, "ask" the right.
  function ladderRow(side, [price, qty, count], largest) {
    const tr = document.createElement("tr");
    tr.className = side;
    const bid = side === "bid";
    const qtyCell = cell(String(qty), side + "-qty");
    qtyCell.style.setProperty("--depth", (100 * qty / largest).toFixed(1) + "%");
    tr.append(
      cell(bid ? String(count) : "", bid ? "bid-count" : ""),
      bid ? qtyCell : cell("", ""),
      cell(String(price), "price"),
      bid ? cell("", "") : qtyCell,
      cell(bid ? "" : String(count), bid ? "" : "ask-count"),
    );
    return tr;
  }

  function renderLadder(bids, asks) {
    const largest = Math.max(1, ...bids.map((l) => l[1]), ...asks.map((l) => l[1]));
    // Asks above the spread with the best at the bottom, bids below with the best at the top.
    byId("asks").replaceChildren(...asks.slice().reverse().map((l) => ladderRow("ask", l, largest)));
    byId("bids").replaceChildren(...bids.map((l) => ladderRow("bid", l, largest)));
    const spread = bids.length && asks.length ? "spread " + (asks[0][0] - bids[0][0]) : "no two-sided market";
    byId("spread-text").textContent = spread;
  }

  function renderTrades(trades) {
    byId("trades").tBodies[0].replaceChildren(...trades.map(([id, price, qty, side, ms]) => {
      const tr = document.createElement("tr");
      tr.className = side;
      tr.append(
        cell(new Date(ms).toLocaleTimeString([], { hour12: false }), "time"),
        cell(String(id), "trade-id"),
        cell(String(price), "price"),
        cell(String(qty), "qty"),
        cell(side, "side"),
      );
      return tr;
    }));
  }

  function renderFigures(figures) {
    const dl = byId("figures");
    dl.replaceChildren(...FIGURES.map(([key, label]) => {
      const tile = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.dataset.figure = key;
      dd.textContent = String(figures[key]);
      tile.append(dt, dd);
      return tile;
    }));
  }

  // The chart: points are [second in ms, last, low, high].
  function renderChart(points) {
    const canvas = byId("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(document.documentElement);
    ctx.font = "11px " + style.fontFamily;
    ctx.fillStyle = style.getPropertyValue("--muted");
    if (!points.length) {
      ctx.fillText("no trades seen yet", 10, 20);
      return;
    }
    const left = 8, right = width - 70, top = 10, bottom = height - 22;
    let low = Math.min(...points.map((p) => p[2])), high = Math.max(...points.map((p) => p[3]));
    if (low === high) { low -= 1; high += 1; }
    const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1000);
    const x = (t) => left + (right - left) * (t - t0) / (t1 - t0);
    const y = (p) => bottom - (bottom - top) * (p - low) / (high - low);

    ctx.strokeStyle = style.getPropertyValue("--line");
    ctx.beginPath();
    for (const p of [low, (low + high) / 2, high]) {
      ctx.moveTo(left, Math.round(y(p)) + 0.5);
      ctx.lineTo(right, Math.round(y(p)) + 0.5);
      ctx.fillText(String(Math.round(p)), right + 6, y(p) + 4);
    }
    ctx.stroke();
    const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
    ctx.fillText(time(t0), left, height - 6);
    ctx.fillText(time(t1), right - ctx.measureText(time(t1)).width, height - 6);

    ctx.fillStyle = style.getPropertyValue("--bid-bar");
    for (const [t, , lo, hi] of points) {
      ctx.fillRect(x(t) - 1, y(hi), 3, Math.max(1, y(lo) - y(hi)));
    }
    ctx.strokeStyle = style.getPropertyValue("--accent");
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([t, last], i) => (i ? ctx.lineTo(x(t), y(last)) : ctx.moveTo(x(t), y(last))));
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  function render(state) {
    lastState = state;
    document.title = state.symbol + " - pyengine";
    renderSymbols(state.symbols, state.symbol);
    const trading = byId("trading-state");
    trading.textContent = state.state;
    trading.className = state.state;
    renderLadder(state.bids, state.asks);
    renderTrades(state.trades);
    renderFigures({ ...state.figures, open_orders: state.open_orders, md_seq: state.seq });
    renderChart(state.chart);
  }

  window.addEventListener("hashchange", connect);
  window.addEventListener("resize", () => lastState && renderChart(lastState.chart));
  connect();
})();

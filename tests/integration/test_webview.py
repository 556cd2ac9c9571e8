"""The live web view (docs/webview.md) of a real server, in a real browser.

A pyengine-server runs with --http-port; Debian's headless Chromium, driven
by selenium through /usr/bin/chromedriver, loads the page; orders go in over
TCP (pyengine.client). The ladder and the trades the page shows must become
the engine's book (asked of the server over TCP: a subscribe's snapshot) and
the trades the clients were told of. Every wait is on a condition of the
page's DOM. Without the browser the test fails, saying what to install
(tools/run_tests.sh installs it): a skip would hide that it never ran.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from pyengine.client import Client
from pyengine.server.config import ConfigError, config_from_dict
from pyengine.server.process import ServerProcess, ServerStartError
from pyengine.server.webfeed import DEPTH
from pyengine.server.webview import STREAMS_PER_ADDRESS

from .conftest import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30.0  # seconds a DOM condition may take on a busy machine (a state goes out every 1/4 s)

ES = "ESZ6"
ODD = "<i>A&amp;\"'</i>"  # a symbol that is also markup: the page must show it as text
CONFIG = """
[[instruments]]
symbol = "ESZ6"
tick_size = 25
price_band = [100000, 2000000]

[[instruments]]
symbol = "<i>A&amp;\\"'</i>"
"""

Level = list[int]  # price, total quantity, order count


def chromium(*args: str) -> WebDriver:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the web view's test needs Debian's chromium and chromium-driver ({', '.join(missing)} "
                    "missing): apt-get install chromium chromium-driver, or run tools/run_tests.sh, which does")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # --no-sandbox: Chromium's sandbox refuses to run as root, as the tests do in CI.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                *args):
        options.add_argument(arg)
    # The sanitizer stage preloads ASan into Python and the processes it starts: not into the browser.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith(("ASAN_", "UBSAN_"))}
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER), env=env))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def http_port(server: RunningServer) -> int:
    line = server.wait_log("http_listening")
    found = re.search(r"\bport=(\d+)", line)
    assert found, line
    return int(found.group(1))


def open_page(browser: WebDriver, server: RunningServer, symbol: str) -> None:
    browser.get(f"http://127.0.0.1:{http_port(server)}/#{quote(symbol, safe='')}")
    wait_for(browser, lambda: browser.execute_script("return document.title") == f"{symbol} - pyengine",
             f"the page of {symbol}")


def wait_for(browser: WebDriver, condition: Callable[[], bool], what: str) -> None:
    WebDriverWait(browser, WAIT, poll_frequency=0.1).until(lambda _: condition(), f"the page never showed {what}")


def shown_ladder(browser: WebDriver) -> dict[str, list[Level]]:
    """The ladder's rows as the page shows them, the best first each side."""
    rows: dict[str, list[list[str]]] = browser.execute_script("""
        const row = (tr, side) => [".price", `.${side}-qty`, `.${side}-count`].map(
            (c) => tr.querySelector(c).textContent);
        return {
            bids: [...document.querySelectorAll("#bids tr")].map((tr) => row(tr, "bid")),
            asks: [...document.querySelectorAll("#asks tr")].map((tr) => row(tr, "ask")).reverse(),
        };""")
    return {side: [[int(x) for x in r] for r in levels] for side, levels in rows.items()}


def shown_trades(browser: WebDriver) -> list[tuple[int, int, int, str]]:
    rows: list[list[str]] = browser.execute_script("""
        return [...document.querySelectorAll("#trades tbody tr")].map((tr) =>
            [".trade-id", ".price", ".qty", ".side"].map((c) => tr.querySelector(c).textContent));""")
    return [(int(t), int(p), int(q), side) for t, p, q, side in rows]


def shown_figure(browser: WebDriver, name: str) -> str:
    return str(browser.execute_script(f'return document.querySelector("dd[data-figure={name}]")?.textContent'))


def engine_book(server: RunningServer, symbol: str) -> dict[str, list[Level]]:
    """The whole book, as the server tells a TCP client that subscribes."""
    with server.client() as c:
        snap = c.request(c.subscribe(symbol))
    return {"bids": snap["bids"], "asks": snap["asks"]}


def top(book: dict[str, list[Level]]) -> dict[str, list[Level]]:
    """What of `book` the page shows."""
    return {side: levels[:DEPTH] for side, levels in book.items()}


def login(server: RunningServer, account: int) -> Client:
    c = server.client()
    assert c.login(account)["type"] == "logged_in"
    return c


def take(c: Client, side: str, qty: int, price: int) -> list[tuple[int, int, int, str]]:
    """An IOC order; the trades it made, as (trade id, price, qty, side) from its fills."""
    ack = c.request(c.new_order(ES, side, qty, price, tif="ioc"))
    trades = []
    while True:
        m = c.recv(10)
        assert m.get("order_id") == ack["order_id"], m
        if m["type"] == "fill":
            trades.append((m["trade_id"], m["price"], m["qty"], side))
            if m["leaves"] == 0:
                return trades
        else:
            assert (m["type"], m["reason"]) == ("cancelled", "ioc"), m
            return trades


def test_the_page_shows_the_engines_book_and_trades(server_factory: Any, browser: WebDriver) -> None:
    server = server_factory(CONFIG, "--http-port", "0")
    open_page(browser, server, ES)
    wait_for(browser, lambda: browser.find_element("id", "connection").text == "live", "a live stream")
    assert shown_ladder(browser) == {"bids": [], "asks": []}

    with login(server, 1) as maker, login(server, 2) as taker:
        # More levels than the page shows, some with more than one order.
        for k in range(DEPTH + 5):
            for n in range(1 + k % 3):
                maker.request(maker.new_order(ES, "buy", 1 + k + n, 450_000 - 25 * k))
                maker.request(maker.new_order(ES, "sell", 2 + n, 451_000 + 25 * k))
        trades = take(taker, "buy", 9, 451_050)  # sweeps the best asks
        trades += take(taker, "sell", 4, 449_975)
        trades += take(taker, "buy", 1, 452_000)

        book = engine_book(server, ES)
        assert min(len(book["bids"]), len(book["asks"])) > DEPTH and len(trades) >= 6
        wait_for(browser, lambda: shown_ladder(browser) == top(book), "the engine's book")
        newest_first = trades[::-1]
        wait_for(browser, lambda: shown_trades(browser) == newest_first, "the trades the clients were told of")
        wait_for(browser, lambda: shown_figure(browser, "trades") == str(len(trades)), "the trade count")
        open_orders = sum(count for levels in book.values() for _, _, count in levels)
        assert shown_figure(browser, "open_orders") == str(open_orders)

        # Live after the first state too: the best bid cancelled, the ladder moves down.
        best_bid = book["bids"][0][0]
        for order in maker.open_orders(ES):
            if order["side"] == "buy" and order["price"] == best_bid:
                maker.request(maker.cancel(order["order_id"]))
        moved = engine_book(server, ES)
        assert moved["bids"][0][0] < best_bid
        wait_for(browser, lambda: shown_ladder(browser) == top(moved), "the book after a cancel")


def test_symbols_are_shown_as_text(server_factory: Any, browser: WebDriver) -> None:
    server = server_factory(CONFIG, "--http-port", "0")
    open_page(browser, server, ODD)
    tabs = [a.text for a in browser.find_elements("css selector", "#symbols a")]
    assert tabs == [ES, ODD]
    assert browser.find_elements("css selector", "nav i, header i") == []
    with login(server, 1) as c:
        c.request(c.new_order(ODD, "buy", 3, 100))
        wait_for(browser, lambda: shown_ladder(browser) == {"bids": [[100, 3, 1]], "asks": []}, "the order")


def test_a_malformed_fragment_is_ignored(server_factory: Any, browser: WebDriver) -> None:
    # "%" and a cut UTF-8 sequence are no escapes decodeURIComponent takes: the page shows the first instrument,
    # whether it loads with such a fragment or is given one (a hashchange).
    server = server_factory(CONFIG, "--http-port", "0")
    port = http_port(server)
    for fragment, symbol in (("%", ES), (quote(ODD, safe=""), ODD), ("%E0%A4%A", ES)):
        browser.get(f"http://127.0.0.1:{port}/#{fragment}")
        title = f"{symbol} - pyengine"
        wait_for(browser, lambda: browser.execute_script("return document.title") == title,
                 f"the page of {symbol} at #{fragment}")
        wait_for(browser, lambda: browser.find_element("id", "connection").text == "live", "a live stream")


def test_a_page_whose_name_is_rebound_to_the_server_is_refused(server_factory: Any) -> None:
    # The browser resolves rebound.example to this machine, as an attacker's DNS would after serving the name's
    # page (DNS rebinding): that page would read the web view as its own.
    server = server_factory('[http]\nport = 0\nallowed_hosts = ["view.example"]\n')
    port = http_port(server)
    driver = chromium("--host-resolver-rules=MAP rebound.example 127.0.0.1, MAP view.example 127.0.0.1")
    try:
        driver.get(f"http://rebound.example:{port}/")
        assert driver.find_element("tag name", "body").text == (
            "unknown host name: list it in [http] allowed_hosts (or --http-allowed-host)")
        driver.get(f"http://view.example:{port}/")
        wait_for(driver, lambda: driver.find_element("id", "connection").text == "live", "a live stream")
    finally:
        driver.quit()


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_files_and_nothing_else_are_served(server_factory: Any) -> None:
    server = server_factory(None, "--http-port", "0")
    port = http_port(server)
    for path, kind, marker in (("/", "text/html", b"app.js"), ("/app.js", "text/javascript", b"EventSource"),
                               ("/style.css", "text/css", b"--bid")):
        status, headers, body = get(port, path)
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind), path
        assert marker in body and int(headers["Content-Length"]) == len(body)
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert get(port, "/events?symbol=NOPE")[0] == 404
    assert get(port, "/metrics")[0] == 404
    assert get(port, "/web/app.js")[0] == 404
    status, headers, _ = get(port, "/", method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")


def test_a_stream_starts_with_the_state(server_factory: Any) -> None:
    server = server_factory(None, "--http-port", "0")
    with login(server, 1) as c:
        c.request(c.new_order(ES, "sell", 4, 452_000))  # acked: the book has it
        conn = http.client.HTTPConnection("127.0.0.1", http_port(server), timeout=10)
        try:
            conn.request("GET", "/events?symbol=ESZ6")
            r = conn.getresponse()
            assert (r.status, r.headers["Content-Type"]) == (200, "text/event-stream")
            assert r.readline() == b"retry: 2000\n"
            assert r.readline() == b"\n"
            line = r.readline()
        finally:
            conn.close()
    assert line.startswith(b"data: ") and line.endswith(b"\n")
    state = json.loads(line[len("data: "):])
    assert (state["symbol"], state["bids"], state["asks"]) == (ES, [], [[452_000, 4, 1]])


def open_stream(port: int, source: str = "127.0.0.1") -> tuple[http.client.HTTPConnection, bytes]:
    """A page's stream, from the address `source`, and its first line."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))
    conn.request("GET", "/events?symbol=ESZ6")
    r = conn.getresponse()
    assert (r.status, r.headers["Content-Type"]) == (200, "text/event-stream")
    return conn, r.readline()


def test_pages_from_one_address_hold_at_most_their_share_of_the_view(server_factory: Any,
                                                                      browser: WebDriver) -> None:
    server = server_factory(None, "--http-port", "0")
    port = http_port(server)
    streams = [open_stream(port) for _ in range(STREAMS_PER_ADDRESS)]
    try:
        assert all(first == b"retry: 2000\n" for _, first in streams)
        refused, first = open_stream(port)
        refused.close()
        assert first == b"event: refused\n"
        browser.get(f"http://127.0.0.1:{port}/#{ES}")  # a page from the same address is told why it has no stream
        wait_for(browser, lambda: browser.find_element("id", "connection").text
                 == f"refused: {STREAMS_PER_ADDRESS} pages are open from this address already", "the refusal")
        other, first = open_stream(port, source="127.0.0.2")  # another machine's page still gets one
        other.close()
        assert first == b"retry: 2000\n"
        streams.pop()[0].close()
        # The server finds the page gone when a state it writes fails: new
        # states go out as the book changes, until a place is free again.
        with login(server, 1) as c:
            for price in range(440_000, 450_000, 25):
                c.request(c.new_order(ES, "buy", 1, price))
                again, first = open_stream(port)
                again.close()
                if first != b"event: refused\n":
                    break
        assert first == b"retry: 2000\n"
    finally:
        for conn, _ in streams:
            conn.close()


def test_an_http_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"http port {port} on 127.0.0.1 is in use"):
            ServerProcess(["--port", "0", "--engine-cpu", "-1", "--http-port", str(port)],
                          tmp_path / "server.log", timeout=20)


def test_no_web_view_unless_asked(server: RunningServer) -> None:
    assert not any("http_listening" in line for line in server.lines)


@pytest.mark.parametrize(("table", "error"), [
    ({"host": "0.0.0.0"}, "port is required"),
    ({"port": "8080"}, "port must be int"),
    ({"port": -1}, "out of range"),
    ({"port": 8080, "root": "/"}, "unknown key"),
])
def test_bad_http_tables(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config_from_dict({"http": table})


def test_an_http_table() -> None:
    config = config_from_dict({"http": {"port": 8080, "host": "0.0.0.0"}})
    assert (config.http_port, config.http_host) == (8080, "0.0.0.0")
    assert config_from_dict({}).http_port is None

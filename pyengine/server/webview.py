"""The live web view (docs/webview.md): a page of the books, trades and
figures, served over HTTP by the server itself.

Four paths: ``/`` the page, ``/app.js`` and ``/style.css`` its script and
style (the static files of ``pyengine/server/web/``, read once at start),
and ``/events?symbol=SYM`` a stream of server-sent events, one ``data:``
line per state of the instrument (webfeed.py builds them). Server-sent
events need nothing but HTTP: the stream is a WSGI response that yields a
chunk per state, on gevent's WSGIServer -- a greenlet of the hub per page,
like the metrics endpoint's per scrape, and no new dependency (a WebSocket
would need one, for a stream that only ever goes one way).

The page is read-only and shows nothing the market data does not publish
(no accounts, no orders); the script and style come from this server alone
(``Content-Security-Policy``), and the script writes text, never HTML.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs

from ..log import fields
from .config import ServerConfig
from .httpd import StartResponse, http_server
from .webfeed import WebFeed, WebFeedHost

__all__ = ["MAX_CONNECTIONS", "STREAMS_PER_ADDRESS", "UPDATES_PER_SECOND", "WebView", "WebViewHost"]

log = logging.getLogger("pyengine.server")

UPDATES_PER_SECOND = 4.0  # at most, per page
_KEEPALIVE = 15.0  # seconds without a state before a comment line tests that the page is still there
_RETRY_MS = 2000  # how long a page's EventSource waits before connecting again
MAX_CONNECTIONS = 64  # pages and file requests served at once; more wait to be accepted
# A page's stream holds its place for as long as the page is open: pages
# from one address may hold a quarter of them, so that one machine cannot
# take the view from everyone else (a browser opens at most six to a host).
STREAMS_PER_ADDRESS = MAX_CONNECTIONS // 4

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
    # A page loads three small files once, then holds its stream: a
    # connection kept alive for more would only make the server's stop
    # wait for it.
    ("Connection", "close"),
]


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by path, read from the package."""
    web = resources.files("pyengine.server").joinpath("web")
    return {path: (web.joinpath(name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()}


class WebViewHost(WebFeedHost, Protocol):
    """What the web view reads of the server."""

    config: ServerConfig


class WebView:
    """The web view's HTTP server and the feed behind its streams."""

    def __init__(self, server: WebViewHost, host: str, port: int) -> None:
        """Bind the port (OSError if it cannot be); serving starts with ``start()``."""
        self.feed = WebFeed(server, UPDATES_PER_SECOND)
        self.symbols = {symbol: i for i, symbol in enumerate(server.engine.symbols)}
        self.files = _static_files()
        self.streams: dict[str, int] = {}  # the pages' streams open, by their address
        self.http = http_server(host, port, self.app, MAX_CONNECTIONS, f"http port {port} on {host} is in use",
                                table="http", allowed_hosts=server.config.http_allowed_hosts,
                                request_timeout=server.config.http_request_timeout,
                                request_deadline=server.config.http_request_deadline)

    def start(self) -> None:
        self.http.start()
        bound = self.http.address
        assert isinstance(bound, tuple)  # a TCP listener's (host, port, ...)
        log.info("http_listening", extra=fields(host=bound[0], port=bound[1], path="/"))

    def stop(self) -> None:
        """End every page's stream, then stop serving."""
        self.feed.close()
        self.http.stop(timeout=1)

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "the web view only reads\n",
                          [("Allow", "GET, HEAD")])
        if path in self.files:
            body, kind = self.files[path]
            start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))), *_HEADERS])
            return [body]
        if path == "/events":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            symbol = query.get("symbol", [next(iter(self.symbols))])[0]
            inst = self.symbols.get(symbol)
            if inst is None:
                return _plain(start_response, "404 Not Found", "no such instrument\n")
            if method == "HEAD":
                start_response("200 OK", [("Content-Type", "text/event-stream"), *_HEADERS])
                return []
            return self._events(inst, str(environ.get("REMOTE_ADDR")), start_response)
        return _plain(start_response, "404 Not Found", "the web view is at /\n")

    def _events(self, inst: int, address: str, start_response: StartResponse) -> Iterator[bytes]:
        """One page's stream: its instrument's states as they change. Its
        answer starts here, where it is counted: a stream the server drops
        before running it (its page gone at once) was never counted."""
        start_response("200 OK", [("Content-Type", "text/event-stream"), *_HEADERS])
        if self.streams.get(address, 0) >= STREAMS_PER_ADDRESS:
            # An event the page's script shows; it then closes the stream,
            # where after a refusal by status the page could not tell why.
            log.debug("http_streams_refused", extra=fields(peer=address, open=STREAMS_PER_ADDRESS))
            yield b"event: refused\ndata: %d pages are open from this address already\n\n" % STREAMS_PER_ADDRESS
            return
        watcher = self.feed.watch(inst)
        self.streams[address] = self.streams.get(address, 0) + 1
        try:
            yield b"retry: %d\n\n" % _RETRY_MS
            while not watcher.closed:
                state = watcher.next(_KEEPALIVE)
                if state is not None:
                    yield b"data: " + state + b"\n\n"
                elif not watcher.closed:
                    yield b": keep-alive\n\n"
        finally:
            # The page went (a write failed and the server closed this
            # generator) or the server is stopping.
            self.feed.unwatch(watcher)
            left = self.streams.pop(address) - 1
            if left:
                self.streams[address] = left


def _plain(start_response: StartResponse, status: str, text: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(extra or []), *_HEADERS])
    return [body]

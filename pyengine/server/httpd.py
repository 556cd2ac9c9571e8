"""The HTTP servers of the metrics endpoint and the web view: gevent's
WSGIServer, greenlets of the server's own event loop, with the limits a
process that also serves trading sessions needs.

Each serves a bounded number of connections at once (more wait in the
listening socket's backlog, taking none of the process's file descriptors,
which the order port's sessions need), and closes a connection that sends
nothing of its request for `request_timeout` seconds (an idle keep-alive
connection too), or whose request's head is not all in `request_deadline`
seconds after the server awaits it (a byte every few seconds passes the
first; both are settings of the endpoint's table), or that does not take a
write of its answer within `request_deadline`, so that connections that
never send a whole request, or read no answer, cannot hold those places for
good. A request it cannot parse is answered 400, one whose head is over
MAX_HEAD bytes 431, one with a body 413 (neither endpoint takes one), all
without a traceback in the server's log.

Each answers only a request whose Host header names it as it may be named:
an IP address, ``localhost``, or a name of its table's ``allowed_hosts``;
any other is answered 421. A page whose name an attacker's DNS answers with
this machine's address (DNS rebinding) would otherwise read, in the
browser of someone on this machine or network, what these endpoints show as
if it were its own: its requests carry its own name. A request with no Host
is no browser's, and is answered.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

from gevent import Timeout
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from ..log import fields
from .listen import bind

__all__ = ["StartResponse", "WsgiApp", "http_server"]

_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_BODY_REFUSED = b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
# The most a request's header lines may take: what a browser or a scraper
# sends is a few hundred bytes; parsed in one go, megabytes of them would
# hold the event loop (the order port's too) for tens of milliseconds.
MAX_HEAD = 16384

log = logging.getLogger("pyengine.server")

# A WSGI application's types, for the endpoints' apps.
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _HeadTooLarge(ValueError):
    pass


class _BodyRefused(ValueError):
    pass


class _LimitedHead:
    """The request's header lines from `rfile`, at most `limit` bytes of
    them (the parser's readline is all it uses)."""

    def __init__(self, rfile: Any, limit: int) -> None:
        self._rfile = rfile
        self._left = limit

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self._rfile.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise _HeadTooLarge(f"the request's header lines are over {MAX_HEAD} bytes")
        return line


class _Handler(WSGIHandler):
    """gevent's handler, its reads of a request under `request_timeout` each
    and `request_deadline` all together (a subclass's, one per server)."""

    request_timeout: float
    request_deadline: float
    _reading: Timeout  # the request's deadline, while its head is read

    def handle(self) -> None:
        self.socket.settimeout(self.request_timeout)
        try:
            super().handle()
        except OSError:  # an error answer (400, 413, 431) the client did not take in time: it goes, quietly
            log.debug("http_write_timeout", extra=fields(peer=self.client_address))

    def handle_one_request(self) -> tuple[str, bytes] | Literal[True] | None:
        # Expiring, it raises TimeoutError in the read it interrupts, which
        # gevent's handler takes as a failed connection: it closes it.
        self._reading = Timeout.start_new(self.request_deadline, TimeoutError)
        try:
            return super().handle_one_request()
        finally:
            self._reading.close()

    def read_request(self, raw_requestline: str) -> Any:
        ok = super().read_request(raw_requestline)
        # Neither endpoint takes a body. One is refused unread (the
        # connection closes): read and discarded, a body sent fast enough
        # would hold the event loop, the order port's too, until the deadline.
        if self.content_length or self.headers.get("transfer-encoding"):
            raise _BodyRefused("a request with a body")
        return ok

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 (gevent's name)
        limited: Any = _LimitedHead(fp, MAX_HEAD)  # a file to the parser, which only reads lines
        return super().MessageClass(limited, *args)

    def run_application(self) -> None:
        # Each write of the response may wait for the client up to the
        # request's deadline, and no longer: a client that does not read
        # its answers does not keep its place for good. A page's stream,
        # a write at a time, lasts as long as the page reads it.
        self._reading.close()
        self.socket.settimeout(self.request_deadline)
        try:
            super().run_application()
        except TimeoutError:  # a write the client did not take in time: the connection goes, quietly
            log.debug("http_write_timeout", extra=fields(peer=self.client_address))
            self.close_connection = True
        finally:
            self.socket.settimeout(self.request_timeout)

    def process_result(self) -> None:
        # gevent writes the body of a response to HEAD as to GET, which a
        # client then reads as the start of the next response: the head alone.
        if self.command != "HEAD":
            super().process_result()
        elif self.status and not self.headers_sent:
            self.write(b"")

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes] | None:
        # gevent's prints a traceback to stderr (the server's log) for what
        # is not a ValueError: more than 100 header lines, one too long.
        if isinstance(ex, OSError):  # the request's headers did not come in time, or the connection failed
            return None
        if isinstance(ex, _HeadTooLarge):
            return ("431", _HEAD_TOO_LARGE)
        if isinstance(ex, _BodyRefused):
            return ("413", _BODY_REFUSED)
        return ("400", _BAD_REQUEST)


def _host_name(host: str) -> str | None:
    """The name or address a Host header gives, in lower case, without its
    port and a final dot; None if it is not ``host[:port]``."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 address
        name, bracket, rest = host[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            return None
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name.removesuffix(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _own_hosts(app: WsgiApp, table: str, allowed_hosts: Iterable[str]) -> WsgiApp:
    """`app`, for the requests whose Host names this server as it may be
    named (the module's docstring); 421 for any other."""
    names = frozenset(n.lower().removesuffix(".") for n in allowed_hosts) | {"localhost"}
    refusal = f"unknown host name: list it in [{table}] allowed_hosts (or --{table}-allowed-host)\n".encode()

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST")
        if host:
            name = _host_name(host)
            if name is None or (name not in names and not _is_address(name)):
                log.debug("http_wrong_host", extra=fields(endpoint=table, host=host[:256],
                                                          peer=environ.get("REMOTE_ADDR")))
                start_response("421 Misdirected Request", [
                    ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(refusal))),
                    ("X-Content-Type-Options", "nosniff"), ("Connection", "close")])
                return [refusal]
        return app(environ, start_response)
    return serve


def http_server(host: str, port: int, app: WsgiApp, max_connections: int, in_use: str, *, table: str,
                allowed_hosts: Iterable[str], request_timeout: float, request_deadline: float) -> WSGIServer:
    """A WSGIServer of `app` serving at most `max_connections` at once, and
    only requests for this server's addresses, localhost and `allowed_hosts`
    (the settings of the configuration's `table`, as the request limits are),
    its socket bound (OSError, with the message `in_use` if the port is
    taken); serving starts with its ``start()``."""
    handler = type("Handler", (_Handler,), {"request_timeout": request_timeout,
                                            "request_deadline": request_deadline})
    http = WSGIServer((host, port), _own_hosts(app, table, allowed_hosts), spawn=Pool(max_connections),
                      handler_class=handler, log=None, error_log=None)
    bind(http, in_use)
    return http

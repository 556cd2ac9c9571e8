"""A small client for pyengine-server.

Blocking sockets, so it works in plain Python and under gevent
(monkey-patched, or with gevent's socket module passed as ``socket_module``).
A Client is for one thread (or greenlet) at a time: see ``Client``.

    from pyengine.client import Client

    with Client("127.0.0.1", 7001) as c:
        c.login(7)
        ack = c.request(c.new_order("ESZ6", "buy", 5, 450_000, client_order_id="b1"))
        print(ack)                                  # {'type': 'ack', 'order_id': ..., ...}
        print(c.request(c.cancel(ack["order_id"])))

``new_order``, ``cancel`` and ``modify`` take the arguments of
``Engine.submit``, ``cancel`` and ``modify`` but ``account`` (a session acts
as the account it logged in as). They and the other request methods send and
return the ``req_id`` they used; ``request(req_id)`` waits for the direct
reply to it (``ack``/``reject``/``cancelled``/...), keeping every other
message (fills, market data) for ``recv``. Protocol: docs/protocol.md.
"""

from __future__ import annotations

import collections
import errno
import math
import operator
import socket as _socket
import struct
import time
from collections.abc import Collection, Sequence
from types import ModuleType
from typing import Any, Protocol, TypedDict

import orjson

from ._keepalive import MAX_KEEPALIVE, keep_alive

__all__ = ["Client", "ClusterClient", "ServerError", "ConnectionClosed", "OrderState"]

_HEADER = struct.Struct(">I")
# The codes of the server's last message on a connection it then closes (docs/protocol.md, Errors).
_CLOSING_CODES = frozenset({"empty_frame", "frame_too_large", "truncated_frame", "too_many_connections",
                            "idle_timeout"})
_ASK_FOR = 2.0  # seconds at most for each other node's status after a request timed out (or the client's timeout)
# The longest frame a Client takes by default: far more than a server sends (an `orders` reply at most some
# 330 bytes an order, 3.3 MB at the server's default max_open_orders; a book snapshot 65 bytes a level), and
# below 0x10000000, so that a header whose first byte is 0x10 or more (text: HTTP, NATS's INFO; TLS) is refused.
_MAX_FRAME = 256 << 20
_DIRECTORY_RETRY = 0.1  # seconds between questions to nodes that know no shard yet
_FRAME_LIMIT = (1 << 32) - 1  # a frame's length is a uint32


class OrderState(TypedDict):
    """One order in an ``orders`` or ``order_status`` reply (docs/protocol.md).

    ``priority`` is the ``seq`` of the command that gave the order its place
    in its price level (its entry, or its last modify that lost priority):
    of two orders at one price, the lower trades first. ``qty`` (as entered),
    ``filled_qty`` and ``priority`` are None for an order recovered from a
    data directory (the engine keeps neither), ``priority`` again set by a
    modify that loses it. ``status`` is ``open``, ``filled`` or
    ``cancelled`` (then ``reason`` says why, as in ``cancelled``)."""

    order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    price: int | None
    qty: int | None
    open_qty: int
    filled_qty: int | None
    priority: int | None
    status: str
    reason: str | None
    last_seq: int | None


class ConnectionClosed(ConnectionError):
    """The connection is closed: the server closed it, it was lost, the
    client was closed, or the server sent what is not a message of the
    protocol (not a pyengine server?). When the server said why before it closed the
    connection (an ``error`` of one of the codes that close it, such as
    ``idle_timeout``, ``frame_too_large`` or ``too_many_connections``;
    docs/protocol.md), `reply` is that message (also kept for ``recv``) and
    `code` its code, both in the text; else both are None."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        if reply is not None:
            message = f"{message}: {reply.get('code')}: {reply.get('message')}"
        super().__init__(message)
        self.reply = reply
        self.code: str | None = reply.get("code") if reply is not None else None


class _NotAMessage(ValueError):
    """What the server sent is not a message of the protocol: the stream can
    no longer be trusted to be framed (Client drops the connection)."""


class ServerError(Exception):
    """The server answered a request with ``error``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply
        self.code = reply.get("code")


class _Socket(Protocol):
    """What the client uses of a connected socket (the standard library's, or gevent's)."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def gettimeout(self) -> float | None: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def close(self) -> None: ...


def _address(text: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``host:port``, ``[IPv6]:port``, or of ``host``,
    ``[IPv6]`` or a bare IPv6 address with `default_port`."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port = rest[1:]
        if not sep or (rest and not (rest.startswith(":") and port.isascii() and port.isdigit())):
            raise ValueError(f"not an address: {text!r} (IPv6 with a port: [addr]:port)")
        return host, int(port) if rest else default_port
    if text.count(":") > 1:  # IPv6: a port needs the brackets
        return text, default_port
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (text, default_port)


def _advertised(text: str) -> tuple[str, int]:
    """(host, port) of an address a server sent (``not_leader``'s, the
    directory's): ``host:port``, its host an IPv6 address in brackets or not."""
    if text.startswith("["):
        return _address(text, 0)
    host, _, port = text.rpartition(":")
    return host, int(port)


def _show(address: tuple[str, int]) -> str:
    """`address` as ``_address`` reads it back."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _naming_order(msg: dict[str, Any], order_id: int | None, client_order_id: str | None) -> dict[str, Any]:
    """`msg` naming its order by whichever of the two ids is given."""
    if order_id is not None:
        msg["order_id"] = order_id
    if client_order_id is not None:
        msg["client_order_id"] = client_order_id
    return msg


def _json_default(obj: Any) -> Any:
    """orjson's fallback: an integer of another type (a numpy integer: what
    ``Engine.submit`` takes as SupportsIndex) as a Python int."""
    if hasattr(type(obj), "__index__"):
        return operator.index(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def _encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message, default=_json_default)


class Client:
    """A session with a pyengine server.

    `host` may be one address, or several: the nodes of a cluster shard
    (docs/cluster.md). An address is ``"host:port"``, ``"[IPv6]:port"``, or
    ``"host"``, ``"[IPv6]"`` or a bare IPv6 address (``"::1"``) on `port`.
    The client connects to the first that answers; ``login`` follows
    ``not_leader`` replies to the shard's leader, for up to
    `find_leader_for` seconds. When the connection is lost (the leader
    failed), a request waiting for its reply raises ConnectionClosed, and
    the next request first connects to the new leader and logs in again as
    before: the client never sends a request again on its own (whether an
    unanswered order got in is for its sender to find out, by its client
    order id), subscriptions included (subscribe again: the new snapshot
    replaces the book followed until then). A connection that had a
    session (a login accepted) or a subscription and ends with no
    ConnectionClosed raised for it (the client leaves it for the shard's
    leader, a silent one below, or to log in; drops it after a send cut
    short or a login unanswered in time; or finds it lost before a send
    that follows a request that timed out) leaves a ``{"type":
    "disconnected", "address": "host:port"}`` message for ``recv`` after
    the last one received on it: a program that follows pushes learns
    there that they stopped, and subscribes again.
    ``close`` ends the session for good: a closed client raises
    ConnectionClosed until ``reconnect`` is called.

    A leader can also go silent without closing its connections (its
    process paused, its machine cut off): then requests time out. Leaving
    such a connection by a timeout alone would also leave a leader that is
    merely slow, and with cancel-on-disconnect the end of the session
    cancels the account's orders. So the client leaves it on another
    node's word: once a request has timed out with nothing received on the
    connection since (a poll, a timeout of 0, does not count), the next
    request (or ``send``) first takes what has arrived meanwhile; if
    nothing has, it asks the other addresses in turn,
    each on a connection of its own, for their ``status`` (2 s at most
    each, or `timeout` if less, a host name's lookup aside: see below),
    and when one that is another node (its
    ``status`` names another ``node`` than the login's ``logged_in``: two
    addresses may name one server) says it leads its shard, drops this
    connection and connects and logs in there, as after a lost
    connection. Else the request goes out on this connection. No other
    node leads while this one holds the shard's lease, and once another
    does, this one can acknowledge nothing more (docs/cluster.md). A client
    with no other address has no one to ask: its requests time out until
    the connection ends.

    Every message that is not the reply a ``request`` waits for (fills,
    ``cancelled`` and ``mmp`` pushes, market data, the replies to requests
    no one waited for) is kept, in the order received, until ``recv``
    takes it: nothing is dropped, and nothing bounds what is kept. A
    program that only calls ``request`` on a session that gets pushes
    should take them with ``recv(timeout=0)`` (until TimeoutError) now and
    then, or they pile up in memory.

    A Client is not safe for use by two threads (or greenlets) at once:
    their reads and writes interleave, and one can take the other's reply.
    Give each thread a Client of its own (a session each), or let one at a
    time use it, with a lock of your own held around each call: a reply
    that one caller's ``request`` reads is then kept for the other's
    (``recv`` returns whatever comes next, to whoever calls it).

    A `timeout` of None given to ``request`` or ``recv`` means the
    constructor's `timeout` (None there: wait as long as it takes). A send
    that times out (the server takes in nothing), or that an exception cuts
    short (KeyboardInterrupt, gevent.Timeout), may have sent part of its
    message: it drops the connection, as a lost one. So does a login
    unanswered in time (see ``login``).

    `timeout` bounds each connect too, but not the lookup of a host name:
    the system's resolver (getaddrinfo) takes as long as its configuration
    lets it when no name server answers (glibc: 5 s for each of 2 attempts
    on each name server), for each connection made (the constructor, a
    reconnect, each node asked after a timeout). Where that matters, give
    IP addresses (and advertise them, in a cluster), or bound the resolver
    (``options timeout:1 attempts:1`` in resolv.conf, or
    ``RES_OPTIONS="timeout:1 attempts:1"`` in the process's environment).

    A frame the server sends may be up to `max_frame` bytes long (256 MiB
    by default, far more than a server sends: an ``orders`` reply takes
    some 330 bytes an order at most, so some 800,000 orders fit, a book
    snapshot 65 bytes a level; at most 2**32 - 1). A longer one is not
    waited for: its header, as anything else that is not a message (the
    other end is no pyengine server: an HTTP or NATS port, TLS), drops the
    connection with ConnectionClosed saying what came.

    A connection whose server went away without a word (its machine lost,
    a cable cut) is found out by TCP keepalive: after `keepalive` seconds
    without a byte either way, the kernel probes it every `keepalive` / 2
    seconds, and after three probes unanswered, a ``recv`` that waits for
    pushes raises ConnectionClosed as for any lost connection; a request
    sent and not acknowledged for as long (about 2.5 x `keepalive`), or
    waiting that long for room the server does not make (it takes in less
    than is sent), too (None: neither, and such a connection looks idle
    for good).
    """

    def __init__(
        self,
        host: str | Sequence[str] = "127.0.0.1",
        port: int = 7001,
        *,
        timeout: float | None = 10.0,
        socket_module: ModuleType = _socket,
        find_leader_for: float = 10.0,
        keepalive: float | None = 10.0,
        max_frame: int = _MAX_FRAME,
    ) -> None:
        names = [host] if isinstance(host, str) else list(host)
        if not names:
            raise ValueError("no address to connect to")
        if keepalive is not None and not (math.isfinite(keepalive) and 1 <= keepalive <= MAX_KEEPALIVE):
            raise ValueError(f"keepalive must be from 1 to {MAX_KEEPALIVE} seconds, or None, not {keepalive}")
        if not 1 <= max_frame <= _FRAME_LIMIT:
            raise ValueError(f"max_frame must be from 1 to {_FRAME_LIMIT} bytes, not {max_frame}")
        self._keepalive = keepalive
        self._max_frame = max_frame
        self.addresses = [_address(a, port) for a in names]
        self._timeout = timeout
        self._socket_module = socket_module
        self._find_leader_for = find_leader_for
        self._buf = bytearray()
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._next_req = 0
        self._login: dict[str, Any] | None = None  # the last accepted login, repeated after a reconnect
        self._closed = False  # by close(): no reconnecting on its own
        self._unreachable: tuple[str, int] | None = None  # the last address that refused us
        self._last_words: dict[str, Any] | None = None  # the server's error before it closed this connection
        self._silent = False  # a request timed out on this connection, and nothing came since
        self._held = False  # this connection has a session or a subscription: its loss is told (recv)
        self._node: str | None = None  # the cluster node this connection's login was accepted by
        self._reads = 0  # reads from a socket that brought bytes
        self.sock: _Socket | None = None
        self.address: tuple[str, int] = self.addresses[0]
        self._connect_any(first=self.addresses[0])

    # ---- connections -------------------------------------------------------

    def _connect(self, address: tuple[str, int]) -> None:
        self._lost(tell=True)
        self._last_words = None
        self._node = None
        self.sock = self._socket_module.create_connection(address, timeout=self._timeout)
        self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if self._keepalive is not None:
            keep_alive(self.sock, self._keepalive)
        self.address = address

    def _connect_any(self, first: tuple[str, int] | None = None, skip: Collection[tuple[str, int]] = ()) -> None:
        """Connect to `first`, else to the addresses in turn after the current one, but those in `skip`."""
        start = self.addresses.index(self.address) + 1 if self.address in self.addresses else 0
        order = self.addresses[start:] + self.addresses[:start]
        if first is not None:
            order = [first] + [a for a in order if a != first]
        order = [a for a in order if a not in skip]
        errors = []
        for address in order:
            try:
                self._connect(address)
                return
            except OSError as exc:
                self._unreachable = address
                errors.append(f"{_show(address)}: {exc}")
        raise ConnectionError("no server answered: " + "; ".join(errors))

    def reconnect(self) -> dict[str, Any] | None:
        """Connect again (to the leader, in a cluster) and log in as before;
        the ``logged_in`` reply, or None when this client never logged in.
        This also reopens a closed client. A login that is refused (say
        ``login_throttled``) or times out leaves no connection: the next
        request connects and logs in anew."""
        self._closed = False
        self._lost()  # asked for: nothing to tell
        return self._reconnect()

    def _reconnect(self, first: tuple[str, int] | None = None) -> dict[str, Any] | None:
        deadline = time.monotonic() + self._find_leader_for
        try:
            while True:
                try:
                    self._connect_any(first)
                    break
                except ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            return self._log_in(self._login) if self._login is not None else None
        except BaseException:
            # Not logged in again (login_throttled, ...): no requests on this
            # connection, the next one tries again.
            self._lost()
            raise

    def _log_in(self, login: dict[str, Any]) -> dict[str, Any]:
        """Log in with the `login` message, following ``not_leader`` to the
        leader. A node that refuses the connection (``too_many_connections``)
        is not asked again in this login: the refusal is raised when it
        leads, or when every address refused."""
        if self._closed:
            raise ConnectionClosed("the client is closed")
        deadline = time.monotonic() + self._find_leader_for
        refused: dict[tuple[str, int], ConnectionClosed] = {}
        while True:
            try:
                if self.sock is None:  # connected here: a send would log in by itself, twice over
                    self._connect_any(skip=refused)
                req_id = self._send_request(dict(login))
                try:
                    reply = self.request(req_id)
                except ServerError:
                    raise
                except BaseException:
                    # Unanswered in time (or the wait cut short): the server may accept the login yet, and a
                    # connection whose login the client does not know is not kept.
                    self._lost(tell=True)
                    raise
                self._node = reply.get("node")
                self._held = True
                return reply
            except ServerError as exc:
                if exc.code != "not_leader" or time.monotonic() > deadline:
                    raise
                leader = exc.reply.get("leader")
                target = _advertised(leader) if leader else None
                if target is not None and target not in self.addresses:
                    self.addresses.append(target)
                if target in refused:
                    raise refused[target] from None
                if target is None or target == self.address or target == self._unreachable:
                    # No leader yet, or one that is gone (its lease has not run
                    # out): ask the next node in a moment.
                    time.sleep(0.05)
                    target = None
            except ConnectionClosed as exc:
                if exc.code == "too_many_connections":
                    refused[self.address] = exc
                    if set(self.addresses) <= refused.keys() or time.monotonic() > deadline:
                        raise
                elif time.monotonic() > deadline:
                    raise
                else:
                    time.sleep(0.05)
                target = None
            except OSError:
                if time.monotonic() > deadline:
                    raise
                target = None
                time.sleep(0.05)
            try:
                self._connect_any(target, skip=refused)
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # ---- plumbing ----------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Send one message; when the connection was lost, first connect
        again and log in as before (see the class)."""
        self._send_body(_encode(message))

    def _send_body(self, body: bytes) -> None:
        leader = self._leader_instead() if self._silent and self.sock is not None else None
        if self.sock is None and not self._closed:
            self._reconnect(leader)  # the connection was lost: a new one, logged in as before
        sock = self._connected()
        try:
            sock.sendall(_HEADER.pack(len(body)) + body)
        except OSError as exc:
            self._lost(drain=True)
            raise self._gone(f"the connection was lost while sending: {exc}") from None
        except BaseException:
            # Interrupted (KeyboardInterrupt, gevent.Timeout), perhaps with part of the frame sent: the
            # server would take the next one for the rest of it.
            self._lost(drain=True, tell=True)
            raise

    def _leader_instead(self) -> tuple[str, int] | None:
        """After a request timed out with nothing received since (see the
        class): unless something arrived meanwhile, ask the other addresses
        who leads, and leave this connection for one that says it does (its
        address, returned)."""
        self._silent = False  # asked once for each request that timed out
        reads, held = self._reads, self._held
        try:
            while self._reads == reads:
                self._inbox.append(self._read_frame(time.monotonic()))
        except TimeoutError:
            pass
        except ConnectionClosed:
            if held:
                self._tell_disconnected()
            return None  # lost: the send connects again anyway
        if self._reads != reads:
            return None  # it speaks: a slow server, not a gone one
        wait = _ASK_FOR if self._timeout is None else min(self._timeout, _ASK_FOR)
        start = self.addresses.index(self.address) + 1
        for address in self.addresses[start:] + self.addresses[: start - 1]:
            ends = time.monotonic() + wait
            try:
                with Client(address[0], address[1], timeout=wait, socket_module=self._socket_module,
                            max_frame=self._max_frame) as node:
                    st = node.request(node.status(), timeout=max(0.0, ends - time.monotonic()))
            except (OSError, ServerError, ValueError):
                continue  # down, silent too, or no pyengine server
            # Another node: this one under another name (its advertised address
            # beside the one given) answers its status on its event loop, slow or not.
            if st.get("role") == "leader" and self._node is not None and st.get("node") != self._node:
                self._lost(tell=True)
                return address
        return None

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for tests of broken input)."""
        self._connected().sendall(data)

    def _connected(self) -> _Socket:
        if self.sock is None:
            raise self._not_connected()
        return self.sock

    def _not_connected(self) -> ConnectionClosed:
        if self._closed:
            return ConnectionClosed("the client is closed")
        return self._gone("not connected (the connection was lost)")

    def _gone(self, reason: str) -> ConnectionClosed:
        """ConnectionClosed for the lost connection, with what the server said before it closed it."""
        return ConnectionClosed(reason, self._last_words)

    def _lost(self, *, drain: bool = False, tell: bool = False) -> None:
        """Drop the connection; the whole messages already received go to
        the inbox for recv(), a partial one (never to be completed) is dropped.
        `drain`: first read what the socket holds still (a failed send may
        leave the server's last message unread). `tell`: the client leaves
        it of its own accord: one that held a session or a subscription
        leaves a ``disconnected`` message after them (see the class)."""
        self._silent = False
        held, self._held = tell and self._held and self.sock is not None, False
        if self.sock is not None:
            if drain:
                try:
                    self.sock.settimeout(0)
                    while data := self.sock.recv(65536):
                        self._buf += data
                except OSError:
                    pass
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        try:
            while (frame := self._buffered_frame()) is not None:
                self._inbox.append(frame)
        except _NotAMessage:
            pass  # the rest is dropped with the connection
        self._buf.clear()
        if held:
            self._tell_disconnected()

    def _tell_disconnected(self) -> None:
        self._inbox.append({"type": "disconnected", "address": _show(self.address)})

    def _buffered_frame(self) -> dict[str, Any] | None:
        """The next whole message in the receive buffer, taken out of it, or None."""
        if len(self._buf) < 4:
            return None
        (n,) = _HEADER.unpack_from(self._buf)
        if n > self._max_frame:  # not waited for, nor buffered: its header is most likely no header
            raise _NotAMessage(f"the server sent the header of a frame of {n} bytes, over max_frame "
                               f"({self._max_frame}) ({bytes(self._buf[:40])!r}): is it a pyengine server?")
        if len(self._buf) < 4 + n:
            return None
        body = bytes(self._buf[4 : 4 + n])
        del self._buf[: 4 + n]
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):  # a pyengine server sends only objects
            raise _NotAMessage(f"the server sent {n} bytes that are not a JSON object ({body[:40]!r}): "
                               "is it a pyengine server?")
        if reply.get("type") == "error" and reply.get("code") in _CLOSING_CODES and reply.get("req_id") is None:
            self._last_words = reply
        return reply

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            timeout = self._timeout
        return None if timeout is None else time.monotonic() + timeout

    def _read_frame(self, deadline: float | None = None, *, per_read: bool = False,
                    poll: bool = True) -> dict[str, Any]:
        """The next message: a whole one already received, else read from the
        socket by `deadline` (time.monotonic(); None: no limit), or with the
        socket's own timeout for each read when `per_read`. Once the deadline
        has passed, the socket is polled once more if `poll` (so a timeout of
        0 takes what has arrived), then TimeoutError."""
        sock = self.sock
        try:
            while True:
                try:
                    frame = self._buffered_frame()
                except _NotAMessage as exc:
                    self._lost()
                    raise self._gone(str(exc)) from None
                if frame is not None:
                    return frame
                if self.sock is None:
                    raise self._not_connected()
                if not per_read:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if wait == 0.0:
                        if not poll:
                            raise TimeoutError("timed out")
                        poll = False
                    self.sock.settimeout(wait)
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:  # a timeout of 0 polls a non-blocking socket
                    raise TimeoutError("timed out") from None
                except TimeoutError as exc:
                    if exc.errno != errno.ETIMEDOUT:  # the socket's own timeout (errno None): a timeout
                        raise
                    data = b""  # the kernel's: keepalive probes or data went unacknowledged
                    reason = f"{exc.strerror} (no answer from the server to TCP keepalive probes or data)"
                except OSError as exc:
                    # The kernel ended the connection: reset, or given up on with the error the network
                    # reported meanwhile (EHOSTUNREACH once the server's machine no longer answers ARP).
                    data = b""
                    reason = str(exc)
                else:
                    reason = "the server closed the connection"
                if not data:
                    self._lost()
                    raise self._gone(reason)
                self._reads += 1
                self._silent = False
                self._buf += data
        finally:
            if not per_read and sock is not None and self.sock is sock:  # not lost meanwhile
                sock.settimeout(self._timeout)

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message (a reply or a push), in the order received.
        Waits up to `timeout` seconds (0: only what has arrived), then raises
        TimeoutError; None: the constructor's timeout, for each read from the
        socket. Raises ConnectionClosed once the connection is lost and every
        message received before is returned."""
        if self._inbox:
            return self._inbox.popleft()
        if timeout is None:
            return self._read_frame(per_read=True)
        return self._read_frame(self._deadline(timeout))

    def request(self, req_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the direct reply to `req_id`; other messages are kept for
        recv(). An ``error`` reply raises ServerError. `timeout` bounds the
        whole wait (0: only what has arrived), then TimeoutError; None: the
        constructor's timeout."""
        for i, m in enumerate(self._inbox):
            if m.get("req_id") == req_id and m.get("type") not in ("fill",):
                del self._inbox[i]
                return self._checked(m)
        deadline = self._deadline(timeout)
        waited = deadline is None or deadline > time.monotonic()  # not a poll (a timeout of 0)
        first = True
        reads = self._reads
        while True:
            # Past the deadline, what was already received still counts, but
            # the socket is polled once only: a stream of pushes cannot keep
            # the request waiting.
            try:
                m = self._read_frame(deadline, poll=first)
            except TimeoutError:
                if waited:  # a poll that found nothing says nothing of the server's silence
                    self._silent = self._reads == reads and self.sock is not None
                raise
            first = False
            if m.get("req_id") == req_id and m.get("type") != "fill":
                return self._checked(m)
            self._inbox.append(m)

    @staticmethod
    def _checked(m: dict[str, Any]) -> dict[str, Any]:
        if m.get("type") == "error":
            raise ServerError(m)
        return m

    def _send_request(self, message: dict[str, Any]) -> int:
        req_id = message["req_id"] = self._next_req + 1
        body = _encode(message)  # a TypeError here uses up no req_id
        self._next_req = req_id
        self._send_body(body)  # which may log in again first, with requests of its own
        return req_id

    # ---- requests ----------------------------------------------------------

    def login(self, account: int, secret: str | None = None, *, cancel_on_disconnect: bool = True) -> dict[str, Any]:
        """Log in and wait for the reply (at a cluster shard's leader: see the
        class). Once ``logged_in``, this is the login repeated after a
        reconnect; a refused one leaves the previous login in its place.

        A login not answered within the constructor's `timeout` (the server
        paused, or cut off) is sent again on a new connection, to the next
        address, until `find_leader_for` seconds have passed; then
        TimeoutError. The connection of a login unanswered in time, or whose
        wait an exception cut short, is dropped: the server may have
        accepted the login, or may yet (that session then ends as any whose
        connection drops: with cancel-on-disconnect, the orders it claimed
        are cancelled). Such a login leaves the previous one in its place,
        as a refused one does, and the next ``login`` (or request) connects
        anew."""
        msg: dict[str, Any] = {"type": "login", "account": account, "cancel_on_disconnect": cancel_on_disconnect}
        if secret is not None:
            msg["secret"] = secret
        reply = self._log_in(msg)
        self._login = msg
        return reply

    def new_order(
        self,
        symbol: str,
        side: str,
        qty: int,
        price: int | None = None,
        *,
        tif: str | None = None,
        client_order_id: str | None = None,
        order_type: str = "limit",
        post_only: bool = False,
        stp: str = "none",
    ) -> int:
        """Send a new order of this session's account; the arguments are
        ``Engine.submit``'s (tif None: the order type's default, left to the
        server). Returns its req_id."""
        msg: dict[str, Any] = {
            "type": "new_order", "symbol": symbol, "side": side, "qty": qty, "order_type": order_type,
            "post_only": post_only, "stp": stp,
        }
        if price is not None:
            msg["price"] = price
        if tif is not None:
            msg["tif"] = tif
        if client_order_id is not None:
            msg["client_order_id"] = client_order_id
        return self._send_request(msg)

    def cancel(self, order_id: int | None = None, *, client_order_id: str | None = None) -> int:
        """Cancel an open order of this session, by order id or client order
        id; returns the req_id."""
        msg: dict[str, Any] = {"type": "cancel"}
        return self._send_request(_naming_order(msg, order_id, client_order_id))

    def modify(
        self,
        order_id: int | None = None,
        qty: int | None = None,
        price: int | None = None,
        *,
        client_order_id: str | None = None,
    ) -> int:
        """Change an open order of this session, by order id or client order
        id: ``qty`` its new open quantity (0 cancels; None: its open quantity
        when the engine runs the modify), ``price`` its new price (None keeps
        it); give either or both. Returns the req_id."""
        msg: dict[str, Any] = {"type": "modify"}
        if qty is not None:
            msg["qty"] = qty
        if price is not None:
            msg["price"] = price
        return self._send_request(_naming_order(msg, order_id, client_order_id))

    def mass_cancel(self, symbol: str | None = None, *, account: int | None = None,
                    all_accounts: bool = False) -> int:
        """Cancel this session's open orders (of one instrument, or all); any
        session may name its own ``account`` (every session's orders of it),
        an admin another one, or ask for ``all_accounts``."""
        msg: dict[str, Any] = {"type": "mass_cancel"}
        if symbol is not None:
            msg["symbol"] = symbol
        if account is not None:
            msg["account"] = account
        if all_accounts:
            msg["all_accounts"] = True
        return self._send_request(msg)

    def orders(self, symbol: str | None = None) -> int:
        """Ask for this account's open orders (of one instrument, or all),
        whichever session entered them; returns the req_id. The reply,
        ``{"type": "orders", "orders": [...]}``, lists them as
        ``OrderState``, oldest first: what a client needs after reconnecting."""
        msg: dict[str, Any] = {"type": "orders"}
        if symbol is not None:
            msg["symbol"] = symbol
        return self._send_request(msg)

    def set_mmp(self, symbol: str, qty_limit: int, window_ms: int = 0) -> int:
        """Set this account's market-maker protection on ``symbol``: once it
        fills more than ``qty_limit`` within ``window_ms`` (0: until a reset),
        the engine cancels its resting orders there and refuses new ones
        (``mmp``) until ``reset_mmp``; ``qty_limit`` 0 turns it off. The reply,
        and the push when it trips, is ``{"type": "mmp", ...}``."""
        return self._send_request({"type": "set_mmp", "symbol": symbol, "qty_limit": qty_limit, "window_ms": window_ms})

    def reset_mmp(self, symbol: str) -> int:
        """Lift this account's tripped protection on ``symbol``."""
        return self._send_request({"type": "reset_mmp", "symbol": symbol})

    def cancel_all_after(self, seconds: float) -> int:
        """Arm (or renew) this account's dead-man switch: unless this is sent
        again within ``seconds``, the server cancels every open order of the
        account (reason ``dead_man``); 0 disarms it. Returns the req_id; the
        reply is ``{"type": "cancel_all_after", "armed": bool, "deadline": t}``."""
        return self._send_request({"type": "cancel_all_after", "seconds": seconds})

    def order_status(self, order_id: int | None = None, *, client_order_id: str | None = None) -> int:
        """Ask for one order of this account by order id or client order id
        (give one): open, or among the account's last finished orders (the
        server's ``finished_orders``, 1000 by default); returns the req_id.
        The reply is ``{"type": "order_status", "order": OrderState}``; an
        order not found (or another account's) is ``error`` ``unknown_order``."""
        msg: dict[str, Any] = {"type": "order_status"}
        return self._send_request(_naming_order(msg, order_id, client_order_id))

    def open_orders(self, symbol: str | None = None, timeout: float | None = None) -> list[OrderState]:
        """``orders``, waited for: this account's open orders."""
        orders: list[OrderState] = self.request(self.orders(symbol), timeout)["orders"]
        return orders

    def order_state(self, order_id: int | None = None, *, client_order_id: str | None = None,
                    timeout: float | None = None) -> OrderState:
        """``order_status``, waited for: the order, or ServerError ``unknown_order``."""
        order: OrderState = self.request(self.order_status(order_id, client_order_id=client_order_id), timeout)["order"]
        return order

    def subscribe(self, symbol: str) -> int:
        req_id = self._send_request({"type": "subscribe", "symbol": symbol})
        self._held = True
        return req_id

    def unsubscribe(self, symbol: str) -> int:
        return self._send_request({"type": "unsubscribe", "symbol": symbol})

    def ping(self) -> int:
        return self._send_request({"type": "ping"})

    def status(self) -> int:
        """The node's role, shard, leader and progress (any session; docs/cluster.md)."""
        return self._send_request({"type": "status"})

    def snapshot(self) -> int:
        """Ask for a snapshot now (an admin request; the reply comes once it is on disk)."""
        return self._send_request({"type": "snapshot"})

    def halt(self, symbol: str) -> int:
        """Halt an instrument: only cancels are accepted until ``resume`` (admin)."""
        return self._send_request({"type": "halt", "symbol": symbol})

    def resume(self, symbol: str) -> int:
        return self._send_request({"type": "resume", "symbol": symbol})

    # ---- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Close the connection: no request is sent (and no reconnect made)
        until ``reconnect``; messages already received stay for recv()."""
        self._closed = True
        self._lost()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterClient:
    """A logged-in session with the leader of each shard of a cluster, found
    by symbol.

    Any node answers ``status`` with the directory (each shard's
    instruments, leader and nodes; the addresses are asked in turn, until
    one answers with it: a node that has just started may know no shard
    yet, and is asked again for up to `timeout`); ``for_symbol`` returns the Client of the
    shard that trades the symbol, connecting and logging in on first use.
    Order ids are per shard: cancel and modify through the Client the order
    was entered with. Each shard's Client has all the shard's nodes, and
    follows its leader as a Client does (a silent one too); `timeout`,
    `keepalive` and `max_frame` are its (Client's).
    """

    def __init__(self, addresses: Sequence[str], account: int, secret: str | None = None, *,
                 cancel_on_disconnect: bool = True, timeout: float | None = 10.0,
                 keepalive: float | None = 10.0, max_frame: int = _MAX_FRAME) -> None:
        self._login = (account, secret, cancel_on_disconnect)
        self._timeout = timeout
        self._keepalive = keepalive  # each shard's Client's (Client's keepalive, max_frame)
        self._max_frame = max_frame
        shards = self._directory(addresses, timeout, keepalive, max_frame)
        self.shard_of = {symbol: name for name, s in shards.items() for symbol in s["instruments"]}
        self._nodes = {name: [s["leader"], *s.get("nodes", {}).values()] for name, s in shards.items()}
        self._clients: dict[str, Client] = {}

    @staticmethod
    def _directory(addresses: Sequence[str], timeout: float | None, keepalive: float | None,
                   max_frame: int) -> dict[str, Any]:
        """The shards, from the first of `addresses` that answers ``status``
        with them. One that takes the connection but stays silent (paused,
        cut off) is passed over once `timeout` has run out on it, as one that
        is down. One that knows no shard yet (it started a moment ago: its
        directory is on its way from NATS) is asked again, with the others,
        for as long as `timeout` from the first question (each question has
        `timeout` of its own; with None, for ever), even if it is down on a
        later round (restarting); if none has answered yet, the last failure
        is raised."""
        if not addresses:
            raise ValueError("no address to ask for the cluster's directory")
        give_up = None if timeout is None else time.monotonic() + timeout
        answered = False  # by a node, with no shard
        while True:
            failed: Exception | None = None
            for address in addresses:
                try:
                    with Client(address, timeout=timeout, keepalive=keepalive, max_frame=max_frame) as node:
                        answer = node.request(node.status())
                except (TimeoutError, ConnectionError) as exc:
                    failed = exc
                    continue
                if answer.get("role") == "standalone":
                    raise ConnectionError(f"{address} is a single server, not a cluster node")
                if answer.get("shards"):
                    return dict(answer["shards"])
                answered = True
            if not answered:
                assert failed is not None
                raise failed
            if give_up is not None and time.monotonic() >= give_up:
                raise ConnectionError(f"no node of {', '.join(addresses)} knew the cluster's shards "
                                      f"within {timeout} s")
            time.sleep(_DIRECTORY_RETRY)

    def for_symbol(self, symbol: str) -> Client:
        shard = self.shard_of.get(symbol)
        if shard is None:
            raise KeyError(f"no shard trades {symbol!r}")
        client = self._clients.get(shard)
        if client is None:
            nodes = list(dict.fromkeys(_show(_advertised(a)) for a in self._nodes[shard] if a))
            client = Client(nodes, timeout=self._timeout, keepalive=self._keepalive, max_frame=self._max_frame)
            account, secret, cod = self._login
            try:
                client.login(account, secret, cancel_on_disconnect=cod)
            except BaseException:
                client.close()  # not kept: the next call connects and logs in anew
                raise
            self._clients[shard] = client
        return client

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A small client for pyengine-server.

Blocking sockets, so it works in plain Python, in threads, and under gevent
(monkey-patched, or with gevent's socket module passed as ``socket_module``).

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
import socket as _socket
import struct
from types import ModuleType
from typing import Any

import orjson

__all__ = ["Client", "ServerError", "ConnectionClosed"]

_HEADER = struct.Struct(">I")


class ConnectionClosed(ConnectionError):
    """The server closed the connection."""


class ServerError(Exception):
    """The server answered a request with ``error``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply
        self.code = reply.get("code")


class Client:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7001,
        *,
        timeout: float | None = 10.0,
        socket_module: ModuleType = _socket,
    ) -> None:
        self.sock = socket_module.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._next_req = 0

    # ---- plumbing ----------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message)
        self.sock.sendall(_HEADER.pack(len(body)) + body)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for tests of broken input)."""
        self.sock.sendall(data)

    def _read_frame(self) -> dict[str, Any]:
        while True:
            if len(self._buf) >= 4:
                (n,) = _HEADER.unpack_from(self._buf)
                if len(self._buf) >= 4 + n:
                    body = bytes(self._buf[4 : 4 + n])
                    del self._buf[: 4 + n]
                    return orjson.loads(body)  # type: ignore[no-any-return]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed("the server closed the connection")
            self._buf += data

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message (a reply or a push), in the order received."""
        if self._inbox:
            return self._inbox.popleft()
        return self._read_frame() if timeout is None else self._read_with(timeout)

    def request(self, req_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the direct reply to `req_id`; other messages are kept for
        recv(). An ``error`` reply raises ServerError."""
        for i, m in enumerate(self._inbox):
            if m.get("req_id") == req_id and m.get("type") not in ("fill",):
                del self._inbox[i]
                return self._checked(m)
        while True:
            m = self._read_frame() if timeout is None else self._read_with(timeout)
            if m.get("req_id") == req_id and m.get("type") != "fill":
                return self._checked(m)
            self._inbox.append(m)

    def _read_with(self, timeout: float) -> dict[str, Any]:
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return self._read_frame()
        finally:
            self.sock.settimeout(old)

    @staticmethod
    def _checked(m: dict[str, Any]) -> dict[str, Any]:
        if m.get("type") == "error":
            raise ServerError(m)
        return m

    def _send_request(self, message: dict[str, Any]) -> int:
        self._next_req += 1
        message["req_id"] = self._next_req
        self.send(message)
        return self._next_req

    # ---- requests ----------------------------------------------------------

    def login(self, account: int, secret: str | None = None, *, cancel_on_disconnect: bool = True) -> dict[str, Any]:
        """Log in and wait for the reply."""
        msg: dict[str, Any] = {"type": "login", "account": account, "cancel_on_disconnect": cancel_on_disconnect}
        if secret is not None:
            msg["secret"] = secret
        return self.request(self._send_request(msg))

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
        if order_id is not None:
            msg["order_id"] = order_id
        if client_order_id is not None:
            msg["client_order_id"] = client_order_id
        return self._send_request(msg)

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
        if order_id is not None:
            msg["order_id"] = order_id
        if client_order_id is not None:
            msg["client_order_id"] = client_order_id
        return self._send_request(msg)

    def mass_cancel(self, symbol: str | None = None, *, account: int | None = None,
                    all_accounts: bool = False) -> int:
        """Cancel this session's open orders (of one instrument, or all); an
        admin may name another ``account`` or ask for ``all_accounts``."""
        msg: dict[str, Any] = {"type": "mass_cancel"}
        if symbol is not None:
            msg["symbol"] = symbol
        if account is not None:
            msg["account"] = account
        if all_accounts:
            msg["all_accounts"] = True
        return self._send_request(msg)

    def subscribe(self, symbol: str) -> int:
        return self._send_request({"type": "subscribe", "symbol": symbol})

    def unsubscribe(self, symbol: str) -> int:
        return self._send_request({"type": "unsubscribe", "symbol": symbol})

    def ping(self) -> int:
        return self._send_request({"type": "ping"})

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
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

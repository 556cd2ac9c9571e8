"""Binding a gevent server's listening socket, with a port in use said plainly."""

from __future__ import annotations

import errno
from typing import Protocol

__all__ = ["bind"]


class Listener(Protocol):
    """A gevent server (StreamServer, WSGIServer) before it starts."""

    def init_socket(self) -> None: ...


def bind(server: Listener, in_use: str) -> None:
    """Bind `server`'s socket (accepting starts with its ``start()``); a port
    already taken raises OSError(EADDRINUSE) with the message `in_use`,
    anything else as it came."""
    try:
        server.init_socket()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, in_use) from None
        raise

"""The server dispatcher's event loop in C (csrc/binding/route.c)."""

from _typeshed import ReadableBuffer
from typing import final

@final
class Router:
    """Routes the engine thread's events to sessions, owners and market data."""

    @property
    def trades(self) -> int:
        """Trades routed so far."""

    @property
    def orders(self) -> int:
        """Orders accepted so far."""

    def __init__(self, tables: tuple[object, ...], /) -> None:
        """The dispatcher's tables, in the order of route.c's enum route_table
        (checked there: a ValueError for any other shape)."""

    def route(self, events: ReadableBuffer, n: int, /) -> None:
        """Route the first n records of `events` (a buffer of struct runner_event)."""

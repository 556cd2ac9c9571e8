"""The per-call verbs of pyengine.Engine in C (csrc/binding/calls.c)."""

from contextlib import AbstractContextManager
from typing import Any, SupportsIndex, TypeVar

from .events import BookView, Event, OrderState

_T = TypeVar("_T")

# What Core._hold() returns.
HELD: int
CLOSED: int
IN_USE_HERE: int
IN_USE_ELSEWHERE: int

class Core:
    @property
    def _busy(self) -> bool: ...
    def submit(
        self,
        symbol: str,
        side: str,
        qty: SupportsIndex,
        price: SupportsIndex | None = None,
        *,
        tif: str | None = None,
        account: SupportsIndex = 0,
        client_order_id: str | None = None,
        order_type: str = "limit",
        post_only: bool = False,
        stp: str = "none",
        order_id: SupportsIndex | None = None,
    ) -> list[Event]: ...
    def cancel(
        self,
        order_id: SupportsIndex | None = None,
        *,
        account: SupportsIndex | None = None,
        client_order_id: str | None = None,
    ) -> list[Event]: ...
    def modify(
        self,
        order_id: SupportsIndex | None = None,
        qty: SupportsIndex | None = None,
        price: SupportsIndex | None = None,
        *,
        account: SupportsIndex | None = None,
        client_order_id: str | None = None,
    ) -> list[Event]: ...
    def order(
        self,
        order_id: SupportsIndex | None = None,
        *,
        account: SupportsIndex | None = None,
        client_order_id: str | None = None,
    ) -> OrderState | None: ...
    def book(self, symbol: str, depth: SupportsIndex = 10) -> BookView: ...
    def _attach(self, engine: int, api: int, /, **tables: Any) -> None: ...
    def _detach(self) -> None: ...
    def _hold(self) -> int: ...
    def _release(self) -> None: ...
    def _holding(self, value: _T, /) -> AbstractContextManager[_T]: ...

"""Engine.submit and Engine.cancel in C (csrc/binding/calls.c)."""

from typing import Any

from .events import Event

class Core:
    _seq: int
    _busy: bool
    def submit(
        self,
        symbol: str,
        side: str,
        qty: int,
        price: int | None = None,
        *,
        tif: str = "gtc",
        account: int = 0,
        client_order_id: str | None = None,
        order_type: str = "limit",
        post_only: bool = False,
        stp: str = "none",
    ) -> list[Event]: ...
    def cancel(
        self,
        order_id: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> list[Event]: ...
    def _attach(self, engine: int, api: int, tables: tuple[Any, ...], /) -> None: ...
    def _detach(self) -> None: ...

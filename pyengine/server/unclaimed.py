"""Open orders that no session holds, until one of their account takes them.

Two ways an order gets here: the server recovered it from its data directory
after a restart (the session that entered it is gone), or its session closed
without cancel-on-disconnect. The next session that logs in with the order's
account takes it over: from then on it gets the order's fills and cancels
(and, with cancel-on-disconnect, the order is cancelled when it leaves).
Until then, orders that fill completely or are cancelled drop out here.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["UnclaimedOrders"]


class UnclaimedOrders:
    def __init__(self, orders: Iterable[tuple[int, int, int, str | None]] = ()) -> None:
        """`orders`: (order id, instrument, account, client order id) of each."""
        self._by_account: dict[int, dict[int, tuple[int, str | None]]] = {}
        self._account_of: dict[int, int] = {}
        for oid, inst, account, coid in orders:
            self.add(oid, inst, account, coid)

    def __len__(self) -> int:
        return len(self._account_of)

    def add(self, order_id: int, instrument: int, account: int, client_order_id: str | None) -> None:
        self._by_account.setdefault(account, {})[order_id] = (instrument, client_order_id)
        self._account_of[order_id] = account

    def gone(self, order_id: int) -> None:
        """The order filled completely or was cancelled before anyone took it."""
        account = self._account_of.pop(order_id, None)
        if account is not None:
            orders = self._by_account[account]
            del orders[order_id]
            if not orders:
                del self._by_account[account]

    def client_order_id(self, order_id: int) -> str | None:
        """The client order id of an order here (None if it has none or is not here)."""
        account = self._account_of.get(order_id)
        return None if account is None else self._by_account[account][order_id][1]

    def accounts(self) -> list[int]:
        """The accounts that have orders here."""
        return list(self._by_account)

    def claim(self, account: int) -> dict[int, tuple[int, str | None]]:
        """Hand over the account's open orders: order id -> (instrument, client order id)."""
        orders = self._by_account.pop(account, {})
        for oid in orders:
            del self._account_of[oid]
        return orders

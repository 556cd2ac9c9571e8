"""The ``orders`` and ``order_status`` requests: an account's orders as the
server's OrderStatus (csrc/binding/status.c) keeps them from the events.

Nothing here reads the engine (it runs on its own thread): the records are
the event loop's own. An order of another account is never found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._server import OrderRecord, OrderStatus
from .codes import CANCEL_REASONS, SIDE_NAMES
from .protocol import OrderQuery, Orders, RequestError, shown

__all__ = ["order_message", "orders_reply", "order_status_reply"]

_STATES = ("open", "filled", "cancelled")


def order_message(rec: OrderRecord, symbols: Sequence[str]) -> dict[str, Any]:
    """One order as the protocol shows it (docs/protocol.md, ``orders``)."""
    state = rec.state
    return {
        "order_id": rec.order_id,
        "client_order_id": rec.client_order_id,
        "symbol": symbols[rec.instrument],
        "side": SIDE_NAMES[rec.side],
        "price": rec.price,
        "qty": rec.qty,
        "open_qty": rec.leaves if state == 0 else 0,
        "filled_qty": rec.filled,
        "priority": rec.priority,
        "status": _STATES[state],
        "reason": CANCEL_REASONS[rec.reason] if state == 2 else None,
        "last_seq": rec.last_seq,
    }


def orders_reply(status: OrderStatus, account: int, req: Orders, instrument_ids: dict[str, int],
                 symbols: Sequence[str]) -> tuple[dict[str, Any], int]:
    """The account's open orders (of one symbol, or all), oldest first; and
    how many of its open orders it skipped (those of the other symbols)."""
    inst = None
    if req.symbol is not None:
        inst = instrument_ids.get(req.symbol)
        if inst is None:
            raise RequestError("unknown_symbol", f"no instrument {shown(req.symbol)}", req.req_id)
    records = status.open_orders(account)
    orders = [order_message(r, symbols) for r in records if inst is None or r.instrument == inst]
    return {"type": "orders", "req_id": req.req_id, "orders": orders}, len(records) - len(orders)


def order_status_reply(status: OrderStatus, account: int, req: OrderQuery,
                       symbols: Sequence[str]) -> dict[str, Any]:
    """One order of the account: open, or among its last finished ones."""
    if req.order_id is not None:
        rec = status.find(account, req.order_id)
        what = f"order {req.order_id}"
    else:
        coid = req.client_order_id
        rec = status.find_coid(account, coid) if coid is not None else None
        what = f"order with client_order_id {shown(coid)}"
    if rec is None:
        raise RequestError("unknown_order", f"no {what} of this account is open or among its last "
                           f"{status.keep} finished orders", req.req_id)
    return {"type": "order_status", "req_id": req.req_id, "order": order_message(rec, symbols)}

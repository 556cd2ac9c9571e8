"""The enumerations of the public API.

Every member is a ``str`` (``StrEnum``), so ``Side.BUY == "buy"`` and plain
strings are accepted wherever a member is. Reject and cancel reasons mirror the
C tables in ``csrc/pyengine.h`` one to one; a unit test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "Side",
    "OrderType",
    "TimeInForce",
    "SelfTradePrevention",
    "RejectReason",
    "CancelReason",
    "TradingState",
    "DEFAULT_TIF",
    "REJECT_MESSAGES",
]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


DEFAULT_TIF: Mapping[str, TimeInForce] = MappingProxyType(
    {OrderType.LIMIT: TimeInForce.GTC, OrderType.MARKET: TimeInForce.IOC}
)
"""The time in force of an order given none, by order type: a limit order
rests (gtc), a market order never does (ioc). Every interface (``Engine.submit``,
``pack_new_order``, the server's ``new_order``, ``Client.new_order``) takes its
default from here."""


class SelfTradePrevention(StrEnum):
    NONE = "none"
    CANCEL_NEWEST = "cancel_newest"
    CANCEL_OLDEST = "cancel_oldest"
    CANCEL_BOTH = "cancel_both"


class RejectReason(StrEnum):
    """Why the engine refused a command (``Rejected.reason``)."""

    UNKNOWN_INSTRUMENT = "unknown_instrument"
    BAD_QTY = "bad_qty"
    OFF_LOT = "off_lot"
    BAD_PRICE = "bad_price"
    OFF_TICK = "off_tick"
    OUTSIDE_BAND = "outside_band"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    POST_ONLY_WOULD_CROSS = "post_only_would_cross"
    UNKNOWN_ORDER = "unknown_order"
    NOT_OWNER = "not_owner"
    # Only malformed packed commands (the batch path) can get these.
    BAD_COMMAND = "bad_command"
    BAD_SIDE = "bad_side"
    BAD_ORDER_TYPE = "bad_order_type"
    BAD_TIF = "bad_tif"
    BAD_STP = "bad_stp"
    BAD_FLAGS = "bad_flags"
    BAD_CLIENT_ORDER_ID = "bad_client_order_id"
    # The engine could not allocate memory for the command (nothing changed).
    NO_MEMORY = "no_memory"
    # A new order or a modify for a halted instrument.
    HALTED = "halted"
    # A trading-state change to a state that does not exist (batch path only).
    BAD_STATE = "bad_state"


class CancelReason(StrEnum):
    """Why an order left the book without trading (``Cancelled.reason``)."""

    USER = "user"
    IOC = "ioc"
    FOK = "fok"
    MARKET_REMAINDER = "market_remainder"
    BAND = "band"
    STP = "stp"
    LEVEL_FULL = "level_full"
    # The order traded what it could but memory to rest the remainder ran out.
    NO_MEMORY = "no_memory"


class TradingState(StrEnum):
    """An instrument's trading state; while halted only cancels are accepted."""

    OPEN = "open"
    HALTED = "halted"


REJECT_MESSAGES: dict[RejectReason, str] = {
    RejectReason.UNKNOWN_INSTRUMENT: "unknown instrument",
    RejectReason.BAD_QTY: "quantity must be positive",
    RejectReason.OFF_LOT: "quantity is not a multiple of the lot size",
    RejectReason.BAD_PRICE: "price must be positive",
    RejectReason.OFF_TICK: "price is not a multiple of the tick size",
    RejectReason.OUTSIDE_BAND: "price is outside the instrument's price band",
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: "client order id is in use by an open order of this account",
    RejectReason.POST_ONLY_WOULD_CROSS: "post-only order would trade",
    RejectReason.UNKNOWN_ORDER: "unknown or already finished order",
    RejectReason.NOT_OWNER: "order belongs to another account",
    RejectReason.BAD_COMMAND: "unknown command type or nonzero reserved field",
    RejectReason.BAD_SIDE: "side must be buy or sell",
    RejectReason.BAD_ORDER_TYPE: "order type must be limit or market; a market order has no price",
    RejectReason.BAD_TIF: "time in force must be gtc, ioc or fok; a market order cannot be gtc",
    RejectReason.BAD_STP: "unknown self-trade prevention mode",
    RejectReason.BAD_FLAGS: (
        "unknown flags, post-only on a market, ioc or fok order, or a modify that keeps both price and qty"
    ),
    RejectReason.BAD_CLIENT_ORDER_ID: "client order id must be printable ASCII",
    RejectReason.NO_MEMORY: "out of memory",
    RejectReason.HALTED: "the instrument is halted: only cancels are accepted",
    RejectReason.BAD_STATE: "trading state must be open or halted",
}

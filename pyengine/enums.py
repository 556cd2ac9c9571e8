"""The enumerations of the public API.

Every member is a ``str`` (``StrEnum``), so ``Side.BUY == "buy"`` and plain
strings are accepted wherever a member is. Reject and cancel reasons mirror the
C tables in ``csrc/pyengine.h`` one to one; a unit test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from ._ffi import c_text, lib

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
    # Engines that take order ids from the caller: a new order without one,
    # or with the id of an open order.
    BAD_ORDER_ID = "bad_order_id"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    # A new order from an account whose market-maker protection on the
    # instrument has tripped (until it is reset).
    MMP = "mmp"
    # Protection set with a negative limit or window (batch path only).
    BAD_MMP = "bad_mmp"
    # A new order, or what a modify leaves, over the instrument's order
    # limits (Engine.set_order_limits).
    MAX_QTY_EXCEEDED = "max_qty_exceeded"
    MAX_NOTIONAL_EXCEEDED = "max_notional_exceeded"
    # Order limits set negative (batch path only).
    BAD_ORDER_LIMITS = "bad_order_limits"


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
    # The account's dead-man switch fired (a cancel-all the engine ran for it).
    DEAD_MAN = "dead_man"
    # The account's market-maker protection on the instrument tripped.
    MMP = "mmp"


class TradingState(StrEnum):
    """An instrument's trading state; while halted only cancels are accepted."""

    OPEN = "open"
    HALTED = "halted"


def _reject_messages() -> Mapping[RejectReason, str]:
    """The message of each reason, from the core's table (ENG_ERR_MAP in
    csrc/pyengine.h): the one place they are written."""
    by_name = {c_text(lib.eng_err_name, c): c_text(lib.eng_strerror, c) for c in range(lib.ENG_ERR__COUNT)}
    return MappingProxyType({reason: by_name[reason.value] for reason in RejectReason})


REJECT_MESSAGES: Mapping[RejectReason, str] = _reject_messages()
"""What each reject reason means, in words (``Rejected.message``)."""

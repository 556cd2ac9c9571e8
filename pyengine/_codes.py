"""The numeric codes of the C core, mapped to the public enums.

The C header is the single source of the codes; names are read from the
compiled library at import (``eng_err_name``) and matched to the enum members
by value, so a code added in C without a Python member fails loudly at import.
"""

from __future__ import annotations

from ._ffi import c_text, lib
from .enums import (
    CancelReason,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TradingState,
)

SIDE_CODE: dict[str, int] = {Side.BUY: lib.ENG_BUY, Side.SELL: lib.ENG_SELL}
ORDER_TYPE_CODE: dict[str, int] = {OrderType.LIMIT: lib.ENG_LIMIT, OrderType.MARKET: lib.ENG_MARKET}
TIF_CODE: dict[str, int] = {
    TimeInForce.GTC: lib.ENG_GTC,
    TimeInForce.IOC: lib.ENG_IOC,
    TimeInForce.FOK: lib.ENG_FOK,
}
STP_CODE: dict[str, int] = {
    SelfTradePrevention.NONE: lib.ENG_STP_NONE,
    SelfTradePrevention.CANCEL_NEWEST: lib.ENG_STP_CANCEL_NEWEST,
    SelfTradePrevention.CANCEL_OLDEST: lib.ENG_STP_CANCEL_OLDEST,
    SelfTradePrevention.CANCEL_BOTH: lib.ENG_STP_CANCEL_BOTH,
}

# Indexed by C code: side 1/2 -> member (index 0 unused).
SIDE_BY_CODE: tuple[Side | None, ...] = (None, Side.BUY, Side.SELL)
STATE_BY_CODE: tuple[TradingState, ...] = tuple(
    sorted(TradingState,
           key={TradingState.OPEN: lib.ENG_STATE_OPEN, TradingState.HALTED: lib.ENG_STATE_HALTED}.__getitem__)
)
STP_BY_CODE: tuple[SelfTradePrevention, ...] = tuple(
    sorted(SelfTradePrevention, key=STP_CODE.__getitem__)
)


# Codes that never appear in a Rejected event (API results, not market refusals).
_API_ONLY = {"ok", "invalid_argument", "duplicate_symbol", "too_many_instruments", "busy", "corrupt"}


def _reject_table() -> tuple[RejectReason | None, ...]:
    table: list[RejectReason | None] = []
    for code in range(lib.ENG_ERR__COUNT):
        name = c_text(lib.eng_err_name, code)
        table.append(None if name in _API_ONLY else RejectReason(name))
    return tuple(table)


def _cancel_table() -> tuple[CancelReason, ...]:
    return tuple(CancelReason(c_text(lib.eng_cancel_reason_name, c)) for c in range(lib.ENG_CANCEL__COUNT))


REJECT_BY_CODE = _reject_table()
CANCEL_BY_CODE = _cancel_table()

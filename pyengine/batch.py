"""The packed command and event records of the batch path.

``Engine.process_batch(buf)`` takes commands as 64-byte records and returns
events as 96-byte records, exactly the C structs ``struct eng_cmd`` and
``struct eng_event`` of ``csrc/pyengine.h`` (little-endian, no padding). Build
commands with :func:`pack_new_order`, :func:`pack_cancel` and
:func:`pack_modify` (pure Python), or as a numpy structured array of
:data:`COMMAND_DTYPE`; read events back with ``Engine.decode_events`` or view
them as a numpy array of :data:`EVENT_DTYPE`. numpy is optional: the dtypes are
built on first access.

Numeric codes are the IntEnums below; docs/batch.md documents the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum, IntFlag
from functools import cache
from typing import Any, NamedTuple

from . import _args
from .enums import CancelReason, RejectReason, SelfTradePrevention, Side, TradingState
from .enums import DEFAULT_TIF, REJECT_MESSAGES
from .events import Accepted, Cancelled, Event, LevelUpdate, Modified, Rejected, StateChanged, Trade

__all__ = [
    "CommandType",
    "StateCode",
    "SideCode",
    "OrderTypeCode",
    "TifCode",
    "StpCode",
    "CommandFlag",
    "EventType",
    "COMMAND_SIZE",
    "EVENT_SIZE",
    "COMMAND_STRUCT",
    "EVENT_STRUCT",
    "BatchResult",
    "pack_new_order",
    "pack_cancel",
    "pack_modify",
    "pack_set_state",
    "decode_events",
]


class CommandType(IntEnum):
    NEW = 1
    CANCEL = 2
    MODIFY = 3
    SET_STATE = 4


class StateCode(IntEnum):
    OPEN = 0
    HALTED = 1


class SideCode(IntEnum):
    BUY = 1
    SELL = 2


class OrderTypeCode(IntEnum):
    LIMIT = 1
    MARKET = 2


class TifCode(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3


class StpCode(IntEnum):
    NONE = 0
    CANCEL_NEWEST = 1
    CANCEL_OLDEST = 2
    CANCEL_BOTH = 3


class CommandFlag(IntFlag):
    POST_ONLY = 1  # new order: never trade on arrival
    ANY_ACCOUNT = 2  # cancel/modify: administrator, no ownership check
    KEEP_PRICE = 4  # modify: keep the order's price
    KEEP_QTY = 8  # modify: keep the order's open qty (not with KEEP_PRICE)


class EventType(IntEnum):
    ACCEPTED = 1
    REJECTED = 2
    TRADE = 3
    CANCELLED = 4
    MODIFIED = 5
    LEVEL = 6
    STATE = 7


# type side order_type tif stp flags reserved instrument account order_id
# price qty ts coid
COMMAND_STRUCT = struct.Struct("<BBBBBBHIIQqqq16s")
# type side reason flags instrument seq order_id maker_order_id trade_id
# price qty leaves maker_leaves account maker_account coid
EVENT_STRUCT = struct.Struct("<BBBBIQQQQqqqqII16s")
COMMAND_SIZE = COMMAND_STRUCT.size
EVENT_SIZE = EVENT_STRUCT.size
assert COMMAND_SIZE == 64 and EVENT_SIZE == 96

_NO_COID = bytes(16)


class BatchResult(NamedTuple):
    """What one ``process_batch`` call did."""

    events: Any  # packed event records, a bytes-like buffer (EVENT_STRUCT / EVENT_DTYPE)
    commands: int  # commands processed
    event_count: int
    accepted: int
    rejected: int
    trades: int
    cancelled: int
    modified: int


def _side(value: Any) -> int:
    return _args.as_code("side", value, {Side.BUY: SideCode.BUY, Side.SELL: SideCode.SELL})


_ORDER_TYPES = {"limit": OrderTypeCode.LIMIT, "market": OrderTypeCode.MARKET}
_TIFS = {"gtc": TifCode.GTC, "ioc": TifCode.IOC, "fok": TifCode.FOK}
_STPS = {str(m): StpCode[m.name] for m in SelfTradePrevention}


def pack_new_order(
    instrument: int,
    side: str,
    qty: int,
    price: int | None = None,
    *,
    tif: str | None = None,
    account: int = 0,
    client_order_id: str | None = None,
    order_type: str = "limit",
    post_only: bool = False,
    stp: str = "none",
    ts: int = 0,
) -> bytes:
    """One NEW command record; arguments as for ``Engine.submit`` except that
    the instrument is its number (``Engine.instrument_id(symbol)``)."""
    ot = _args.as_code("order_type", order_type, _ORDER_TYPES)
    tf = _args.as_code("tif", DEFAULT_TIF[order_type] if tif is None else tif, _TIFS)
    _args.check_order_shape(
        ot == OrderTypeCode.MARKET, tf == TifCode.GTC, price, _args.as_bool("post_only", post_only)
    )
    return COMMAND_STRUCT.pack(
        CommandType.NEW,
        _side(side),
        ot,
        tf,
        _args.as_code("stp", stp, _STPS),
        CommandFlag.POST_ONLY if post_only else 0,
        0,
        _args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        _args.as_int("account", account, 0, _args.UINT32_MAX),
        0,
        0 if price is None else _args.as_int("price", price),
        _args.as_int("qty", qty),
        _args.as_int("ts", ts),
        _NO_COID if client_order_id is None else _args.coid_bytes(client_order_id),
    )


def _target(order_id: int | None, account: int | None, client_order_id: str | None) -> tuple[int, int, int, bytes]:
    """(order_id, account, flags, coid) of a cancel/modify target."""
    if (order_id is None) == (client_order_id is None):
        raise _args.InvalidArgument("give exactly one of order_id and client_order_id")
    if client_order_id is not None and account is None:
        raise _args.InvalidArgument("a client_order_id is per account: give the account too")
    oid = 0 if order_id is None else _args.as_int("order_id", order_id, 1, _args.UINT64_MAX)
    acct = 0 if account is None else _args.as_int("account", account, 0, _args.UINT32_MAX)
    flags = CommandFlag.ANY_ACCOUNT if account is None else 0
    coid = _NO_COID if client_order_id is None else _args.coid_bytes(client_order_id)
    return oid, acct, flags, coid


def pack_cancel(
    order_id: int | None = None,
    *,
    account: int | None = None,
    client_order_id: str | None = None,
    ts: int = 0,
) -> bytes:
    """One CANCEL command record; arguments as for ``Engine.cancel``."""
    oid, acct, flags, coid = _target(order_id, account, client_order_id)
    return COMMAND_STRUCT.pack(
        CommandType.CANCEL, 0, 0, 0, 0, flags, 0, 0, acct, oid, 0, 0, _args.as_int("ts", ts), coid
    )


def pack_modify(
    order_id: int | None = None,
    qty: int | None = None,
    price: int | None = None,
    *,
    account: int | None = None,
    client_order_id: str | None = None,
    ts: int = 0,
) -> bytes:
    """One MODIFY command record; arguments as for ``Engine.modify`` (a qty
    left out is the order's open qty when the command runs: flag KEEP_QTY)."""
    oid, acct, flags, coid = _target(order_id, account, client_order_id)
    if qty is None:
        if price is None:
            raise _args.InvalidArgument("modify needs a new qty, a new price or both")
        flags |= CommandFlag.KEEP_QTY
    if price is None:
        flags |= CommandFlag.KEEP_PRICE
    return COMMAND_STRUCT.pack(
        CommandType.MODIFY,
        0,
        0,
        0,
        0,
        flags,
        0,
        0,
        acct,
        oid,
        0 if price is None else _args.as_int("price", price),
        0 if qty is None else _args.as_int("qty", qty),
        _args.as_int("ts", ts),
        coid,
    )


def pack_set_state(instrument: int, state: TradingState | str, *, ts: int = 0) -> bytes:
    """One SET_STATE command record: halt or resume instrument number
    ``instrument`` (an administrator's command)."""
    code = StateCode[TradingState(state).name]
    inst = _args.as_int("instrument", instrument, 0, _args.UINT32_MAX)
    return COMMAND_STRUCT.pack(CommandType.SET_STATE, 0, 0, 0, 0, 0, 0, inst, 0, 0, 0, code, _args.as_int("ts", ts), _NO_COID)


_SIDES = (None, Side.BUY, Side.SELL)
_STATES = (TradingState.OPEN, TradingState.HALTED)
_REJECTS = {m: REJECT_MESSAGES[m] for m in RejectReason}
# Plain ints: comparing with an IntEnum member costs an attribute lookup on
# the enum class each time, which dominated decoding.
_TRADE, _ACCEPTED, _CANCELLED, _MODIFIED, _REJECTED, _LEVEL, _STATE = (
    int(EventType.TRADE),
    int(EventType.ACCEPTED),
    int(EventType.CANCELLED),
    int(EventType.MODIFIED),
    int(EventType.REJECTED),
    int(EventType.LEVEL),
    int(EventType.STATE),
)


def _coid(raw: bytes) -> str | None:
    if raw == _NO_COID:
        return None
    return raw.rstrip(b"\0").decode("ascii", "backslashreplace")


# Per event type, a Struct that reads just that type's fields, in C order
# (x = skipped byte). Offsets: type 0, side 1, reason 2, flags 3, instrument 4,
# seq 8, order_id 16, maker_order_id 24, trade_id 32, price 40, qty 48,
# leaves 56, maker_leaves 64, account 72, maker_account 76, coid 80.
_TRADE_FIELDS = struct.Struct("<xBxxIQQQQqqqqII16x")
_ACCEPTED_FIELDS = struct.Struct("<xBxxIQQ16xqq16xI4x16s")
_CANCELLED_FIELDS = struct.Struct("<xxBx4xQQ32xq32x")
_MODIFIED_FIELDS = struct.Struct("<xxxB4xQQ16xqq40x")
_REJECTED_FIELDS = struct.Struct("<xxBx4xQQ56x16s")
_LEVEL_FIELDS = struct.Struct("<xBxxIQ24xqqq32x")
_STATE_FIELDS = struct.Struct("<4xIQ32xq40x")
assert all(
    f.size == EVENT_SIZE
    for f in (_TRADE_FIELDS, _ACCEPTED_FIELDS, _CANCELLED_FIELDS, _MODIFIED_FIELDS, _REJECTED_FIELDS, _LEVEL_FIELDS,
              _STATE_FIELDS)
)


def decode_events(
    raw: bytes | bytearray | memoryview,
    symbols: Sequence[str],
    reject_reasons: Sequence[RejectReason | None],
    cancel_reasons: Sequence[CancelReason],
    count: int | None = None,
) -> list[Event]:
    """Turn packed event records into event objects.

    ``symbols`` names the instruments by number; the reason tables map C codes
    to enum members (``Engine.decode_events`` passes its own). With `count`,
    only the first `count` records of `raw` are read.
    """
    raw = memoryview(raw).cast("B")
    if count is None:
        count = len(raw) // EVENT_SIZE
    out: list[Event] = []
    append = out.append
    new = tuple.__new__
    sides = _SIDES
    no_coid = _NO_COID
    trade_fields = _TRADE_FIELDS.unpack_from
    for off in range(0, count * EVENT_SIZE, EVENT_SIZE):
        typ = raw[off]
        if typ == _TRADE:
            side, inst, seq, taker, maker, tid, price, qty, leaves, mleaves, acct, macct = trade_fields(raw, off)
            append(
                new(
                    Trade,
                    (seq, tid, symbols[inst], price, qty, maker, taker, macct, acct, sides[side], mleaves, leaves),
                )
            )
        elif typ == _ACCEPTED:
            side, inst, seq, oid, price, qty, acct, coid = _ACCEPTED_FIELDS.unpack_from(raw, off)
            append(
                new(
                    Accepted,
                    (
                        seq,
                        oid,
                        symbols[inst],
                        sides[side],
                        price or None,
                        qty,
                        acct,
                        None if coid == no_coid else _coid(coid),
                    ),
                )
            )
        elif typ == _LEVEL:
            side, inst, seq, price, total, count = _LEVEL_FIELDS.unpack_from(raw, off)
            append(new(LevelUpdate, (seq, symbols[inst], sides[side], price, total, count)))
        elif typ == _CANCELLED:
            reason, seq, oid, leaves = _CANCELLED_FIELDS.unpack_from(raw, off)
            append(new(Cancelled, (seq, oid, leaves, cancel_reasons[reason])))
        elif typ == _MODIFIED:
            flags, seq, oid, price, qty = _MODIFIED_FIELDS.unpack_from(raw, off)
            append(new(Modified, (seq, oid, price, qty, flags & 1 == 1)))
        elif typ == _REJECTED:
            reason, seq, oid, coid = _REJECTED_FIELDS.unpack_from(raw, off)
            why = reject_reasons[reason]
            append(
                new(
                    Rejected,
                    (seq, why, _REJECTS[why], None if coid == no_coid else _coid(coid), oid or None),  # type: ignore[index]
                )
            )
        elif typ == _STATE:
            inst, seq, state = _STATE_FIELDS.unpack_from(raw, off)
            append(new(StateChanged, (seq, symbols[inst], _STATES[state])))
        else:
            raise ValueError(f"not an event record: type {typ} at byte {off}")
    return out


@cache
def _command_dtype() -> Any:
    import numpy as np

    return np.dtype(
        [
            ("type", "u1"),
            ("side", "u1"),
            ("order_type", "u1"),
            ("tif", "u1"),
            ("stp", "u1"),
            ("flags", "u1"),
            ("reserved", "<u2"),
            ("instrument", "<u4"),
            ("account", "<u4"),
            ("order_id", "<u8"),
            ("price", "<i8"),
            ("qty", "<i8"),
            ("ts", "<i8"),
            ("coid", "S16"),
        ]
    )


@cache
def _event_dtype() -> Any:
    import numpy as np

    return np.dtype(
        [
            ("type", "u1"),
            ("side", "u1"),
            ("reason", "u1"),
            ("flags", "u1"),
            ("instrument", "<u4"),
            ("seq", "<u8"),
            ("order_id", "<u8"),
            ("maker_order_id", "<u8"),
            ("trade_id", "<u8"),
            ("price", "<i8"),
            ("qty", "<i8"),
            ("leaves", "<i8"),
            ("maker_leaves", "<i8"),
            ("account", "<u4"),
            ("maker_account", "<u4"),
            ("coid", "S16"),
        ]
    )


def __getattr__(name: str) -> Any:
    # COMMAND_DTYPE / EVENT_DTYPE need numpy: built on first use only.
    if name == "COMMAND_DTYPE":
        return _command_dtype()
    if name == "EVENT_DTYPE":
        return _event_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

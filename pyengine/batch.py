"""The packed command and event records of the batch path.

``Engine.process_batch(buf)`` takes commands as 64-byte records and returns
events as 96-byte records, exactly the C structs ``struct eng_cmd`` and
``struct eng_event`` of ``csrc/pyengine.h`` (little-endian, no padding). Build
commands with :func:`pack_new_order`, :func:`pack_cancel` and
:func:`pack_modify` (pure Python), or as a numpy structured array of
:data:`COMMAND_DTYPE`; read events back with ``Engine.decode_events`` or view
them as a numpy array of :data:`EVENT_DTYPE`. numpy is optional: the dtypes are
built on first access.

Numeric codes are the IntEnums below and the layouts are the C structs', all
read from csrc/pyengine.h through cffi; docs/batch.md documents them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum, IntFlag
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex

from . import _args
from ._codes import ORDER_TYPE_CODE, SIDE_BY_CODE, SIDE_CODE, STATE_BY_CODE, STP_CODE, TIF_CODE
from ._ffi import ffi, lib
from .enums import CancelReason, RejectReason, TradingState
from .enums import DEFAULT_TIF, REJECT_MESSAGES
from .errors import InvalidArgument, InvalidArgumentType
from .events import (
    Accepted,
    Cancelled,
    Event,
    LevelUpdate,
    MassCancelled,
    MmpUpdate,
    Modified,
    OrderLimitsSet,
    Rejected,
    StateChanged,
    Trade,
)

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
    "pack_cancel_all",
    "pack_set_mmp",
    "pack_reset_mmp",
    "pack_set_order_limits",
    "decode_events",
]


# The codes are the header's (csrc/pyengine.h), read through cffi.


class CommandType(IntEnum):
    NEW = lib.ENG_CMD_NEW
    CANCEL = lib.ENG_CMD_CANCEL
    MODIFY = lib.ENG_CMD_MODIFY
    SET_STATE = lib.ENG_CMD_SET_STATE
    CANCEL_ALL = lib.ENG_CMD_CANCEL_ALL
    SET_MMP = lib.ENG_CMD_SET_MMP
    RESET_MMP = lib.ENG_CMD_RESET_MMP
    SET_LIMITS = lib.ENG_CMD_SET_LIMITS


class StateCode(IntEnum):
    OPEN = lib.ENG_STATE_OPEN
    HALTED = lib.ENG_STATE_HALTED


class SideCode(IntEnum):
    BUY = lib.ENG_BUY
    SELL = lib.ENG_SELL


class OrderTypeCode(IntEnum):
    LIMIT = lib.ENG_LIMIT
    MARKET = lib.ENG_MARKET


class TifCode(IntEnum):
    GTC = lib.ENG_GTC
    IOC = lib.ENG_IOC
    FOK = lib.ENG_FOK


class StpCode(IntEnum):
    NONE = lib.ENG_STP_NONE
    CANCEL_NEWEST = lib.ENG_STP_CANCEL_NEWEST
    CANCEL_OLDEST = lib.ENG_STP_CANCEL_OLDEST
    CANCEL_BOTH = lib.ENG_STP_CANCEL_BOTH


class CommandFlag(IntFlag):
    POST_ONLY = lib.ENG_CMD_F_POST_ONLY  # new order: never trade on arrival
    ANY_ACCOUNT = lib.ENG_CMD_F_ANY_ACCOUNT  # cancel/modify: administrator, no ownership check
    KEEP_PRICE = lib.ENG_CMD_F_KEEP_PRICE  # modify: keep the order's price
    KEEP_QTY = lib.ENG_CMD_F_KEEP_QTY  # modify: keep the order's open qty (not with KEEP_PRICE)
    DEAD_MAN = lib.ENG_CMD_F_DEAD_MAN  # cancel-all: the dead-man switch fired (reason dead_man)
    ALL_INSTRUMENTS = lib.ENG_CMD_F_ALL_INSTRUMENTS  # cancel-all: every instrument
    ALL_ACCOUNTS = lib.ENG_CMD_F_ALL_ACCOUNTS  # cancel-all: every account (account 0; not with DEAD_MAN)


class EventType(IntEnum):
    ACCEPTED = lib.ENG_EV_ACCEPTED
    REJECTED = lib.ENG_EV_REJECTED
    TRADE = lib.ENG_EV_TRADE
    CANCELLED = lib.ENG_EV_CANCELLED
    MODIFIED = lib.ENG_EV_MODIFIED
    LEVEL = lib.ENG_EV_LEVEL
    STATE = lib.ENG_EV_STATE
    MASS_CANCELLED = lib.ENG_EV_MASS_CANCELLED
    MMP = lib.ENG_EV_MMP
    LIMITS = lib.ENG_EV_LIMITS


# The layouts are the header's too: each field's type and offset, from cffi.
_STRUCT_CODES = {"uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "int32_t": "i", "uint64_t": "Q", "int64_t": "q"}


def _fields(ctype: str) -> list[tuple[str, int, str]]:
    """(name, offset, struct code) of each field of a C struct, in order."""
    out = []
    for name, field in ffi.typeof(ctype).fields:
        t = field.type
        code = f"{t.length}s" if t.kind == "array" and t.item.cname == "char" else _STRUCT_CODES[t.cname]
        out.append((name, field.offset, code))
    return out


def _struct(ctype: str, names: Sequence[str] | None = None) -> struct.Struct:
    """A little-endian Struct of a C struct that reads the fields `names`
    (all by default), which must be in C order, and skips every other byte."""
    fields = _fields(ctype)
    wanted = [name for name, _, _ in fields] if names is None else list(names)
    if [name for name, _, _ in fields if name in wanted] != wanted:
        raise ValueError(f"{ctype} has not the fields {wanted} in this order")
    fmt, pos = "<", 0
    for name, offset, code in fields:
        size = struct.calcsize("<" + code)
        fmt += (f"{offset - pos}x" if offset > pos else "") + (code if name in wanted else f"{size}x")
        pos = offset + size
    end = ffi.sizeof(ctype)
    return struct.Struct(fmt + (f"{end - pos}x" if end > pos else ""))


COMMAND_STRUCT = _struct("struct eng_cmd")
EVENT_STRUCT = _struct("struct eng_event")
COMMAND_SIZE = COMMAND_STRUCT.size
EVENT_SIZE = EVENT_STRUCT.size

_NO_COID = bytes(lib.ENG_COID_LEN)
_COMMAND_FIELDS = tuple(name for name, _, _ in _fields("struct eng_cmd"))
_COMMAND_ZERO = {name: (_NO_COID if name == "coid" else 0) for name in _COMMAND_FIELDS}


def _command(**fields: Any) -> bytes:
    """One struct eng_cmd record from its fields by name (the rest zero)."""
    values = _COMMAND_ZERO | fields
    return COMMAND_STRUCT.pack(*(values[name] for name in _COMMAND_FIELDS))


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




def pack_new_order(
    instrument: SupportsIndex,
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
    ts: SupportsIndex = 0,
) -> bytes:
    """One NEW command record; arguments as for ``Engine.submit`` except that
    the instrument is its number (``Engine.instrument_id(symbol)``).

    ``order_id`` is the order's own id for an Engine made with
    ``caller_order_ids=True``; None (or 0) packs none, which such an engine
    rejects (``bad_order_id``) and any other ignores."""
    ot = _args.as_code("order_type", order_type, ORDER_TYPE_CODE)
    tf = _args.as_code("tif", DEFAULT_TIF[order_type] if tif is None else tif, TIF_CODE)
    _args.check_order_shape(
        ot == OrderTypeCode.MARKET, tf == TifCode.GTC, price, _args.as_bool("post_only", post_only)
    )
    return _command(
        type=CommandType.NEW,
        side=_args.as_code("side", side, SIDE_CODE),
        order_type=ot,
        tif=tf,
        stp=_args.as_code("stp", stp, STP_CODE),
        flags=CommandFlag.POST_ONLY if post_only else 0,
        instrument=_args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        account=_args.as_int("account", account, 0, _args.UINT32_MAX),
        price=0 if price is None else _args.as_int("price", price),
        qty=_args.as_int("qty", qty),
        order_id=0 if order_id is None else _args.as_int("order_id", order_id, 0, _args.UINT64_MAX),
        ts=_args.as_int("ts", ts),
        coid=_NO_COID if client_order_id is None else _args.coid_bytes(client_order_id),
    )


def _target(
    order_id: SupportsIndex | None, account: SupportsIndex | None, client_order_id: str | None
) -> tuple[int, int, int, bytes]:
    """(order_id, account, flags, coid) of a cancel/modify target."""
    oid, acct, coid = _args.check_target(order_id, account, client_order_id)
    flags = CommandFlag.ANY_ACCOUNT if acct is None else 0
    return oid, acct or 0, flags, _NO_COID if coid is None else coid


def pack_cancel(
    order_id: SupportsIndex | None = None,
    *,
    account: SupportsIndex | None = None,
    client_order_id: str | None = None,
    ts: SupportsIndex = 0,
) -> bytes:
    """One CANCEL command record; arguments as for ``Engine.cancel``."""
    oid, acct, flags, coid = _target(order_id, account, client_order_id)
    return _command(
        type=CommandType.CANCEL, flags=flags, account=acct, order_id=oid, ts=_args.as_int("ts", ts), coid=coid
    )


def pack_modify(
    order_id: SupportsIndex | None = None,
    qty: SupportsIndex | None = None,
    price: SupportsIndex | None = None,
    *,
    account: SupportsIndex | None = None,
    client_order_id: str | None = None,
    ts: SupportsIndex = 0,
) -> bytes:
    """One MODIFY command record; arguments as for ``Engine.modify`` (a qty
    left out is the order's open qty when the command runs: flag KEEP_QTY)."""
    oid, acct, flags, coid = _target(order_id, account, client_order_id)
    if qty is None:
        if price is None:
            raise InvalidArgument("modify needs a new qty, a new price or both")
        flags |= CommandFlag.KEEP_QTY
    if price is None:
        flags |= CommandFlag.KEEP_PRICE
    return _command(
        type=CommandType.MODIFY,
        flags=flags,
        account=acct,
        order_id=oid,
        price=0 if price is None else _args.as_int("price", price),
        qty=0 if qty is None else _args.as_int("qty", qty),
        ts=_args.as_int("ts", ts),
        coid=coid,
    )


_STATE_CODE: dict[str, int] = {TradingState.OPEN: StateCode.OPEN, TradingState.HALTED: StateCode.HALTED}


def pack_set_state(
    instrument: SupportsIndex, state: TradingState | str | SupportsIndex, *, ts: SupportsIndex = 0
) -> bytes:
    """One SET_STATE command record: halt or resume instrument number
    ``instrument`` (an administrator's command). ``state``: a TradingState,
    its str (``"open"``, ``"halted"``), or the record's code (``StateCode``:
    0 open, 1 halted)."""
    if isinstance(state, str):
        code = _args.as_code("state", state, _STATE_CODE)
    elif isinstance(state, bool) or not hasattr(type(state), "__index__"):
        raise InvalidArgumentType(f"state must be a TradingState, its str or a StateCode, not {type(state).__name__}")
    else:
        code = _args.as_int("state", state, min(StateCode), max(StateCode))
    inst = _args.as_int("instrument", instrument, 0, _args.UINT32_MAX)
    return _command(type=CommandType.SET_STATE, instrument=inst, qty=code, ts=_args.as_int("ts", ts))


def pack_cancel_all(
    account: SupportsIndex | None = None,
    instrument: SupportsIndex | None = None,
    *,
    all_accounts: bool = False,
    dead_man: bool = False,
    ts: SupportsIndex = 0,
) -> bytes:
    """One CANCEL_ALL command record: every open order of ``account`` (with
    ``all_accounts=True`` and no account: of every account) on instrument
    number ``instrument``, or on every instrument (None); with ``dead_man``
    the orders leave with reason dead_man. Arguments as for
    ``Engine.cancel_all``."""
    acct, flags = _args.cancel_all_scope(account, all_accounts, dead_man)
    if instrument is None:
        flags |= CommandFlag.ALL_INSTRUMENTS
    return _command(
        type=CommandType.CANCEL_ALL,
        flags=flags,
        instrument=0 if instrument is None else _args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        account=acct,
        ts=_args.as_int("ts", ts),
    )


def pack_set_mmp(
    *,
    account: SupportsIndex,
    instrument: SupportsIndex,
    qty_limit: SupportsIndex,
    window: SupportsIndex = 0,
    ts: SupportsIndex = 0,
) -> bytes:
    """One SET_MMP command record: ``account``'s market-maker protection on
    instrument number ``instrument`` (``qty_limit`` 0 turns it off; ``window``
    in ts units, 0 = until a reset). Arguments as for ``Engine.set_mmp``, by
    keyword only: the two ints ``account`` and ``instrument`` are easy to
    swap (they once came in the other order)."""
    return _command(
        type=CommandType.SET_MMP,
        instrument=_args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        account=_args.as_int("account", account, 0, _args.UINT32_MAX),
        qty=_args.as_int("qty_limit", qty_limit),
        price=_args.as_int("window", window),
        ts=_args.as_int("ts", ts),
    )


def pack_reset_mmp(*, account: SupportsIndex, instrument: SupportsIndex, ts: SupportsIndex = 0) -> bytes:
    """One RESET_MMP command record: lift ``account``'s tripped protection on
    instrument number ``instrument``. By keyword only, as ``pack_set_mmp``."""
    return _command(
        type=CommandType.RESET_MMP,
        instrument=_args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        account=_args.as_int("account", account, 0, _args.UINT32_MAX),
        ts=_args.as_int("ts", ts),
    )


def pack_set_order_limits(
    instrument: SupportsIndex, max_qty: SupportsIndex = 0, max_notional: SupportsIndex = 0, *, ts: SupportsIndex = 0
) -> bytes:
    """One SET_LIMITS command record: the order limits of instrument number
    ``instrument`` (0: none). Arguments as for ``Engine.set_order_limits``."""
    return _command(
        type=CommandType.SET_LIMITS,
        instrument=_args.as_int("instrument", instrument, 0, _args.UINT32_MAX),
        qty=_args.as_int("max_qty", max_qty),
        price=_args.as_int("max_notional", max_notional),
        ts=_args.as_int("ts", ts),
    )


# Plain ints: comparing with an IntEnum member costs an attribute lookup on
# the enum class each time, which dominated decoding.
_TRADE, _ACCEPTED, _CANCELLED, _MODIFIED, _REJECTED, _LEVEL, _STATE, _MASS_CANCELLED, _MMP, _LIMITS = (
    int(EventType.TRADE),
    int(EventType.ACCEPTED),
    int(EventType.CANCELLED),
    int(EventType.MODIFIED),
    int(EventType.REJECTED),
    int(EventType.LEVEL),
    int(EventType.STATE),
    int(EventType.MASS_CANCELLED),
    int(EventType.MMP),
    int(EventType.LIMITS),
)


_EV_ALL_INSTRUMENTS, _EV_ALL_ACCOUNTS = lib.ENG_EV_F_ALL_INSTRUMENTS, lib.ENG_EV_F_ALL_ACCOUNTS


def _coid(raw: bytes) -> str | None:
    if raw == _NO_COID:
        return None
    return raw.rstrip(b"\0").decode("ascii", "backslashreplace")


# Per event type, a Struct that reads just the fields that type uses (see
# struct eng_event), in C order.
_EV = "struct eng_event"
_TRADE_FIELDS = _struct(
    _EV,
    ("side", "instrument", "seq", "order_id", "maker_order_id", "trade_id", "price", "qty", "leaves", "maker_leaves",
     "account", "maker_account"),
)
_ACCEPTED_FIELDS = _struct(_EV, ("side", "instrument", "seq", "order_id", "price", "qty", "account", "coid"))
# Cancelled and Modified show no symbol: their instrument is read to be checked.
_CANCELLED_FIELDS = _struct(_EV, ("reason", "instrument", "seq", "order_id", "leaves"))
_MODIFIED_FIELDS = _struct(_EV, ("flags", "instrument", "seq", "order_id", "price", "qty"))
_REJECTED_FIELDS = _struct(_EV, ("reason", "seq", "order_id", "coid"))
_LEVEL_FIELDS = _struct(_EV, ("side", "instrument", "seq", "price", "qty", "leaves"))
_STATE_FIELDS = _struct(_EV, ("instrument", "seq", "qty"))
_MASS_CANCELLED_FIELDS = _struct(_EV, ("reason", "flags", "instrument", "seq", "qty", "account"))
_MMP_FIELDS = _struct(_EV, ("flags", "instrument", "seq", "price", "qty", "leaves", "account"))
_LIMITS_FIELDS = _struct(_EV, ("instrument", "seq", "price", "qty"))


def decode_events(
    raw: Any,
    symbols: Sequence[str],
    reject_reasons: Sequence[RejectReason | None],
    cancel_reasons: Sequence[CancelReason],
    count: int | None = None,
) -> list[Event]:
    """Turn packed event records into event objects.

    ``symbols`` names the instruments by number; the reason tables map C codes
    to enum members (``Engine.decode_events`` passes its own). `raw` is a
    whole number of records, or, with `count`, holds at least `count`
    records, of which only the first `count` are read. A record that is not
    an event of an engine with these instruments raises ``InvalidArgument``.
    """
    raw = _byte_view("raw", raw)
    if count is None:
        if len(raw) % EVENT_SIZE:
            raise InvalidArgument(f"raw must be a whole number of {EVENT_SIZE}-byte records")
        count = len(raw) // EVENT_SIZE
    elif (count := _args.as_int("count", count, 0)) * EVENT_SIZE > len(raw):
        raise InvalidArgument(f"raw holds fewer than {count} records")
    try:
        return _decode(raw, count, symbols, reject_reasons, cancel_reasons)
    except (IndexError, KeyError):
        raise InvalidArgument(
            "an event record names an instrument or a code that this engine does not have: not its events"
        ) from None


def _byte_view(name: str, obj: Any) -> memoryview:
    """A contiguous buffer as a memoryview of its bytes (a numpy array of
    records too: its length counts records, the view's bytes)."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise InvalidArgumentType(f"{name} must support the buffer protocol, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        raise InvalidArgument(f"{name} must be a contiguous buffer")
    return view.cast("B")


def _decode(
    raw: memoryview,
    count: int,
    symbols: Sequence[str],
    reject_reasons: Sequence[RejectReason | None],
    cancel_reasons: Sequence[CancelReason],
) -> list[Event]:
    out: list[Event] = []
    append = out.append
    new = tuple.__new__
    sides = SIDE_BY_CODE  # code 0 is no side (None) there: each use refuses it first
    no_coid = _NO_COID
    trade_fields = _TRADE_FIELDS.unpack_from
    for off in range(0, count * EVENT_SIZE, EVENT_SIZE):
        typ = raw[off]
        if typ == _TRADE:
            side, inst, seq, taker, maker, tid, price, qty, leaves, mleaves, acct, macct = trade_fields(raw, off)
            if not side:
                raise IndexError(side)
            append(
                new(
                    Trade,
                    (seq, tid, symbols[inst], price, qty, maker, taker, macct, acct, sides[side], mleaves, leaves),
                )
            )
        elif typ == _ACCEPTED:
            side, inst, seq, oid, price, qty, acct, coid = _ACCEPTED_FIELDS.unpack_from(raw, off)
            if not side:
                raise IndexError(side)
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
            if not side:
                raise IndexError(side)
            append(new(LevelUpdate, (seq, symbols[inst], sides[side], price, total, count)))
        elif typ == _CANCELLED:
            reason, inst, seq, oid, leaves = _CANCELLED_FIELDS.unpack_from(raw, off)
            symbols[inst]
            append(new(Cancelled, (seq, oid, leaves, cancel_reasons[reason])))
        elif typ == _MODIFIED:
            flags, inst, seq, oid, price, qty = _MODIFIED_FIELDS.unpack_from(raw, off)
            symbols[inst]
            append(new(Modified, (seq, oid, price, qty, flags & 1 == 1)))
        elif typ == _REJECTED:
            reason, seq, oid, coid = _REJECTED_FIELDS.unpack_from(raw, off)
            why = reject_reasons[reason]
            append(
                new(
                    Rejected,
                    (seq, why, REJECT_MESSAGES[why], None if coid == no_coid else _coid(coid), oid or None),
                )
            )
        elif typ == _STATE:
            inst, seq, state = _STATE_FIELDS.unpack_from(raw, off)
            if state < 0:  # not an index from the end: no state of the engine's
                raise IndexError(state)
            append(new(StateChanged, (seq, symbols[inst], STATE_BY_CODE[state])))
        elif typ == _MASS_CANCELLED:
            reason, flags, inst, seq, count, acct = _MASS_CANCELLED_FIELDS.unpack_from(raw, off)
            symbol = None if flags & _EV_ALL_INSTRUMENTS else symbols[inst]
            account = None if flags & _EV_ALL_ACCOUNTS else acct
            append(new(MassCancelled, (seq, account, symbol, count, cancel_reasons[reason])))
        elif typ == _MMP:
            flags, inst, seq, window, limit, filled, acct = _MMP_FIELDS.unpack_from(raw, off)
            tripped = flags & lib.ENG_EV_F_TRIPPED != 0
            append(new(MmpUpdate, (seq, acct, symbols[inst], limit, window, filled, tripped)))
        elif typ == _LIMITS:
            inst, seq, max_notional, max_qty = _LIMITS_FIELDS.unpack_from(raw, off)
            append(new(OrderLimitsSet, (seq, symbols[inst], max_qty, max_notional)))
        else:
            raise InvalidArgument(f"not an event record: type {typ} at byte {off}")
    return out


_DTYPE_CODES = {"B": "u1", "H": "<u2", "I": "<u4", "i": "<i4", "Q": "<u8", "q": "<i8"}


def _dtype(ctype: str) -> Any:
    import numpy as np

    fields = _fields(ctype)
    return np.dtype(
        {
            "names": [name for name, _, _ in fields],
            "formats": [f"S{code[:-1]}" if code.endswith("s") else _DTYPE_CODES[code] for _, _, code in fields],
            "offsets": [offset for _, offset, _ in fields],
            "itemsize": ffi.sizeof(ctype),
        }
    )


@cache
def _command_dtype() -> Any:
    return _dtype("struct eng_cmd")


@cache
def _event_dtype() -> Any:
    return _dtype("struct eng_event")


if TYPE_CHECKING:  # for a type checker only: numpy stays optional
    import numpy as np

    COMMAND_DTYPE: np.dtype[np.void]
    EVENT_DTYPE: np.dtype[np.void]


def __getattr__(name: str) -> Any:
    # COMMAND_DTYPE / EVENT_DTYPE need numpy: built on first use only.
    if name == "COMMAND_DTYPE":
        return _command_dtype()
    if name == "EVENT_DTYPE":
        return _event_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

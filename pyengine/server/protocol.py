"""The wire protocol: framing, request validation, reply encoding.

A frame is a 4-byte big-endian length, then that many bytes of one JSON
object (UTF-8). Every message has a ``"type"``; a request may carry a
``"req_id"`` (an integer or a string) that every direct reply to it repeats.
docs/protocol.md lists every message with an example.

Bad framing (an empty frame, a frame over the size limit, a stream that ends
inside a frame) is a ``FrameError``, raised by the session's ``Inbox``
(csrc/binding/inbox.c, which splits the stream into frames in C): the connection cannot be trusted to
stay in step and is closed. A bad message inside a good frame is a
``RequestError``: the reply is an ``error`` and the connection stays open.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from .. import _args
from .._server import FormError, read_order
from ..switch_table import MAX_SECONDS

__all__ = [
    "MAX_FRAME",
    "FrameError",
    "RequestError",
    "encode",
    "parse",
    "parse_message",
    "undecodable",
    "shown",
    "Login",
    "NewOrder",
    "Cancel",
    "Modify",
    "MassCancel",
    "Subscribe",
    "Unsubscribe",
    "Ping",
    "Snapshot",
    "SetTradingState",
    "Status",
    "Orders",
    "OrderQuery",
    "CancelAllAfter",
    "SetMmp",
    "ResetMmp",
    "CANCEL_ALL_AFTER_MAX",
    "MMP_WINDOW_MS_MAX",
    "Request",
    "REQUEST_TYPES",
]

MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")
_dumps = orjson.dumps
_loads = orjson.loads
_new = tuple.__new__


class FrameError(Exception):
    """The byte stream is broken; close the connection. Raised by a session's
    ``Inbox`` (csrc/binding/inbox.c, where the framing rules live) once the
    good frames before the break are taken."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RequestError(Exception):
    """A message that cannot be carried out; reply ``error`` (with the
    fields of `extra` too), keep going."""

    def __init__(self, code: str, message: str, req_id: Any = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.req_id = req_id
        self.extra = extra


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding `message`."""
    body = _dumps(message)
    return _HEADER.pack(len(body)) + body


# ---- requests -----------------------------------------------------------------


class Login(NamedTuple):
    req_id: Any
    account: int
    secret: str | None
    cancel_on_disconnect: bool


class NewOrder(NamedTuple):
    req_id: Any
    symbol: str
    side: str
    qty: int
    price: int | None
    order_type: str
    tif: str
    post_only: bool
    stp: str
    client_order_id: str | None


class Cancel(NamedTuple):
    req_id: Any
    order_id: int | None
    client_order_id: str | None


class Modify(NamedTuple):
    req_id: Any
    order_id: int | None
    client_order_id: str | None
    qty: int | None  # None: the open qty when the engine runs the modify
    price: int | None  # None: keep the price


class MassCancel(NamedTuple):
    req_id: Any
    symbol: str | None
    account: int | None  # another account's orders (admin)
    all_accounts: bool  # every account's orders (admin)


class Subscribe(NamedTuple):
    req_id: Any
    symbol: str


class Unsubscribe(NamedTuple):
    req_id: Any
    symbol: str


class Ping(NamedTuple):
    req_id: Any


class Snapshot(NamedTuple):
    req_id: Any


class Status(NamedTuple):
    req_id: Any


class Orders(NamedTuple):
    """The session's account's open orders (of one ``symbol``, or all)."""

    req_id: Any
    symbol: str | None


class OrderQuery(NamedTuple):
    """``order_status``: one order of the account, by exactly one of its ids."""

    req_id: Any
    order_id: int | None
    client_order_id: str | None


class CancelAllAfter(NamedTuple):
    """``cancel_all_after``: arm, renew (or with 0, disarm) the account's
    dead-man switch."""

    req_id: Any
    seconds: float  # an int as sent stays an int


class SetMmp(NamedTuple):
    """``set_mmp``: the account's market-maker protection on an instrument."""

    req_id: Any
    symbol: str
    qty_limit: int  # 0 turns it off
    window_ms: int  # 0: until a reset


class ResetMmp(NamedTuple):
    """``reset_mmp``: lift the account's tripped protection on an instrument."""

    req_id: Any
    symbol: str


class SetTradingState(NamedTuple):
    """``halt`` or ``resume`` an instrument (admin)."""

    req_id: Any
    symbol: str
    halt: bool


Request = (Login | NewOrder | Cancel | Modify | MassCancel | Subscribe | Unsubscribe | Ping | Snapshot
           | SetTradingState | Status | Orders | OrderQuery | CancelAllAfter | SetMmp | ResetMmp)
_Parser = Callable[[dict[str, Any], Any], Request]  # (message, req_id) -> the request

# A field given as null is the same as a field left out (docs/protocol.md):
# every reader below starts with msg.get(key), None for both.

# The decoder gives an integer literal past 64 bits as a float this large.
_BEYOND_INT64 = 2.0**63


def _int(msg: dict[str, Any], key: str, req_id: Any, lo: int = _args.INT64_MIN, hi: int = _args.INT64_MAX) -> int:
    v = msg.get(key)
    if v is None:
        raise RequestError("missing_field", f"{key} is required", req_id)
    if type(v) is float and abs(v) >= _BEYOND_INT64:
        raise RequestError("bad_field", f"{key} is out of range [{lo}, {hi}]", req_id)
    if type(v) is not int:
        raise RequestError("bad_field", f"{key} must be an integer, not {_json_type(v)}", req_id)
    if not lo <= v <= hi:
        raise RequestError("bad_field", f"{key}={v} is out of range [{lo}, {hi}]", req_id)
    return v


def _str(msg: dict[str, Any], key: str, req_id: Any) -> str:
    v = msg.get(key)
    if v is None:
        raise RequestError("missing_field", f"{key} is required", req_id)
    if type(v) is not str:
        raise RequestError("bad_field", f"{key} must be a string, not {_json_type(v)}", req_id)
    return v


def _bool(msg: dict[str, Any], key: str, default: bool, req_id: Any) -> bool:
    v = msg.get(key)
    if v is None:
        return default
    if type(v) is not bool:
        raise RequestError("bad_field", f"{key} must be true or false, not {_json_type(v)}", req_id)
    return v


def shown(v: Any) -> str:
    """A client's value in an error message: a string shortened, anything else
    by its JSON type. Never repr() of untrusted data: it can be huge, and a
    deeply nested array overflows the recursion limit."""
    return _args.short_text(v) if type(v) is str else _json_type(v)


def _json_type(v: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
             dict: "an object"}
    return names.get(type(v), "null")


def _per_order(kind: str, make: type[NewOrder] | type[Cancel] | type[Modify]) -> _Parser:
    """The parser of a per-order request: its form is the server's C path's
    (read_order, csrc/binding/form.c), the one place those rules live."""

    def parse_order(msg: dict[str, Any], req_id: Any) -> Request:
        try:
            fields = read_order(kind, msg)
        except FormError as exc:
            raise RequestError(exc.args[0], exc.args[1], req_id) from None
        return _new(make, (req_id, *fields))

    return parse_order


def _parse_login(msg: dict[str, Any], req_id: Any) -> Login:
    secret = msg.get("secret")
    if secret is not None and type(secret) is not str:
        raise RequestError("bad_field", f"secret must be a string, not {_json_type(secret)}", req_id)
    return Login(
        req_id,
        _int(msg, "account", req_id, 0, _args.UINT32_MAX),
        secret,
        _bool(msg, "cancel_on_disconnect", True, req_id),
    )


def _parse_mass_cancel(msg: dict[str, Any], req_id: Any) -> MassCancel:
    symbol = msg.get("symbol")
    if symbol is not None and type(symbol) is not str:
        raise RequestError("bad_field", f"symbol must be a string, not {_json_type(symbol)}", req_id)
    account = msg.get("account")
    if account is not None:
        account = _int(msg, "account", req_id, 0, _args.UINT32_MAX)
    all_accounts = _bool(msg, "all_accounts", False, req_id)
    if all_accounts and account is not None:
        raise RequestError("bad_field", "give at most one of account and all_accounts", req_id)
    return MassCancel(req_id, symbol, account, all_accounts)


def _optional_str(msg: dict[str, Any], key: str, req_id: Any) -> str | None:
    return None if msg.get(key) is None else _str(msg, key, req_id)


def _optional_coid(msg: dict[str, Any], req_id: Any) -> str | None:
    """A client order id, checked as a cancel's is (csrc/binding/form.c)."""
    v = msg.get("client_order_id")
    if v is None:
        return None
    if type(v) is not str:
        raise RequestError("bad_field", f"client_order_id must be a string, not {_json_type(v)}", req_id)
    try:
        _args.coid_bytes(v)
    except (TypeError, ValueError) as exc:
        raise RequestError("bad_field", str(exc), req_id) from None
    return str(v)


MMP_WINDOW_MS_MAX = 86_400_000
"""The longest market-maker protection window, in ms (a day)."""

CANCEL_ALL_AFTER_MAX = MAX_SECONDS  # a dead-man switch's seconds at most (its one home: switch_table.py)
"""The longest a dead-man switch may be armed for (a day), in seconds."""


def _parse_cancel_all_after(msg: dict[str, Any], req_id: Any) -> CancelAllAfter:
    longest = CANCEL_ALL_AFTER_MAX
    v = msg.get("seconds")
    if v is None:
        raise RequestError("missing_field", "seconds is required", req_id)
    if type(v) not in (int, float):
        raise RequestError("bad_field", f"seconds must be a number in [0, {longest:g}], not {shown(v)}", req_id)
    if not 0 <= v <= longest:
        raise RequestError("bad_field", f"seconds={v!r} is out of range [0, {longest:g}]", req_id)
    return CancelAllAfter(req_id, v)


def _parse_order_query(msg: dict[str, Any], req_id: Any) -> OrderQuery:
    order_id = msg.get("order_id")
    if order_id is not None:
        order_id = _int(msg, "order_id", req_id, 1, _args.INT64_MAX)  # as a cancel's and a modify's
    coid = _optional_coid(msg, req_id)
    if order_id is None and coid is None:
        raise RequestError("missing_field", "order_id or client_order_id is required", req_id)
    if order_id is not None and coid is not None:
        raise RequestError("bad_field", "give one of order_id and client_order_id, not both", req_id)
    return OrderQuery(req_id, order_id, coid)


_PARSERS: dict[str, _Parser] = {
    "new_order": _per_order("new_order", NewOrder),
    "cancel": _per_order("cancel", Cancel),
    "modify": _per_order("modify", Modify),
    "login": _parse_login,
    "mass_cancel": _parse_mass_cancel,
    "subscribe": lambda m, r: Subscribe(r, _str(m, "symbol", r)),
    "unsubscribe": lambda m, r: Unsubscribe(r, _str(m, "symbol", r)),
    "ping": lambda m, r: Ping(r),
    "snapshot": lambda m, r: Snapshot(r),
    "status": lambda m, r: Status(r),
    "orders": lambda m, r: Orders(r, _optional_str(m, "symbol", r)),
    "order_status": _parse_order_query,
    "halt": lambda m, r: SetTradingState(r, _str(m, "symbol", r), True),
    "resume": lambda m, r: SetTradingState(r, _str(m, "symbol", r), False),
    "cancel_all_after": _parse_cancel_all_after,
    "set_mmp": lambda m, r: SetMmp(r, _str(m, "symbol", r), _int(m, "qty_limit", r, 0),
                                   0 if m.get("window_ms") is None else _int(m, "window_ms", r, 0, MMP_WINDOW_MS_MAX)),
    "reset_mmp": lambda m, r: ResetMmp(r, _str(m, "symbol", r)),
}

# Every request type the protocol knows (the metrics label requests by it).
REQUEST_TYPES: frozenset[str] = frozenset(_PARSERS)


def parse(frame: bytes) -> Request:
    """Decode and check one request frame; raise RequestError if it is not a
    request we can carry out."""
    try:
        msg = _loads(frame)
    except orjson.JSONDecodeError as exc:
        raise undecodable(exc) from None
    return parse_message(msg)


def undecodable(exc: ValueError) -> RequestError:
    """The error for a frame that is not JSON."""
    return RequestError("bad_json", f"not valid JSON: {exc}")


def parse_message(msg: Any) -> Request:
    """Check one decoded request; raise RequestError if it is not a request
    we can carry out."""
    if type(msg) is not dict:
        raise RequestError("bad_message", f"a message must be a JSON object, not {_json_type(msg)}")
    req_id = msg.get("req_id")
    if req_id is not None and type(req_id) not in (int, str):
        raise RequestError("bad_field", "req_id must be a 64-bit integer or a string")
    typ = msg.get("type")
    parser = _PARSERS.get(typ) if type(typ) is str else None
    if parser is None:
        raise RequestError("unknown_type", f"unknown message type {shown(typ)}", req_id)
    return parser(msg, req_id)

"""Checks of the arguments of the public API, with the error messages.

The Engine's hot paths inline the cheap happy-path checks (``type(x) is int``,
a dict lookup) and call into this module only to normalise an unusual but
valid value (a numpy integer, an enum member) or to raise the error.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from ._ffi import ffi, lib
from .errors import InvalidArgument, InvalidArgumentType

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
COID_LEN = lib.ENG_COID_LEN
SYMBOL_MAX = lib.ENG_SYMBOL_MAX - 1  # the C field holds a terminating NUL too


def as_int(name: str, value: Any, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """``value`` as an int in [lo, hi]; accepts anything with ``__index__``
    (numpy integers) but not bool or float."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise InvalidArgumentType(f"{name} must be an int, not {type(value).__name__}")
    v = operator.index(value)
    if not lo <= v <= hi:
        raise InvalidArgument(f"{name}={v} is out of range [{lo}, {hi}]")
    return v


def as_code(name: str, value: Any, table: Mapping[str, int]) -> int:
    """The C code of an enum argument given as a member or its string value."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{name} must be a str, not {type(value).__name__}")
    try:
        return table[value]
    except KeyError:
        choices = ", ".join(repr(str(k)) for k in table)
        raise InvalidArgument(f"{name} must be one of {choices}, not {value!r}") from None


def short_text(value: str) -> str:
    """A rejected string in a message: its start only (it may be huge)."""
    return repr(value[:40]) + ("..." if len(value) > 40 else "")


def coid_bytes(value: Any) -> bytes:
    """A client order id as the 16 NUL-padded bytes the core stores."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"client_order_id must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= COID_LEN or not value.isascii() or not value.isprintable():
        raise InvalidArgument(
            f"client_order_id must be 1 to {COID_LEN} printable ASCII characters, not {short_text(value)}"
        )
    return value.encode("ascii").ljust(COID_LEN, b"\0")


def symbol_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgumentType(f"symbol must be a str, not {type(value).__name__}")
    if (
        not 1 <= len(value) <= SYMBOL_MAX
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise InvalidArgument(
            f"symbol must be 1 to {SYMBOL_MAX} printable ASCII characters without spaces, not {short_text(value)}"
        )
    return value.encode("ascii")


def check_order_shape(market: bool, gtc: bool, price: object, post_only: bool) -> None:
    """Refuse argument combinations that are not orders at all (the core's
    rule, eng_order_shape, and its words)."""
    shape = lib.eng_order_shape(
        lib.ENG_MARKET if market else lib.ENG_LIMIT,
        lib.ENG_GTC if gtc else lib.ENG_IOC,
        price is not None,
        lib.ENG_CMD_F_POST_ONLY if post_only else 0,
    )
    if shape != lib.ENG_SHAPE_OK:
        raise InvalidArgument(ffi.string(lib.eng_shape_message(shape)).decode("ascii"))


def check_target(
    order_id: Any, account: Any, client_order_id: Any, *, min_order_id: int = 1
) -> tuple[int, int | None, bytes | None]:
    """How a cancel, modify or lookup addresses its order: by ``order_id``,
    or by ``client_order_id`` with its ``account``. Returns (order_id or 0,
    account, the client order id's bytes or None)."""
    if client_order_id is None and order_id is None:
        raise InvalidArgument("give an order_id or a client_order_id")
    if client_order_id is not None and order_id is not None:
        raise InvalidArgument("give an order_id or a client_order_id, not both")
    oid = 0 if order_id is None else as_int("order_id", order_id, min_order_id, UINT64_MAX)
    acct = None if account is None else as_int("account", account, 0, UINT32_MAX)
    coid = None if client_order_id is None else coid_bytes(client_order_id)
    if coid is not None and acct is None:
        raise InvalidArgument("a client_order_id is per account: give the account too")
    return oid, acct, coid


def check_new_order_id(order_id: Any, caller_ids: bool) -> int:
    """A new order's ``order_id`` argument: required, in [1, 2**64-1], on an
    engine that takes its order ids from the caller; else not given (None).
    Returns the id, or 0 for none."""
    if not caller_ids:
        if order_id is not None:
            raise InvalidArgument(
                "order_id is only for an Engine made with caller_order_ids=True; this one numbers its orders itself"
            )
        return 0
    if order_id is None:
        raise InvalidArgument("this Engine takes its order ids from the caller (caller_order_ids=True): give order_id")
    return as_int("order_id", order_id, 1, UINT64_MAX)


def as_bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidArgumentType(f"{name} must be a bool, not {type(value).__name__}")
    return value


def cancel_all_scope(account: Any, all_accounts: Any, dead_man: Any) -> tuple[int, int]:
    """Whose orders a cancel-all takes: ``account``'s, or with ``all_accounts``
    every account's (then no account, and not ``dead_man``: the dead-man
    switch is one account's). Returns the command's (account, flags) without
    the instrument flag."""
    every = as_bool("all_accounts", all_accounts)
    flags = lib.ENG_CMD_F_DEAD_MAN if as_bool("dead_man", dead_man) else 0
    if every:
        if account is not None:
            raise InvalidArgument("give an account or all_accounts=True, not both")
        if flags:
            raise InvalidArgument("dead_man is one account's dead-man switch: not with all_accounts")
        return 0, lib.ENG_CMD_F_ALL_ACCOUNTS
    if account is None:
        raise InvalidArgument("give an account, or all_accounts=True for every account's orders")
    return as_int("account", account, 0, UINT32_MAX), flags

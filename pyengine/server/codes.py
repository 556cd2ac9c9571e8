"""The engine's codes as the wire protocol spells them, read from pyengine.h.

Every number here comes from the C header through cffi (``lib.ENG_*``) and
every reject or cancel name and message from its tables (``eng_err_name``,
``eng_strerror``, ``eng_cancel_reason_name``): nothing is copied by hand.
"""

from __future__ import annotations

from .. import _server
from .._ffi import c_text, lib

__all__ = ["SIDE_CODES", "ORDER_TYPE_CODES", "TIF_CODES", "STP_CODES", "SIDE_NAMES", "CANCEL_REASONS",
           "REJECTS", "NO_COID", "COID_LEN"]

# Request strings -> the engine's codes: the server's C path's tables (csrc/binding/form.c).
SIDE_CODES: dict[str, int] = _server.SIDE_CODES
ORDER_TYPE_CODES: dict[str, int] = _server.ORDER_TYPE_CODES
TIF_CODES: dict[str, int] = _server.TIF_CODES
STP_CODES: dict[str, int] = _server.STP_CODES

# Side code -> its name (index 0 unused).
SIDE_NAMES: tuple[str, ...] = tuple(
    {code: name for name, code in SIDE_CODES.items()}.get(c, "") for c in range(max(SIDE_CODES.values()) + 1)
)


# Cancel reason code -> its name.
CANCEL_REASONS: tuple[str, ...] = tuple(c_text(lib.eng_cancel_reason_name, c) for c in range(lib.ENG_CANCEL__COUNT))

# Reject code -> (name, message), as the engine's table has them.
REJECTS: tuple[tuple[str, str], ...] = tuple(
    (c_text(lib.eng_err_name, c), c_text(lib.eng_strerror, c)) for c in range(lib.ENG_ERR__COUNT)
)

COID_LEN: int = lib.ENG_COID_LEN
NO_COID = bytes(COID_LEN)

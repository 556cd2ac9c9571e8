"""The compiled core: ``ffi`` and ``lib`` of the cffi extension, and
``c_text`` to read the strings of its tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

try:
    from pyengine._cengine import ffi, lib
except ModuleNotFoundError as exc:
    if exc.name != "pyengine._cengine":
        raise
    raise ImportError(
        f"pyengine's compiled core is not built in {__file__.rpartition('/')[0]}: a clone is imported from its "
        'root once built in place there (pip install -e "."); a pyengine installed with pip install is imported '
        "from anywhere but a clone's root") from None

if TYPE_CHECKING:
    from pyengine._cengine import Chars

__all__ = ["ffi", "lib", "c_text"]


def c_text(fn: Callable[[int], Chars], code: int) -> str:
    """The text one of the core's tables gives for a code (eng_err_name, ...)."""
    return ffi.string(fn(code)).decode("ascii")

"""pyengine: an exchange-grade order matching engine with a C core.

The in-process API::

    from pyengine import Engine
    eng = Engine()
    eng.add_instrument("ESZ6", tick_size=25, lot_size=1)
    events = eng.submit("ESZ6", "buy", qty=10, price=450000, account=7)

Semantics: docs/semantics.md. The batch path (packed commands in, packed
events out): ``Engine.process_batch`` and ``pyengine.batch``.
"""

from importlib import metadata as _metadata
from importlib.util import find_spec
from typing import TYPE_CHECKING

from . import batch
from .batch import (
    BatchResult,
    pack_cancel,
    pack_cancel_all,
    pack_modify,
    pack_new_order,
    pack_reset_mmp,
    pack_set_mmp,
    pack_set_order_limits,
    pack_set_state,
)
from .engine import Engine, EngineStats, Instrument
from .enums import (
    CancelReason,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TradingState,
)
from .errors import (
    ConcurrentUseError,
    DuplicateSymbol,
    EngineBufferError,
    EngineClosed,
    EngineError,
    EngineMemoryError,
    InvalidArgument,
    InvalidArgumentType,
    InvariantError,
)
from .events import (
    Accepted,
    BookView,
    Cancelled,
    Event,
    Level,
    LevelUpdate,
    MassCancelled,
    MmpStatus,
    MmpUpdate,
    Modified,
    OrderLimits,
    OrderLimitsSet,
    OrderState,
    Rejected,
    StateChanged,
    Trade,
)

try:
    __version__ = _metadata.version("pyengine")  # pyproject.toml's, as installed
except _metadata.PackageNotFoundError:  # a copy of the package, not installed
    __version__ = "0+unknown"

__all__ = [
    "Engine",
    "EngineStats",
    "Instrument",
    "BatchResult",
    "batch",
    "pack_new_order",
    "pack_cancel",
    "pack_modify",
    "pack_set_state",
    "pack_cancel_all",
    "pack_set_mmp",
    "pack_reset_mmp",
    "pack_set_order_limits",
    "Accepted",
    "Rejected",
    "Trade",
    "Cancelled",
    "Modified",
    "LevelUpdate",
    "StateChanged",
    "MassCancelled",
    "MmpUpdate",
    "MmpStatus",
    "OrderLimitsSet",
    "OrderLimits",
    "Event",
    "Level",
    "BookView",
    "OrderState",
    "Side",
    "OrderType",
    "TimeInForce",
    "SelfTradePrevention",
    "RejectReason",
    "CancelReason",
    "TradingState",
    "EngineError",
    "InvalidArgument",
    "InvalidArgumentType",
    "DuplicateSymbol",
    "ConcurrentUseError",
    "EngineClosed",
    "InvariantError",
    "EngineMemoryError",
    "EngineBufferError",
]

# The numpy dtypes are built on first use, so numpy stays optional: they are
# listed (for a star import, dir() and help()) only where it is installed.
if TYPE_CHECKING:
    from .batch import COMMAND_DTYPE, EVENT_DTYPE
if find_spec("numpy") is not None:
    __all__ += ["COMMAND_DTYPE", "EVENT_DTYPE"]


def __getattr__(name: str) -> object:
    if name in ("COMMAND_DTYPE", "EVENT_DTYPE"):
        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (and the module's own dunder names), not the submodules
    and helpers that importing the package binds here."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__") and n.endswith("__"))})

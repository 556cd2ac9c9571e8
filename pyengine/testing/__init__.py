"""Test support: the reference matcher and Hypothesis strategies.

``ReferenceEngine`` is a small pure-Python model of docs/semantics.md with the
matching API of ``pyengine.Engine`` (plain ints only; no batch path). The strategies in ``pyengine.testing.strategies``
generate instruments and commands that hit the interesting cases often, and
``apply`` runs one command on any engine. The project's own property tests
use them to check the C engine against the model; you can use the same model
to property-test your own code (a strategy, a gateway, a risk check) against
the exact matching rules.

Importing this package needs only the standard library; the strategies, the
commands and ``apply`` need ``hypothesis`` (the ``testing`` extra) and are
imported on first use.
"""

import importlib as _importlib

from .reference import ReferenceEngine

__all__ = [
    "Cancel",
    "CancelAll",
    "Command",
    "Modify",
    "NewOrder",
    "ReferenceEngine",
    "ResetMmp",
    "SetMmp",
    "SetOrderLimits",
    "SetState",
    "accepted_order_ids",
    "apply",
    "caller_order_ids",
    "commands",
    "instrument_spec_lists",
    "instrument_specs",
]

_STRATEGY_NAMES = frozenset(__all__) - {"ReferenceEngine"}


def __getattr__(name: str) -> object:
    """Import ``pyengine.testing.strategies`` (and so hypothesis) only when used."""
    if name in _STRATEGY_NAMES:
        try:
            strategies = _importlib.import_module(".strategies", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != "hypothesis":
                raise
            raise ModuleNotFoundError(f"pyengine.testing.{name} needs Hypothesis: pip install \"pyengine[testing]\"",
                                      name="hypothesis") from None
        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (and the module's own dunder names)."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__") and n.endswith("__"))})

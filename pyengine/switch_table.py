"""The armed dead-man switches' table as it is kept: in a cluster shard's
log (pyengine/cluster/shardlog.py), in a single server's data directory
(pyengine/server/switch_file.py). One encoding for both: JSON, account ->
seconds, every armed switch."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ._args import UINT32_MAX

__all__ = ["MAX_SECONDS", "switches_body", "switches_of"]

MAX_SECONDS = 86400.0  # a switch's seconds at most (cancel_all_after)


def switches_body(switches: Mapping[int, float]) -> bytes:
    """The table: every armed switch, account -> seconds."""
    return orjson.dumps({str(account): seconds for account, seconds in sorted(switches.items())})


def switches_of(body: bytes) -> dict[int, float]:
    """The switches a kept table holds; ValueError when it is none (not
    JSON, not an object, an account or seconds out of their range)."""
    table = orjson.loads(body)
    if not isinstance(table, dict):
        raise ValueError("not an object")
    switches = {int(account): seconds for account, seconds in table.items()}
    if not all(0 <= account <= UINT32_MAX for account in switches):
        raise ValueError("an account is not a 32-bit number")
    if not all(type(s) in (int, float) and 0 < s <= MAX_SECONDS for s in switches.values()):  # NaN fails too
        raise ValueError(f"a switch's seconds are not a number from 0 to {MAX_SECONDS:g}")
    return switches

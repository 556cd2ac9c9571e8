"""What a server restarted from a data directory knows of its orders: the
OrderStatus behind ``orders`` and ``order_status``, rebuilt from the
journal before the engine thread starts.

A recovery loads the newest snapshot and replays the journal's commands
after it, throwing their events away. Those events are the news of the
last moments before a crash: a command journaled but never answered may
have filled or cancelled an order that its owner was acknowledged, and
will never be told of otherwise. So the commands after the snapshot run
once more, on a copy of the snapshot's state, and their events update the
order status as the Router's would have: the orders resting at the
snapshot are seeded as recovered (their filled quantity and time priority
unknown), then each order the replayed commands entered, traded, modified,
filled or cancelled is as it was told (or would have been). Orders
finished before the snapshot are not known. Anything short of that (no
memory, the journal not read as the recovery read it) and the server
seeds the status from the books instead. It costs about three times the
replay (docs/benchmarks.md, "Recovery time"): most of it is the
status itself, a record made and indexed per order, as the Router makes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .._ffi import ffi, lib
from .._server import OrderStatus
from ..durability import Recovery, RecoveryError, journal_records, load_snapshot, new_engine
from .engine_thread import RestingOrder, resting_orders

__all__ = ["rebuild_order_status", "seed_from_books"]

_EVENT = ffi.sizeof("struct eng_event")
_RUN = 4096  # commands run at a time: their events, a few hundred KB, stay in the cache


def rebuild_order_status(status: OrderStatus, data_dir: str | os.PathLike[str], recovery: Recovery,
                         specs: Sequence[Any]) -> None:
    """Fill `status` (new) with what the recovery's snapshot and the
    commands it replayed after it tell of each order. Raises EngineError
    (RecoveryError among them), MemoryError or OSError when the state cannot
    be copied or those commands not all be read and run again as they ran
    (then `status` may hold part of it: the caller drops it)."""
    if recovery.snapshot_path is not None:
        eng, _ = load_snapshot(recovery.snapshot_path, list(specs))
    else:
        eng = new_engine(list(specs))
    try:
        seed_from_books(status, resting_orders(eng, len(specs)))
        count = ffi.new("size_t *")
        for block in journal_records(data_dir, recovery.snapshot_seq):
            records = ffi.from_buffer("struct jnl_record[]", block)
            for at in range(0, len(records), _RUN):
                n = min(_RUN, len(records) - at)
                done = lib.jnl_apply_records(eng, records + at, n)
                events = lib.eng_events(eng, count)
                status.apply_events(ffi.buffer(events, count[0] * _EVENT))
                lib.eng_clear_events(eng)
                if done != n:
                    raise MemoryError(f"out of memory running the journal again at seq {lib.eng_seq(eng)}")
        replayed = recovery.snapshot_seq + recovery.replayed  # where the recovery's replay ended
        if lib.eng_seq(eng) != replayed:
            raise RecoveryError(f"the journal read again ends at seq {lib.eng_seq(eng)}, the recovery's replay at "
                                f"{replayed}")
    finally:
        lib.eng_destroy(eng)


def seed_from_books(status: OrderStatus, orders: list[RestingOrder]) -> None:
    """Put the orders resting in the books into `status` as recovered (their
    filled quantity and time priority not known), by order id: the order the
    server accepted them in, as ``orders`` lists an account's oldest first
    (the books give them by price level)."""
    for oid, inst, account, side, price, qty, coid in sorted(orders):
        status.recovered(oid, account, inst, side, price, qty, coid)

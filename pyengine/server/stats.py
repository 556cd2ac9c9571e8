"""The server's periodic ``stats`` log line: throughput, connections, rings."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import gevent

from .._server import Poller
from ..log import fields
from .config import ServerConfig
from .dispatch import Dispatcher
from .engine_thread import EngineThread
from .session import Session

__all__ = ["stats_loop", "StatsHost"]

log = logging.getLogger("pyengine.server")


class StatsHost(Protocol):
    """What the stats line reads of the server."""

    config: ServerConfig
    engine: EngineThread
    dispatcher: Dispatcher
    sessions: dict[int, Session]
    poller: Poller


def stats_loop(server: StatsHost) -> None:
    """Log a ``stats`` line every ``stats_interval`` seconds, for ever."""
    last = server.engine.stats()
    last_trades, last_orders, last_t = server.dispatcher.trades, server.dispatcher.orders, time.monotonic()
    last_connections, last_spins = -1, server.poller.spins
    while True:
        gevent.sleep(server.config.stats_interval)
        now, st = time.monotonic(), server.engine.stats()
        dt = max(now - last_t, 1e-9)
        connections = sum(1 for s in server.sessions.values() if not s.closed)
        # An idle server says so once, then keeps quiet (but at debug level).
        changed = st["commands"] != last["commands"] or connections != last_connections
        log.log(logging.INFO if changed else logging.DEBUG, "stats", extra=fields(
            orders_per_s=round((server.dispatcher.orders - last_orders) / dt),
            commands_per_s=round((st["commands"] - last["commands"]) / dt),
            trades_per_s=round((server.dispatcher.trades - last_trades) / dt),
            connections=connections,
            in_ring=st["in_queued"],
            out_ring=st["out_queued"],
            engine_sleeps=st["sleeps"] - last["sleeps"],
            **({"loop_spins": server.poller.spins - last_spins} if server.config.server_spin_us else {}),
            **({"journal_syncs_per_s": round((st["journal_syncs"] - last["journal_syncs"]) / dt),
                "journaled_seq": st["journaled"],
                "snapshots": st["snapshots"], "snapshot_seq": st["snapshot_seq"],
                "snapshot_failures": st["snapshot_failures"]}
               if server.engine.journaling else {}),
        ))
        last, last_trades, last_orders, last_t = st, server.dispatcher.trades, server.dispatcher.orders, now
        last_connections, last_spins = connections, server.poller.spins

"""The engine on its own OS thread, as the server sees it.

Wraps the C runner (csrc/runner.c): commands go in as packed ``struct
runner_cmd`` records (a command and a 64-bit tag), events come out as packed
``struct runner_event`` records (an event and its command's tag). The engine
thread never touches Python objects and never holds the GIL; this side calls
``submit`` and ``poll`` from the gevent thread only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._ffi import ffi, lib
from ..durability import DataDirLock, Recovery, new_engine, recover
from ..errors import EngineError
from ..log import fields
from .config import InstrumentConfig, ServerConfig

if TYPE_CHECKING:
    from .._cengine import Chars, VoidPtr
    from .._server import CommandBuffer, Ledger, Router

__all__ = ["EngineThread", "CMD_SIZE", "RestingOrder", "instrument_spec", "resting_orders", "run_offline",
           "effective_spin_us"]

log = logging.getLogger("pyengine.server")

CMD_SIZE = ffi.sizeof("struct runner_cmd")  # struct eng_cmd, then the tag
# The runner's submit, for pyengine._server (see struct runner_api).
_RUNNER_API = int(ffi.cast("uintptr_t", lib.runner_api()))


_FSYNC = {"off": lib.JNL_FSYNC_OFF, "batch": lib.JNL_FSYNC_BATCH, "always": lib.JNL_FSYNC_ALWAYS}


def instrument_spec(inst: InstrumentConfig) -> Any:
    """The C spec (``struct eng_instrument_spec *``) of a configured instrument."""
    spec = ffi.new("struct eng_instrument_spec *")
    spec.symbol = inst.symbol.encode("ascii")
    spec.tick_size = inst.tick_size
    spec.lot_size = inst.lot_size
    if inst.price_band:
        spec.min_price, spec.max_price = inst.price_band
    spec.market_protection = -1 if inst.market_protection is None else inst.market_protection
    return spec


def effective_spin_us(config: ServerConfig) -> int:
    """The engine thread's idle polling: none when it shares its CPU with
    the event-loop thread, where polling would only hold off the thread
    that brings it work."""
    if config.engine_cpu >= 0 and config.engine_cpu == config.server_cpu:
        return 0
    return config.spin_us


# (order id, instrument, account, side, price, open qty, client order id)
RestingOrder = tuple[int, int, int, int, int, int, "str | None"]


def resting_orders(eng: Any, instruments: int) -> list[RestingOrder]:
    """Every order resting in the books of engine `eng` (a ``struct eng *``
    no thread runs), in book order: best level first, oldest first within a
    level."""
    out = []
    st = ffi.new("struct eng_stats *")
    lib.eng_get_stats(eng, st)
    buf = ffi.new("struct eng_order_info[]", max(1, st.open_orders))
    for inst in range(instruments):
        for side in (lib.ENG_BUY, lib.ENG_SELL):
            n = lib.eng_book_orders(eng, inst, side, 0, buf, st.open_orders)
            for o in buf[0:n]:
                coid = ffi.string(o.coid, lib.ENG_COID_LEN).decode("ascii") or None
                out.append((o.order_id, inst, o.account, side, o.price, o.qty, coid))
    return out


class EngineThread:
    """One engine and its thread; created stopped, with its instruments and,
    with a data directory, the state recovered from it.

    In cluster mode (`replica`: the engine ``struct eng *`` the shard's state
    was loaded into, which this object then owns) the replicated log takes
    the journal's place: the runner's replication stage is on, and the data
    directory, if any, is only locked (a snapshot is downloaded there to be loaded)."""

    def __init__(self, config: ServerConfig, *, replica: Any = None) -> None:
        self._eng: Any = ffi.NULL
        self._runner: Any = ffi.NULL
        self._attached: list[CommandBuffer | Router] = []  # feed()'s and drain_into()'s, detached on close
        self._lock: DataDirLock | None = None
        self.replicating = replica is not None
        self.journaling = config.data_dir is not None and not self.replicating
        self.data_dir = config.data_dir
        self.cpu = config.engine_cpu  # asked for: -1, or the CPU to pin the thread to
        self.recovery: Recovery | None = None
        self.symbols = [inst.symbol for inst in config.instruments]
        self.instrument_ids = {symbol: i for i, symbol in enumerate(self.symbols)}
        specs = [instrument_spec(inst) for inst in config.instruments]
        try:
            if config.data_dir is not None:
                self._lock = DataDirLock(config.data_dir)
            if replica is not None:
                self._eng = replica
            elif config.data_dir is None:
                self._eng = new_engine(specs, level_events=True)  # market data is built from level events
            else:
                self._eng, self.recovery = recover(config.data_dir, specs, level_events=True,
                                                   accept_loss=config.accept_journal_loss)
                self._log_recovery(self.recovery)
            rc = ffi.new("struct runner_config *")
            rc.cpu = config.engine_cpu
            rc.spin_us = self.spin_us = effective_spin_us(config)
            rc.in_capacity = config.in_capacity
            rc.out_capacity = config.out_capacity
            # Held in a local until runner_create has copied it.
            journal_dir: Chars | VoidPtr = ffi.NULL
            if self.journaling and config.data_dir is not None:
                journal_dir = ffi.new("char[]", os.fsencode(config.data_dir))
            rc.journal_dir = journal_dir
            rc.fsync = _FSYNC[config.fsync]
            rc.keep_segments = int(config.keep_segments)
            # A replica's leader asks for its snapshots itself (cluster_node.py).
            rc.snapshot_every = 0 if self.replicating else config.snapshot_every
            rc.replicate = int(self.replicating)
            self._runner = lib.runner_create(self._eng, rc)
            if self._runner == ffi.NULL:
                raise EngineError(
                    "could not create the engine thread (memory, file descriptors, ring sizes, "
                    f"or the journal in {config.data_dir}: {os.strerror(ffi.errno)})"
                )
        except BaseException:
            self.close()
            raise
        self.fd: int = lib.runner_event_fd(self._runner)
        self._stats = ffi.new("struct runner_stats *")

    def _live(self) -> Any:
        """The runner; EngineError once closed (C would be handed freed memory)."""
        if self._runner == ffi.NULL:
            raise EngineError("the engine thread is closed")
        return self._runner

    def _engine(self) -> Any:
        """The engine; EngineError once closed."""
        if self._eng == ffi.NULL:
            raise EngineError("the engine thread is closed")
        return self._eng

    @staticmethod
    def _log_recovery(r: Recovery) -> None:
        log.info("recovered", extra=fields(
            seq=r.seq, snapshot_seq=r.snapshot_seq, replayed=r.replayed, segments=len(r.segments),
            seconds=round(r.seconds, 3), commands_per_s=round(r.replayed / r.seconds) if r.seconds else 0,
        ))
        for what in r.damaged:
            log.warning("journal_repaired", extra=fields(detail=what))

    def open_orders(self) -> list[tuple[int, int, int, str | None]]:
        """(order id, instrument, account, client order id) of every resting
        order; only before start(), while no other thread uses the engine."""
        return [(oid, inst, account, coid) for oid, inst, account, _, _, _, coid in self.resting_orders()]

    def resting_orders(self) -> list[RestingOrder]:
        """Every resting order, in book order (resting_orders below); only before start()."""
        return resting_orders(self._engine(), len(self.symbols))

    def book_levels(self, inst: int, side: int) -> list[tuple[int, int, int]]:
        """(price, total, count) of each level of one side; only before start()."""
        st = ffi.new("struct eng_stats *")
        lib.eng_get_stats(self._engine(), st)
        buf = ffi.new("struct eng_level_info[]", max(1, st.levels))
        n = lib.eng_book_levels(self._engine(), inst, side, buf, st.levels)
        return [(lv.price, lv.total_qty, lv.order_count) for lv in buf[0:n]]

    def order_limits(self) -> list[tuple[int, int]]:
        """Each instrument's (max_qty, max_notional), 0 for none; only before start()."""
        out = ffi.new("struct eng_order_limits *")
        limits = []
        for i in range(len(self.symbols)):
            lib.eng_get_order_limits(self._engine(), i, out)
            limits.append((int(out.max_qty), int(out.max_notional)))
        return limits

    def trading_states(self) -> list[int]:
        """Each instrument's trading state (enum eng_trading_state); only before start()."""
        return [lib.eng_instrument_state(self._engine(), i) for i in range(len(self.symbols))]

    @property
    def runner(self) -> Any:
        """The C runner (``struct runner *``), for the replication consumer."""
        return self._live()

    @property
    def seq(self) -> int:
        """The engine's last seq; only before start()."""
        return int(lib.eng_seq(self._engine()))

    @property
    def last_order_id(self) -> int:
        """The last order id the engine gave; only before start()."""
        counters = ffi.new("struct eng_counters *")
        lib.eng_get_counters(self._engine(), counters)
        return int(counters.order_id)

    def start(self) -> None:
        if lib.runner_start(self._live()) != 0:
            raise OSError(ffi.errno, "could not start the engine thread")
        st = self.stats()
        if self.cpu >= 0 and st["cpu"] != self.cpu:
            # runner_start runs the thread unpinned when it cannot pin it.
            log.warning("engine_cpu_not_pinned", extra=fields(
                cpu=self.cpu, detail="no such CPU, or not one this process may run on (taskset, cgroups)"))
        log.info("engine_thread_started", extra=fields(cpu=st["cpu"], spin_us=self.spin_us,
                                                       instruments=len(self.symbols)))

    def trace_batches(self) -> None:
        """For a LatencyTrace (latency_trace.py): the engine thread stamps
        its batches (RUNNER_EV_BATCH); the CommandBuffer fed from here
        stamps its pushes."""
        lib.runner_stamp_batches(self._live(), 1)

    def feed(self, buffer: CommandBuffer, ledger: Ledger) -> None:
        """Have `buffer` push its records into the input ring itself (in C,
        through the runner's function table), stamping them in `ledger`'s
        LatencyTrace when it has one; it is detached when this closes."""
        buffer.attach(int(ffi.cast("uintptr_t", self._live())), _RUNNER_API, ledger)
        self._attached.append(buffer)

    def drain_into(self, router: Router, flush_market_data: Callable[[], object]) -> None:
        """Have `router` take the events from the output ring itself (in C,
        through the runner's function table: Router.route_ready), calling
        `flush_market_data` after a batch that changed the market data; it
        is detached when this closes."""
        router.attach(int(ffi.cast("uintptr_t", self._live())), _RUNNER_API, flush_market_data)
        self._attached.append(router)

    def submit(self, cmds: Any, n: int) -> int:
        """Queue the first `n` records of the cdata array `cmds`; returns how
        many fit in the input ring."""
        return int(lib.runner_submit(self._live(), cmds, n))

    def poll(self, out: Any, max_events: int) -> int:
        """Take up to `max_events` events into the cdata array `out`. Returns 0
        with the wake-up armed when there are none: ``fd`` turns readable
        when events arrive."""
        return int(lib.runner_poll(self._live(), out, max_events))

    def request_stop(self) -> None:
        lib.runner_request_stop(self._live())

    def stats(self) -> dict[str, int]:
        lib.runner_get_stats(self._live(), self._stats)
        s = self._stats
        return {
            "commands": s.commands,
            "events": s.events,
            "batches": s.batches,
            "sleeps": s.sleeps,
            "in_queued": s.in_queued,
            "out_queued": s.out_queued,
            "cpu": s.cpu,
            "running": s.running,
            "journaled": s.journaled,
            "journal_syncs": s.journal_syncs,
            "journal_sync_ns": s.journal_sync_ns,
            "seq": s.seq,
            "snapshots": s.snapshots,
            "snapshot_seq": s.snapshot_seq,
            "snapshot_failures": s.snapshot_failures,
            "journal_errno": s.journal_errno,
            "replicated": s.replicated,
        }

    def snapshot_path(self, seq: int) -> str:
        return os.path.join(self.data_dir or "", f"snapshot-{seq:020d}.snap")

    def journal_error(self) -> int:
        """0, or the errno of the journal's failure (see runner_journal_error)."""
        return int(lib.runner_journal_error(self._live()))

    def close(self) -> int:
        """Join the thread (asking it to stop) and free the engine; 0, or the
        errno of the journal's failure, its last sync at the stop's too."""
        err = 0
        for attached in self._attached:
            attached.detach()
        self._attached.clear()
        if self._runner != ffi.NULL:
            lib.runner_join(self._runner)
            err = int(lib.runner_journal_error(self._runner))
            lib.runner_destroy(self._runner)
            self._runner = ffi.NULL
            self.fd = -1  # its eventfd is closed: the number may be another's
        if self._eng != ffi.NULL:
            lib.eng_destroy(self._eng)
            self._eng = ffi.NULL
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return err


def run_offline(config: ServerConfig, commands: bytes | memoryview, *, chunk: int = 65536) -> dict[str, int]:
    """Run packed ``struct eng_cmd`` records (as ``pyengine.pack_*`` make
    them) through an engine thread built from `config` (with a data
    directory: recovered from it first, and journaled), without a server:
    to build or extend a data directory from recorded order flow. Waits for
    every event (so everything is journaled), stops the thread, and returns
    its final stats. The configuration's order limits are not set here (a
    server sets them as it starts): `commands` holds every command run,
    ``pack_set_order_limits`` records among them if the flow needs them."""
    view = memoryview(commands).cast("B")
    cmd_size = ffi.sizeof("struct eng_cmd")  # a runner command is the engine command and a tag
    if len(view) % cmd_size:
        raise ValueError(f"commands must be whole {cmd_size}-byte records")
    n = len(view) // cmd_size
    et = EngineThread(config)
    try:
        et.start()
        buf = ffi.new("struct runner_cmd[]", chunk)
        raw = ffi.buffer(buf)
        out = ffi.new("struct runner_event[]", 4096)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            for i in range(k):  # tags are zero: nobody to route to
                raw[i * CMD_SIZE : i * CMD_SIZE + cmd_size] = view[(start + i) * cmd_size : (start + i + 1) * cmd_size]
            sent = 0
            while sent < k:
                sent += et.submit(buf + sent, k - sent)
                et.poll(out, 4096)
        et.request_stop()
        while et.poll(out, 4096) or et.stats()["running"]:
            pass  # the thread finishes only once its events are taken
        while et.poll(out, 4096):
            pass
        st = et.stats()
        if st["journal_errno"]:
            raise OSError(st["journal_errno"], f"the journal in {config.data_dir} failed")
        return st
    finally:
        et.close()

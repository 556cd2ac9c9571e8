"""The engine on its own OS thread, as the server sees it.

Wraps the C runner (csrc/runner.c): commands go in as packed ``struct
runner_cmd`` records (a command and a 64-bit tag), events come out as packed
``struct runner_event`` records (an event and its command's tag). The engine
thread never touches Python objects and never holds the GIL; this side calls
``submit`` and ``poll`` from the gevent thread only.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from .._ffi import ffi, lib
from ..errors import EngineError, EngineMemoryError
from ..log import fields
from .config import ServerConfig

__all__ = ["EngineThread", "CMD", "CMD_SIZE", "EVENT_SIZE", "UNKNOWN_INSTRUMENT"]

log = logging.getLogger("pyengine.server")

# struct runner_cmd: struct eng_cmd, then the tag.
CMD = struct.Struct("<BBBBBBHIIQqqq16sQ")
CMD_SIZE = CMD.size
EVENT_SIZE = ffi.sizeof("struct runner_event")
UNKNOWN_INSTRUMENT = 0xFFFFFFFF  # never a valid number: the engine rejects it
assert CMD_SIZE == ffi.sizeof("struct runner_cmd")


class EngineThread:
    """One engine and its thread; created stopped, with its instruments."""

    def __init__(self, config: ServerConfig) -> None:
        cfg = ffi.new("struct eng_config *")
        cfg.expected_orders = 1 << 16
        cfg.level_events = 1  # market data is built from them
        eng = lib.eng_create(cfg)
        if eng == ffi.NULL:
            raise EngineMemoryError("could not allocate the engine")
        self._eng: Any = eng
        self._runner: Any = ffi.NULL
        self.symbols: list[str] = []
        self.instrument_ids: dict[str, int] = {}
        try:
            for inst in config.instruments:
                self._add_instrument(inst)
            rc = ffi.new("struct runner_config *")
            rc.cpu = config.engine_cpu
            rc.spin_us = config.spin_us
            rc.in_capacity = config.in_capacity
            rc.out_capacity = config.out_capacity
            self._runner = lib.runner_create(eng, rc)
            if self._runner == ffi.NULL:
                raise EngineError("could not create the engine thread (memory, file descriptors or ring sizes)")
        except BaseException:
            self.close()
            raise
        self.fd: int = lib.runner_event_fd(self._runner)
        self._stats = ffi.new("struct runner_stats *")

    def _add_instrument(self, inst: Any) -> None:
        spec = ffi.new("struct eng_instrument_spec *")
        spec.symbol = inst.symbol.encode("ascii")
        spec.tick_size = inst.tick_size
        spec.lot_size = inst.lot_size
        if inst.price_band:
            spec.min_price, spec.max_price = inst.price_band
        spec.market_protection = -1 if inst.market_protection is None else inst.market_protection
        out = ffi.new("uint32_t *")
        rc = lib.eng_add_instrument(self._eng, spec, out)
        if rc != lib.ENG_OK:
            raise EngineError(f"instrument {inst.symbol}: {ffi.string(lib.eng_strerror(rc)).decode()}")
        self.instrument_ids[inst.symbol] = out[0]
        self.symbols.append(inst.symbol)

    def start(self) -> None:
        if lib.runner_start(self._runner) != 0:
            raise OSError(ffi.errno, "could not start the engine thread")
        st = self.stats()
        log.info("engine_thread_started", extra=fields(cpu=st["cpu"], instruments=len(self.symbols)))

    def submit(self, cmds: Any, n: int) -> int:
        """Queue the first `n` records of the cdata array `cmds`; returns how
        many fit in the input ring."""
        return int(lib.runner_submit(self._runner, cmds, n))

    def poll(self, out: Any, max_events: int) -> int:
        """Take up to `max_events` events into the cdata array `out`. Returns 0
        with the wake-up armed when there are none: ``fd`` turns readable
        when events arrive."""
        return int(lib.runner_poll(self._runner, out, max_events))

    def request_stop(self) -> None:
        lib.runner_request_stop(self._runner)

    def stats(self) -> dict[str, int]:
        lib.runner_get_stats(self._runner, self._stats)
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
        }

    def close(self) -> None:
        """Join the thread (asking it to stop) and free the engine."""
        if self._runner != ffi.NULL:
            lib.runner_destroy(self._runner)
            self._runner = ffi.NULL
        if self._eng != ffi.NULL:
            lib.eng_destroy(self._eng)
            self._eng = ffi.NULL

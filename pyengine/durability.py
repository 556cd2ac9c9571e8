"""Recovery: rebuild an engine from a data directory (snapshot + journal).

A data directory holds ``snapshot-<seq>.snap`` files (the whole state after
command seq) and ``journal-<first>.log`` segments (every command from seq
``first`` on, one checksummed record each). Recovery loads the newest valid
snapshot, then replays the records after it from the segments, in order, and
stops at the first record that is not whole and valid. A damaged or torn tail
is reported, copied aside (``<segment>.damaged``) and cut off, so the journal
ends at the last whole record and new records follow it; it is never replayed.

Used by pyengine-server at start and by pyengine-replay.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._ffi import ffi, lib
from .batch import BatchResult
from .engine import Engine
from .errors import EngineError, EngineMemoryError
from .log import fields

__all__ = ["DataDirLock", "Recovery", "RecoveryError", "SegmentReport", "COVERED", "journal_commands", "new_engine", "replay_journal", "recover", "segments", "snapshots", "STOP_REASONS"]

log = logging.getLogger("pyengine.durability")

STOP_REASONS = {
    lib.JNL_END: "end",
    lib.JNL_TORN: "torn record",
    lib.JNL_BAD_CHECKSUM: "bad checksum",
    lib.JNL_SEQ_GAP: "sequence gap",
    lib.JNL_BAD_HEADER: "bad header",
    lib.JNL_IO_ERROR: "read error",
    lib.JNL_APPLY_ERROR: "out of memory replaying",
}

COVERED = "covered by the snapshot"
_SEGMENT = re.compile(r"journal-(\d{20})\.log$")
_SNAPSHOT = re.compile(r"snapshot-(\d{20})\.snap$")


class RecoveryError(EngineError):
    """The data directory cannot give back a consistent state."""


@dataclass
class SegmentReport:
    path: str
    first_seq: int
    records: int  # read and checked
    skipped: int  # before the snapshot: passed over unread
    applied: int
    last_seq: int
    stop: str
    counts: dict[str, int]


@dataclass
class Recovery:
    """What a recovery did."""

    snapshot_seq: int = 0
    snapshot_path: str | None = None
    replayed: int = 0
    seq: int = 0
    seconds: float = 0.0
    segments: list[SegmentReport] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # what was cut off, and where it went


def segments(data_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in data_dir.iterdir() if (m := _SEGMENT.match(p.name)))


def snapshots(data_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in data_dir.iterdir() if (m := _SNAPSHOT.match(p.name)))


_RECORD = ffi.sizeof("struct jnl_record")
_RECORD_HEAD = struct.Struct("<IIQq")  # len, crc, seq, ts; the command follows
_SEGMENT_HEADER = 32  # struct jnl_header; the instrument specs follow it


def journal_commands(data_dir: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """(seq, command) for every whole, valid record of a data directory's
    journal, in order, up to where recovery would stop; the command is a
    packed ``struct eng_cmd``, as ``Engine.process_batch`` takes it."""
    scan = ffi.new("struct jnl_scan *")
    for _, path in segments(Path(data_dir)):
        lib.jnl_scan_file(str(path).encode(), ffi.NULL, 0, scan, ffi.NULL)
        if scan.stop == lib.JNL_BAD_HEADER:
            return
        start = _SEGMENT_HEADER + scan.ninstruments * ffi.sizeof("struct eng_instrument_spec")
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(scan.valid_bytes - start)
        for off in range(0, len(data), _RECORD):
            yield _RECORD_HEAD.unpack_from(data, off)[2], data[off + _RECORD_HEAD.size : off + _RECORD]
        if scan.stop != lib.JNL_END:
            return


def replay_journal(data_dir: str | os.PathLike[str], *, level_updates: bool = False) -> tuple[Engine, BatchResult]:
    """An in-process ``Engine`` fed every command of a data directory's
    journal from seq 1 (its instruments from the first segment), and what
    that one ``process_batch`` returned. The journal must be whole from the
    start: a server keeps its old segments with ``keep_segments``."""
    found = segments(Path(data_dir))
    if not found or found[0][0] != 1:
        raise RecoveryError(f"{data_dir}: the journal does not start at seq 1 (older segments were pruned "
                            "after a snapshot; keep_segments keeps them)")
    eng = Engine(level_updates=level_updates)
    for spec in _header_specs(found[0][1]) or ():
        eng.add_instrument(
            ffi.string(spec.symbol).decode(),
            tick_size=spec.tick_size,
            lot_size=spec.lot_size,
            price_band=(spec.min_price, spec.max_price) if spec.max_price else None,
            market_protection=None if spec.market_protection < 0 else spec.market_protection,
        )
    return eng, eng.process_batch(b"".join(cmd for _, cmd in journal_commands(data_dir)))


def _specs_equal(eng: Any, wanted: list[Any]) -> bool:
    if lib.eng_instrument_count(eng) != len(wanted):
        return False
    for i, spec in enumerate(wanted):
        have = lib.eng_instrument(eng, i)
        if bytes(ffi.buffer(have, ffi.sizeof(have[0]))) != bytes(ffi.buffer(spec, ffi.sizeof(spec[0]))):
            return False
    return True


def _empty_engine(level_events: bool) -> Any:
    cfg = ffi.new("struct eng_config *")
    cfg.expected_orders = 1 << 16
    cfg.level_events = int(level_events)
    eng = lib.eng_create(cfg)
    if eng == ffi.NULL:
        raise EngineMemoryError("could not allocate an engine")
    return eng


def new_engine(specs: list[Any], *, level_events: bool = False) -> Any:
    """A fresh engine (``struct eng *``; the caller destroys it) with the
    instruments `specs`, numbered in order."""
    eng = _empty_engine(level_events)
    try:
        _add_specs(eng, specs)
    except BaseException:
        lib.eng_destroy(eng)
        raise
    return eng


def _add_specs(eng: Any, specs: list[Any]) -> None:
    out = ffi.new("uint32_t *")
    for spec in specs:
        rc = lib.eng_add_instrument(eng, spec, out)
        if rc != lib.ENG_OK:
            raise EngineError(f"instrument {ffi.string(spec.symbol).decode()}: {ffi.string(lib.eng_strerror(rc)).decode()}")


class DataDirLock:
    """An exclusive lock on a data directory for as long as it is held: two
    servers appending to one journal would interleave their records."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._file = open(root / "LOCK", "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RecoveryError(f"{root} is in use by another process (it holds {root / 'LOCK'})") from None
        self._file.truncate(0)
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing drops the lock


def _set_aside(path: Path, valid_bytes: int, why: str, report: Recovery) -> None:
    """Copy what follows the last whole record aside and cut it off."""
    aside = path.with_name(path.name + f".damaged-{int(time.time())}")
    with open(path, "rb") as src, open(aside, "wb") as dst:
        src.seek(valid_bytes)
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.truncate(path, valid_bytes)
    report.damaged.append(f"{path.name} from byte {valid_bytes} ({why}) -> {aside.name}")


def recover(
    data_dir: str | os.PathLike[str],
    specs: list[Any] | None,
    *,
    level_events: bool = False,
    repair: bool = True,
    use_snapshots: bool = True,
) -> tuple[Any, Recovery]:
    """Build an engine (a ``struct eng *``; the caller destroys it) holding
    the state the data directory describes.

    `specs` are the instruments (``struct eng_instrument_spec *``) the engine
    must have: they must equal those in the snapshot and the segments, if any.
    Without `specs`, the instruments come from the data. With `repair`,
    damaged tails are cut off and empty segments removed, so a journal can
    continue at the recovered state. Without `use_snapshots`, the state is
    rebuilt from the journal alone (which must then start at seq 1).
    """
    t0 = time.perf_counter()
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    report = Recovery()
    eng = _load_newest_snapshot(root, report, level_events) if use_snapshots else _empty_engine(level_events)
    try:
        if report.snapshot_path is None:
            _add_instruments(eng, root, specs)
        elif specs is not None and not _specs_equal(eng, specs):
            raise RecoveryError(f"{root}: the snapshot's instruments differ from the configuration's")
        _replay(eng, root, report, repair)
        if repair:
            for first, path in segments(root):
                if first > lib.eng_seq(eng):  # holds no record we replayed
                    path.unlink()
    except BaseException:
        lib.eng_destroy(eng)
        raise
    report.seq = int(lib.eng_seq(eng))
    report.seconds = time.perf_counter() - t0
    return eng, report


def _load_newest_snapshot(root: Path, report: Recovery, level_events: bool) -> Any:
    """An engine holding the newest snapshot that loads, or an empty one."""
    seq_out = ffi.new("uint64_t *")
    for _, path in reversed(snapshots(root)):
        eng = _empty_engine(level_events)
        rc = lib.eng_snapshot_load(eng, str(path).encode(), seq_out)
        if rc == lib.ENG_OK:
            report.snapshot_seq, report.snapshot_path = int(seq_out[0]), str(path)
            return eng
        # A failed load leaves the engine half-built: it goes, and the next
        # older snapshot gets a fresh one.
        lib.eng_destroy(eng)
        log.warning("snapshot_unusable", extra=fields(path=path.name, error=ffi.string(lib.eng_strerror(rc)).decode()))
    return _empty_engine(level_events)


def _header_specs(path: Path) -> list[Any] | None:
    """The instruments a segment's header names (None: not a valid header)."""
    size = 64
    while True:
        buf = ffi.new("struct eng_instrument_spec[]", size)
        n = lib.jnl_read_instruments(str(path).encode(), buf, size)
        if n <= size:
            # Copies: a pointer into `buf` would not keep it alive.
            return None if n < 0 else [ffi.new("struct eng_instrument_spec *", buf[i]) for i in range(n)]
        size = n


def _add_instruments(eng: Any, root: Path, specs: list[Any] | None) -> None:
    """No snapshot: instruments from the configuration, or from the first segment."""
    if specs is None:
        first = segments(root)
        if not first:
            return
        specs = _header_specs(first[0][1])
        if specs is None:
            raise RecoveryError(f"{first[0][1].name}: not a journal segment")
    try:
        _add_specs(eng, specs)
    except EngineError as exc:
        raise RecoveryError(str(exc)) from None


def _replay(eng: Any, root: Path, report: Recovery, repair: bool) -> None:
    scan = ffi.new("struct jnl_scan *")
    counts = ffi.new("uint64_t[]", lib.ENG_CMD__COUNT)
    names = ("other", "new", "cancel", "modify", "set_state")
    assert len(names) == lib.ENG_CMD__COUNT
    stopped = False
    found = segments(root)
    for i, (first, path) in enumerate(found):
        if stopped:
            # Nothing after a damaged record can be applied: set it aside whole.
            if repair:
                aside = path.with_name(path.name + ".orphan")
                path.rename(aside)
                report.damaged.append(f"{path.name} follows a damaged record -> {aside.name}")
            continue
        seq = int(lib.eng_seq(eng))
        following = found[i + 1][0] if i + 1 < len(found) else None
        if following is not None and following <= seq + 1:
            # Everything in it is in the state already (a snapshot covers it): not even read.
            report.segments.append(SegmentReport(str(path), first, 0, following - first, 0, following - 1, COVERED, {}))
            continue
        if first > seq + 1:
            raise RecoveryError(
                f"{path.name} starts at {first} but the state ends at {seq}: records {seq + 1}..{first - 1} are missing"
            )
        header = _header_specs(path)
        if header is not None and not _specs_equal(eng, header):
            raise RecoveryError(f"{path.name}: the journal's instruments differ from the "
                                f"{'snapshot' if report.snapshot_path else 'configuration'}'s")
        lib.jnl_scan_file(str(path).encode(), eng, seq, scan, counts)
        stop = STOP_REASONS.get(scan.stop, str(scan.stop))
        report.segments.append(
            SegmentReport(str(path), int(scan.first_seq), int(scan.records), int(scan.skipped), int(scan.applied),
                          int(scan.last_seq), stop, {names[i]: int(counts[i]) for i in range(len(names)) if counts[i]})
        )
        report.replayed += int(scan.applied)
        if scan.stop == lib.JNL_END:
            continue
        if scan.stop in (lib.JNL_IO_ERROR, lib.JNL_APPLY_ERROR):
            raise RecoveryError(f"{path.name}: {stop} after seq {scan.last_seq} (errno {scan.err})")
        log.warning("journal_damaged", extra=fields(segment=path.name, reason=stop, last_good_seq=scan.last_seq,
                                                     offset=scan.valid_bytes, file_bytes=scan.file_bytes))
        if scan.stop == lib.JNL_BAD_HEADER:
            if repair:
                aside = path.with_name(path.name + ".damaged")
                path.rename(aside)
                report.damaged.append(f"{path.name}: bad header -> {aside.name}")
        elif repair:
            _set_aside(path, int(scan.valid_bytes), stop, report)
        stopped = True

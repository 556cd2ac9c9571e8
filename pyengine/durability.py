"""Recovery: rebuild an engine from a data directory (snapshot + journal).

A data directory holds ``snapshot-<seq>.snap`` files (the whole state after
command seq), ``journal-<first>.log`` segments (every command from seq
``first`` on, one checksummed record each) and ``HIGHWATER``, the high-water
mark: counters no seq, order id or trade id the server issued ever passed.
Recovery loads the newest valid snapshot, then replays the records after it
from the segments, in order, and stops at the first record that is not whole
and valid. What follows that point decides what happens (``Damage``):

- nothing valid (a torn tail: the write a crash cut short, never
  acknowledged): it is reported, copied aside (``<segment>.damaged-<time>``)
  and cut off, so the journal ends at the last whole record and new records
  follow it;
- valid records, or later segments (damage): recovery refuses
  (``JournalDamaged``), changing nothing, unless the loss is accepted; then
  the tail is set aside the same way and the engine's counters are raised to
  the high-water mark, so no seq or id is issued twice.

Used by pyengine-server at start and by pyengine-replay.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from errno import EINVAL
from pathlib import Path
from typing import TYPE_CHECKING

from ._ffi import ffi, lib
from .batch import BatchResult
from .engine import Engine
from .errors import EngineError, EngineMemoryError
from .log import fields

if TYPE_CHECKING:
    from ._cengine import struct_eng, struct_eng_instrument_spec, struct_jnl_scan

__all__ = ["DataDirLock", "Damage", "InstrumentsDiffer", "JournalDamaged", "Recovery", "RecoveryError",
           "SegmentReport", "SnapshotUnusable", "COVERED", "journal_commands", "journal_records", "load_snapshot",
           "new_engine", "read_mark", "replay_journal", "recover", "segments", "snapshots", "STOP_REASONS"]

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
_MARK = "HIGHWATER"  # JNL_MARK_FILE


class RecoveryError(EngineError):
    """The data directory cannot give back a consistent state."""


class SnapshotUnusable(RecoveryError):
    """A snapshot file the engine cannot load (damaged, or not a snapshot)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: not a usable snapshot ({reason})")
        self.reason = reason


class InstrumentsDiffer(RecoveryError):
    """A snapshot of other instruments than the ones it is loaded for."""

    def __init__(self, path: str | os.PathLike[str], difference: str) -> None:
        super().__init__(f"{path}: {difference}")
        self.difference = difference


class JournalDamaged(RecoveryError):
    """The journal is damaged before its end: starting would lose the
    commands after the damage, acknowledged ones among them."""


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


@dataclass(frozen=True)
class Damage:
    """Where the journal stops short of its end, and what follows."""

    segment: str  # the segment's file name
    reason: str  # why reading stopped (a STOP_REASONS value)
    offset: int  # byte offset in the segment of the first byte not replayed
    last_good_seq: int  # the seq of the last record before it
    bytes_after: int  # bytes from `offset` to the end of the segment
    records_after: int  # whole, valid records among them, found at any offset
    later_segments: int  # segment files after this one
    later_records: int  # whole, valid records in them
    seqs_after: tuple[int, int] | None  # the lowest and highest seq of all those records

    @property
    def torn_tail(self) -> bool:
        """The rule: a torn tail is the end of the newest segment holding no
        valid record (a record cut short, garbage or zeros where a write did
        not finish, a header never finished). A crash leaves one; it was
        never acknowledged, since a command is only acknowledged once its
        record is synced. A record that fails its checks with a valid record
        after it, a sequence gap, or a later segment is damage."""
        return self.reason != STOP_REASONS[lib.JNL_SEQ_GAP] and self.records_after == 0 and self.later_segments == 0

    def describe(self) -> str:
        seqs = f" (seq {self.seqs_after[0]}..{self.seqs_after[1]})" if self.seqs_after else ""
        later = (f"; {self.later_segments} later segment(s) hold {self.later_records} valid records"
                 if self.later_segments else "")
        return (f"{self.segment}: {self.reason} at byte {self.offset}, after seq {self.last_good_seq}; "
                f"the {self.bytes_after} bytes from there to the end of the segment hold {self.records_after} "
                f"valid records{later}{seqs}")


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
    damage: Damage | None = None  # where the journal stopped short of its end
    mark: tuple[int, int, int] = (0, 0, 0)  # the high-water mark: seq, order id, trade id
    loss_accepted: bool = False  # damage was set aside and the counters raised to the mark
    mark_error: str | None = None  # without `repair`: why the mark could not be read (it is taken as none)
    unfinished_loss: str | None = None  # an accepted loss a crash cut short (its damage): a server refuses


def segments(data_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in data_dir.iterdir() if (m := _SEGMENT.match(p.name)))


def snapshots(data_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in data_dir.iterdir() if (m := _SNAPSHOT.match(p.name)))


_RECORD = ffi.sizeof("struct jnl_record")
_CMD = ffi.sizeof("struct eng_cmd")
_RECORD_HEAD = struct.Struct("<IIQq")  # len, crc, seq, ts; the command follows
_SEGMENT_HEADER = 32  # struct jnl_header; the instrument specs follow it
_READ_RECORDS = 65536  # records journal_commands reads at a time (5.8 MB), not a whole segment at once


def _journal_blocks(data_dir: str | os.PathLike[str], after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
    """(seq of the first, the records) of a data directory's journal, up to
    _READ_RECORDS whole, valid records at a time, in order, from the segment
    that holds seq `after_seq` + 1 (those before it, which a snapshot
    covers, are not read, as recovery reads none) up to where recovery would
    stop (a segment's valid records are consecutive)."""
    scan = ffi.new("struct jnl_scan *")
    expected = None  # the seq the next segment must start at
    found = segments(Path(data_dir))
    while len(found) > 1 and found[1][0] <= after_seq + 1:
        found.pop(0)
    for first, path in found:
        if expected is not None and first != expected:
            return  # records missing before it: recovery stops there too
        lib.jnl_scan_file(str(path).encode(), ffi.NULL, 0, scan, ffi.NULL)
        if scan.stop == lib.JNL_BAD_HEADER:
            return
        start = _SEGMENT_HEADER + scan.ninstruments * ffi.sizeof("struct eng_instrument_spec")
        left = scan.valid_bytes - start
        with open(path, "rb") as f:
            f.seek(start)
            while left > 0:
                data = f.read(min(left, _RECORD * _READ_RECORDS))
                whole = len(data) - len(data) % _RECORD
                if whole:
                    seq = _RECORD_HEAD.unpack_from(data)[2]
                    yield seq, data[:whole]
                    expected = seq + whole // _RECORD
                if whole != len(data) or not data:
                    return  # the file shrank under us: no whole record past here
                left -= whole
        if scan.stop != lib.JNL_END:
            return


def journal_commands(data_dir: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """(seq, command) for every whole, valid record of a data directory's
    journal, in order, up to where recovery would stop; the command is a
    packed ``struct eng_cmd``, as ``Engine.process_batch`` takes it."""
    for first, block in _journal_blocks(data_dir):
        for i, off in enumerate(range(_RECORD_HEAD.size, len(block), _RECORD)):
            yield first + i, block[off : off + _CMD]


def journal_records(data_dir: str | os.PathLike[str], after_seq: int) -> Iterator[bytes]:
    """The journal's whole, valid records after seq `after_seq` (``struct
    jnl_record``, for ``jnl_apply_records``), as a recovery from a snapshot
    at `after_seq` replays them, up to _READ_RECORDS at a time."""
    for first, block in _journal_blocks(data_dir, after_seq):
        skip = max(0, after_seq + 1 - first)
        if skip * _RECORD < len(block):
            yield block[skip * _RECORD :]


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


_SPEC_FIELDS = ("symbol", "tick_size", "lot_size", "min_price", "max_price", "market_protection")


def _specs_differ(eng: struct_eng, wanted: list[struct_eng_instrument_spec], have: str, want: str) -> str | None:
    """None when the instruments of `eng` (`have` names where they come
    from: "the snapshot") are `wanted` (`want`'s); else what the first
    difference is."""
    count = lib.eng_instrument_count(eng)

    def shown(spec: struct_eng_instrument_spec, name: str) -> object:
        value = getattr(spec, name)
        return ffi.string(value).decode("ascii", "replace") if name == "symbol" else int(value)

    for i, spec in enumerate(wanted[:count]):
        ours = lib.eng_instrument(eng, i)
        if bytes(ffi.buffer(ours, ffi.sizeof(ours[0]))) != bytes(ffi.buffer(spec, ffi.sizeof(spec[0]))):
            name = next((f for f in _SPEC_FIELDS if shown(ours, f) != shown(spec, f)), "symbol")
            difference = (f"instrument {i} ({shown(ours, 'symbol')}) has {name} {shown(ours, name)} in {have} "
                          f"and {shown(spec, name)} in {want}")
            break
    else:
        if count == len(wanted):
            return None
        difference = f"{have} has {count} instruments and {want} {len(wanted)}"
    return f"the instruments of {have} differ from those of {want} ({difference})"


# What a start whose configuration is not its data directory's is told to do.
_OTHER_CONFIGURATION = ("start with the instruments the data directory was written with (or, to start afresh, "
                        "with a new data directory)")


def _empty_engine(level_events: bool) -> struct_eng:
    cfg = ffi.new("struct eng_config *")
    cfg.expected_orders = 1 << 16
    cfg.level_events = int(level_events)
    eng = lib.eng_create(cfg)
    if eng == ffi.NULL:
        raise EngineMemoryError("could not allocate an engine")
    return eng


def new_engine(specs: list[struct_eng_instrument_spec], *, level_events: bool = False) -> struct_eng:
    """A fresh engine (``struct eng *``; the caller destroys it) with the
    instruments `specs`, numbered in order."""
    eng = _empty_engine(level_events)
    try:
        _add_specs(eng, specs)
    except BaseException:
        lib.eng_destroy(eng)
        raise
    return eng


def _add_specs(eng: struct_eng, specs: list[struct_eng_instrument_spec]) -> None:
    out = ffi.new("uint32_t *")
    for spec in specs:
        rc = lib.eng_add_instrument(eng, spec, out)
        if rc != lib.ENG_OK:
            raise EngineError(f"instrument {ffi.string(spec.symbol).decode()}: "
                              f"{ffi.string(lib.eng_strerror(rc)).decode()}")


class DataDirLock:
    """An exclusive lock on a data directory for as long as it is held: two
    servers appending to one journal would interleave their records."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        root = Path(data_dir)
        _make_dir(root)
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


def read_mark(data_dir: str | os.PathLike[str]) -> tuple[int, int, int]:
    """The high-water mark of a data directory: (seq, order id, trade id),
    each at least the highest ever issued there; zeros when it has none."""
    mark = ffi.new("struct eng_counters *")
    rc = lib.eng_mark_read(os.fsencode(data_dir), mark)
    path = Path(data_dir) / _MARK
    if rc == lib.ENG_CORRUPT:
        raise RecoveryError(f"{path} is not a valid high-water mark (its size or checksum is wrong); if "
                            "pyengine-replay --check finds the journal whole, move the file aside and start again")
    if rc != lib.ENG_OK:
        raise RecoveryError(f"cannot read {path}: {os.strerror(ffi.errno)}")
    return int(mark.seq), int(mark.order_id), int(mark.trade_id)


def _aside(path: Path, suffix: str) -> Path:
    """A name beside `path` with `suffix` that no file has yet."""
    aside = path.with_name(path.name + suffix)
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{suffix}.{n}")
    return aside


def _set_aside(path: Path, valid_bytes: int, why: str, report: Recovery) -> None:
    """Copy what follows the last whole record aside and cut it off, durably."""
    aside = _aside(path, f".damaged-{int(time.time())}")
    with open(path, "r+b") as src:
        dst = open(aside, "xb")
        try:
            with dst:
                src.seek(valid_bytes)
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            _fsync_dir(path.parent)  # the copy's name is durable before the cut: never the cut without the copy
        except OSError:
            # Nothing is cut yet: a copy that failed (a full disk) is not left behind at every start that tries.
            aside.unlink(missing_ok=True)
            raise
        src.truncate(valid_bytes)
        os.fsync(src.fileno())
    report.damaged.append(f"{path.name} from byte {valid_bytes} ({why}) -> {aside.name}")


def _rename_aside(path: Path, suffix: str, why: str, report: Recovery) -> None:
    aside = _aside(path, suffix)
    path.rename(aside)
    report.damaged.append(f"{path.name}: {why} -> {aside.name}")


def _sync_data(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _make_dir(root: Path) -> None:
    """``mkdir -p``, with each directory it makes synced into its parent:
    a name not on disk can vanish in a power loss, with all that is in it."""
    target = Path(os.path.abspath(root))
    made = [path for path in (target, *target.parents) if not path.exists()]
    target.mkdir(parents=True, exist_ok=True)
    for path in made:
        _fsync_dir(path.parent)


def _fsync_dir(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_snapshot(eng: struct_eng, root: Path) -> None:
    size = ffi.new("size_t *")
    buf = lib.eng_snapshot_serialize(eng, size)
    if buf == ffi.NULL:
        raise EngineMemoryError("could not serialize the engine's state")
    try:
        if lib.eng_snapshot_write_file(os.fsencode(root), buf, size[0]) != 0:
            raise OSError(ffi.errno, f"cannot write a snapshot in {root}: {os.strerror(ffi.errno)}")
    finally:
        lib.eng_free_buffer(buf)


def recover(
    data_dir: str | os.PathLike[str],
    specs: list[struct_eng_instrument_spec] | None,
    *,
    level_events: bool = False,
    repair: bool = True,
    use_snapshots: bool = True,
    accept_loss: bool = False,
) -> tuple[struct_eng, Recovery]:
    """Build an engine (a ``struct eng *``; the caller destroys it) holding
    the state the data directory describes.

    `specs` are the instruments (``struct eng_instrument_spec *``) the engine
    must have: they must equal those in the snapshot and the segments, if any.
    Without `specs`, the instruments come from the data. Without
    `use_snapshots`, the state is rebuilt from the journal alone (which must
    then start at seq 1).

    Without `repair`, no file changes (a missing directory is a
    RecoveryError): ``Recovery.damage`` says where the
    journal stops short of its end. With `repair`, the journal is made ready
    to continue at the recovered state: a torn tail is cut off (and kept
    aside), empty segments are removed and the replayed ones synced; damage
    raises ``JournalDamaged``, changing nothing, unless `accept_loss`: then
    what follows the damage is set aside as well, and the engine's counters
    are raised to the high-water mark (and a snapshot of that written
    first), so that no seq, order id or trade id the lost records may hold
    is issued again.
    """
    t0 = time.perf_counter()
    root = Path(data_dir)
    if repair:
        _make_dir(root)  # a server's new data directory
    elif not root.is_dir():
        raise RecoveryError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    report = Recovery()
    try:
        report.mark = read_mark(root)
    except RecoveryError as exc:
        if repair:
            raise
        report.mark_error = str(exc)  # an audit reads the journal all the same: that is what decides
    eng = _load_newest_snapshot(root, report, level_events) if use_snapshots else _empty_engine(level_events)
    try:
        if use_snapshots and report.snapshot_path is None and snapshots(root):
            _check_journal_from_the_start(root)
        if report.snapshot_path is None:
            _add_instruments(eng, root, specs)
        elif specs is not None and (differ := _specs_differ(eng, specs, "the snapshot", "the configuration")):
            raise RecoveryError(f"{report.snapshot_path}: {differ}: {_OTHER_CONFIGURATION}")
        _replay(eng, root, report, "the snapshot" if report.snapshot_path else
                "the configuration" if specs is not None else "the first segment")
        if repair:
            _repair(eng, root, report, accept_loss)
        elif (plan := _read_set_aside(root)) is not None:
            report.unfinished_loss = plan.detail
            log.warning("journal_loss_unfinished", extra=fields(data_dir=str(root), detail=plan.detail))
    except BaseException:
        lib.eng_destroy(eng)
        raise
    report.seq = int(lib.eng_seq(eng))
    report.seconds = time.perf_counter() - t0
    return eng, report


@dataclass(frozen=True)
class _SetAside:
    """What follows the journal's damage, to be set aside (see _repair)."""

    segment: str  # the damaged segment's name
    reason: str  # why reading stopped there (a STOP_REASONS value)
    offset: int  # its first byte not replayed
    later: tuple[str, ...]  # the names of the segments after it
    detail: str  # Damage.describe()

    @classmethod
    def of(cls, root: Path, damage: Damage) -> _SetAside:
        names = [path.name for _, path in segments(root)]
        return cls(damage.segment, damage.reason, damage.offset, tuple(names[names.index(damage.segment) + 1:]),
                   damage.describe())


# An accepted loss's _SetAside while it is carried out: the snapshot at the
# mark makes the replay pass over the damaged segments, so a start after a
# crash in the middle learns from this file what is still to be set aside.
_ACCEPTING_LOSS = "ACCEPTING_LOSS"


def _read_set_aside(root: Path) -> _SetAside | None:
    path = root / _ACCEPTING_LOSS
    try:
        fields_ = json.loads(path.read_bytes())
        return _SetAside(fields_["segment"], fields_["reason"], fields_["offset"], tuple(fields_["later"]),
                         fields_["detail"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecoveryError(f"{path}: unreadable ({exc}): a start with --accept-journal-loss wrote it and did not "
                            "finish; what it held is in that start's log (journal_loss_accepted)") from None


def _write_set_aside(root: Path, plan: _SetAside) -> None:
    """The plan on disk, durably, before the loss is accepted."""
    path, temporary = root / _ACCEPTING_LOSS, root / f"{_ACCEPTING_LOSS}.tmp"
    with open(temporary, "wb") as f:
        f.write(json.dumps({"segment": plan.segment, "reason": plan.reason, "offset": plan.offset,
                            "later": list(plan.later), "detail": plan.detail}).encode())
        f.flush()
        os.fsync(f.fileno())
    temporary.rename(path)
    _fsync_dir(root)


def _carry_out(root: Path, plan: _SetAside, report: Recovery) -> None:
    """Set aside what follows the damage; each step is done once, whichever
    a crash left undone."""
    damaged = root / plan.segment
    if plan.reason == STOP_REASONS[lib.JNL_BAD_HEADER]:
        if damaged.exists():
            _rename_aside(damaged, f".damaged-{int(time.time())}", "bad header", report)
    elif damaged.exists() and damaged.stat().st_size > plan.offset:
        _set_aside(damaged, plan.offset, plan.reason, report)
    # Nothing after a damaged record can be applied: set it aside whole.
    for name in plan.later:
        if (root / name).exists():
            _rename_aside(root / name, ".orphan", "follows a damaged record", report)


def _repair(eng: struct_eng, root: Path, report: Recovery, accept_loss: bool) -> None:
    """Make the journal continue at the engine's state (see recover)."""
    damage = report.damage
    unfinished = _read_set_aside(root)  # an accepted loss that a crash cut short
    plan = unfinished or (_SetAside.of(root, damage) if damage is not None else None)
    if unfinished is not None or (damage is not None and not damage.torn_tail):
        assert plan is not None
        if not accept_loss:
            if unfinished is not None:
                raise JournalDamaged(
                    f"{root}: a start with --accept-journal-loss stopped before it had set aside what follows the "
                    f"damage ({plan.detail}): not starting, nothing changed. Start with --accept-journal-loss "
                    "again to finish it")
            raise JournalDamaged(
                f"{root}: the journal is damaged before its end (not a torn tail): {plan.detail}. "
                "Commands the server acknowledged may be among them: not starting, nothing changed. Inspect it "
                f"with pyengine-replay {root}; to start without them, run with --accept-journal-loss")
        _accept_loss(eng, root, report, plan, unfinished is not None)
    if plan is not None:
        _carry_out(root, plan, report)
        if unfinished is not None or report.loss_accepted:
            _fsync_dir(root)  # the set-asides are durable before the plan goes
            (root / _ACCEPTING_LOSS).unlink()
    # A server killed between its write and its sync (or running with fsync
    # off) left records only in the page cache; they are in the state now,
    # and the commands acknowledged from here on follow them in a new segment.
    read = {Path(s.path).name for s in report.segments if s.stop != COVERED}
    for first, path in segments(root):
        if first > lib.eng_seq(eng):  # holds no record we replayed
            path.unlink()
        elif path.name in read:
            _sync_data(path)
    _remove_unfinished_writes(root)
    _fsync_dir(root)


def _remove_unfinished_writes(root: Path) -> None:
    """Remove what a server killed while replacing a snapshot or the mark
    left: the file it was writing (the name with ``.tmp``), never renamed
    into place and never read; a snapshot's is as large as the snapshot."""
    for path in [*root.glob("snapshot-*.snap.tmp"), *root.glob(f"{_MARK}.tmp")]:
        path.unlink()
        log.info("unfinished_write_removed", extra=fields(path=str(path)))


def _accept_loss(eng: struct_eng, root: Path, report: Recovery, plan: _SetAside, unfinished: bool) -> None:
    """Write down what is to be set aside (unless a start that did not
    finish did), then raise the engine's counters to the high-water mark and
    snapshot that state, before anything is cut off: from then on, whatever
    happens to the rest of the repair, a restart continues above the mark
    and finishes it (_ACCEPTING_LOSS)."""
    if not any(report.mark):
        raise JournalDamaged(
            f"{root}: the journal is damaged ({plan.detail}) and the directory has no high-water "
            "mark (HIGHWATER; servers before it did not write one): the seqs and ids the lost records hold "
            "cannot be bounded, so the loss cannot be accepted without issuing some of them again")
    if not unfinished:
        _write_set_aside(root, plan)
    before, after = ffi.new("struct eng_counters *"), ffi.new("struct eng_counters *")
    lib.eng_get_counters(eng, before)
    lib.eng_raise_counters(eng, ffi.new("struct eng_counters *", report.mark))
    lib.eng_get_counters(eng, after)
    _write_snapshot(eng, root)
    report.loss_accepted = True
    log.error("journal_loss_accepted", extra=fields(
        detail=plan.detail, last_good_seq=before.seq, last_good_order_id=before.order_id,
        last_good_trade_id=before.trade_id, next_seq=after.seq + 1, next_order_id=after.order_id + 1,
        next_trade_id=after.trade_id + 1))


def load_snapshot(path: str | os.PathLike[str], specs: list[struct_eng_instrument_spec], *,
                  level_events: bool = False) -> tuple[struct_eng, int]:
    """An engine (``struct eng *``; the caller destroys it) holding the
    snapshot file `path`, and the seq it was taken at. Raises
    SnapshotUnusable when the file is not a valid snapshot,
    InstrumentsDiffer when it names other instruments than `specs`."""
    seq_out = ffi.new("uint64_t *")
    eng = _empty_engine(level_events)
    rc = lib.eng_snapshot_load(eng, os.fsencode(path), seq_out)
    if rc != lib.ENG_OK:
        why = _why_unusable(rc, ffi.errno)
        lib.eng_destroy(eng)
        raise SnapshotUnusable(path, why)
    if differ := _specs_differ(eng, specs, "the snapshot", "the configuration"):
        lib.eng_destroy(eng)
        raise InstrumentsDiffer(path, differ)
    return eng, int(seq_out[0])


def _load_newest_snapshot(root: Path, report: Recovery, level_events: bool) -> struct_eng:
    """An engine holding the newest snapshot that loads, or an empty one."""
    seq_out = ffi.new("uint64_t *")
    for _, path in reversed(snapshots(root)):
        eng = _empty_engine(level_events)
        rc = lib.eng_snapshot_load(eng, str(path).encode(), seq_out)
        if rc == lib.ENG_OK:
            report.snapshot_seq, report.snapshot_path = int(seq_out[0]), str(path)
            return eng
        why = _why_unusable(rc, ffi.errno)
        # A failed load leaves the engine half-built: it goes, and the next
        # older snapshot gets a fresh one.
        lib.eng_destroy(eng)
        log.warning("snapshot_unusable", extra=fields(path=path.name, error=why))
    return _empty_engine(level_events)


def _why_unusable(rc: int, errno: int) -> str:
    """Why eng_snapshot_load refused a file, in words for its reader."""
    if rc == lib.ENG_CORRUPT:
        return "damaged: its checksum, length or contents do not check out"
    if rc == lib.ENG_NO_MEMORY:
        return "out of memory loading it; the file may well be sound"
    if rc == lib.ENG_INVALID_ARGUMENT and errno == EINVAL:
        return "written by an engine of the other order-id mode (caller_order_ids)"
    if rc == lib.ENG_INVALID_ARGUMENT and errno:
        return f"cannot be read: {os.strerror(errno)}"
    return str(ffi.string(lib.eng_strerror(rc)).decode())


def _check_journal_from_the_start(root: Path) -> None:
    """Snapshots that none loads: the state they held comes back only from a
    journal that starts at seq 1 (an empty state and no journal, or one that
    starts later, would lose every command before it, silently when there is
    no segment at all)."""
    found = segments(root)
    if not found or found[0][0] != 1:
        names = ", ".join(path.name for _, path in snapshots(root))
        where = f"starts at seq {found[0][0]}" if found else "has no segment"
        raise RecoveryError(
            f"{root}: no snapshot loads ({names}: snapshot_unusable in the log says why) and the journal {where}, "
            "not at seq 1: the commands before it cannot be rebuilt. Not starting, nothing changed; a snapshot "
            "that failed for want of memory may load with more")


def _header_specs(path: Path) -> list[struct_eng_instrument_spec] | None:
    """The instruments a segment's header names (None: not a valid header)."""
    size = 64
    while True:
        buf = ffi.new("struct eng_instrument_spec[]", size)
        n = lib.jnl_read_instruments(str(path).encode(), buf, size)
        if n <= size:
            # Copies: a pointer into `buf` would not keep it alive.
            return None if n < 0 else [ffi.new("struct eng_instrument_spec *", buf[i]) for i in range(n)]
        size = n


def _add_instruments(eng: struct_eng, root: Path, specs: list[struct_eng_instrument_spec] | None) -> None:
    """No snapshot: instruments from the configuration, or from the first
    segment whose header is whole (every segment names the same ones; a bad
    header is the replay's to report, as damage)."""
    if specs is None:
        specs = next((s for _, path in segments(root) if (s := _header_specs(path)) is not None), None)
        if specs is None:
            return
    try:
        _add_specs(eng, specs)
    except EngineError as exc:
        raise RecoveryError(str(exc)) from None


def _replay(eng: struct_eng, root: Path, report: Recovery, source: str) -> None:
    """Apply the journal's records after the engine's seq, up to the first
    one that is not whole and valid; set ``report.damage`` when that is
    before the end of the journal. Changes no file. `source`: where the
    engine's instruments came from ("the configuration"), for a segment
    whose own differ."""
    scan = ffi.new("struct jnl_scan *")
    counts = ffi.new("uint64_t[]", lib.ENG_CMD__COUNT)
    names = ("other", "new", "cancel", "modify", "set_state", "cancel_all", "set_mmp", "reset_mmp", "set_limits")
    assert len(names) == lib.ENG_CMD__COUNT
    found = segments(root)
    for i, (first, path) in enumerate(found):
        seq = int(lib.eng_seq(eng))
        following = found[i + 1][0] if i + 1 < len(found) else None
        if following is not None and following <= seq + 1:
            # Everything in it is in the state already (a snapshot covers it): not even read.
            report.segments.append(SegmentReport(str(path), first, 0, following - first, 0, following - 1, COVERED, {}))
            continue
        if first > seq + 1:
            if i == 0:
                raise RecoveryError(f"{path.name} starts at {first} but the state ends at {seq}: "
                                    f"records {seq + 1}..{first - 1} are missing")
            # The segment before ended whole (`scan` is its) short of this
            # one: records lost from its end, damage like any other.
            report.damage = replace(_damage(found[i - 1][1], found[i - 1][0], scan, [p for _, p in found[i:]]),
                                    reason=STOP_REASONS[lib.JNL_SEQ_GAP])
            log.warning("journal_damaged", extra=fields(
                segment=found[i - 1][1].name, reason=report.damage.reason, last_good_seq=seq, next_segment=path.name))
            return
        header = _header_specs(path)
        if header is not None and (differ := _specs_differ(eng, header, source, "this segment")):
            raise RecoveryError(f"{path.name}: {differ}" + (f": {_OTHER_CONFIGURATION}"
                                                            if source == "the configuration" else ""))
        if header is not None:
            source = "the segments before it"  # one unlike them is the data directory's own inconsistency
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
        report.damage = _damage(path, first, scan, [p for _, p in found[i + 1:]])
        log.warning("journal_damaged", extra=fields(
            segment=path.name, reason=stop, last_good_seq=report.damage.last_good_seq, offset=scan.valid_bytes,
            file_bytes=scan.file_bytes, torn_tail=report.damage.torn_tail))
        return


def _damage(path: Path, first: int, scan: struct_jnl_scan, later: list[Path]) -> Damage:
    """What follows the point where `scan` of `path` stopped."""
    seqs = [int(scan.following_min_seq), int(scan.following_max_seq)] if scan.following else []
    later_records = 0
    other = ffi.new("struct jnl_scan *")
    for p in later:
        lib.jnl_scan_file(str(p).encode(), ffi.NULL, 0, other, ffi.NULL)
        if other.stop == lib.JNL_IO_ERROR:
            raise RecoveryError(f"{p.name}: read error (errno {other.err})")
        later_records += int(other.records + other.following)
        if other.records:
            seqs += [int(other.first_seq), int(other.last_seq)]
        if other.following:
            seqs += [int(other.following_min_seq), int(other.following_max_seq)]
    return Damage(
        segment=path.name,
        reason=STOP_REASONS.get(scan.stop, str(scan.stop)),
        offset=int(scan.valid_bytes),
        last_good_seq=first - 1 if scan.stop == lib.JNL_BAD_HEADER else int(scan.last_seq),
        bytes_after=int(scan.file_bytes - scan.valid_bytes),
        records_after=int(scan.following),
        later_segments=len(later),
        later_records=later_records,
        seqs_after=(min(seqs), max(seqs)) if seqs else None,
    )

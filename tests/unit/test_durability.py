"""Journal, snapshots and recovery, in process: the engine thread of the
server (EngineThread) journals a random flow into a data directory; recovery
and pyengine-replay must rebuild exactly the state of an in-process Engine fed
the same commands, must stop at and report a damaged tail, set a torn one
aside, refuse damage before the end of the journal (changing nothing) unless
the loss is accepted, and then never issue a seq or id again."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyengine import (Engine, OrderLimits, Rejected, RejectReason, pack_cancel, pack_modify, pack_new_order,
                      pack_set_order_limits)
from pyengine import durability
from pyengine._ffi import ffi, lib
from pyengine.durability import (COVERED, DataDirLock, JournalDamaged, Recovery, RecoveryError, SnapshotUnusable,
                                 journal_commands, journal_records, load_snapshot, new_engine, read_mark,
                                 recover, replay_journal, segments, snapshots)
from pyengine._server import CommandBuffer, Ledger
from pyengine.errors import EngineError
from pyengine.replay import audit, main as replay_main
from pyengine.server.config import DEFAULT_INSTRUMENTS, InstrumentConfig, ServerConfig
from pyengine.server.engine_thread import EngineThread, instrument_spec, run_offline

from .conftest import run_python

RECORD = ffi.sizeof("struct jnl_record")


def flow(n: int, seed: int) -> list[bytes]:
    """A random flow on the default instruments: limit orders around a mid
    (a fifth crossing), cancels and modifies of earlier ones."""
    rng = random.Random(seed)
    cmds: list[bytes] = []
    placed = 0
    for _ in range(n):
        r = rng.random()
        inst = rng.randrange(2)  # ESZ6 (tick 25), NQZ6 (tick 25)
        mid = (450_000, 1_800_000)[inst]
        if r < 0.6 or placed == 0:
            side = rng.choice(("buy", "sell"))
            off = rng.randrange(-2, 12) * 25
            price = mid - off if side == "buy" else mid + off
            cmds.append(pack_new_order(inst, side, rng.randrange(1, 20), price, account=rng.randrange(1, 5)))
            placed += 1
        elif r < 0.85:
            cmds.append(pack_cancel(rng.randrange(1, placed + 1)))
        else:
            cmds.append(pack_modify(rng.randrange(1, placed + 1), qty=rng.randrange(1, 20)))
    return cmds


def journal(data_dir: Path, cmds: list[bytes], **durability: object) -> None:
    """Run `cmds` through a journaling engine thread, as the server would."""
    config = ServerConfig(data_dir=str(data_dir), engine_cpu=-1, spin_us=0, **durability)  # type: ignore[arg-type]
    before = recover(data_dir, specs())
    lib.eng_destroy(before[0])
    st = run_offline(config, b"".join(cmds))
    assert st["journal_errno"] == 0
    assert st["journaled"] == before[1].seq + len(cmds)  # a seq, continuing the recovered one


def reference(cmds: list[bytes]) -> Engine:
    """An in-process Engine with the server's instruments, fed `cmds`."""
    eng = Engine()
    for inst in DEFAULT_INSTRUMENTS:
        eng.add_instrument(inst.symbol, tick_size=inst.tick_size, lot_size=inst.lot_size,
                           price_band=inst.price_band, market_protection=inst.market_protection)
    if cmds:
        eng.process_batch(b"".join(cmds), collect_events=False)
    return eng


def specs() -> list[object]:
    return [instrument_spec(i) for i in DEFAULT_INSTRUMENTS]


def files(data_dir: Path) -> dict[str, bytes]:
    """Every file of a data directory, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


def overwrite(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


def counters(eng: object) -> tuple[int, int, int]:
    c = ffi.new("struct eng_counters *")
    lib.eng_get_counters(eng, c)
    return int(c.seq), int(c.order_id), int(c.trade_id)


def assert_loss_accepted(data_dir: Path, good: list[bytes], mark: tuple[int, int, int]) -> None:
    """A recovery with the loss accepted gives the state of `good`, its counters raised to `mark`."""
    eng, report = recover(data_dir, specs(), accept_loss=True)
    try:
        assert report.loss_accepted and report.seq == mark[0] and counters(eng) == mark
        assert int(lib.eng_state_hash(eng)) == raised_hash(good, mark)
    finally:
        lib.eng_destroy(eng)


def raised_hash(cmds: list[bytes], mark: tuple[int, int, int]) -> int:
    """The state hash of an engine fed `cmds`, its counters then raised to `mark`."""
    eng = new_engine(specs())
    try:
        lib.eng_process_batch(eng, ffi.from_buffer("struct eng_cmd[]", b"".join(cmds)), len(cmds))
        lib.eng_raise_counters(eng, ffi.new("struct eng_counters *", mark))
        return int(lib.eng_state_hash(eng))
    finally:
        lib.eng_destroy(eng)


def recovered_hash(data_dir: Path, **kw: object) -> tuple[int, Recovery]:
    eng, report = recover(data_dir, specs(), **kw)  # type: ignore[arg-type]
    try:
        why = ffi.new("char[]", 256)
        assert lib.eng_verify(eng, why, 256) == lib.ENG_OK, ffi.string(why).decode()
        return int(lib.eng_state_hash(eng)), report
    finally:
        lib.eng_destroy(eng)


def test_recovery_rebuilds_the_state_and_numbering(tmp_path: Path) -> None:
    cmds = flow(3000, seed=1)
    journal(tmp_path, cmds)
    h, report = recovered_hash(tmp_path)
    assert report.seq == report.replayed == 3000
    assert report.snapshot_path is None and not report.damaged
    assert h == reference(cmds).state_hash()
    # A second life continues the numbering and the same journal.
    more = flow(500, seed=2)
    journal(tmp_path, more)
    h, report = recovered_hash(tmp_path)
    assert report.seq == 3500
    assert [first for first, _ in segments(tmp_path)] == [1, 3001]
    assert h == reference(cmds + more).state_hash()
    assert [seq for seq, _ in journal_commands(tmp_path)] == list(range(1, 3501))
    assert [c for _, c in journal_commands(tmp_path)] == cmds + more
    eng, result = replay_journal(tmp_path)
    assert result.commands == 3500
    assert eng.state_hash() == h


def test_the_journals_commands_stop_where_records_are_missing(tmp_path: Path) -> None:
    cmds = flow(300, seed=3)
    journal(tmp_path, cmds, snapshot_every=100, keep_segments=True)
    assert [first for first, _ in segments(tmp_path)][:3] == [1, 101, 201]
    dict(segments(tmp_path))[101].unlink()  # records 101..200 gone: what follows is not joined on
    assert [seq for seq, _ in journal_commands(tmp_path)] == list(range(1, 101))
    eng, result = replay_journal(tmp_path)
    assert result.commands == 100 and eng.state_hash() == reference(cmds[:100]).state_hash()


@pytest.mark.parametrize("read_records", [7, 100, 65536])
def test_the_journals_commands_are_read_a_part_of_a_segment_at_a_time(tmp_path: Path, read_records: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = flow(250, seed=3)
    journal(tmp_path, cmds, snapshot_every=100, keep_segments=True)
    monkeypatch.setattr(durability, "_READ_RECORDS", read_records)
    assert list(journal_commands(tmp_path)) == list(enumerate(cmds, start=1))
    records = ffi.sizeof("struct jnl_record")
    for after in (0, 1, 6, 7, 99, 100, 101, 249, 250, 300):
        got = b"".join(journal_records(tmp_path, after))
        assert [got[at + records - len(cmds[0]) : at + records] for at in range(0, len(got), records)] == cmds[after:]


def test_snapshot_plus_suffix_equals_full_replay(tmp_path: Path) -> None:
    cmds = flow(2500, seed=3)
    journal(tmp_path, cmds, snapshot_every=700, keep_segments=True)
    assert [seq for seq, _ in snapshots(tmp_path)] == [700, 1400, 2100]
    from_snapshot, r1 = recovered_hash(tmp_path)
    full, r2 = recovered_hash(tmp_path, use_snapshots=False)
    assert (r1.snapshot_seq, r1.replayed) == (2100, 400)
    assert (r2.snapshot_seq, r2.replayed) == (0, 2500)
    # From the snapshot, the segments before it are not read at all.
    assert [(s.first_seq, s.records, s.skipped, s.stop) for s in r1.segments] == [
        (1, 0, 700, COVERED), (701, 0, 700, COVERED), (1401, 0, 700, COVERED), (2101, 400, 0, "end")]
    assert [s.records for s in r2.segments] == [700, 700, 700, 400]
    assert from_snapshot == full == reference(cmds).state_hash()


def test_order_limits_set_before_the_snapshot_hold_after_it(tmp_path: Path) -> None:
    """Recovered from a snapshot taken after the limits were set, the engine
    has them and holds the commands replayed after it to them, as the
    original did."""
    cmds = flow(900, seed=12)
    cmds[300:300] = [pack_set_order_limits(0, 6), pack_set_order_limits(1, 0, 12 * 1_800_000)]
    journal(tmp_path, cmds, snapshot_every=700)
    eng, report = recover(tmp_path, specs())
    limits: list[OrderLimits] = []
    try:
        assert (report.snapshot_seq, report.replayed) == (700, 202)
        out = ffi.new("struct eng_order_limits *")
        for number in (0, 1):
            assert lib.eng_get_order_limits(eng, number, out) == 0
            limits.append(OrderLimits(out.max_qty, out.max_notional))
        recovered = int(lib.eng_state_hash(eng))
    finally:
        lib.eng_destroy(eng)
    assert limits == [OrderLimits(6, 0), OrderLimits(0, 12 * 1_800_000)]
    original = reference([])
    events = original.decode_events(original.process_batch(b"".join(cmds)).events)
    over = {RejectReason.MAX_QTY_EXCEEDED, RejectReason.MAX_NOTIONAL_EXCEEDED}
    bitten = {type(e) is Rejected and e.reason in over and e.seq > 700 for e in events}
    assert bitten == {True, False}, "some commands replayed after the snapshot are over the limits"
    assert recovered == original.state_hash()


def test_no_snapshot_is_written_after_the_journal_failed(tmp_path: Path) -> None:
    # The journal's file may not grow past 20,000 bytes (EFBIG, in a child
    # process) while the engine runs on to a snapshot at seq 300: it would
    # hold commands no journal has, and its prune would delete the segment
    # that failed.
    data, commands = tmp_path / "data", tmp_path / "flow"
    cmds = flow(400, seed=2)
    commands.write_bytes(b"".join(cmds))
    done = run_python(textwrap.dedent(f"""
        import resource, signal
        from pyengine.server.config import ServerConfig
        from pyengine.server.engine_thread import run_offline
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        config = ServerConfig(data_dir={str(data)!r}, engine_cpu=-1, spin_us=0, snapshot_every=300, fsync="batch")
        try:
            run_offline(config, open({str(commands)!r}, "rb").read())
        except OSError as exc:
            print("journal failed", exc.errno)
    """))
    assert f"journal failed {errno.EFBIG}" in done.stdout, done.stdout + done.stderr
    assert not [p.name for p in data.iterdir() if p.name.startswith("snapshot-")]
    h, report = recovered_hash(data)
    assert report.snapshot_path is None and 0 < report.seq < 300  # what the journal holds, no more
    assert h == reference(cmds[: report.seq]).state_hash()


def test_snapshots_prune_old_segments(tmp_path: Path) -> None:
    cmds = flow(2500, seed=4)
    journal(tmp_path, cmds, snapshot_every=1000)
    assert [seq for seq, _ in snapshots(tmp_path)] == [2000]
    assert [first for first, _ in segments(tmp_path)] == [2001]
    h, report = recovered_hash(tmp_path)
    assert (report.snapshot_seq, report.replayed, report.seq) == (2000, 500, 2500)
    assert h == reference(cmds).state_hash()


def test_the_files_of_writes_a_kill_cut_short_are_removed(tmp_path: Path) -> None:
    cmds = flow(1500, seed=4)
    journal(tmp_path, cmds, snapshot_every=1000)
    # A server killed while it wrote a snapshot, and the mark, leaves these:
    # never renamed into place, never read.
    left = [tmp_path / "snapshot-00000000000000002000.snap.tmp", tmp_path / "HIGHWATER.tmp"]
    for path in left:
        path.write_bytes(snapshots(tmp_path)[-1][1].read_bytes()[:4096])
    h, _ = recovered_hash(tmp_path, repair=False)  # an audit changes nothing
    assert all(path.exists() for path in left)
    h_repaired, report = recovered_hash(tmp_path)
    assert not any(path.exists() for path in left)
    assert (h, report.snapshot_seq, report.seq) == (h_repaired, 1000, 1500)
    assert h == reference(cmds).state_hash()


def test_a_damaged_snapshot_falls_back_to_the_one_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cmds = flow(2500, seed=5)
    journal(tmp_path, cmds, snapshot_every=1000, keep_segments=True)
    newest = snapshots(tmp_path)[-1][1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pyengine.durability"):
        h, report = recovered_hash(tmp_path)
    assert (report.snapshot_seq, report.seq) == (1000, 2500)
    assert h == reference(cmds).state_hash()
    said = [r for r in caplog.records if r.getMessage() == "snapshot_unusable"]
    assert [r.kv for r in said] == [  # type: ignore[attr-defined]
        {"path": newest.name, "error": "damaged: its checksum, length or contents do not check out"}]
    with pytest.raises(SnapshotUnusable, match="damaged: its checksum"):
        load_snapshot(newest, specs())  # type: ignore[arg-type]


def test_a_snapshot_that_runs_out_of_memory_is_not_called_damaged(tmp_path: Path, failing_realloc: Any) -> None:
    """Out of memory while loading (the engine's instruments grow by
    realloc, each of which fails here) says so, in a child process."""
    data = tmp_path / "data"
    journal(data, flow(1500, seed=6), snapshot_every=1000)
    newest = snapshots(data)[-1][1]
    code = textwrap.dedent(f"""
        from pathlib import Path
        from pyengine.durability import SnapshotUnusable, load_snapshot
        from pyengine.server.config import DEFAULT_INSTRUMENTS
        from pyengine.server.engine_thread import instrument_spec

        specs = [instrument_spec(i) for i in DEFAULT_INSTRUMENTS]
        Path({str(failing_realloc.flag)!r}).touch()
        try:
            load_snapshot({str(newest)!r}, specs)
        except SnapshotUnusable as exc:
            print(exc)
    """)
    env = dict(failing_realloc.env, PYENGINE_FAIL_REALLOC_BYTES="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("(out of memory loading it; the file may well be sound)\n"), proc.stdout


@pytest.mark.parametrize("segments_left", [True, False])
def test_no_snapshot_that_loads_without_the_journal_from_seq_1_refuses(tmp_path: Path, segments_left: bool) -> None:
    """The snapshot that replaced the journal's start cannot be loaded: the
    state is not rebuilt from what follows it, nor, with no segment left (a
    start that failed after its recovery leaves none when the last held no
    record), taken to be empty."""
    cmds = flow(2500, seed=4)
    journal(tmp_path, cmds, snapshot_every=1000)
    (snapshot_seq, snapshot), = snapshots(tmp_path)
    assert [first for first, _ in segments(tmp_path)] == [snapshot_seq + 1]
    if not segments_left:
        for _, path in segments(tmp_path):
            path.unlink()
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    files = sorted(p.name for p in tmp_path.iterdir())
    where = f"starts at seq {snapshot_seq + 1}" if segments_left else "has no segment"
    with pytest.raises(RecoveryError, match=rf"no snapshot loads \({snapshot.name}: .* the journal {where}, not at seq 1"):
        recover(tmp_path, specs())
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    # With the journal from seq 1 (segments kept), the state comes back without the snapshot.
    keep = tmp_path / "kept"
    journal(keep, cmds, snapshot_every=1000, keep_segments=True)
    for _, snapshot in snapshots(keep):
        snapshot.write_bytes(b"not a snapshot")
    h, report = recovered_hash(keep)
    assert (report.snapshot_path, report.seq) == (None, 2500) and h == reference(cmds).state_hash()


def test_torn_last_record_is_reported_set_aside_and_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmds = flow(1000, seed=6)
    journal(tmp_path, cmds)
    (_, seg), = segments(tmp_path)
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 30)  # the last write was cut short
    assert replay_main([str(tmp_path)]) == 0
    assert f"journal   torn tail (a write a crash cut short, never acknowledged): {seg.name}: torn record at byte " \
        in capsys.readouterr().out
    h, report = recovered_hash(tmp_path)
    assert report.seq == 999
    assert report.segments[0].stop == "torn record"
    assert h == reference(cmds[:999]).state_hash()
    assert seg.stat().st_size == size - RECORD  # only whole records are left
    (aside,) = tmp_path.glob("journal-*.log.damaged-*")
    assert aside.stat().st_size == RECORD - 30
    assert any("torn record" in d for d in report.damaged)
    # Repaired: a new life appends after record 999 and recovers cleanly.
    journal(tmp_path, cmds[999:])
    h, report = recovered_hash(tmp_path)
    assert report.seq == 1000 and not report.damaged
    assert h == reference(cmds).state_hash()


def test_a_torn_tail_that_cannot_be_set_aside_is_left_as_it_was(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The copy fails for want of space: the start fails, the journal is not
    # cut and no copy is left behind; a start with space repairs it.
    cmds = flow(100, seed=6)
    journal(tmp_path, cmds)
    (_, seg), = segments(tmp_path)
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 30)
    untouched = files(tmp_path)

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as m:
        m.setattr(durability.shutil, "copyfileobj", full)
        for _ in range(2):
            with pytest.raises(OSError, match="No space left on device"):
                recover(tmp_path, specs())
    assert files(tmp_path) == untouched and not list(tmp_path.glob("*.damaged-*"))
    h, report = recovered_hash(tmp_path)
    assert report.seq == 99 and h == reference(cmds[:99]).state_hash()
    (aside,) = tmp_path.glob("journal-*.log.damaged-*")
    assert aside.stat().st_size == RECORD - 30


def test_records_lost_from_the_end_of_an_older_segment_are_damage(tmp_path: Path) -> None:
    # Whole records gone from the end of a segment with a later one after it
    # (fsync off, the machine stopped soon after a restart): a gap that only
    # the segments' names show, refused as damage, and accepted as such.
    cmds = flow(300, seed=8)
    journal(tmp_path, cmds[:200])
    journal(tmp_path, cmds[200:])  # a second segment, from 201
    first = segments(tmp_path)[0][1]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size - 50 * RECORD)  # records 151..200
    damage = audit(str(tmp_path))["damage"]
    assert not damage["torn_tail"] and damage["reason"] == "sequence gap"
    assert (damage["last_good_seq"], damage["bytes_after"], damage["later_segments"], damage["seqs_after"]) == (
        150, 0, 1, (201, 300))
    with pytest.raises(JournalDamaged, match=rf"{first.name}: sequence gap .* after seq 150"):
        recover(tmp_path, specs())
    mark = read_mark(tmp_path)
    assert_loss_accepted(tmp_path, cmds[:150], mark)
    assert (tmp_path / "journal-00000000000000000201.log.orphan").exists()
    assert not list(tmp_path.glob("*.damaged-*"))  # nothing was after the last record to set aside
    h, report = recovered_hash(tmp_path)  # the next life needs no flag
    assert report.damage is None and report.seq == mark[0]


def test_flipped_byte_mid_journal_refuses_until_the_loss_is_accepted(tmp_path: Path) -> None:
    cmds = flow(1500, seed=7)
    journal(tmp_path, cmds[:1000])
    journal(tmp_path, cmds[1000:])  # a second segment, from 1001
    first = segments(tmp_path)[0][1]
    header = first.stat().st_size - 1000 * RECORD
    flip(first, header + 499 * RECORD + 40)  # a bit flips inside record 500
    before = audit(str(tmp_path))  # read-only: reports, changes nothing
    assert not before["clean"] and before["seq"] == 499
    assert before["segments"][0]["stop"] == "bad checksum"
    damage = before["damage"]
    assert not damage["torn_tail"]
    assert (damage["offset"], damage["last_good_seq"], damage["bytes_after"], damage["records_after"]) == (
        header + 499 * RECORD, 499, 501 * RECORD, 500)
    assert (damage["later_segments"], damage["later_records"], damage["seqs_after"]) == (1, 500, (501, 1500))
    assert replay_main([str(tmp_path), "--check"]) == 1
    untouched = files(tmp_path)
    with pytest.raises(JournalDamaged, match=rf"{first.name}: bad checksum at byte {header + 499 * RECORD}, after "
                       r"seq 499; .* hold 500 valid records; 1 later segment\(s\) hold 500 valid records"):
        recover(tmp_path, specs())
    assert files(tmp_path) == untouched
    # Accepted: nothing after the damage is replayed, nothing is thrown
    # away, and the counters continue from the high-water mark.
    mark = read_mark(tmp_path)
    assert mark[0] > 1500
    assert_loss_accepted(tmp_path, cmds[:499], mark)
    assert first.stat().st_size == header + 499 * RECORD
    (aside,) = tmp_path.glob("journal-*.log.damaged-*")
    assert aside.stat().st_size == 501 * RECORD
    assert (tmp_path / "journal-00000000000000001001.log.orphan").exists()
    assert [f for f, _ in segments(tmp_path)] == [1]
    assert [seq for seq, _ in snapshots(tmp_path)] == [mark[0]]
    # The next life starts without ado and numbers above the mark.
    more = flow(300, seed=12)
    journal(tmp_path, more)
    eng, report = recover(tmp_path, specs())
    try:
        assert report.damage is None and report.seq == mark[0] + 300
        assert counters(eng)[1] > mark[1] and counters(eng)[2] > mark[2]
    finally:
        lib.eng_destroy(eng)
    assert audit(str(tmp_path))["clean"]


def _cut_last_record_short(seg: Path, header: int) -> None:
    os.truncate(seg, seg.stat().st_size - 30)


def _zero_the_last_records_end(seg: Path, header: int) -> None:
    overwrite(seg, seg.stat().st_size - 40, bytes(40))


def _zeros_after_the_last_record(seg: Path, header: int) -> None:
    os.truncate(seg, seg.stat().st_size + 3 * RECORD)


def _flip_a_byte_in_the_middle(seg: Path, header: int) -> None:
    flip(seg, header + 99 * RECORD + 20)


def _lose_a_byte_in_the_middle(seg: Path, header: int) -> None:
    data = seg.read_bytes()
    at = header + 99 * RECORD + 20
    seg.write_bytes(data[:at] + data[at + 1:])


def _repeat_a_record(seg: Path, header: int) -> None:
    record = seg.read_bytes()[header + 98 * RECORD : header + 99 * RECORD]
    overwrite(seg, header + 99 * RECORD, record)  # record 100 is record 99 again: whole, wrong seq


def _flip_a_header_byte(seg: Path, header: int) -> None:
    flip(seg, 0)


@pytest.mark.parametrize("harm, torn, last_good_seq, records_after", [
    (_cut_last_record_short, True, 199, 0),
    (_zero_the_last_records_end, True, 199, 0),
    (_zeros_after_the_last_record, True, 200, 0),
    (_flip_a_byte_in_the_middle, False, 99, 100),
    (_lose_a_byte_in_the_middle, False, 99, 100),
    (_repeat_a_record, False, 99, 101),
    (_flip_a_header_byte, False, 0, 200),
])
def test_torn_tail_or_damage(tmp_path: Path, harm: Callable[[Path, int], None], torn: bool, last_good_seq: int,
                             records_after: int) -> None:
    """The rule: what a crash leaves at the end of the newest segment (no
    valid record after the last good one) is a torn tail; anything with
    valid records after it is damage."""
    journal(tmp_path, flow(200, seed=13))
    (_, seg), = segments(tmp_path)
    harm(seg, seg.stat().st_size - 200 * RECORD)
    _, report = recovered_hash(tmp_path, repair=False)
    damage = report.damage
    assert damage is not None
    assert (damage.torn_tail, damage.last_good_seq, damage.records_after) == (torn, last_good_seq, records_after)
    untouched = files(tmp_path)
    if torn:
        _, report = recovered_hash(tmp_path)
        assert report.seq == last_good_seq and report.damaged
    else:
        with pytest.raises(JournalDamaged, match=seg.name):
            recover(tmp_path, specs())
        assert files(tmp_path) == untouched


@pytest.mark.parametrize("crash_in", ["_write_snapshot", "_set_aside", "_rename_aside"])
def test_a_crash_while_the_loss_is_accepted_is_finished_by_the_next_start_with_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str) -> None:
    """The machine stops after the snapshot at the mark is written, or
    before, or as the first segment after the damage is set aside: the
    snapshot makes the replay pass over the damaged segments, yet the next
    start refuses, and one with the flag sets aside the rest, lands on the
    mark, and leaves nothing to finish."""
    cmds = flow(1500, seed=7)
    journal(tmp_path, cmds[:1000])
    journal(tmp_path, cmds[1000:])  # a second segment, from 1001
    journal(tmp_path, flow(10, seed=8))  # a third, from 1501
    first = segments(tmp_path)[0][1]
    good = first.stat().st_size - 501 * RECORD  # up to record 500
    flip(first, good + 40)
    mark = read_mark(tmp_path)

    def crash(*args: object) -> None:
        raise SystemExit("the machine stopped")
    with monkeypatch.context() as m:
        if crash_in == "_rename_aside":  # after the first orphan
            rename = durability._rename_aside
            m.setattr(durability, "_rename_aside", lambda *a: (rename(*a), m.setattr(durability, crash_in, crash)))
        else:
            m.setattr(durability, crash_in, crash)
        with pytest.raises(SystemExit):
            recover(tmp_path, specs(), accept_loss=True)
    assert (tmp_path / "ACCEPTING_LOSS").exists()
    untouched = files(tmp_path)
    with pytest.raises(JournalDamaged, match="a start with --accept-journal-loss stopped before it had set aside"):
        recover(tmp_path, specs())
    checked = audit(str(tmp_path))  # an audit says so, and changes nothing either
    assert not checked["clean"] and checked["unfinished_loss"].startswith(first.name)
    assert replay_main([str(tmp_path), "--check"]) == 1
    assert files(tmp_path) == untouched
    assert_loss_accepted(tmp_path, cmds[:499], mark)
    assert first.stat().st_size == good and not (tmp_path / "ACCEPTING_LOSS").exists()
    (aside,) = tmp_path.glob("journal-*.log.damaged-*")
    assert aside.stat().st_size == 501 * RECORD
    assert sorted(p.name for p in tmp_path.glob("*.orphan")) == [
        "journal-00000000000000001001.log.orphan", "journal-00000000000000001501.log.orphan"]
    assert [f for f, _ in segments(tmp_path)] == [1]
    h, report = recovered_hash(tmp_path)  # the next life needs no flag
    assert report.damage is None and report.seq == mark[0]


def test_a_later_segment_makes_any_stop_damage(tmp_path: Path) -> None:
    """Even the last record of a segment is damage, not a torn write, when
    a later segment follows it; a newest segment whose header was never
    finished holds nothing and is a torn tail."""
    journal(tmp_path, flow(200, seed=14))
    journal(tmp_path, flow(100, seed=15))
    (_, older), (_, newest) = segments(tmp_path)
    os.truncate(newest, 10)
    _, report = recovered_hash(tmp_path, repair=False)
    assert report.damage is not None
    assert report.damage.reason == "bad header" and report.damage.torn_tail
    flip(older, older.stat().st_size - 20)
    _, report = recovered_hash(tmp_path, repair=False)
    damage = report.damage
    assert damage is not None
    assert (damage.segment, damage.last_good_seq, damage.records_after, damage.later_segments) == (
        older.name, 199, 0, 1)
    assert not damage.torn_tail
    untouched = files(tmp_path)
    with pytest.raises(JournalDamaged, match=rf"{older.name}: bad checksum .* 1 later segment"):
        recover(tmp_path, specs())
    assert files(tmp_path) == untouched


def test_the_loss_is_only_accepted_with_a_high_water_mark(tmp_path: Path) -> None:
    journal(tmp_path, flow(200, seed=16))
    (_, seg), = segments(tmp_path)
    flip(seg, seg.stat().st_size - 100 * RECORD)
    overwrite(tmp_path / "HIGHWATER", 20, b"\xff")
    with pytest.raises(RecoveryError, match="HIGHWATER is not a valid high-water mark"):
        recover(tmp_path, specs(), accept_loss=True)
    (tmp_path / "HIGHWATER").unlink()
    untouched = files(tmp_path)
    with pytest.raises(JournalDamaged, match="no high-water mark"):
        recover(tmp_path, specs(), accept_loss=True)
    assert files(tmp_path) == untouched


def test_an_unreadable_mark_still_lets_the_journal_be_checked(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # The server refuses to start on it, and says to check the journal first:
    # the check must be able to run.
    cmds = flow(200, seed=17)
    journal(tmp_path, cmds)
    overwrite(tmp_path / "HIGHWATER", 20, b"\xff")
    with pytest.raises(RecoveryError, match="HIGHWATER is not a valid high-water mark"):
        recover(tmp_path, specs())
    assert replay_main([str(tmp_path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "mark      UNREADABLE" in out and "journal   clean" in out
    assert audit(str(tmp_path))["state_hash"] == f"{reference(cmds).state_hash():016x}"


def test_a_bad_first_header_is_damage_to_the_check_as_to_the_server(tmp_path: Path) -> None:
    journal(tmp_path, flow(200, seed=18))
    (_, seg), = segments(tmp_path)
    flip(seg, 3)  # in the header's magic
    eng, report = recover(tmp_path, specs(), repair=False)
    lib.eng_destroy(eng)
    assert report.damage is not None and report.damage.reason == "bad header"
    damage = audit(str(tmp_path))["damage"]  # no configuration: the instruments come from no header
    assert (damage["reason"], damage["records_after"]) == ("bad header", report.damage.records_after)
    assert replay_main([str(tmp_path), "--check"]) == 1  # damage, not an error


def test_the_check_of_a_directory_that_is_not_there_fails_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal(tmp_path / "good", flow(50, seed=19))
    missing = tmp_path / "typo" / "data"
    assert replay_main([str(missing), "--check"]) == 2
    assert not (tmp_path / "typo").exists()
    assert capsys.readouterr().err == f"pyengine-replay: {missing}: no such directory\n"  # the path said once
    a_file = tmp_path / "good" / "HIGHWATER"
    assert replay_main([str(tmp_path / "good"), str(a_file), "--check"]) == 2
    assert capsys.readouterr().err.endswith(f"pyengine-replay: {a_file}: not a directory\n")
    with pytest.raises(RecoveryError, match="no such directory"):
        audit(str(missing))
    # A directory without a data directory's files (a parent, a wrong path): not a clean journal.
    assert replay_main([str(tmp_path), "--check"]) == 2
    assert (f"{tmp_path}: no journal segment, snapshot or HIGHWATER: not a data directory of pyengine-server"
            in capsys.readouterr().err)


def test_a_full_replay_of_a_journal_cut_by_its_snapshots_says_why_it_cannot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmds = flow(300, seed=20)
    journal(tmp_path / "pruned", cmds, snapshot_every=100)
    journal(tmp_path / "kept", cmds, snapshot_every=100, keep_segments=True)
    first = segments(tmp_path / "pruned")[0][0]
    assert first > 1 and segments(tmp_path / "kept")[0][0] == 1
    assert replay_main([str(tmp_path / "pruned"), "--full"]) == 2
    assert (f"--full replays from seq 1, and the journal starts at {first}: the segments a snapshot covered were "
            "deleted ([durability] keep_segments = true keeps them)") in capsys.readouterr().err
    assert replay_main([str(tmp_path / "kept"), "--full", "--check"]) == 0


def test_the_check_logs_in_the_servers_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal(tmp_path, flow(200, seed=18))
    (_, seg), = segments(tmp_path)
    flip(seg, 3)
    assert replay_main([str(tmp_path), "--check"]) == 1
    line, = [x for x in capsys.readouterr().err.splitlines() if "journal_damaged" in x]
    assert " level=warning event=journal_damaged " in line and "reason=" in line
    assert replay_main([str(tmp_path), "--check", "--log-level", "error"]) == 1
    assert "journal_damaged" not in capsys.readouterr().err


def test_recovery_is_deterministic(tmp_path: Path) -> None:
    cmds = flow(2000, seed=8)
    a, b = tmp_path / "a", tmp_path / "b"
    journal(a, cmds, snapshot_every=900)
    journal(b, cmds)
    ha, _ = recovered_hash(a)
    hb, _ = recovered_hash(b)
    assert ha == hb == reference(cmds).state_hash()
    assert replay_main([str(a), str(b), "--check"]) == 0
    journal(b, flow(10, seed=9))
    assert replay_main([str(a), str(b), "--check"]) == 1


def test_instruments_must_match_the_configuration(tmp_path: Path) -> None:
    # The refusal names the first difference and what to do.
    journal(tmp_path, flow(100, seed=10))
    (_, seg), = segments(tmp_path)
    other = [instrument_spec(InstrumentConfig("XYZ", tick_size=5))]
    with pytest.raises(RecoveryError) as info:
        recover(tmp_path, other)
    assert str(info.value) == (
        f"{seg.name}: the instruments of the configuration differ from those of this segment (instrument 0 (XYZ) "
        "has symbol XYZ in the configuration and ESZ6 in this segment): start with the instruments the data "
        "directory was written with (or, to start afresh, with a new data directory)")
    ticked = [instrument_spec(replace(i, tick_size=i.tick_size * 2) if i.symbol == "NQZ6" else i)
              for i in DEFAULT_INSTRUMENTS]
    with pytest.raises(RecoveryError, match=r"instrument 1 \(NQZ6\) has tick_size 50 in the configuration and 25 "
                                            "in this segment"):
        recover(tmp_path, ticked)
    with pytest.raises(RecoveryError, match="the configuration has 3 instruments and this segment 4"):
        recover(tmp_path, specs()[:3])
    journal(tmp_path, flow(10, seed=11), snapshot_every=5)  # now from a snapshot
    with pytest.raises(RecoveryError, match=r"/snapshot-.*: the instruments of the snapshot differ from those of the "
                                            r"configuration \(instrument 1 \(NQZ6\) has tick_size 25 in the "
                                            r"snapshot and 50 in the configuration\)"):
        recover(tmp_path, ticked)


def test_a_segment_unlike_the_ones_before_it_is_the_data_directorys_own_inconsistency(tmp_path: Path) -> None:
    # Not a configuration to change: no advice to start with other instruments.
    journal(tmp_path / "a", flow(100, seed=12))
    other = [replace(i, tick_size=i.tick_size * 2) if i.symbol == "NQZ6" else i for i in DEFAULT_INSTRUMENTS]
    (tmp_path / "b").mkdir()
    st = run_offline(ServerConfig(data_dir=str(tmp_path / "b"), engine_cpu=-1, spin_us=0, instruments=tuple(other)),
                     b"".join(flow(10, seed=13)))
    assert st["journal_errno"] == 0
    (_, theirs), = segments(tmp_path / "b")
    theirs.rename(tmp_path / "a" / "journal-00000000000000000101.log")
    for specs_given in (specs(), None):  # a server's start, and an audit's
        with pytest.raises(RecoveryError) as info:
            recover(tmp_path / "a", specs_given, repair=False)
        assert str(info.value) == (
            "journal-00000000000000000101.log: the instruments of the segments before it differ from those of this "
            "segment (instrument 1 (NQZ6) has tick_size 25 in the segments before it and 50 in this segment)")


def test_a_data_dir_serves_one_process(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    try:
        with pytest.raises(RecoveryError, match="in use by another process"):
            EngineThread(ServerConfig(data_dir=str(tmp_path), engine_cpu=-1))
    finally:
        lock.release()
    DataDirLock(tmp_path).release()


def test_replay_prints_what_it_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmds = flow(1200, seed=11)
    journal(tmp_path, cmds, snapshot_every=1000)
    assert replay_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    ref = reference(cmds)
    assert f"hash {ref.state_hash():016x}" in out
    assert f"seq 1200, {ref.stats().open_orders} open orders" in out
    assert "snapshot-00000000000000001000.snap (seq 1000)" in out
    assert "journal   clean" in out


def test_a_replay_that_runs_out_of_memory_stops(tmp_path: Path, failing_realloc: Any) -> None:
    """A record whose command runs out of memory replayed stops the recovery:
    run otherwise than it ran live, it would rebuild another state. Here a
    sweep of 3000 makers, which needs 6005 events with level events, a
    realloc of the event buffer past failing_realloc.bytes."""
    n = 3000
    data = tmp_path / "data"
    data.mkdir()
    journal(data, [pack_new_order(0, "sell", 1, 450_000, account=1)] * n +
            [pack_new_order(0, "buy", n, 450_000, account=2)])
    failing_realloc.flag.touch()
    code = (
        "from pyengine.durability import RecoveryError, recover\n"
        "from pyengine.server.config import DEFAULT_INSTRUMENTS\n"
        "from pyengine.server.engine_thread import instrument_spec\n"
        "try:\n"
        f"    recover({str(data)!r}, [instrument_spec(i) for i in DEFAULT_INSTRUMENTS], level_events=True)\n"
        "except RecoveryError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=failing_realloc.env)
    assert proc.returncode == 0, proc.stderr
    assert f"out of memory replaying after seq {n} (errno 12)" in proc.stdout, proc.stdout


def test_a_failed_sync_fails_the_journal_for_good(tmp_path: Path, failing_sync: Any) -> None:
    """fdatasync fails (EIO) for the second command's record: after a failed
    sync the page cache may have dropped the pages it did not write, so the
    journal is failed for good. Nothing of that command or a later one is
    released, and once syncs work again the third is neither written nor
    synced nor reported journaled."""
    data = tmp_path / "data"
    code = textwrap.dedent(f"""
        import errno, json, os, time
        from pyengine import pack_new_order
        from pyengine._ffi import ffi
        from pyengine.server.config import ServerConfig
        from pyengine.server.engine_thread import EngineThread
        et = EngineThread(ServerConfig(data_dir={str(data)!r}, engine_cpu=-1, spin_us=0, fsync="batch"))
        cmd, out = ffi.new("struct runner_cmd[1]"), ffi.new("struct runner_event[64]")
        released = []
        def until(done):
            deadline = time.monotonic() + 30
            while True:
                released.extend(out[i].tag for i in range(et.poll(out, 64)))
                if done():
                    return
                assert time.monotonic() < deadline, et.stats()
        def submit(tag):
            ffi.buffer(cmd)[0:ffi.sizeof("struct eng_cmd")] = pack_new_order(0, "buy", 1, 440_000, account=1)
            cmd[0].tag = tag
            assert et.submit(cmd, 1) == 1
        et.start()
        submit(1)
        until(lambda: 1 in released)
        open({str(failing_sync.flag)!r}, "w").close()
        submit(2)
        until(lambda: et.stats()["journal_errno"])
        os.unlink({str(failing_sync.flag)!r})
        submit(3)
        until(lambda: et.stats()["commands"] == 3)
        et.request_stop()
        until(lambda: not et.stats()["running"])
        until(lambda: True)
        st = et.stats()
        print(json.dumps({{"released": sorted(set(released)), "journaled": st["journaled"],
                          "error": st["journal_errno"] == errno.EIO}}))
        et.close()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=failing_sync.env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"released": [1], "journaled": 1, "error": True}
    # The second record was written before its sync failed; nothing was written after.
    assert [seq for seq, _ in journal_commands(data)] == [1, 2]


def test_an_engine_thread_used_after_close_raises_instead_of_crashing() -> None:
    et = EngineThread(ServerConfig(engine_cpu=-1))
    et.start()
    et.request_stop()
    et.close()
    et.close()  # again: nothing
    buf = ffi.new("struct runner_event[]", 4)
    for call in (et.request_stop, et.stats, et.journal_error, et.start, et.trace_batches, et.trading_states,
                 lambda: et.poll(buf, 4), lambda: et.submit(ffi.new("struct runner_cmd[]", 1), 1),
                 lambda: et.book_levels(0, 0), lambda: et.seq, lambda: et.runner, et.open_orders, et.resting_orders,
                 lambda: et.feed(CommandBuffer(1), Ledger())):
        with pytest.raises(EngineError, match="closed"):
            call()

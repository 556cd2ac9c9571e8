"""``pyengine-replay``: read a data directory's journal, print or check it.

    pyengine-replay DIR [DIR ...] [--full] [--check] [--json] [--log-level LEVEL]

For each data directory (as written by ``pyengine-server --data-dir``) it
rebuilds the engine exactly as a restarting server would (the newest valid
snapshot, then the journal after it; ``--full``: the whole journal from seq 1,
ignoring snapshots, which needs ``keep_segments``), without changing any file,
and prints per segment the sequence range, the commands by type and where and
why reading stopped; where the journal stops short of its end, whether that
is a torn tail (a write a crash cut short) or damage before the end, and
what follows it; then the last sequence number, the open orders and a
64-bit hash of the whole matching state. Two engines fed the same commands
have the same hash, so comparing hashes compares two days or two machines.

Exit status: 0; with ``--check``, 1 when a journal is damaged (anything but a
clean end) or, given several directories, when their hashes differ; 2 when a
directory cannot be read or is not a data directory.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from ._ffi import ffi, lib
from .durability import RecoveryError, recover, segments, snapshots
from .log import LEVELS, setup_logging

__all__ = ["main", "audit"]


def audit(data_dir: str, *, full: bool = False) -> dict[str, Any]:
    """What ``pyengine-replay`` prints for one data directory, as a dict. A
    directory that holds none of a data directory's files is refused: a
    clean report of it would pass a check of the wrong path."""
    root = Path(data_dir)
    if full and root.is_dir() and (found := segments(root)) and found[0][0] > 1:
        raise RecoveryError(f"{data_dir}: --full replays from seq 1, and the journal starts at {found[0][0]}: the "
                            "segments a snapshot covered were deleted ([durability] keep_segments = true keeps them)")
    eng, report = recover(data_dir, None, repair=False, use_snapshots=not full)
    if not (segments(root) or snapshots(root) or (root / "HIGHWATER").exists()):
        lib.eng_destroy(eng)
        raise RecoveryError(f"{data_dir}: no journal segment, snapshot or HIGHWATER: not a data directory of "
                            "pyengine-server, or one it never started in")
    try:
        st = ffi.new("struct eng_stats *")
        lib.eng_get_stats(eng, st)
        return {
            "data_dir": data_dir,
            "seq": report.seq,
            "state_hash": f"{lib.eng_state_hash(eng):016x}",
            "open_orders": int(st.open_orders),
            "instruments": [ffi.string(lib.eng_instrument(eng, i).symbol).decode()
                            for i in range(lib.eng_instrument_count(eng))],
            "clean": report.damage is None and report.unfinished_loss is None,
            **asdict(report),
            "damage": None if report.damage is None else {
                **asdict(report.damage), "torn_tail": report.damage.torn_tail, "summary": report.damage.describe()},
        }
    finally:
        lib.eng_destroy(eng)


def _print(a: dict[str, Any]) -> None:
    print(f"{a['data_dir']}:")
    if a["snapshot_path"]:
        print(f"  snapshot  {a['snapshot_path']} (seq {a['snapshot_seq']})")
    for s in a["segments"]:
        counts = ", ".join(f"{v} {k}" for k, v in s["counts"].items()) or "no commands"
        skipped = f", {s['skipped']} before the snapshot not read" if s["skipped"] else ""
        print(f"  segment   {s['path']}: seq {s['first_seq']}..{s['last_seq']}, {s['records']} records "
              f"({counts}){skipped}, {s['applied']} replayed; stop: {s['stop']}")
    rate = a["replayed"] / a["seconds"] if a["seconds"] else 0.0
    print(f"  replayed  {a['replayed']} commands in {a['seconds']:.3f} s ({rate / 1e6:.2f} M/s)")
    print(f"  state     seq {a['seq']}, {a['open_orders']} open orders, hash {a['state_hash']}")
    if a["mark_error"]:
        print(f"  mark      UNREADABLE: {a['mark_error']}")
    elif any(a["mark"]):
        seq, order_id, trade_id = a["mark"]
        print(f"  mark      seq {seq}, order id {order_id}, trade id {trade_id}: none was issued above them")
    damage = a["damage"]
    if a["unfinished_loss"]:
        print("  journal   an accepted loss was cut short before what follows the damage was set aside (a server "
              f"refuses to start without --accept-journal-loss, which finishes it): {a['unfinished_loss']}")
    elif damage is None:
        print("  journal   clean")
    elif damage["torn_tail"]:
        print(f"  journal   torn tail (a write a crash cut short, never acknowledged): {damage['summary']}")
    else:
        print(f"  journal   DAMAGED before its end (a server refuses to start on it): {damage['summary']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyengine-replay", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dirs", nargs="+", metavar="DIR", help="a data directory of pyengine-server")
    parser.add_argument("--full", action="store_true", help="replay the whole journal, ignoring snapshots")
    parser.add_argument("--check", action="store_true", help="exit 1 on damage or differing hashes")
    parser.add_argument("--json", action="store_true", help="print one JSON object per directory")
    parser.add_argument("--log-level", choices=LEVELS, help="of the log lines on stderr (default: $PYENGINE_LOG "
                        "or info)")
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
    except ValueError as exc:  # a bad PYENGINE_LOG
        parser.error(str(exc))
    audits = []
    for d in args.data_dirs:
        try:
            a = audit(d, full=args.full)
        except (RecoveryError, OSError) as exc:
            said = str(exc)  # the recovery's errors name the directory or file already
            print(f"pyengine-replay: {said if str(Path(d)) in said else f'{d}: {said}'}", file=sys.stderr)
            return 2
        audits.append(a)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(a) + b"\n")
        else:
            _print(a)
    same = len({(a["seq"], a["state_hash"]) for a in audits}) == 1
    if len(audits) > 1 and not args.json:
        print("same state" if same else "DIFFERENT states")
    if args.check and (not all(a["clean"] for a in audits) or not same):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

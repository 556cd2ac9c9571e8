"""The orders' status a restart rebuilds from a data directory
(pyengine/server/recovered_status.py): every account's open orders are the
recovered books', the orders finished after the snapshot are found as they
ended, and a journal that cannot be run again as the recovery ran it is
refused (the server then seeds the status from the books)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyengine._ffi import lib
from pyengine._server import OrderStatus
from pyengine.durability import RecoveryError, recover, segments, snapshots
from pyengine.server.engine_thread import resting_orders
from pyengine.server.recovered_status import rebuild_order_status

from .test_durability import RECORD, flip, flow, journal, read_mark, specs

ACCOUNTS = range(1, 5)  # flow()'s


def rebuilt(data_dir: Path, **recovery: object) -> tuple[OrderStatus, list[tuple[int, int, int]]]:
    """The status rebuilt after a recovery, and (account, order id, open qty)
    of every order resting in the recovered books."""
    eng, report = recover(data_dir, specs(), **recovery)  # type: ignore[arg-type]
    try:
        books = sorted((account, oid, qty) for oid, _, account, _, _, qty, _ in resting_orders(eng, len(specs())))
        status = OrderStatus(keep=10_000)
        rebuild_order_status(status, data_dir, report, specs())
    finally:
        lib.eng_destroy(eng)
    return status, books


def open_in(status: OrderStatus) -> list[tuple[int, int, int]]:
    return sorted((a, r.order_id, r.leaves) for a in ACCOUNTS for r in status.open_orders(a))


@pytest.mark.parametrize("snapshot_every", [0, 700])
def test_the_open_orders_are_the_books_and_the_finished_ones_are_known(tmp_path: Path, snapshot_every: int) -> None:
    journal(tmp_path, flow(2000, seed=21), snapshot_every=snapshot_every)
    status, books = rebuilt(tmp_path)
    assert open_in(status) == books and books
    finished = [r for a in ACCOUNTS for r in status.finished_orders(a)]
    assert {r.state for r in finished} == {1, 2}  # filled and cancelled
    after = snapshots(tmp_path)[-1][0] if snapshot_every else 0
    assert all(r.last_seq > after for r in finished)  # what the commands after the snapshot finished


def test_segments_a_snapshot_covers_are_not_read(tmp_path: Path) -> None:
    # Kept segments before the snapshot, the oldest damaged: the recovery
    # reads none of them, nor does the status.
    journal(tmp_path, flow(1200, seed=22), snapshot_every=500, keep_segments=True)
    assert [seq for seq, _ in snapshots(tmp_path)] == [500, 1000]
    first = segments(tmp_path)[0][1]
    flip(first, first.stat().st_size - 200 * RECORD + 40)
    status, books = rebuilt(tmp_path)
    assert open_in(status) == books
    assert any(r.last_seq > 1000 for a in ACCOUNTS for r in status.finished_orders(a))


def test_after_an_accepted_loss_the_next_restart_knows_the_orders(tmp_path: Path) -> None:
    # The loss's snapshot (at the high-water mark) comes after a segment the
    # repair kept, which ends well before it: the next restart's status
    # comes from the snapshot and the commands after it.
    journal(tmp_path, flow(600, seed=23))
    seg = segments(tmp_path)[0][1]
    flip(seg, seg.stat().st_size - 300 * RECORD + 40)
    mark = read_mark(tmp_path)
    status, books = rebuilt(tmp_path, accept_loss=True)
    assert open_in(status) == books
    journal(tmp_path, flow(400, seed=24))
    assert [first for first, _ in segments(tmp_path)] == [1, mark[0] + 1]
    status, books = rebuilt(tmp_path)
    assert open_in(status) == books
    assert any(r.last_seq > mark[0] for a in ACCOUNTS for r in status.finished_orders(a))


def test_a_journal_not_read_again_as_the_recovery_read_it_is_refused(tmp_path: Path) -> None:
    journal(tmp_path, flow(800, seed=25))
    eng, report = recover(tmp_path, specs())
    lib.eng_destroy(eng)
    seg = segments(tmp_path)[0][1]
    flip(seg, seg.stat().st_size - 100 * RECORD + 40)  # after the recovery: 100 records can no longer be read
    with pytest.raises(RecoveryError, match="the journal read again ends at seq 700, the recovery's replay at 800"):
        rebuild_order_status(OrderStatus(keep=10), tmp_path, report, specs())


def test_an_engine_without_memory_for_the_orders_is_refused(tmp_path: Path, failing_malloc: Any) -> None:
    """Where the copy cannot grow its orders' memory, the commands are
    rejected or cancelled `no_memory`, as they were not live: refused, not
    taken for the orders' status. The copy is made in a child whose large
    mallocs fail once the recovery is done."""
    data = tmp_path / "data"
    journal(data, flow(300, seed=26))
    env = dict(failing_malloc.env, PYENGINE_FAIL_MALLOC_BYTES=str(1 << 20))  # the engine's arena's chunks
    code = textwrap.dedent(f"""
        from pathlib import Path
        from pyengine._server import OrderStatus
        from pyengine.durability import recover
        from pyengine.server.config import DEFAULT_INSTRUMENTS
        from pyengine.server.engine_thread import instrument_spec
        from pyengine.server.recovered_status import rebuild_order_status

        specs = [instrument_spec(i) for i in DEFAULT_INSTRUMENTS]
        eng, report = recover({str(data)!r}, specs)
        Path({str(failing_malloc.flag)!r}).touch()
        try:
            rebuild_order_status(OrderStatus(keep=10), {str(data)!r}, report, specs)
        except MemoryError as exc:
            print(exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "out of memory running the journal again at seq 1\n"


def test_a_server_whose_copy_cannot_be_made_seeds_the_status_from_the_books(tmp_path: Path,
                                                                             failing_realloc: Any) -> None:
    """No memory for the copy's instruments (every realloc fails while it is
    made): the server starts all the same, its orders' status from the
    books, and says so in its log."""
    data = tmp_path / "data"
    journal(data, flow(300, seed=27))
    env = dict(failing_realloc.env, PYENGINE_FAIL_REALLOC_BYTES="1")
    code = textwrap.dedent(f"""
        import json, logging
        from pathlib import Path
        from pyengine.server import app
        from pyengine.server.config import ServerConfig

        flag, rebuild = Path({str(failing_realloc.flag)!r}), app.rebuild_order_status

        def without_memory(*args):
            flag.touch()
            try:
                rebuild(*args)
            finally:
                flag.unlink()

        app.rebuild_order_status = without_memory
        said = []
        logging.getLogger("pyengine.server").addHandler(logging.Handler())
        logging.getLogger("pyengine.server").handlers[-1].emit = lambda r: said.append(r.getMessage())
        server = app.Server(ServerConfig(port=0, stats_interval=0, engine_cpu=-1, data_dir={str(data)!r}))
        books = sorted((a, oid, qty) for oid, _, a, _, _, qty, _ in server.engine.resting_orders())
        status = sorted((a, r.order_id, r.leaves) for a in range(1, 5) for r in server.order_status.open_orders(a))
        print(json.dumps({{"same": books == status and bool(books), "said": "order_status_from_books" in said}}))
        server.engine.close()
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == '{"same": true, "said": true}'

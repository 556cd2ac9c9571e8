"""pyengine-server with a data directory: snapshots on request, restarts,
torn and damaged journals, a journal that fails, one server per directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyengine._ffi import ffi, lib
from pyengine.client import Client, ConnectionClosed, ServerError
from pyengine.durability import segments, snapshots
from pyengine.replay import main as replay_main
from pyengine.server.config import hash_secret
from pyengine.server.protocol import encode

from .test_metrics import metrics_port, samples, scrape, value

ES = "ESZ6"
RECORD = 88  # bytes of a journal record


def rest_orders(port: int, account: int, n: int) -> list[int]:
    with Client("127.0.0.1", port) as c:
        c.login(account, cancel_on_disconnect=False)
        return [c.request(c.new_order(ES, "buy", 1, 440_000 + 25 * i))["order_id"] for i in range(n)]


def trade_pairs(port: int, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """n buys of account 1, each taken at once by a sell of account 2: the
    2n acks and the n fills of the sells."""
    acks, fills = [], []
    with Client("127.0.0.1", port) as maker, Client("127.0.0.1", port) as taker:
        maker.login(1, cancel_on_disconnect=False)
        taker.login(2, cancel_on_disconnect=False)
        for _ in range(n):
            acks.append(maker.request(maker.new_order(ES, "buy", 1, 440_000)))
            acks.append(taker.request(taker.new_order(ES, "sell", 1, 440_000)))
            fill = taker.recv(timeout=10)
            assert fill["type"] == "fill", fill
            fills.append(fill)
    return acks, fills


def data_files(data: Path) -> dict[str, bytes]:
    """The files of a data directory and their bytes; not LOCK, which every
    server that opens the directory rewrites with its pid."""
    return {p.name: p.read_bytes() for p in sorted(data.iterdir()) if p.name != "LOCK"}


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


def start_refused(*args: str) -> tuple[int, str]:
    """Run pyengine-server until it exits; fail if it starts serving."""
    cmd = [sys.executable, "-m", "pyengine.server.cli", "--port", "0", "--engine-cpu", "-1", "--stats-interval", "0",
           *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "event=listening" in line:
            proc.kill()
            proc.wait()
            pytest.fail("the server started:\n" + "".join(lines))
    return proc.wait(30), "".join(lines)


def damage_mid_journal(server_factory: Any, data: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """100 orders acknowledged (50 trades), the server stopped, then a bit
    flipped in record 49 of the journal's 100."""
    srv = server_factory(None, "--data-dir", str(data))
    acks, fills = trade_pairs(srv.port, 50)
    assert srv.stop() == 0
    (_, seg), = segments(data)
    flip(seg, seg.stat().st_size - 52 * RECORD + 40)
    return seg, acks, fills


def test_snapshot_on_request(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    rest_orders(srv.port, 1, 5)
    with Client("127.0.0.1", srv.port) as c:
        c.login(2)
        reply = c.request(c.snapshot())
    assert reply["type"] == "snapshot" and reply["seq"] == 5
    assert Path(reply["path"]) == data / "snapshot-00000000000000000005.snap"
    assert [seq for seq, _ in snapshots(data)] == [5]
    # The command-line way; the journal rotates to a new segment at each snapshot.
    rest_orders(srv.port, 1, 2)
    out = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "snapshot", "--port", str(srv.port)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("snapshot at seq 7: ")
    assert [seq for seq, _ in snapshots(data)] == [7]
    assert [first for first, _ in segments(data)] == [8]
    # A restart starts from it and continues the numbering.
    srv.stop()
    srv = server_factory(None, "--data-dir", str(data))
    line = srv.wait_log(r"event=recovered ")
    assert "seq=7 snapshot_seq=7 replayed=0" in line
    with Client("127.0.0.1", srv.port) as c:
        assert c.login(1)["claimed_orders"] == 7
        assert c.request(c.new_order(ES, "sell", 1, 500_000))["seq"] == 8


def test_snapshot_needs_an_admin_and_a_data_dir(server_factory: Any, tmp_path: Path) -> None:
    config = f"""
[[accounts]]
account = 1
[[accounts]]
account = 9
secret = "{hash_secret('root-pw', iterations=1000)}"
admin = true
"""
    srv = server_factory(config, "--data-dir", str(tmp_path / "data"))
    with Client("127.0.0.1", srv.port) as c:
        c.login(1)
        with pytest.raises(ServerError) as info:
            c.request(c.snapshot())
        assert info.value.code == "not_admin"
    with Client("127.0.0.1", srv.port) as c:
        c.login(9, "root-pw")
        assert c.request(c.snapshot())["type"] == "snapshot"
    env = dict(os.environ, PYENGINE_SECRET="root-pw")
    out = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "snapshot", "--port", str(srv.port),
                          "--account", "9"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    plain = server_factory()
    with Client("127.0.0.1", plain.port) as c:
        c.login(1)
        with pytest.raises(ServerError) as info:
            c.request(c.snapshot())
        assert info.value.code == "no_data_dir"
    assert plain.wait_log("event=no_journal")


def snapshot_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyengine.server.cli", *args], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, PYTHONSAFEPATH="1"))


def test_snapshot_asks_the_server_the_same_options_start(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    # The options before the word as after it: never the default port's server instead.
    out = snapshot_cli("--port", str(srv.port), "snapshot")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("snapshot at seq 0: ")
    rest_orders(srv.port, 1, 1)
    config = tmp_path / "c.toml"
    config.write_text(f"[server]\nport = {srv.port}\n")
    out = snapshot_cli("--config", str(config), "snapshot")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("snapshot at seq 1: ")
    assert [seq for seq, _ in snapshots(data)] == [1]
    out = snapshot_cli("--port", str(srv.port), "snapshot", "--port", "7001")
    assert out.returncode == 2
    assert f"--port {srv.port} before 'snapshot' and --port 7001 after it: which server?" in out.stderr
    out = snapshot_cli("--data-dir", str(data), "snapshot", "--port", str(srv.port))
    assert out.returncode == 2
    assert "--data-dir: options of the server, not of snapshot" in out.stderr
    # Port 0 (any free port) names no server: whoever gave it is told so.
    out = snapshot_cli("--port", "0", "snapshot")
    assert (out.returncode, out.stderr.strip()) == (2, "pyengine-server snapshot: --port 0 is any free port: "
                                                       "give the server's port")
    config.write_text("[server]\nport = 0\n")
    out = snapshot_cli("--config", str(config), "snapshot")
    assert f"{config} has port 0" in out.stderr and out.returncode == 2
    assert [seq for seq, _ in snapshots(data)] == [1]
    # A time limit that cannot be waited: refused as the options are (it ended in a traceback).
    for bad in ("-1", "0", "nan", "inf"):
        out = snapshot_cli("snapshot", "--port", str(srv.port), "--timeout", bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"argument --timeout: must be a number of seconds above 0, not '{bad}'" in out.stderr


def test_orders_of_a_closed_session_go_to_the_next_one(server: Any) -> None:
    ids = rest_orders(server.port, 4, 3)
    with Client("127.0.0.1", server.port) as c:
        assert c.login(4)["claimed_orders"] == 3
        # A sell at the best bid (ids[2]) trades with it: this session now
        # gets that order's fill, as it would have had it entered the order.
        taker = c.request(c.new_order(ES, "sell", 1, 440_050))["order_id"]
        fills = {(f["order_id"], f["liquidity"]) for f in (c.recv(timeout=5), c.recv(timeout=5))}
        assert fills == {(taker, "taker"), (ids[2], "maker")}
        assert c.request(c.cancel(order_id=ids[0]))["type"] == "cancelled"
    # That session had cancel-on-disconnect: the rest went with it.
    with Client("127.0.0.1", server.port) as c:
        assert c.login(4)["claimed_orders"] == 0



def test_a_session_gone_before_a_stop_cancels_its_orders_in_flight_too(server_factory: Any, tmp_path: Path) -> None:
    """A session with cancel-on-disconnect that dropped while its orders were
    still on their way to the engine (acks wait for each command's fsync)
    cancels them though the server stops right after: only the sessions the
    stop closes keep theirs. They outlived the stop, and the restart handed
    them to the account's next login."""
    data = tmp_path / "data"
    srv = server_factory("[limits]\nrate = 1000000\nburst = 1000000\n", "--data-dir", str(data), "--fsync", "always")
    with Client("127.0.0.1", srv.port) as keeper:
        keeper.login(5)  # closed by the stop: its order stays
        kept = keeper.request(keeper.new_order(ES, "sell", 1, 460_000))["order_id"]
        c = Client("127.0.0.1", srv.port)
        c.login(4)
        c.send_raw(b"".join(encode({"type": "new_order", "req_id": i, "symbol": ES, "side": "buy", "qty": 1,
                                    "price": 400_000 + 25 * (i % 100)}) for i in range(2000)))
        c.close()
        srv.wait_log(r"event=session_close .*account=4")
        assert srv.stop() == 0
    again = server_factory(None, "--data-dir", str(data))
    with Client("127.0.0.1", again.port) as c:
        assert c.login(4)["claimed_orders"] == 0
        assert c.open_orders() == []
    with Client("127.0.0.1", again.port) as c:
        assert c.login(5)["claimed_orders"] == 1
        assert [o["order_id"] for o in c.open_orders()] == [kept]

def test_torn_tail_is_repaired_at_start(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    rest_orders(srv.port, 1, 20)
    srv.stop()
    (_, seg), = segments(data)
    with open(seg, "r+b") as f:  # the last record's end is garbage: a write a crash cut short
        f.seek(-RECORD + 50, os.SEEK_END)
        f.write(b"\xff\xff")
    srv = server_factory(None, "--data-dir", str(data))
    assert 'reason="bad checksum" last_good_seq=19' in srv.wait_log("event=journal_damaged .*torn_tail=True")
    assert srv.wait_log("event=journal_repaired")
    assert "seq=19 " in srv.wait_log("event=recovered ")
    with Client("127.0.0.1", srv.port) as c:
        assert c.login(1)["claimed_orders"] == 19
        assert c.request(c.new_order(ES, "sell", 1, 500_000))["seq"] == 20
    assert len(list(data.glob("journal-*.damaged-*"))) == 1


def test_damage_before_the_end_of_the_journal_refuses_to_start(
        server_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    seg, _, _ = damage_mid_journal(server_factory, data)
    offset = seg.stat().st_size - 52 * RECORD
    before = data_files(data)
    code, log = start_refused("--data-dir", str(data))
    assert code == 1
    (line,) = [ln for ln in log.splitlines() if "event=cannot_start" in ln]
    assert "level=error" in line
    for words in (seg.name, f"bad checksum at byte {offset}, after seq 48", "hold 51 valid records (seq 50..100)",
                  "--accept-journal-loss"):
        assert words in line
    assert data_files(data) == before
    # The audit tool says the same, and changes nothing either.
    assert replay_main([str(data), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED before its end (a server refuses to start on it): {seg.name}: bad checksum" in out
    assert data_files(data) == before


def test_accepted_journal_loss_never_issues_an_id_twice(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    seg, acks, fills = damage_mid_journal(server_factory, data)
    srv = server_factory(None, "--data-dir", str(data), "--accept-journal-loss")
    line = srv.wait_log("event=journal_loss_accepted")
    assert "level=error" in line and seg.name in line and "last_good_seq=48" in line
    assert "seq=48 " not in srv.wait_log("event=recovered ")  # numbering jumped to the high-water mark
    assert len(list(data.glob("journal-*.damaged-*"))) == 1
    new_acks, new_fills = trade_pairs(srv.port, 5)
    assert min(a["order_id"] for a in new_acks) > max(a["order_id"] for a in acks)
    assert min(a["seq"] for a in new_acks) > max(a["seq"] for a in acks + fills)
    assert min(f["trade_id"] for f in new_fills) > max(f["trade_id"] for f in fills)
    # The next start needs no flag, and numbers on from where that one stopped.
    assert srv.stop() == 0
    srv = server_factory(None, "--data-dir", str(data))
    later_acks, later_fills = trade_pairs(srv.port, 1)
    assert min(a["order_id"] for a in later_acks) > max(a["order_id"] for a in new_acks)
    assert min(a["seq"] for a in later_acks) > max(a["seq"] for a in new_acks + new_fills)
    assert later_fills[0]["trade_id"] > max(f["trade_id"] for f in new_fills)
    assert not any("event=journal_damaged" in ln for ln in srv.lines)


def test_one_server_per_data_dir(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server_factory(None, "--data-dir", str(data))
    out = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--port", "0", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "event=cannot_start" in out.stderr and "in use by another process" in out.stderr


def test_a_command_out_of_memory_stops_the_server_unanswered(server_factory: Any, failing_realloc: Any,
                                                            tmp_path: Path) -> None:
    """A sweep of 3000 makers needs 6005 events (a fill and a level each),
    a realloc of the event buffer to 8192 (768 KiB), which fails: the sweep
    has its seq by then. Answered no_memory and journaled, a restart would
    fill it; instead the journal fails before its record, nobody hears of
    it, and the restarted server has the book and the numbering its clients
    were told of."""
    data = tmp_path / "data"
    n = 3000
    srv = server_factory(None, "--data-dir", str(data), env=failing_realloc.env)
    with Client("127.0.0.1", srv.port) as seller:
        seller.login(1, cancel_on_disconnect=False)
        for _ in range(n // 500):
            for req in [seller.new_order(ES, "sell", 1, 450_000) for _ in range(500)]:
                assert seller.request(req, timeout=10)["type"] == "ack"
    with Client("127.0.0.1", srv.port) as taker:
        taker.login(2, cancel_on_disconnect=False)
        failing_realloc.flag.touch()
        taker.new_order(ES, "buy", n, 450_000)
        try:
            answer = taker.recv(timeout=10)
        except ConnectionClosed:
            answer = None
        failing_realloc.flag.unlink()
        assert answer is None, answer
    assert srv.proc.wait(10) == 1
    assert "Cannot allocate memory" in srv.wait_log("event=journal_failed")
    srv.killed = True  # it stopped itself, with a failure status

    srv = server_factory(None, "--data-dir", str(data))
    with Client("127.0.0.1", srv.port) as c:
        c.login(3)
        ack = c.request(c.new_order(ES, "buy", 1, 450_000), timeout=10)
        assert ack["type"] == "ack" and ack["order_id"] == n + 1
        fill = c.recv(timeout=10)
        assert fill["type"] == "fill" and fill["trade_id"] == 1 and fill["leaves"] == 0, fill


def test_a_failed_journal_stops_the_server(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    rest_orders(srv.port, 1, 3)
    shutil.rmtree(data)  # the next snapshot cannot be written
    with Client("127.0.0.1", srv.port) as c:
        c.login(1)
        with pytest.raises(ServerError) as info:
            c.request(c.snapshot())
        assert info.value.code == "snapshot_failed"
    assert srv.proc.wait(10) == 1
    assert "No such file or directory" in srv.wait_log("event=journal_failed")
    srv.killed = True  # it stopped itself, with a failure status


def test_a_snapshot_out_of_memory_is_reported_and_taken_an_interval_later(server_factory: Any, failing_malloc: Any,
                                                                           tmp_path: Path) -> None:
    """The automatic snapshot due at seq 2000 holds 2000 orders (112 KB), a
    malloc that fails: the journal goes on, the failure is logged and
    counted, it is not tried again at every command while memory is short,
    and the next snapshot is due 2000 commands later."""
    data, every = tmp_path / "data", 2000
    srv = server_factory(None, "--data-dir", str(data), "--snapshot-every", str(every), "--metrics-port", "0",
                         env=failing_malloc.env)
    port = metrics_port(srv)
    with Client("127.0.0.1", srv.port) as c:
        c.login(1, cancel_on_disconnect=False)

        def rest(n: int) -> int:
            seqs = [c.request(c.new_order(ES, "buy", 1, 440_000), timeout=10)["seq"] for _ in range(n)]
            return seqs[-1]

        assert rest(every - 10) == every - 10
        failing_malloc.flag.touch()
        assert rest(20) == every + 10  # past the snapshot's seq, and 10 commands more
        line = srv.wait_log("event=snapshot_failed")
        assert f"seq={every}" in line and "Cannot allocate memory" in line, line
        assert value(samples(scrape(port)), "pyengine_snapshot_failures_total") == 1
        failing_malloc.flag.unlink()
        assert rest(every - 10) == 2 * every
        rest(1)  # its ack comes once the journal thread has written what was before it, the snapshot too
    assert [seq for seq, _ in snapshots(data)] == [2 * every]
    assert value(samples(scrape(port)), "pyengine_snapshot_failures_total") == 1
    assert "event=journal_failed" not in "".join(srv.lines)


def test_with_fsync_off_a_clean_stop_syncs_the_journal(server_factory: Any, failing_sync: Any,
                                                        tmp_path: Path) -> None:
    """With fsync off nothing is synced while the server runs (acks come
    with fdatasync failing); it syncs the journal as it stops, and a sync
    that fails then makes the stop a failure."""
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data), "--fsync", "off", env=failing_sync.env)
    failing_sync.flag.touch()
    assert len(rest_orders(srv.port, 1, 3)) == 3
    assert srv.stop() == 1
    assert "Input/output error" in srv.wait_log("event=journal_failed")
    srv.killed = True  # it stopped with a failure status, as it should


def test_a_last_sync_that_fails_after_the_stop_s_wait_still_fails_the_stop(server_factory: Any, failing_sync: Any,
                                                                           tmp_path: Path) -> None:
    """The stop waits 5 s for the engine's events; a sync that fails after
    that (a dying disk is slow before it errs) is still a journal failure."""
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data), "--fsync", "off",
                         env=dict(failing_sync.env, PYENGINE_FAIL_SYNC_DELAY_MS="6500"))
    failing_sync.flag.touch()
    assert len(rest_orders(srv.port, 1, 3)) == 3
    assert srv.stop(timeout=30) == 1
    assert "Input/output error" in srv.wait_log("event=journal_failed")
    srv.killed = True  # it stopped with a failure status, as it should


def test_with_fsync_off_a_clean_stop_syncs_the_segments_snapshots_closed(server_factory: Any, failing_sync: Any,
                                                                         tmp_path: Path) -> None:
    """With fsync off and keep_segments, each snapshot closes a segment that
    nothing syncs while the server runs; a clean stop syncs every segment
    the server wrote, not only the one it was writing."""
    data = tmp_path / "data"
    srv = server_factory(f'[durability]\ndata_dir = "{data}"\nfsync = "off"\nkeep_segments = true\n',
                         env=failing_sync.env)
    for _ in range(2):
        rest_orders(srv.port, 1, 3)
        with Client("127.0.0.1", srv.port) as c:
            c.login(2)
            assert c.request(c.snapshot())["type"] == "snapshot"
    rest_orders(srv.port, 1, 1)
    names = [path.name for _, path in segments(data)]
    assert [first for first, _ in segments(data)] == [1, 4, 7]
    assert failing_sync.synced() == []
    assert srv.stop() == 0
    assert sorted(Path(path).name for path in failing_sync.synced()) == names


def test_records_a_restart_replayed_unsynced_are_synced_before_it_acknowledges(server_factory: Any, failing_sync: Any,
                                                                               tmp_path: Path) -> None:
    """A server killed between writing records and syncing them (fsync off
    makes that every record) leaves them in the page cache only. The next
    server, fsync batch, replays them and acknowledges orders that follow
    them in a segment of its own; a power loss then must not take the
    replayed records and keep the new ones (a gap the server refuses to start
    on, the acknowledged orders after it lost with --accept-journal-loss). The
    power loss is modelled from the sync log: a segment no fdatasync covered
    keeps its header only (every segment's header is synced as it is made)."""
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data), "--fsync", "off")
    rest_orders(srv.port, 1, 5)
    srv.kill()
    srv = server_factory(None, "--data-dir", str(data), env=failing_sync.env)
    assert "seq=5 " in srv.wait_log("event=recovered ")
    (acked,) = rest_orders(srv.port, 2, 1)
    srv.kill()
    synced = {Path(p).name for p in failing_sync.synced()}
    assert [first for first, _ in segments(data)] == [1, 6]
    for _, seg in segments(data):
        if seg.name not in synced:
            scan = ffi.new("struct jnl_scan *")
            lib.jnl_scan_file(os.fsencode(seg), ffi.NULL, 0, scan, ffi.NULL)
            os.truncate(seg, scan.valid_bytes - scan.records * RECORD)  # its header
    srv = server_factory(None, "--data-dir", str(data))
    assert "seq=6 " in srv.wait_log("event=recovered ")
    with Client("127.0.0.1", srv.port) as c:
        assert c.login(2)["claimed_orders"] == 1
        assert [o["order_id"] for o in c.open_orders()] == [acked]


def test_a_new_data_dir_is_named_on_disk(server_factory: Any, failing_sync: Any, tmp_path: Path) -> None:
    """The data directory the server makes (and each missing one above it)
    is synced into its parent before anything is acknowledged: else a power
    loss can take the whole directory, journal and all, and the next start
    makes a new, empty one."""
    data = tmp_path / "new" / "data"
    srv = server_factory(None, "--data-dir", str(data), env=failing_sync.env)
    rest_orders(srv.port, 1, 1)
    fsynced = {os.path.realpath(p) for p in failing_sync.fsynced()}
    assert os.path.realpath(data) in fsynced  # its own entries, the segment's
    assert {os.path.realpath(tmp_path), os.path.realpath(tmp_path / "new")} <= fsynced

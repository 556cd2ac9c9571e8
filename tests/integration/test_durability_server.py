"""pyengine-server with a data directory: snapshots on request, restarts,
damaged journals, a journal that fails, one server per directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyengine.client import Client, ServerError
from pyengine.durability import segments, snapshots
from pyengine.server.config import hash_secret

ES = "ESZ6"


def rest_orders(port: int, account: int, n: int) -> list[int]:
    with Client("127.0.0.1", port) as c:
        c.login(account, cancel_on_disconnect=False)
        return [c.request(c.new_order(ES, "buy", 1, 440_000 + 25 * i))["order_id"] for i in range(n)]


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


def test_damaged_journal_is_repaired_at_start(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = server_factory(None, "--data-dir", str(data))
    rest_orders(srv.port, 1, 20)
    srv.stop()
    (_, seg), = segments(data)
    with open(seg, "r+b") as f:  # the 16th record's bytes are damaged
        f.seek(-5 * 88 + 50, os.SEEK_END)
        f.write(b"\xff\xff")
    srv = server_factory(None, "--data-dir", str(data))
    assert 'reason="bad checksum" last_good_seq=15' in srv.wait_log("event=journal_damaged")
    assert srv.wait_log("event=journal_repaired")
    assert "seq=15 " in srv.wait_log("event=recovered ")
    with Client("127.0.0.1", srv.port) as c:
        assert c.login(1)["claimed_orders"] == 15
    assert len(list(data.glob("journal-*.damaged-*"))) == 1


def test_one_server_per_data_dir(server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server_factory(None, "--data-dir", str(data))
    out = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--port", "0", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "event=cannot_start" in out.stderr and "in use by another process" in out.stderr


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

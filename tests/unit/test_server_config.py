"""Server configuration files and secrets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pyengine.server.config import (
    DEFAULT_INSTRUMENTS,
    ConfigError,
    LimitsConfig,
    ServerConfig,
    check_secret,
    hash_secret,
    load_config,
    unmatchable_secret,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    c = ServerConfig()
    assert (c.host, c.port, c.max_frame) == ("127.0.0.1", 7001, 65536)
    assert c.instruments == DEFAULT_INSTRUMENTS and not c.auth_required
    assert c.engine_cpu >= 0 and c.server_cpu == -1  # the event-loop thread is not pinned unless asked
    assert c.data_dir is None and c.fsync == "batch"  # nothing journaled; when it is, synced before acks


def test_no_engine_polling_on_the_event_loops_cpu() -> None:
    from pyengine.server.engine_thread import effective_spin_us

    assert effective_spin_us(ServerConfig(engine_cpu=1, spin_us=50)) == 50
    assert effective_spin_us(ServerConfig(engine_cpu=1, server_cpu=0, spin_us=50)) == 50
    assert effective_spin_us(ServerConfig(engine_cpu=1, server_cpu=1, spin_us=50)) == 0
    assert effective_spin_us(ServerConfig(engine_cpu=-1, server_cpu=-1, spin_us=50)) == 50  # neither pinned


def test_full_file(tmp_path: Path) -> None:
    secret = hash_secret("pw", iterations=1000)
    c = load_config(write(tmp_path, f"""
[server]
host = "0.0.0.0"
port = 9000
max_unsent = 1048576
stats_interval = 0.5
cpu = 0
spin_us = 150
login_workers = 3
max_pending_logins = 10

[engine]
cpu = -1
spin_us = 10
out_capacity = 1024

[durability]
data_dir = "/srv/pyengine"
fsync = "always"
snapshot_every = 5000
keep_segments = true
accept_journal_loss = true

[limits]
max_open_orders = 50
rate = 250.5
burst = 300
idle_timeout = 30
login_failures = 0
login_window = 10
host_logins = 4
host_login_window = 2.5

[[instruments]]
symbol = "ABC"
tick_size = 5
price_band = [100, 1000]
market_protection = 50
max_qty = 500
max_notional = 100000
kind = "spot"

[[accounts]]
account = 3
secret = "{secret}"
admin = true
"""))
    assert (c.host, c.port, c.max_unsent, c.stats_interval, c.server_cpu, c.engine_cpu, c.spin_us, c.out_capacity) == (
        "0.0.0.0", 9000, 1048576, 0.5, 0, -1, 10, 1024)
    (inst,) = c.instruments
    assert (inst.symbol, inst.tick_size, inst.price_band, inst.market_protection, inst.kind) == ("ABC", 5, (100, 1000), 50, "spot")
    assert c.auth_required and c.account(3).admin and c.account(4) is None
    assert (c.data_dir, c.fsync, c.snapshot_every, c.keep_segments) == ("/srv/pyengine", "always", 5000, True)
    assert c.accept_journal_loss and not ServerConfig().accept_journal_loss
    assert (inst.max_qty, inst.max_notional) == (500, 100000)
    assert (c.login_workers, c.max_pending_logins) == (3, 10)
    assert c.server_spin_us == 150 and ServerConfig().server_spin_us == 0  # the event loop sleeps unless asked
    assert c.limits == LimitsConfig(max_open_orders=50, rate=250.5, burst=300, idle_timeout=30.0, login_failures=0,
                                    login_window=10.0, host_logins=4, host_login_window=2.5)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[server]\nprot = 1\n", "unknown key"),
        ("[server]\nport = 'x'\n", "port must be int"),
        ("[server]\nport = 70000\n", "out of range"),
        ("[server]\ncpu = 'first'\n", "cpu must be int"),
        ("[server]\ncpu = -2\n", "cpu must be a CPU number or -1"),
        ("[server]\nspin_us = -1\n", r"\[server\]: spin_us must be from 0 \(no polling\) to 1000000, not -1"),
        ("[server]\nspin_us = 2000000\n", r"\[server\]: spin_us must be from 0 \(no polling\) to 1000000"),
        ("[server]\nspin_us = 1.5\n", "spin_us must be int"),
        ("[engine]\nspin_us = -5\n", r"\[engine\]: spin_us must be from 0 \(no polling\) to 1000000, not -5"),
        ("[server]\nlogin_workers = 0\n", "login_workers and max_pending_logins must be at least 1"),
        ("[server]\nmax_pending_logins = 0\n", "login_workers and max_pending_logins must be at least 1"),
        ("[engine]\nout_capacity = 1000\n", "power of two"),
        ("[[instruments]]\ntick_size = 5\n", "symbol is required"),
        ("[[instruments]]\nsymbol = 'A'\nprice_band = [1]\n", "price_band"),
        ("[[instruments]]\nsymbol = 'A'\n[[instruments]]\nsymbol = 'A'\n", "twice"),
        ("[[accounts]]\naccount = 1\nsecret = 'plain'\n", "not a plain secret"),
        ("instruments = []\n", "at least one"),
        ("[server\n", "not valid TOML"),
        ("[durability]\nfsync = 'sometimes'\n", "fsync must be one of always, batch, off"),
        ("[durability]\nsnapshot_every = -1\n", "snapshot_every must be >= 0"),
        ("[durability]\ndata_dir = ''\n", "data_dir must name a directory"),
        ("[durability]\nkeep_segments = 1\n", "keep_segments must be bool"),
        ("[durability]\naccept_journal_loss = 'yes'\n", "accept_journal_loss must be bool"),
        ("[durability]\ndatadir = 'x'\n", "unknown key"),
        ("[limits]\nmax_orders = 1\n", "unknown key"),
        ("[limits]\nrate = -1\n", "rate must be >= 0"),
        ("[limits]\nrate = 10\nburst = 0\n", "burst must be at least 1"),
        ("[limits]\nmax_open_orders = 1.5\n", "max_open_orders must be int"),
        ("[limits]\nidle_timeout = 'soon'\n", "idle_timeout must be"),
        ("[limits]\nhost_logins = -1\n", "host_logins must be >= 0"),
        ("[[instruments]]\nsymbol = 'A'\nmax_qty = 0\n", "max_qty must be positive"),
        ("[[instruments]]\nsymbol = 'A'\nmax_notional = -5\n", "max_notional must be positive"),
    ],
)
def test_errors_say_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, text))


def test_accept_journal_loss_from_the_command_line_or_the_file(tmp_path: Path) -> None:
    from pyengine.server.cli import _serve_args, build_config

    parser = argparse.ArgumentParser()
    _serve_args(parser)
    path = str(write(tmp_path, "[durability]\naccept_journal_loss = true\n"))
    assert not build_config(parser.parse_args([])).accept_journal_loss
    assert build_config(parser.parse_args(["--accept-journal-loss"])).accept_journal_loss
    assert build_config(parser.parse_args(["--config", path])).accept_journal_loss


def test_event_loop_polling_from_the_command_line(tmp_path: Path) -> None:
    from pyengine.server.cli import _serve_args, build_config

    parser = argparse.ArgumentParser()
    _serve_args(parser)
    path = str(write(tmp_path, "[server]\nspin_us = 40\n"))
    assert build_config(parser.parse_args([])).server_spin_us == 0
    assert build_config(parser.parse_args(["--config", path])).server_spin_us == 40
    assert build_config(parser.parse_args(["--config", path, "--server-spin-us", "250"])).server_spin_us == 250
    with pytest.raises(ConfigError, match=r"\[server\]: spin_us must be from 0"):
        build_config(parser.parse_args(["--server-spin-us", "-3"]))
    # The engine thread's polling: --engine-spin-us, and --spin-us as before.
    assert build_config(parser.parse_args(["--engine-spin-us", "7"])).spin_us == 7
    assert build_config(parser.parse_args(["--spin-us", "9"])).spin_us == 9


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_secrets() -> None:
    h = hash_secret("correct horse", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$")
    assert check_secret(h, "correct horse")
    assert not check_secret(h, "correct horse ")
    assert not check_secret("garbage", "x")
    assert hash_secret("a", iterations=1000) != hash_secret("a", iterations=1000)  # salted


def test_unmatchable_secret_takes_the_accounts_parameters() -> None:
    stored = [hash_secret("a", iterations=1000), hash_secret("b", iterations=1000), hash_secret("c", iterations=5000),
              None]
    dummy = unmatchable_secret(stored)
    scheme, iterations, salt, digest = dummy.split("$")
    assert (scheme, iterations, len(bytes.fromhex(salt)), len(bytes.fromhex(digest))) == ("pbkdf2_sha256", "1000", 16, 32)
    assert not check_secret(dummy, "") and not check_secret(dummy, "a")
    assert unmatchable_secret([]).split("$")[1] == "100000"  # hash-secret's


def _cli(*argv: str) -> ServerConfig:
    from pyengine.server.cli import _serve_args, build_config

    parser = argparse.ArgumentParser()
    _serve_args(parser)
    return build_config(parser.parse_args(list(argv)))


def test_cluster_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\nnats = ["nats://h1:4222", "nats://h2:4222"]\nlease_ttl = 1.5\n'
                    '[cluster.instruments]\na = ["ESZ6", "NQZ6"]\nb = ["CLF7"]\n')
    c = _cli("--config", str(path), "--shard", "b", "--node", "b2").cluster
    assert c is not None
    assert (c.nats, c.shard, c.node, c.lease_ttl, c.log_replicas) == (("nats://h1:4222", "nats://h2:4222"), "b",
                                                                       "b2", 1.5, 2)
    assert c.shard_symbols(["ESZ6", "NQZ6", "CLF7", "BTC-PERP"]) == ["CLF7"]
    flags = _cli("--nats", "nats://x:1,nats://y:2,nats://z:3", "--shard", "s", "--node", "n").cluster
    assert flags is not None and flags.log_replicas == 3 and flags.instruments == {}
    assert flags.shard_symbols(["A", "B"]) == ["A", "B"]  # one shard: every instrument
    assert _cli().cluster is None


@pytest.mark.parametrize("argv, text, words", [
    ((), '[cluster]\nnats = "nats://h:1"\nshard = "a"\n', "needs its node name"),
    (("--shard", "a", "--node", "x"), "[cluster]\n", "no NATS server"),
    (("--nats", "nats://h:1", "--shard", "a b", "--node", "x"), None, "shard name is 1-64"),
    (("--nats", "nats://h:1", "--shard", "c", "--node", "x"), '[cluster.instruments]\na = ["ESZ6"]\n',
     "no instruments for shard 'c'"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), '[cluster.instruments]\na = ["ESZ6"]\nb = ["ESZ6"]\n',
     "is in shards 'a' and 'b'"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), '[cluster.instruments]\na = ["XX"]\n',
     "not an instrument"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), "[cluster]\nlease_ttl = 0.01\n", "at least 0.2"),
    ((), "[cluster]\nbogus = 1\n", "unknown keys: bogus"),
])
def test_cluster_errors(tmp_path: Path, argv: tuple[str, ...], text: str | None, words: str) -> None:
    args = list(argv)
    if text is not None:
        path = tmp_path / "c.toml"
        path.write_text(text if text.startswith("[cluster]") else "[cluster]\n" + text)
        args += ["--config", str(path)]
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        _cli(*args)

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
keepalive = 60
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
    assert c.limits == LimitsConfig(max_open_orders=50, rate=250.5, burst=300, idle_timeout=30.0, keepalive=60,
                                    login_failures=0, login_window=10.0, host_logins=4, host_login_window=2.5)
    assert ServerConfig().limits.keepalive == 10  # the server probes quiet connections unless told not to


@pytest.mark.parametrize(
    "text, words",
    [
        ("[server]\nprot = 1\n", "unknown key"),
        ("[server]\nport = 'x'\n", "port must be int"),
        ("[server]\nport = 70000\n", "out of range"),
        ("[server]\ncpu = 'first'\n", "cpu must be int"),
        ("[server]\ncpu = -2\n", r"\[server\]: cpu must be from -1 to 2147483647 \(a CPU number; -1: don't pin\)"),
        ("[server]\nspin_us = -1\n", r"\[server\]: spin_us must be from 0 \(no polling\) to 1000000, not -1"),
        ("[server]\nspin_us = 2000000\n", r"\[server\]: spin_us must be from 0 \(no polling\) to 1000000"),
        ("[server]\nspin_us = 1.5\n", "spin_us must be int"),
        ("[engine]\nspin_us = -5\n", r"\[engine\]: spin_us must be from 0 \(no polling\) to 1000000, not -5"),
        ("[server]\nlogin_workers = 0\n", r"login_workers must be from 1 to 1024 \(OS threads\), not 0"),
        ("[server]\nlogin_workers = 100000\n", r"login_workers must be from 1 to 1024 \(OS threads\), not 100000"),
        ("[server]\nmax_pending_logins = 0\n", "max_pending_logins must be >= 1, not 0"),
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


SECRET = "pbkdf2_sha256$1000$" + "ab" * 16 + "$" + "cd" * 32


@pytest.mark.parametrize(
    "text, words",
    [
        # Sizes the C side takes: a frame's length is a uint32, a ring's capacity too.
        ("[server]\nmax_frame = 4294967296\nmax_unsent = 8589934592\n",
         r"\[server\]: max_frame must be from 64 to 4294967295 bytes, not 4294967296"),
        ("[server]\nmax_frame = 32\n", "max_frame must be from 64 to 4294967295"),
        ("[server]\nmax_unsent = 1000\n", r"max_unsent must be >= 65536 bytes \(at least max_frame\), not 1000"),
        ("[server]\nmax_unsent = 9223372036854775808\n", "max_unsent must be at most 9223372036854775807"),
        ("[engine]\nin_capacity = 1099511627776\n", "in_capacity must be a power of two from 1 to 2147483648"),
        ("[server]\ntrace_latency = 4294967296\n", "trace_latency must be from 0 to 4294967295"),
        ("[durability]\ndata_dir = \"a\\u0000b\"\n", r"data_dir must name a directory, not 'a\\x00b'"),
        ("[durability]\ndata_dir = '/d'\nsnapshot_every = 18446744073709551616\n",
         "snapshot_every must be at most 18446744073709551615"),
        ("[limits]\nmax_open_orders = 9223372036854775808\n", "max_open_orders must be at most"),
        # Tables where tables belong.
        ("server = 5\n", r"top level: server must be a table \(\[server\]\), not int"),
        ("limits = 5\n", r"top level: limits must be a table \(\[limits\]\), not int"),
        ("engine = 'x'\n", "engine must be a table"),
        ("instruments = 5\n", r"instruments must be an array of tables \(\[\[instruments\]\]\), not int"),
        ("instruments = [5]\n", r"instruments\[0\] must be a table, not int"),
        ("[instruments]\nsymbol = 'X'\n", r"instruments: write \[\[instruments\]\] .*, not \[instruments\]"),
        ("[accounts]\naccount = 1\n", r"accounts: write \[\[accounts\]\]"),
        # Instruments: what the engine takes, said here.
        ("[[instruments]]\nsymbol = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'\n",
         "symbol must be 1 to 15 printable ASCII characters, no spaces, not 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"),
        ("[[instruments]]\nsymbol = 'ABCDEFGHIJKLMNOP'\n", "symbol must be 1 to 15 printable ASCII"),
        ("[[instruments]]\nsymbol = '\u00c9SZ6'\n", "symbol must be 1 to 15 printable ASCII"),
        ("[[instruments]]\nsymbol = ''\n", r"instruments\[0\] \(''\): symbol must be 1 to 15"),
        ("[[instruments]]\nsymbol = 'ES Z6'\n", "symbol must be 1 to 15 printable ASCII characters, no spaces"),
        ("[[instruments]]\nsymbol = 'X'\ntick_size = 0\n", r"\('X'\): tick_size must be >= 1, not 0"),
        ("[[instruments]]\nsymbol = 'X'\ntick_size = -25\n", "tick_size must be >= 1, not -25"),
        ("[[instruments]]\nsymbol = 'X'\nlot_size = 0\n", "lot_size must be >= 1, not 0"),
        ("[[instruments]]\nsymbol = 'X'\ntick_size = 9223372036854775808\n", "tick_size must be at most"),
        ("[[instruments]]\nsymbol = 'X'\nprice_band = [1000, 10]\n",
         r"price_band must be \[min_price, max_price\] with 1 <= min_price <= max_price .*, not \[1000, 10\]"),
        ("[[instruments]]\nsymbol = 'X'\nprice_band = [-5, 10]\n", r"price_band must be .*, not \[-5, 10\]"),
        ("[[instruments]]\nsymbol = 'X'\nprice_band = [0, 10]\n", r"price_band must be .*, not \[0, 10\]"),
        ("[[instruments]]\nsymbol = 'X'\nmarket_protection = -5\n", r"\('X'\): market_protection must be >= 0"),
        ("[[instruments]]\nsymbol = 'X'\nmax_qty = 9223372036854775808\n", "max_qty must be at most"),
        # Settings fine alone that together leave no order that could rest.
        ("[[instruments]]\nsymbol = 'X'\ntick_size = 25\nprice_band = [10, 20]\n",
         r"\('X'\): no price in price_band \[10, 20\] is a multiple of tick_size 25: every limit order"),
        ("[[instruments]]\nsymbol = 'X'\nlot_size = 10\nmax_qty = 5\n", "max_qty 5 is less than lot_size 10"),
        ("[[instruments]]\nsymbol = 'X'\ntick_size = 100\nprice_band = [150, 1000]\nlot_size = 2\n"
         "max_notional = 399\n",
         r"max_notional 399 is less than the smallest limit order's \(200 x lot_size 2\)"),
        # Floats: finite, and in range.
        ("[server]\nstats_interval = nan\n", "stats_interval must be a number of seconds >= 0"),
        ("[server]\nstats_interval = -1\n", "stats_interval must be a number of seconds >= 0"),
        ("[server]\nstats_interval = inf\n", "stats_interval must be"),
        ("[limits]\nrate = nan\n", "rate must be >= 0 and finite, not nan"),
        ("[limits]\nrate = inf\n", "rate must be >= 0 and finite, not inf"),
        ("[limits]\nrate = 1e400\n", "rate must be >= 0 and finite"),
        ("[limits]\nrate = 99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
         "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
         "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
         "99999999999999999999999999999999999999999999\n", "rate is too large"),
        ("[limits]\nidle_timeout = nan\n", "idle_timeout must be >= 0 and finite, not nan"),
        ("[limits]\nkeepalive = 32768\n", r"keepalive must be from 0 to 32767 seconds \(0: off\), not 32768"),
        ("[limits]\nkeepalive = -1\n", "keepalive must be >= 0"),
        ("[limits]\nkeepalive = 2.5\n", "keepalive must be int, not float"),
        ("[limits]\nlogin_window = -1\n", "login_window must be >= 0"),
        ("[limits]\nlogin_window = 0\n",
         r"login_window must be more than 0 seconds when login_failures is set \(login_failures = 0 turns"),
        ("[limits]\nhost_login_window = 0\n", "host_login_window must be more than 0 seconds when host_logins is set"),
        ("[limits]\nlogin_window = 1e-300\n", r"login_window must be 0 or at least 0.1 seconds, not 1e-300"),
        ("[limits]\nhost_login_window = 0.05\n", r"host_login_window must be 0 or at least 0.1 seconds, not 0.05"),
        ("[limits]\nidle_timeout = 0.001\n", r"idle_timeout must be 0 or at least 0.1 seconds, not 0.001"),
        # Addresses.
        ("[server]\nhost = ''\n",
         r"\[server\]: host must be an address or host name \(every interface: 0.0.0.0 or ::\)"),
        ("[server]\nhost = \"a\\u0000b\"\n", "host must be an address"),
        ("[metrics]\nport = 9464\nhost = ''\n", r"\[metrics\]: host must be an address"),
        # Accounts.
        (f"[[accounts]]\naccount = 7\nsecret = '{SECRET}'\n[[accounts]]\naccount = 7\nadmin = true\n",
         r"accounts\[1\]: account 7 is listed twice"),
        ("[[accounts]]\naccount = -7\n", "account must be from 0 to 4294967295, not -7"),
        ("[[accounts]]\naccount = 4294967296\n", "account must be from 0 to 4294967295, not 4294967296"),
        ("[[accounts]]\naccount = 1\nsecret = 'pbkdf2_sha256$garbage'\n",
         r"accounts\[0\]: secret is not a hash from 'pyengine-server hash-secret'"),
        (f"[[accounts]]\naccount = 1\nsecret = '{SECRET[:-2]}'\n", "secret is not a hash"),
        (f"[[accounts]]\naccount = 1\nsecret = '{SECRET.replace('$1000$', '$0$')}'\n", "secret is not a hash"),
        (f"[[accounts]]\naccount = 1\nsecret = '{SECRET.replace('$1000$', '$9999999999$')}'\n", "secret is not a hash"),
        (f"[[accounts]]\naccount = 1\nsecret = '{SECRET.replace('$ab', '$$ab')}'\n", "secret is not a hash"),
        # A journal's settings without a data directory.
        ("[durability]\nfsync = 'always'\n", r"\[durability\]: fsync is set, but there is no data_dir"),
        ("[durability]\nsnapshot_every = 5\n", "snapshot_every is set, but there is no data_dir"),
        ("[durability]\nkeep_segments = true\n", "keep_segments is set, but there is no data_dir"),
    ],
)
def test_values_out_of_range(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _cli("--config", str(write(tmp_path, text)))


def test_values_at_the_edges_of_their_ranges(tmp_path: Path) -> None:
    c = _cli("--config", str(write(tmp_path, f"""
[server]
max_frame = 4294967295
max_unsent = 9223372036854775807
trace_latency = 4294967295
[engine]
in_capacity = 2147483648
[[instruments]]
symbol = "ABCDEFGHIJKLMNO"
tick_size = 9223372036854775807
price_band = [1, 9223372036854775807]
market_protection = 0
[[instruments]]
symbol = "!~"
price_band = [0, 0]
[[accounts]]
account = 0
[[accounts]]
account = 4294967295
secret = "{SECRET.upper().replace('PBKDF2_SHA256', 'pbkdf2_sha256')}"
""")))
    assert (c.max_frame, c.max_unsent, c.trace_latency, c.in_capacity) == (2**32 - 1, 2**63 - 1, 2**32 - 1, 2**31)
    assert [i.symbol for i in c.instruments] == ["ABCDEFGHIJKLMNO", "!~"]
    assert [a.account for a in c.accounts] == [0, 4294967295]


def test_a_file_not_in_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'[server]\nhost = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"c.toml: not UTF-8 \(as TOML must be\): byte 17 is 0xe9"):
        load_config(path)


@pytest.mark.parametrize("argv, words", [
    (["--stats-interval", "nan"], "stats_interval must be a number of seconds >= 0"),
    (["--trace-latency", "4294967296"], "trace_latency must be from 0 to 4294967295"),
    (["--engine-cpu", "-5"], r"\[engine\]: cpu must be from -1 to 2147483647"),
    (["--engine-cpu", "2147483648"], r"\[engine\]: cpu must be from -1 to 2147483647"),
    (["--server-cpu", "-2"], r"\[server\]: cpu must be from -1"),
    (["--host", ""], "host must be an address"),
    (["--fsync", "always"], "--fsync does nothing without a data directory"),
    (["--fsync", "batch"], "--fsync does nothing without a data directory"),
    (["--snapshot-every", "10"], "--snapshot-every does nothing without a data directory"),
    (["--accept-journal-loss"], "--accept-journal-loss does nothing without a data directory"),
    (["--metrics-host", "0.0.0.0"], r"--metrics-host does nothing without a metrics port"),
    (["--metrics-host", "127.0.0.1"], r"--metrics-host does nothing without a metrics port"),
    (["--http-host", "0.0.0.0"], r"--http-host does nothing without a web view port"),
    (["--metrics-allowed-host", "pyengine.example"], r"--metrics-allowed-host does nothing without a metrics port"),
    (["--http-allowed-host", "pyengine.example"], r"--http-allowed-host does nothing without a web view port"),
    (["--http-port", "0", "--http-allowed-host", "localhost"],
     r"\[http\]: allowed_hosts: localhost is always answered"),
    (["--metrics-port", "0", "--metrics-allowed-host", "10.1.2.3"],
     r"\[metrics\]: allowed_hosts: 10.1.2.3 is an address: addresses are always answered"),
    (["--http-port", "0", "--http-allowed-host", "pyengine.example:8080"],
     r"\[http\]: allowed_hosts must list host names \(without a port\), not 'pyengine.example:8080'"),
    # One port, two endpoints: the second could not listen.
    (["--metrics-port", "9100", "--http-port", "9100"],
     r"\[http\]: port 9100 on 127.0.0.1 is \[metrics\]'s too \(on 127.0.0.1\): each endpoint needs a port"),
    (["--port", "7001", "--metrics-port", "7001"], r"\[metrics\]: port 7001 on 127.0.0.1 is \[server\]'s too"),
    (["--host", "0.0.0.0", "--http-port", "7001"],
     r"\[http\]: port 7001 on 127.0.0.1 is \[server\]'s too \(on 0.0.0.0\)"),
])
def test_command_line_errors(argv: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _cli(*argv)


def test_endpoints_on_one_port_and_different_addresses() -> None:
    """Two endpoints may share a port number on two addresses, or on one
    family's every-address and an address of the other family; port 0 (any
    free port) is everyone's. One address however spelled, or an
    every-address and an address of its family, clash."""
    for hosts in (("127.0.0.1", "127.0.0.2"), ("0.0.0.0", "::1"), ("::1", "0.0.0.0"), ("::", "127.0.0.1"),
                  ("localhost", "127.0.0.1")):
        c = _cli("--metrics-port", "9100", "--http-port", "9100", "--metrics-host", hosts[0], "--http-host", hosts[1])
        assert (c.metrics_port, c.http_port, c.metrics_host, c.http_host) == (9100, 9100, *hosts)
    c = _cli("--port", "0", "--metrics-port", "0", "--http-port", "0")
    assert (c.port, c.metrics_port, c.http_port) == (0, 0, 0)
    for hosts in (("::", "::1"), ("::0", "0:0::1"), ("0.0.0.0", "10.1.2.3"), ("::1", "0:0::1")):
        with pytest.raises(ConfigError, match="each endpoint needs a port of its own"):
            _cli("--metrics-port", "9100", "--http-port", "9100", "--metrics-host", hosts[0], "--http-host", hosts[1])


def test_allowed_host_flags_replace_the_files_names(tmp_path: Path) -> None:
    path = str(write(tmp_path, '[http]\nport = 0\nallowed_hosts = ["file.example"]\n'
                               '[metrics]\nport = 0\nallowed_hosts = ["scrape.example"]\n'))
    c = _cli("--config", path)
    assert (c.http_allowed_hosts, c.metrics_allowed_hosts) == (("file.example",), ("scrape.example",))
    c = _cli("--config", path, "--http-allowed-host", "a.example", "--http-allowed-host", "b.example")
    assert (c.http_allowed_hosts, c.metrics_allowed_hosts) == (("a.example", "b.example"), ("scrape.example",))
    c = _cli("--config", path, "--metrics-allowed-host", "m.example")
    assert (c.http_allowed_hosts, c.metrics_allowed_hosts) == (("file.example",), ("m.example",))
    c = _cli("--http-port", "8080", "--http-allowed-host", "view.example", "--metrics-port", "9464")
    assert (c.http_allowed_hosts, c.metrics_allowed_hosts) == (("view.example",), ())


def test_a_journals_settings_with_a_data_directory_from_anywhere(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    path = str(write(tmp_path, "[durability]\nfsync = 'always'\nsnapshot_every = 5\n"))
    c = _cli("--config", path, "--data-dir", data)
    assert (c.data_dir, c.fsync, c.snapshot_every) == (data, "always", 5)
    c = _cli("--data-dir", data, "--fsync", "off", "--snapshot-every", "0")
    assert (c.fsync, c.snapshot_every) == ("off", 0)
    # A cluster node has no journal; it snapshots every snapshot_every commands while it leads.
    path = str(write(tmp_path, "[durability]\nsnapshot_every = 5\n"))
    c = _cli("--config", path, "--nats", "nats://h:1", "--shard", "a", "--node", "n", "--snapshot-every", "9")
    assert c.data_dir is None and c.snapshot_every == 9
    c = _cli("--config", path, "--nats", "nats://h:1", "--shard", "a", "--node", "n", "--data-dir", data)
    assert (c.data_dir, c.snapshot_every) == (data, 5)
    assert _cli("--metrics-port", "0", "--metrics-host", "0.0.0.0").metrics_host == "0.0.0.0"


NODE = ("--nats", "nats://h:1", "--shard", "a", "--node", "n")


@pytest.mark.parametrize("durability", ["fsync = 'always'", "fsync = 'off'", "keep_segments = true",
                                        "accept_journal_loss = true"])
@pytest.mark.parametrize("data_dir", [False, True])
def test_a_cluster_node_refuses_the_journal_settings_it_does_not_use(tmp_path: Path, durability: str,
                                                                     data_dir: bool) -> None:
    path = str(write(tmp_path, f"[durability]\n{durability}\n"))
    key = durability.split()[0]
    more = ("--data-dir", str(tmp_path / "data")) if data_dir else ()
    with pytest.raises(ConfigError, match=rf"^\[durability\]: {key} is set, but a cluster node has no journal"):
        _cli("--config", path, *NODE, *more)
    # Alone, with a data directory, the server journals with them.
    assert getattr(_cli("--config", path, "--data-dir", str(tmp_path / "data")), key) != getattr(ServerConfig(), key)


@pytest.mark.parametrize("flag", [("--fsync", "batch"), ("--fsync", "off"), ("--accept-journal-loss",)])
def test_a_cluster_node_refuses_the_journal_options_it_does_not_use(tmp_path: Path, flag: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match=rf"^{flag[0]} does nothing on a cluster node \(a cluster node has no"):
        _cli(*NODE, "--data-dir", str(tmp_path / "data"), *flag)


def test_accept_journal_loss_from_the_command_line_or_the_file(tmp_path: Path) -> None:
    from pyengine.server.cli import _serve_args, build_config

    parser = argparse.ArgumentParser()
    _serve_args(parser)
    data = ["--data-dir", str(tmp_path / "data")]
    path = str(write(tmp_path, "[durability]\naccept_journal_loss = true\n"))
    assert not build_config(parser.parse_args(data)).accept_journal_loss
    assert build_config(parser.parse_args([*data, "--accept-journal-loss"])).accept_journal_loss
    assert build_config(parser.parse_args([*data, "--config", path])).accept_journal_loss


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
                    '[cluster.instruments]\na = ["ESZ6", "NQZ6"]\nb = ["CLF7", "BTC-PERP"]\n')
    c = _cli("--config", str(path), "--shard", "b", "--node", "b2").cluster
    assert c is not None
    assert (c.nats, c.shard, c.node, c.lease_ttl, c.log_replicas) == (("nats://h1:4222", "nats://h2:4222"), "b",
                                                                       "b2", 1.5, 2)
    assert c.shard_symbols(["ESZ6", "NQZ6", "CLF7", "BTC-PERP"]) == ["CLF7", "BTC-PERP"]
    flags = _cli("--nats", "nats://x:1,y:2, tls://z:3", "--shard", "s", "--node", "n").cluster
    assert flags is not None and flags.log_replicas == 3 and flags.instruments == {}
    assert flags.nats == ("nats://x:1", "y:2", "tls://z:3")
    forms = "nats://u:p@h:4222,tok@h,[::1]:4222,nats://[fe80::1%eth0]:4222,h,tls://h/"
    assert len(_cli("--nats", forms, "--shard", "s", "--node", "n").cluster.nats) == 6  # type: ignore[union-attr]
    assert flags.shard_symbols(["A", "B"]) == ["A", "B"]  # one shard: every instrument
    assert _cli().cluster is None


@pytest.mark.parametrize("argv, text, words", [
    ((), '[cluster]\nnats = "nats://h:1"\nshard = "a"\n', "needs its node name"),
    (("--shard", "a", "--node", "x"), "[cluster]\n", "no NATS server"),
    (("--nats", "nats://h:1", "--shard", "a b", "--node", "x"), None, "shard name is 1-64"),
    (("--nats", "nats://h:1", "--shard", "c", "--node", "x"),
     '[cluster.instruments]\na = ["ESZ6", "NQZ6", "CLF7", "BTC-PERP"]\n',
     "no instruments for shard 'c'"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), '[cluster.instruments]\na = ["ESZ6"]\nb = ["ESZ6"]\n',
     "is in shards 'a' and 'b'"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), '[cluster.instruments]\na = ["XX"]\n',
     "not an instrument"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), "[cluster]\nlease_ttl = 0.01\n", "at least 0.2"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), "[cluster]\nlease_ttl = inf\n", "and finite, not inf"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), "[cluster]\nlease_ttl = nan\n", "and finite, not nan"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"), "[cluster]\ncheckpoint_interval = nan\n",
     "checkpoint_interval must be >= 0 and finite, not nan"),
    (("--nats", "nats://h:1", "--shard", "a", "--node", "x"),
     '[cluster.instruments]\na = ["ESZ6", "NQZ6"]\nb = ["CLF7"]\n', "'BTC-PERP' in no shard"),
    ((), "[cluster]\nbogus = 1\n", "unknown keys: bogus"),
    # A URL the NATS client would refuse with a traceback at start, or an empty --nats that was ignored.
    (("--nats", ",", "--shard", "a", "--node", "x"), None, "nats: '' is not a NATS server's URL"),
    (("--nats", "nats://h:1,,", "--shard", "a", "--node", "x"), None, "nats: '' is not"),
    (("--nats", "", "--shard", "a", "--node", "x"), None, "nats: '' is not"),
    (("--shard", "a", "--node", "x"), '[cluster]\nnats = ["127.0.0.1:notaport"]\n',
     "nats: '127.0.0.1:notaport' is not"),
    (("--nats", "http://h:1", "--shard", "a", "--node", "x"), None, "nats: 'http://h:1' is not"),
    (("--nats", "nats://[::1:4222", "--shard", "a", "--node", "x"), None, r"nats: 'nats://\[::1:4222' is not"),
    (("--nats", "NATS://h:1", "--shard", "a", "--node", "x"), None, "nats: 'NATS://h:1' is not"),
    (("--nats", "ws://h:1,nats://h:2", "--shard", "a", "--node", "x"), None, "WebSocket URLs .* and others"),
])
def test_cluster_errors(tmp_path: Path, argv: tuple[str, ...], text: str | None, words: str) -> None:
    args = list(argv)
    if text is not None:
        path = tmp_path / "c.toml"
        path.write_text(text if text.startswith("[cluster]") else "[cluster]\n" + text)
        args += ["--config", str(path)]
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        _cli(*args)

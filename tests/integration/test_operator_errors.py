"""What an operator sees when the server cannot start, and when it idles."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyengine.server.config import check_secret


def start_server(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pyengine-server in the foreground: for starts that must fail."""
    return subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--engine-cpu", "-1", *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"))


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-dir"
    plain.write_text("x")
    proc = start_server("--port", "0", "--data-dir", str(plain))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"data_dir {plain} exists and is not a directory" in proc.stderr
    assert plain.read_text() == "x"


def test_port_in_use_is_one_line_before_the_engine_starts(server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = start_server("--port", str(server.port), "--data-dir", str(data_dir))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "event=cannot_start" in lines[0] and f"port {server.port} on 127.0.0.1 is in use" in lines[0]
    # Nothing was recovered or created: the port was checked first.
    assert not data_dir.exists()


def test_a_hard_descriptor_limit_too_low_for_max_connections_is_one_line(tmp_path: Path) -> None:
    data_dir, config = tmp_path / "data", tmp_path / "server.toml"
    config.write_text("[server]\nmax_connections = 2000\n")
    proc = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "--engine-cpu", "-1", "--port", "0",
                           "--data-dir", str(data_dir), "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048)))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "event=cannot_start" in lines[0]
    assert "2000 connections at once need 2256 file descriptors and the process may open at most 2048" in lines[0]
    assert not data_dir.exists()  # refused before anything was opened


def count_lines(server: Any, text: str, at_least: int, timeout: float = 10.0) -> int:
    """How many log lines contain `text`, once there are `at_least` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while (n := sum(text in line for line in list(server.lines))) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return n


def test_an_idle_server_logs_stats_once_then_at_debug(server_factory: Any) -> None:
    server = server_factory(None, "--stats-interval", "0.1")
    assert count_lines(server, "level=debug event=stats ", 3) >= 3
    infos = [line for line in list(server.lines) if "level=info event=stats " in line]
    assert len(infos) == 1 and "connections=0" in infos[0]
    with server.client() as c:
        c.login(7)
        c.request(c.new_order("ESZ6", "buy", 1, 450_000))
        # Something happened: the next line is at info again.
        server.wait_log(r"level=info event=stats .*connections=1")


# Each: the file (bytes), more arguments, and what the one bad_config line says.
BAD_CONFIGS = [
    # A size the session's frame splitter refuses: it once started, then dropped every connection.
    (b"[server]\nmax_frame = 4294967296\nmax_unsent = 8589934592\n", (),
     "[server]: max_frame must be from 64 to 4294967295 bytes, not 4294967296"),
    (b"[engine]\nin_capacity = 1099511627776\n", (), "[engine]: in_capacity must be a power of two from 1 to"),
    (b"", ("--trace-latency", "4294967296"), "[server]: trace_latency must be from 0 to 4294967295"),
    (b"server = 5\n", (), "top level: server must be a table ([server]), not int"),
    (b"instruments = 5\n", (), "top level: instruments must be an array of tables ([[instruments]]), not int"),
    (b"[instruments]\nsymbol = 'X'\n", (), "instruments: write [[instruments]] (an array of tables, one per entry)"),
    (b"[[instruments]]\nsymbol = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'\n", (),
     "instruments[0] ('ABCDEFGHIJKLMNOPQRSTUVWXYZ'): symbol must be 1 to 15 printable ASCII characters, no spaces"),
    ("[[instruments]]\nsymbol = '\u00c9SZ6'\n".encode(), (), "symbol must be 1 to 15 printable ASCII characters"),
    (b"[[instruments]]\nsymbol = 'ABCDEFGHIJKLMNOP'\n", (), "symbol must be 1 to 15 printable ASCII characters"),
    (b"[[instruments]]\nsymbol = 'X'\ntick_size = 0\n", (), "instruments[0] ('X'): tick_size must be >= 1, not 0"),
    (b"[[instruments]]\nsymbol = 'X'\nprice_band = [1000, 10]\n", (), "price_band must be [min_price, max_price]"),
    (b"[[instruments]]\nsymbol = 'X'\nmarket_protection = -5\n", (), "market_protection must be >= 0"),
    (b'[server]\nhost = "\xe9"\n', (), "not UTF-8 (as TOML must be): byte 17 is 0xe9"),
    (b'[durability]\ndata_dir = "a\\u0000b"\n', (), "[durability]: data_dir must name a directory"),
    (b"[server]\nhost = ''\n", (), "[server]: host must be an address or host name (every interface: 0.0.0.0 or ::)"),
    (b"[limits]\nrate = nan\n", (), "[limits]: rate must be >= 0 and finite, not nan"),
    (b"[limits]\nlogin_window = 0\n", (), "[limits]: login_window must be more than 0 seconds"),
    (b"[[accounts]]\naccount = 7\n[[accounts]]\naccount = 7\nadmin = true\n", (),
     "accounts[1]: account 7 is listed twice"),
    (b"[[accounts]]\naccount = 1\nsecret = 'pbkdf2_sha256$garbage'\n", (),
     "accounts[0]: secret is not a hash from 'pyengine-server hash-secret'"),
    (b"[[accounts]]\naccount = -7\n", (), "accounts[0]: account must be from 0 to 4294967295, not -7"),
    (b"", ("--engine-cpu", "-5"), "[engine]: cpu must be from -1 to 2147483647"),
    (b"", ("--stats-interval", "nan"), "[server]: stats_interval must be a number of seconds >= 0"),
    (b"", ("--fsync", "always"), "--fsync does nothing without a data directory"),
    (b"[durability]\nfsync = 'always'\n", (), "[durability]: fsync is set, but there is no data_dir"),
    (b"", ("--metrics-host", "0.0.0.0"), "--metrics-host does nothing without a metrics port"),
    # A cluster node's: it has no journal (refused before it connects to NATS).
    (b"[cluster]\nnats = 'nats://127.0.0.1:1'\nshard = 'a'\nnode = 'a1'\n[durability]\nkeep_segments = true\n",
     (), "[durability]: keep_segments is set, but a cluster node has no journal"),
    (b"[cluster]\nnats = 'nats://127.0.0.1:1'\nshard = 'a'\nnode = 'a1'\n", ("--fsync", "off"),
     "--fsync does nothing on a cluster node"),
]


@pytest.mark.parametrize("config, args, words", BAD_CONFIGS)
def test_a_bad_configuration_is_one_line_and_exit_code_2(
        tmp_path: Path, config: bytes, args: tuple[str, ...], words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(config)
    proc = start_server("--port", "0", "--config", str(path), *args)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "level=error event=bad_config" in line and words in line, line


def test_the_largest_frame_size_and_symbols_the_engine_takes(server_factory: Any) -> None:
    server = server_factory("[server]\nmax_frame = 4294967295\nmax_unsent = 4294967295\n"
                            "[[instruments]]\nsymbol = 'ABCDEFGHIJKLMNO'\n[[instruments]]\nsymbol = '!~'\n")
    with server.client() as c:
        c.login(1)
        for symbol in ("ABCDEFGHIJKLMNO", "!~"):
            assert c.request(c.new_order(symbol, "buy", 1, 100))["type"] == "ack"


def test_an_engine_cpu_it_cannot_have_is_a_warning(server_factory: Any) -> None:
    server = server_factory(None, "--engine-cpu", "4096")
    line = server.wait_log("event=engine_cpu_not_pinned")
    assert "level=warning" in line and "cpu=4096" in line
    assert "cpu=-1" in server.wait_log("event=engine_thread_started")


def test_sigusr1_without_tracing_says_so_and_the_server_runs_on(server_factory: Any) -> None:
    server = server_factory()
    server.proc.send_signal(signal.SIGUSR1)
    assert "level=info" in server.wait_log("event=trace_off")
    with server.client() as c:
        assert c.request(c.ping())["type"] == "pong"


# The server's entry point with its start held, once done, until a line
# comes on stdin: the moment a supervisor may send a signal on `listening`.
_HELD_START = r"""
import sys
from pyengine.server import app, cli

real_start = app.Server.start

def held_start(self):
    real_start(self)
    print("event=start_held", file=sys.stderr, flush=True)
    sys.stdin.readline()

app.Server.start = held_start
sys.exit(cli.main(sys.argv[1:]))
"""


def _stops_cleanly(server: Any, signal_name: str) -> None:
    """`server` (a ServerProcess) ends with status 0, having logged the signal and its stop."""
    assert server.proc.wait(20) == 0, server.tail()
    assert f"signal={signal_name}" in server.wait_log("event=signal")
    server.wait_log("event=stopped")


def test_a_stop_signal_as_the_server_starts_stops_it_cleanly(tmp_path: Path) -> None:
    from pyengine.server.process import ServerProcess

    server = ServerProcess(["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0"], tmp_path / "held.log",
                           timeout=20, stdin=subprocess.PIPE, launcher=("-c", _HELD_START))
    try:
        server.wait_log("event=start_held")
        server.proc.send_signal(signal.SIGTERM)
        # Its default action would end the process at once; a handler keeps
        # it for when the server runs on.
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(1)
        assert server.proc.stdin is not None
        server.proc.stdin.write(b"\n")
        server.proc.stdin.flush()
        _stops_cleanly(server, "SIGTERM")
    finally:
        if server.proc.poll() is None:
            server.kill()


# The server started to ignore a hangup, as nohup starts it.
_IGNORING_HUP = r"""
import signal, sys
signal.signal(signal.SIGHUP, signal.SIG_IGN)
from pyengine.server import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_hangup_stops_the_server_unless_it_was_started_to_ignore_it(tmp_path: Path) -> None:
    from pyengine.client import Client
    from pyengine.server.process import ServerProcess

    args = ["--port", "0", "--engine-cpu", "-1", "--stats-interval", "0"]
    server = ServerProcess(args, tmp_path / "hup.log", timeout=20)
    try:
        server.proc.send_signal(signal.SIGHUP)  # the terminal it was started from closed
        _stops_cleanly(server, "SIGHUP")
    finally:
        if server.proc.poll() is None:
            server.kill()
    ignoring = ServerProcess(args, tmp_path / "nohup.log", timeout=20, launcher=("-c", _IGNORING_HUP))
    try:
        ignoring.proc.send_signal(signal.SIGHUP)
        assert ignoring.port is not None
        with Client("127.0.0.1", ignoring.port, timeout=10) as c:
            assert c.request(c.ping())["type"] == "pong"
        assert ignoring.proc.poll() is None and "event=signal" not in "".join(ignoring.lines)
        ignoring.proc.send_signal(signal.SIGTERM)
        assert ignoring.proc.wait(20) == 0, ignoring.tail()
    finally:
        if ignoring.proc.poll() is None:
            ignoring.kill()


# The state a cluster node's new image starts in when a stop signal came as
# the old one restarted it: the signal blocked and pending (os.execv keeps both).
_STOP_PENDING = r"""
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
os.kill(os.getpid(), signal.SIGTERM)
from pyengine.server import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_stop_signal_held_from_before_the_start_stops_the_server(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _STOP_PENDING, "--port", "0", "--engine-cpu", "-1"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert proc.returncode == 0, proc.stderr
    assert "event=signal signal=SIGTERM" in proc.stderr
    assert "event=listening" not in proc.stderr  # it starts nothing


# The state a cluster node's new image starts in after any restart: the stop
# signals blocked (the old image blocked them, and os.execv keeps the mask).
_RESTARTED = r"""
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
from pyengine.server import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _node_waiting_for_nats(tmp_path: Path, launcher: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    """A node whose NATS servers are out of reach, started by `launcher`
    (the python arguments before the server's own), once it has logged its
    first failed try: it tries them for up to two minutes before it listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nats_port = s.getsockname()[1]
    config = tmp_path / "node.toml"
    config.write_text(f'[cluster]\nnats = ["nats://127.0.0.1:{nats_port}"]\n'
                      '[cluster.instruments]\na = ["ESZ6", "NQZ6"]\nb = ["CLF7", "BTC-PERP"]\n')
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *launcher, "--port", "0", "--engine-cpu", "-1",
                                 "--config", str(config), "--shard", "a", "--node", "a1"],
                                stderr=log, env=dict(os.environ, PYTHONSAFEPATH="1"))
    deadline = time.monotonic() + 30
    while "event=nats_error" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "event=nats_error" in log_path.read_text(), log_path.read_text()
    return proc, log_path


def test_a_restarted_node_that_waits_to_start_can_be_stopped(tmp_path: Path) -> None:
    proc, log_path = _node_waiting_for_nats(tmp_path, ["-c", _RESTARTED])
    try:
        time.sleep(1.0)  # some 5 tries more: one line for them all, every 5 s
        assert [line.endswith("held_back=0") for line in log_path.read_text().splitlines()
                if "event=nats_error" in line] == [True]
        proc.send_signal(signal.SIGTERM)
        # As on a first start: the signal's default action (held, it would wait for NATS).
        assert proc.wait(30) == -signal.SIGTERM, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_node_waiting_for_nats_stops_on_ctrl_c_with_a_word_and_no_traceback(tmp_path: Path) -> None:
    proc, log_path = _node_waiting_for_nats(tmp_path, ["-m", "pyengine.server.cli"])
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "event=signal signal=SIGINT" in text and "event=not_started" in text
    assert "Traceback" not in text and "Task was destroyed" not in text, text


@pytest.mark.parametrize("line, secret", [("pw\r\n", "pw"), ("pw\n", "pw"), ("pw", "pw"), (" pw \t\n", " pw \t")])
def test_hash_secret_drops_the_line_end_alone(line: str, secret: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "hash-secret"], input=line,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert proc.returncode == 0, proc.stderr
    assert check_secret(proc.stdout.strip(), secret)


def test_hash_secret_refuses_a_secret_that_is_not_utf8() -> None:
    proc = subprocess.run([sys.executable, "-m", "pyengine.server.cli", "hash-secret"], input=b"\xff\xfepw\n",
                          capture_output=True, timeout=60, env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert (proc.returncode, proc.stdout) == (2, b"")
    assert proc.stderr == b"the secret is not UTF-8 text, as a login's JSON is: no client could send it\n"


def test_a_node_asking_more_copies_of_its_log_than_nats_can_keep_is_told_so(tmp_path: Path) -> None:
    # One NATS server, not a cluster: JetStream refuses a stream of 3
    # replicas at once, which the start reports rather than a traceback.
    from pyengine.cluster.localnats import free_ports, nats_server_path

    (port,) = free_ports(1)
    nats = subprocess.Popen([nats_server_path(), "-js", "-a", "127.0.0.1", "-p", str(port),
                             "-sd", str(tmp_path / "js")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:  # listening
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        config = tmp_path / "node.toml"
        config.write_text(f'[cluster]\nnats = ["nats://127.0.0.1:{port}"]\nreplicas = 3\n')
        proc = start_server("--config", str(config), "--shard", "a", "--node", "a1")
    finally:
        nats.terminate()
        nats.wait(10)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "event=cannot_start" in line]
    assert "JetStream refused the shard's storage: replicas > 1 not supported in non-clustered mode" in line

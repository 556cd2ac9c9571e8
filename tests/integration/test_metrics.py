"""The metrics endpoint of a real server (docs/metrics.md): scraped over
HTTP before and after orders go in over TCP; the counters move by what the
orders did, and the page is Prometheus text."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyengine.client import Client
from pyengine.server import metrics
from pyengine.server.config import ConfigError, config_from_dict
from pyengine.server.process import ServerProcess, ServerStartError

from .conftest import RunningServer

ES, NQ = "ESZ6", "NQZ6"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# ESZ6 as by default, with a size limit (the engine's reject), and at most
# three open orders an account (the server's own).
CONFIG = """
[metrics]
port = 0

[limits]
max_open_orders = 3

[[instruments]]
symbol = "ESZ6"
tick_size = 25
price_band = [100000, 2000000]
max_qty = 100

[[instruments]]
symbol = "NQZ6"
tick_size = 25
"""


def metrics_port(server: RunningServer) -> int:
    line = server.wait_log("metrics_listening")
    found = re.search(r"\bport=(\d+)", line)
    assert found, line
    return int(found.group(1))


def scrape(port: int, path: str = "/metrics") -> str:
    """The page as it is now: the endpoint gives the same scrape, within
    MIN_SCRAPE_INTERVAL, the same answer again."""
    time.sleep(metrics.MIN_SCRAPE_INTERVAL)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def samples(text: str) -> Samples:
    """Every sample of the page, by name and labels (the parser checks the format)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def login(server: RunningServer, account: int) -> Client:
    c = server.client()
    assert c.login(account)["type"] == "logged_in"
    return c


def test_counters_move_as_orders_go_in(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(CONFIG, "--data-dir", str(tmp_path / "data"))
    port = metrics_port(server)
    before = samples(scrape(port))
    assert value(before, "pyengine_sessions") == 0
    assert value(before, "pyengine_open_orders", symbol=ES) == 0
    assert value(before, "pyengine_order_ack_latency_seconds_count") == 0

    with login(server, 1) as a, login(server, 2) as b:
        acks = [a.request(a.new_order(ES, "sell", 5, 450_000)), a.request(a.new_order(ES, "sell", 1, 450_100)),
                a.request(a.new_order(NQ, "buy", 1, 1_000_000))]
        acks.append(b.request(b.new_order(ES, "buy", 3, 450_000)))  # trades with the first
        assert b.recv(2)["type"] == "fill" and a.recv(2)["type"] == "fill"
        assert all(x["type"] == "ack" for x in acks)
        assert b.request(b.new_order(ES, "buy", 1, 450_010))["code"] == "off_tick"  # the engine's
        assert b.request(b.new_order(ES, "buy", 101, 450_000))["code"] == "max_qty_exceeded"  # the engine's too
        assert b.request(b.new_order(ES, "buy", 0, 450_000))["code"] == "bad_qty"
        assert a.request(a.new_order(NQ, "buy", 1, 1_000_000))["code"] == "max_open_orders_exceeded"  # the server's
        assert a.request(a.cancel(order_id=acks[1]["order_id"]))["type"] == "cancelled"
        a.request(a.ping())
        during = samples(scrape(port))

    assert value(during, "pyengine_sessions") == 2
    assert value(during, "pyengine_sessions_opened_total") == 2
    assert value(during, "pyengine_acks_total") == 4
    assert value(during, "pyengine_trades_total") == 1
    assert value(during, "pyengine_rejects_total", reason="off_tick") == 1
    assert value(during, "pyengine_rejects_total", reason="max_qty_exceeded") == 1
    assert value(during, "pyengine_rejects_total", reason="bad_qty") == 1
    assert value(during, "pyengine_rejects_total", reason="max_open_orders_exceeded") == 1
    # Resting: 2 of the first sell, the NQ buy; the second sell is cancelled.
    assert value(during, "pyengine_open_orders", symbol=ES) == 1
    assert value(during, "pyengine_open_orders", symbol=NQ) == 1
    assert value(during, "pyengine_requests_total", type="new_order") == 8
    assert value(during, "pyengine_requests_total", type="cancel") == 1
    assert value(during, "pyengine_requests_total", type="login") == 2
    assert value(during, "pyengine_requests_total", type="ping") == 1
    # Every ack sent is measured, once.
    assert value(during, "pyengine_order_ack_latency_seconds_count") == 4
    assert value(during, "pyengine_order_ack_latency_seconds_bucket", le="+Inf") == 4
    assert value(during, "pyengine_order_ack_latency_seconds_sum") > 0
    last_seq = max(x["seq"] for x in acks)
    assert value(during, "pyengine_engine_seq") >= last_seq
    assert value(during, "pyengine_journal_lag") == 0  # replies come out once journaled
    assert value(during, "pyengine_journal_fsyncs_total") >= 1
    assert value(during, "pyengine_ring_depth", ring="in") >= 0
    assert (("pyengine_marketdata_seq", frozenset({("symbol", ES)})) in during)

    # The sessions closed (cancel-on-disconnect): their orders are gone.
    server.wait_log("cancel_on_disconnect")
    for _ in range(100):
        after = samples(scrape(port))
        if value(after, "pyengine_open_orders", symbol=NQ) == 0 and value(after, "pyengine_sessions") == 0:
            break
        time.sleep(0.05)
    assert value(after, "pyengine_open_orders", symbol=ES) == 0
    assert value(after, "pyengine_open_orders", symbol=NQ) == 0
    assert value(after, "pyengine_sessions") == 0


def test_messages_of_no_known_type_count_as_other(server_factory: Any) -> None:
    server = server_factory(CONFIG)
    port = metrics_port(server)
    frames = [b"{not json", b"[1, 2]", b'{"type": "bogus", "req_id": 1}', b"\xff\xfe"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"".join(struct.pack(">I", len(f)) + f for f in frames))
        reader = sock.makefile("rb")
        codes = [json.loads(reader.read(struct.unpack(">I", reader.read(4))[0]))["code"] for _ in frames]
    assert codes == ["bad_json", "bad_message", "unknown_type", "bad_json"]
    assert value(samples(scrape(port)), "pyengine_requests_total", type="other") == len(frames)


def test_the_event_loops_polls_are_counted_when_it_polls(server_factory: Any) -> None:
    # A long spell: even on a loaded machine the hub polls before it ends.
    polling = server_factory(CONFIG, "--server-spin-us", "200000")
    port = metrics_port(polling)
    assert samples(scrape(port))[("pyengine_loop_spins_total", frozenset())] == 0  # there, and no request read yet
    with login(polling, 1) as c:
        # Orders, carried out by the Poller (a ping goes to the session's reader). libev
        # calls the idle watcher only when no event is pending: a client whose next
        # request is in before the hub looks again (the hub preempted by the client it
        # woke, on a loaded machine) leaves it no such moment; a pause after an order,
        # well within the spell, gives it one.
        for i in range(20):
            assert c.request(c.new_order(ES, "buy", 1, 400_000 + 25 * i))["type"] == "ack"
            time.sleep(0.02)
            if value(samples(scrape(port)), "pyengine_loop_spins_total") > 0:
                break
        assert value(samples(scrape(port)), "pyengine_loop_spins_total") > 0
    sleeping = server_factory(CONFIG)
    with login(sleeping, 1) as c:
        assert c.request(c.ping())["type"] == "pong"
    assert ("pyengine_loop_spins_total", frozenset()) not in samples(scrape(metrics_port(sleeping)))


def test_only_metrics_is_served(server_factory: Any) -> None:
    server = server_factory(None, "--metrics-port", "0")
    port = metrics_port(server)
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(port, "/")
    assert info.value.code == 404
    assert "pyengine_order_ack_latency_seconds" in scrape(port)
    assert "journal" not in scrape(port)  # nothing journaled, no journal metrics


def test_scrapes_at_once_are_each_answered_in_their_turn(server_factory: Any) -> None:
    server = server_factory(None, "--metrics-port", "0")
    port = metrics_port(server)
    n = metrics.MAX_CONNECTIONS  # all the places at once, each scrape paced after the one before
    with ThreadPoolExecutor(n) as pool:
        pages = list(pool.map(lambda _: scrape(port), range(n)))
    for page in pages:
        assert value(samples(page), "pyengine_sessions_opened_total") == 0


def test_a_metrics_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"metrics port {port} on 127.0.0.1 is in use"):
            ServerProcess(["--port", "0", "--engine-cpu", "-1", "--metrics-port", str(port)],
                          tmp_path / "server.log", timeout=20)


def test_no_metrics_endpoint_unless_asked(server: RunningServer) -> None:
    assert not any("metrics_listening" in line for line in server.lines)


@pytest.mark.parametrize(("table", "error"), [
    ({"host": "0.0.0.0"}, "port is required"),
    ({"port": "9464"}, "port must be int"),
    ({"port": 70000}, "out of range"),
    ({"port": 9464, "path": "/m"}, "unknown key"),
])
def test_bad_metrics_tables(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config_from_dict({"metrics": table})


def test_a_metrics_table() -> None:
    config = config_from_dict({"metrics": {"port": 9464, "host": "0.0.0.0"}})
    assert (config.metrics_port, config.metrics_host) == (9464, "0.0.0.0")
    assert config_from_dict({}).metrics_port is None

"""What the metrics endpoint and the web view's HTTP server do with clients
that are not Prometheus or a browser, on a real server: connections that
never send a request, or send it a byte at a time, requests that cannot be
parsed. Neither may take from the order port what its sessions need, nor
hold the endpoint for good."""

from __future__ import annotations

import http.client
import os
import re
import resource
import select
import socket
import time
import urllib.request
from typing import Any

import pytest

from pyengine.server import metrics
from pyengine.server.config import ConfigError, config_from_dict

from .conftest import RunningServer

# (the flag, its log line, a path it serves)
ENDPOINTS = [("--metrics-port", "metrics_listening", "/metrics"), ("--http-port", "http_listening", "/")]
TABLES = {"--metrics-port": "metrics", "--http-port": "http"}  # each one's table in the configuration
IDLE = 70  # connections: more than either endpoint serves at once
# The endpoints' request limits here, shorter than their defaults so that the tests wait less.
REQUEST_TIMEOUT = 1.0
REQUEST_DEADLINE = 2.0
DEFAULT_DEADLINE = config_from_dict({}).http_request_deadline
WAIT = REQUEST_TIMEOUT + 25  # seconds for what the server does after REQUEST_TIMEOUT, on a busy machine
TRICKLE = 0.2  # seconds between the bytes of a slow client: well within REQUEST_TIMEOUT


def endpoint_server_config(flag: str, settings: str = "") -> str:
    """The configuration of a server with the endpoint of `flag` on any free
    port, under the tests' request limits, and `settings` in its table."""
    return (f"[{TABLES[flag]}]\nport = 0\nrequest_timeout = {REQUEST_TIMEOUT}\n"
            f"request_deadline = {REQUEST_DEADLINE}\n{settings}")


def endpoint_server(server_factory: Any, flag: str, settings: str = "") -> RunningServer:
    """A server of endpoint_server_config(flag, settings)."""
    return server_factory(endpoint_server_config(flag, settings))


def endpoint_port(server: RunningServer, event: str) -> int:
    found = re.search(r"\bport=(\d+)", server.wait_log(event))
    assert found
    return int(found.group(1))


def get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as r:
        r.read()
        return int(r.status)


def test_idle_metrics_connections_leave_the_order_port_its_files(server_factory: Any) -> None:
    server = endpoint_server(server_factory, "--metrics-port")
    port = endpoint_port(server, "metrics_listening")
    # Room for 40 more files: connections to the metrics port may not take them all.
    files = len(os.listdir(f"/proc/{server.proc.pid}/fd")) + 40
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (files, files))
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
    try:
        with server.client(timeout=WAIT) as c:
            assert c.login(1)["type"] == "logged_in"
        assert get(port, "/metrics") == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_a_connection_that_sends_no_request_is_closed(server_factory: Any, flag: str, event: str, path: str) -> None:
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    silent = socket.create_connection(("127.0.0.1", port))
    partial = socket.create_connection(("127.0.0.1", port))
    try:
        partial.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        for s in (silent, partial):
            s.settimeout(WAIT)  # a TimeoutError if the server keeps it
            while s.recv(1024):  # a 400, at most
                pass
    finally:
        silent.close()
        partial.close()
    assert not any("Traceback" in line for line in server.lines)


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_idle_connections_do_not_hold_the_endpoint(server_factory: Any, flag: str, event: str, path: str) -> None:
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
    try:
        assert get(port, path) == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_an_unreadable_request_is_answered_400_without_a_traceback(server_factory: Any, flag: str, event: str,
                                                                   path: str) -> None:
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    many_headers = b"".join(b"X-%d: y\r\n" % i for i in range(101))
    long_header = b"X-Long: " + b"a" * 70_000 + b"\r\n"
    many_long = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))  # 20 KB in all
    for headers, status in ((many_headers, b"400"), (long_header, b"431"), (many_long, b"431")):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 " + status + b" "), headers[:20]
    # Just under the limit, the request is served.
    under = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(15))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + under
                  + b"\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 200 ")
    assert get(port, path) == 200  # the server is well, and has logged anything it would have
    assert not any("Traceback" in line for line in server.lines)


def read_until_closed(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_a_head_request_is_answered_with_the_head_alone(server_factory: Any, flag: str, event: str,
                                                        path: str) -> None:
    # Its body would be read as the start of the next answer on the connection.
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        got = read_until_closed(s)
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 ") and (rest == b"" or rest.startswith(b"HTTP/1.1 404 ")), got[:300]
    lengths = re.findall(rb"(?i)content-length: (\d+)", head)
    assert flag == "--metrics-port" or int(lengths[0]) == len(urllib.request.urlopen(
        f"http://127.0.0.1:{port}{path}", timeout=WAIT).read())  # the web view's: the page's, as GET sends


def test_scrapers_that_do_not_read_their_answers_do_not_hold_the_metrics(server_factory: Any) -> None:
    # As many connections as it serves, each asking again and again (keep-
    # alive, pipelined) and reading nothing: a write that waits for its
    # client past the request deadline closes the connection.
    server = endpoint_server(server_factory, "--metrics-port")
    port = endpoint_port(server, "metrics_listening")
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    holders = []
    for _ in range(metrics.MAX_CONNECTIONS):  # each place: none is left free for the one that reads
        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        try:
            for _ in range(200):
                s.send(request * 20)
        except BlockingIOError:
            pass  # the server has stopped reading it: its answers fill the way back
        holders.append(s)
    try:
        t0 = time.monotonic()
        assert get(port, "/metrics") == 200
        assert time.monotonic() - t0 < WAIT
    finally:
        for s in holders:
            s.close()
    server.wait_log(r"event=http_write_timeout ")
    assert not any("Traceback" in line or "500 Internal" in line for line in server.lines)


def trickle_until_closed(s: socket.socket, data: bytes) -> bytes:
    """Send `data` a byte every TRICKLE seconds until the server closes the
    connection; what it answered meanwhile. AssertionError if it keeps the
    connection until shortly before the default request_deadline: the one
    configured, far shorter, is the one that holds."""
    assert TRICKLE < REQUEST_TIMEOUT and REQUEST_DEADLINE < DEFAULT_DEADLINE - 5
    answered = b""
    give_up = time.monotonic() + DEFAULT_DEADLINE - 2
    for i in range(len(data)):
        assert time.monotonic() < give_up, f"the server still reads the request after {i} bytes"
        try:
            s.sendall(data[i:i + 1])
            while select.select([s], [], [], TRICKLE)[0]:
                chunk = s.recv(65536)
                if not chunk:
                    return answered
                answered += chunk
        except (BrokenPipeError, ConnectionResetError):
            return answered
    raise AssertionError("the request was all sent")


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_headers_sent_a_byte_at_a_time_are_cut_off(server_factory: Any, flag: str, event: str, path: str) -> None:
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    endless = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 1000
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert trickle_until_closed(s, endless) == b""
    assert get(port, path) == 200
    assert not any("Traceback" in line for line in server.lines)


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_a_request_with_a_body_is_refused_unread(server_factory: Any, flag: str, event: str, path: str) -> None:
    # Neither endpoint takes a body: read and discarded, one sent fast
    # would hold the event loop until the deadline; it is refused at once.
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    for body_header in (b"Content-Length: 100000000", b"Transfer-Encoding: chunked"):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + body_header + b"\r\n\r\n"
                      + b"a" * 65536)
            assert s.recv(1024).startswith(b"HTTP/1.1 413 "), body_header
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:  # an empty one is no body
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 200 ")
    assert get(port, path) == 200
    assert not any("Traceback" in line for line in server.lines)


def answer_to(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """The status and body of a GET of `path` whose Host header is `host` (None: no Host)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\n".encode() + (f"Host: {host}\r\n".encode() if host is not None else b"")
                  + b"Connection: close\r\n\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, r.read()


# Names a page's address may have whose DNS answer is the attacker's to give: a page of theirs, rebound
# to this machine, reads what the browser gets as if it were its own (DNS rebinding).
FOREIGN = ["evil.example", "evil.example:{port}", "localhost.evil.example", "127.0.0.1.evil.example",
           "pyengine.example.evil", "localhost:{port}.evil.example", "[::1].evil.example"]
# Names no DNS answer makes: addresses, and localhost (a browser resolves it to this machine itself).
OWN = ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LocalHost:{port}", "localhost.", "[::1]:{port}", "10.1.2.3",
       "[2001:db8::1]", None]


@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_a_request_for_another_host_name_is_refused(server_factory: Any, flag: str, event: str, path: str) -> None:
    server = endpoint_server(server_factory, flag)
    port = endpoint_port(server, event)
    for host in FOREIGN:
        status, body = answer_to(port, path, host.format(port=port))
        refusal = f"unknown host name: list it in [{TABLES[flag]}] allowed_hosts (or --{TABLES[flag]}-allowed-host)\n"
        assert (status, body) == (421, refusal.encode()), host
    for own in OWN:
        assert answer_to(port, path, own and own.format(port=port))[0] == 200, own
    assert answer_to(port, "/events?symbol=ESZ6" if path == "/" else path, "evil.example")[0] == 421
    server.wait_log("http_wrong_host")


@pytest.mark.parametrize("listed_by", ["file", "flags"])
@pytest.mark.parametrize("flag,event,path", ENDPOINTS)
def test_the_host_names_listed_are_answered(server_factory: Any, flag: str, event: str, path: str,
                                            listed_by: str) -> None:
    """Listed in the endpoint's table, or by its --*-allowed-host flags (which replace the table's)."""
    names = ["pyengine.example", "Mon.Example."]
    if listed_by == "file":
        server = endpoint_server(server_factory, flag, 'allowed_hosts = ["pyengine.example", "Mon.Example."]\n')
    else:
        allowed = flag.replace("-port", "-allowed-host")
        server = server_factory(endpoint_server_config(flag, 'allowed_hosts = ["www.pyengine.example"]\n'),
                                *(arg for name in names for arg in (allowed, name)))
    port = endpoint_port(server, event)
    for host in ("pyengine.example", "PyEngine.Example:{port}", "pyengine.example.", "mon.example", "mon.example."):
        assert answer_to(port, path, host.format(port=port))[0] == 200, host
    for host in FOREIGN + ["www.pyengine.example", "pyengine.exampl"]:
        assert answer_to(port, path, host.format(port=port))[0] == 421, host
    for own in OWN:
        assert answer_to(port, path, own and own.format(port=port))[0] == 200, own


@pytest.mark.parametrize("table", TABLES.values())
@pytest.mark.parametrize(("names", "error"), [
    ("pyengine.example", "allowed_hosts must be an array of host names"),
    ([7], "allowed_hosts must be an array of host names"),
    ([""], "not ''"),
    (["a b"], "not 'a b'"),
    (["pyengine.example:8080"], "not 'pyengine.example:8080'"),
    (["*"], "not '\\*'"),
    (["127.0.0.1"], "127.0.0.1 is an address: addresses are always answered"),
    (["::1"], "::1 is an address: addresses are always answered"),
    (["LocalHost"], "localhost is always answered"),
])
def test_bad_allowed_hosts(table: str, names: object, error: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{table}\]: .*{error}"):
        config_from_dict({table: {"port": 8080, "allowed_hosts": names}})


@pytest.mark.parametrize("table", TABLES.values())
@pytest.mark.parametrize(("settings", "error"), [
    ({"request_timeout": 0}, "request_timeout must be a number of seconds > 0, not 0.0"),
    ({"request_deadline": -1}, "request_deadline must be a number of seconds > 0, not -1.0"),
    ({"request_timeout": float("nan")}, "request_timeout must be a number of seconds > 0, not nan"),
    ({"request_deadline": "10"}, "request_deadline must be a number, not str"),
    ({"request_timeout": 10}, r"request_timeout \(10.0 s\) must be less than request_deadline \(10.0 s\)"),
    ({"request_timeout": 3, "request_deadline": 2}, r"request_timeout \(3.0 s\) must be less than request_deadline"),
])
def test_bad_request_limits(table: str, settings: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=rf"^\[{table}\]: {error}"):
        config_from_dict({table: {"port": 8080, **settings}})


def test_request_limits_of_each_endpoint() -> None:
    config = config_from_dict({"metrics": {"port": 9464, "request_timeout": 2, "request_deadline": 4.5},
                               "http": {"port": 8080, "request_deadline": 30}})
    assert (config.metrics_request_timeout, config.metrics_request_deadline) == (2.0, 4.5)
    assert (config.http_request_timeout, config.http_request_deadline) == (5.0, 30.0)


def test_allowed_hosts_of_each_endpoint() -> None:
    config = config_from_dict({"metrics": {"port": 9464, "allowed_hosts": ["prometheus-target.example"]},
                               "http": {"port": 8080, "allowed_hosts": ["view.example", "view2.example"]}})
    assert config.metrics_allowed_hosts == ("prometheus-target.example",)
    assert config.http_allowed_hosts == ("view.example", "view2.example")
    assert config_from_dict({"http": {"port": 8080}}).http_allowed_hosts == ()

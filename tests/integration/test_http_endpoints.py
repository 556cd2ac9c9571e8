"""What the metrics endpoint and the web view's HTTP server do with clients
that are not Prometheus or a browser, on a real server: connections that
never send a request, requests that cannot be parsed. Neither may take from
the order port what its sessions need, nor hold the endpoint for good."""

from __future__ import annotations

import os
import re
import resource
import socket
import urllib.request
from typing import Any

import pytest

from pyengine.server.httpd import REQUEST_TIMEOUT

from .conftest import RunningServer

# (the flag, its log line, a path it serves)
ENDPOINTS = [("--metrics-port", "metrics_listening", "/metrics"), ("--http-port", "http_listening", "/")]
IDLE = 70  # connections: more than either endpoint serves at once (16 and 64)
WAIT = REQUEST_TIMEOUT + 25  # seconds for what the server does after REQUEST_TIMEOUT, on a busy machine


def endpoint_port(server: RunningServer, event: str) -> int:
    found = re.search(r"\bport=(\d+)", server.wait_log(event))
    assert found
    return int(found.group(1))


def get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as r:
        r.read()
        return int(r.status)


def test_idle_metrics_connections_leave_the_order_port_its_files(server_factory: Any) -> None:
    server = server_factory(None, "--metrics-port", "0")
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
    server = server_factory(None, flag, "0")
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
    server = server_factory(None, flag, "0")
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
    server = server_factory(None, flag, "0")
    port = endpoint_port(server, event)
    many_headers = b"".join(b"X-%d: y\r\n" % i for i in range(101))
    long_header = b"X-Long: " + b"a" * 70_000 + b"\r\n"
    for headers in (many_headers, long_header):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 400 ")
    assert get(port, path) == 200  # the server is well, and has logged anything it would have
    assert not any("Traceback" in line for line in server.lines)

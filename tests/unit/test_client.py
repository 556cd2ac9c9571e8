"""pyengine.client.Client against a loopback socket standing in for the server:
what it does with the bytes it has received, timeouts, what it sends, the
addresses it reads, whom it asks after a timeout."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from pyengine.client import Client, ConnectionClosed


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


class FakeServer:
    """The server's end of each connection a Client makes, whatever address
    it asks for (a loopback listener of the test's own)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.peers: list[socket.socket] = []

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        ours = socket.create_connection(self.listener.getsockname(), timeout=timeout)
        theirs, _ = self.listener.accept()
        theirs.settimeout(5)
        self.peers.append(theirs)
        return ours

    @property
    def peer(self) -> socket.socket:
        return self.peers[-1]

    def read(self) -> dict[str, Any]:
        (n,) = struct.unpack(">I", self.peer.recv(4, socket.MSG_WAITALL))
        message: dict[str, Any] = orjson.loads(self.peer.recv(n, socket.MSG_WAITALL))
        return message


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    for p in server.peers:
        p.close()
    server.listener.close()


def connect(fake: FakeServer, **kw: Any) -> Client:
    module = SimpleNamespace(create_connection=fake.create_connection)
    return Client("127.0.0.1", 1, socket_module=module, **kw)  # type: ignore[arg-type]


def fills(n: int) -> list[dict[str, Any]]:
    return [{"type": "fill", "order_id": 1, "trade_id": i} for i in range(n)]


def test_whole_messages_received_survive_a_reconnect(fake: FakeServer) -> None:
    c = connect(fake)
    req = c.ping()
    # The reply and two pushes in one read: the pushes stay in the receive buffer.
    fake.peer.sendall(b"".join(frame(m) for m in [{"type": "pong", "req_id": req}, *fills(2)]))
    assert c.request(req)["type"] == "pong"
    c.reconnect()
    assert [c.recv(timeout=1.0), c.recv(timeout=1.0)] == fills(2)


def test_a_lost_connection_leaves_whole_messages_for_recv_with_a_timeout(fake: FakeServer) -> None:
    c = connect(fake)
    req = c.ping()
    partial = frame(fills(3)[2])[:-2]  # never completed
    fake.peer.sendall(b"".join(frame(m) for m in [{"type": "pong", "req_id": req}, *fills(2)]) + partial)
    assert c.request(req)["type"] == "pong"
    fake.peer.close()
    with pytest.raises(ConnectionClosed):
        for _ in range(100):  # the first send may still go out
            c.send({"type": "ping"})
    assert [c.recv(timeout=1.0), c.recv(timeout=1.0)] == fills(2)
    with pytest.raises(ConnectionClosed):
        c.recv(timeout=1.0)


def test_a_timeout_of_0_polls(fake: FakeServer) -> None:
    c = connect(fake)
    with pytest.raises(TimeoutError):
        c.recv(timeout=0)
    fake.peer.sendall(frame(fills(1)[0]))
    assert c.recv(timeout=1.0) == fills(1)[0]  # arrived: a poll takes it
    req = c.ping()
    with pytest.raises(TimeoutError):
        c.request(req, timeout=0)


def test_a_request_timeout_bounds_the_whole_wait_while_pushes_arrive(fake: FakeServer) -> None:
    c = connect(fake)
    req = c.ping()
    waited = threading.Event()

    def feed() -> None:
        # Pushes more often than the timeout, for far longer; the reply
        # only once the request has given up (or after the pushes).
        for i in range(100):
            if waited.wait(0.05):
                break
            fake.peer.sendall(frame({"type": "fill", "order_id": 1, "trade_id": i}))
        fake.peer.sendall(frame({"type": "pong", "req_id": req}))

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with pytest.raises(TimeoutError):
            c.request(req, timeout=0.5)
    finally:
        waited.set()
        feeder.join()
    assert c.request(req, timeout=5)["type"] == "pong"  # it still comes; the pushes stay for recv()
    assert c.recv(timeout=0)["type"] == "fill"


def test_integers_of_other_types_are_sent_as_integers(fake: FakeServer) -> None:
    c = connect(fake)
    req = c.new_order("ESZ6", "buy", np.int64(5), np.int32(450_000))
    assert fake.read() == {"type": "new_order", "symbol": "ESZ6", "side": "buy", "qty": 5, "price": 450_000,
                           "order_type": "limit", "post_only": False, "stp": "none", "req_id": req}
    c.modify(np.uint64(7), qty=np.int16(2))
    assert fake.read()["qty"] == 2
    c.cancel(np.int64(7))
    assert fake.read()["order_id"] == 7


def test_a_value_that_is_no_integer_is_refused_before_using_up_a_req_id(fake: FakeServer) -> None:
    c = connect(fake)
    with pytest.raises(TypeError):
        c.new_order("ESZ6", "buy", np.float64(5.0), 450_000)  # type: ignore[arg-type]
    assert c.ping() == 1
    assert fake.read() == {"type": "ping", "req_id": 1}


@pytest.mark.parametrize(
    "text, address",
    [
        ("10.0.0.4:7101", ("10.0.0.4", 7101)),
        ("10.0.0.4", ("10.0.0.4", 7001)),
        ("node-a1.example:7101", ("node-a1.example", 7101)),
        ("localhost", ("localhost", 7001)),
        ("[::1]:7101", ("::1", 7101)),
        ("[::1]", ("::1", 7001)),
        ("::1", ("::1", 7001)),
        ("2001:db8::4", ("2001:db8::4", 7001)),  # a bare IPv6 address has no port: its last group is not one
        ("[2001:db8::4]:7101", ("2001:db8::4", 7101)),
        ("[fe80::1%eth0]:7101", ("fe80::1%eth0", 7101)),
    ],
)
def test_addresses_in_every_form(fake: FakeServer, text: str, address: tuple[str, int]) -> None:
    module = SimpleNamespace(create_connection=fake.create_connection)
    c = Client([text, "127.0.0.1:1"], 7001, socket_module=module)  # type: ignore[arg-type]
    assert c.addresses == [address, ("127.0.0.1", 1)]


@pytest.mark.parametrize("text", ["[::1", "[::1]7101", "[::1]:", "[::1]:port"])
def test_a_broken_bracketed_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        Client(text)


@pytest.mark.parametrize("body", [b"HTTP/1.1 400 Bad Request", b"[1, 2]", b"", b'"pong"'])
def test_what_is_not_a_message_drops_the_connection_with_a_clear_error(fake: FakeServer, body: bytes) -> None:
    # Something that is not a pyengine server on the other end (or one gone
    # wrong): the stream's framing can no longer be trusted. The request
    # fails with ConnectionClosed saying so, the connection is dropped, and
    # what came whole before it is kept for recv.
    c = connect(fake)
    req = c.ping()
    fake.read()
    fake.peer.sendall(frame({"type": "fill", "req_id": None, "order_id": 5}) + struct.pack(">I", len(body)) + body)
    with pytest.raises(ConnectionClosed, match="not a JSON object .*is it a pyengine server"):
        c.request(req)
    assert c.sock is None
    assert c.recv(timeout=0)["type"] == "fill"


class Shard:
    """Two addresses: the first is `fake`, the second refuses connections
    (a node that is down); the addresses asked for are kept."""

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self.asked: list[tuple[str, int]] = []

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        self.asked.append(address)
        if address != ("127.0.0.1", 1):
            raise ConnectionRefusedError(111, "Connection refused")
        return self.fake.create_connection(address, timeout)

    def client(self) -> Client:
        return Client(["127.0.0.1:1", "127.0.0.1:2"], socket_module=self, timeout=5)  # type: ignore[arg-type]


def timed_out_ping(c: Client) -> int:
    """A ping whose request timed out (the fake server answers nothing by itself): its req_id."""
    req = c.ping()
    with pytest.raises(TimeoutError):
        c.request(req, timeout=0.1)
    return req


def test_after_a_timeout_a_connection_that_spoke_since_is_kept_without_asking(fake: FakeServer) -> None:
    shard = Shard(fake)
    c = shard.client()
    req = timed_out_ping(c)
    fake.peer.sendall(frame({"type": "pong", "req_id": req}))
    select.select([c.sock], [], [], 5)
    after = c.ping()
    assert shard.asked == [("127.0.0.1", 1)]  # no other node asked
    assert [fake.read(), fake.read()] == [{"type": "ping", "req_id": req}, {"type": "ping", "req_id": after}]
    assert c.request(req)["type"] == "pong"


def test_after_a_timeout_a_silent_connection_is_kept_while_no_other_node_leads(fake: FakeServer) -> None:
    shard = Shard(fake)
    c = shard.client()
    req = timed_out_ping(c)
    after = c.ping()  # asks the other node, which is down: this one stays
    assert shard.asked == [("127.0.0.1", 1), ("127.0.0.1", 2)] and len(fake.peers) == 1
    assert [fake.read(), fake.read()] == [{"type": "ping", "req_id": req}, {"type": "ping", "req_id": after}]
    fake.peer.sendall(frame({"type": "pong", "req_id": after}))
    assert c.request(after)["type"] == "pong"
    c.ping()  # the connection spoke: nobody is asked
    assert len(shard.asked) == 2


def test_a_poll_that_finds_nothing_asks_no_other_node(fake: FakeServer) -> None:
    # A timeout of 0 only takes what has arrived: nothing there says nothing
    # of the server's silence, and the next request goes out at once.
    shard = Shard(fake)
    c = shard.client()
    req = c.ping()
    with pytest.raises(TimeoutError):
        c.request(req, timeout=0)
    after = c.ping()
    assert shard.asked == [("127.0.0.1", 1)]  # no other node asked
    assert [fake.read(), fake.read()] == [{"type": "ping", "req_id": req}, {"type": "ping", "req_id": after}]


def test_a_leader_address_the_server_sends_may_be_ipv6_without_brackets(fake: FakeServer) -> None:
    """A node listening on an IPv6 address advertises ``host:port`` as it is
    (``::1:7101``), which as an address given to the client would be a bare
    IPv6 address; from the server it has a port."""
    asked: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        asked.append(address)
        return fake.create_connection(address, timeout)

    module = SimpleNamespace(create_connection=create_connection)
    c = Client("[::1]:7102", socket_module=module)  # type: ignore[arg-type]

    def serve() -> None:
        login = fake.read()
        fake.peer.sendall(frame({"type": "error", "req_id": login["req_id"], "code": "not_leader",
                                 "message": "...", "leader": "::1:7101"}))
        while len(fake.peers) < 2:
            time.sleep(0.01)
        login = fake.read()
        fake.peer.sendall(frame({"type": "logged_in", "req_id": login["req_id"], "account": 7}))

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert c.login(7)["type"] == "logged_in"
    finally:
        server.join(5)
    assert asked == [("::1", 7102), ("::1", 7101)] and c.address == ("::1", 7101)


@pytest.mark.parametrize("prober", ["a1", "a2"])
def test_after_a_timeout_only_another_node_that_leads_is_gone_to(fake: FakeServer, prober: str) -> None:
    """Two addresses of a shard; after a timeout the other answers that it
    leads. Node a1 under another name (its advertised address beside the one
    given: the slow leader itself, answering status on its event loop) is
    not left for; node a2 is."""
    module = SimpleNamespace(create_connection=fake.create_connection)
    c = Client(["127.0.0.1:1", "localhost:1"], socket_module=module, timeout=5)  # type: ignore[arg-type]

    def answer_login() -> None:
        login = fake.read()
        fake.peer.sendall(frame({"type": "logged_in", "req_id": login["req_id"], "account": 7, "node": "a1"}))

    server = threading.Thread(target=answer_login)
    server.start()
    c.login(7)
    server.join(5)
    req = timed_out_ping(c)

    def answer_status() -> None:
        while len(fake.peers) < 2:
            time.sleep(0.01)
        status = fake.read()
        fake.peer.sendall(frame({"type": "status", "req_id": status["req_id"], "role": "leader", "node": prober,
                                 "shard": "a", "leader": "127.0.0.1:1"}))
        if prober == "a2":  # the client logs in there next
            while len(fake.peers) < 3:
                time.sleep(0.01)
            answer_login()

    server = threading.Thread(target=answer_status)
    server.start()
    c.ping()
    server.join(5)
    assert c.address == (("127.0.0.1", 1) if prober == "a1" else ("localhost", 1))
    assert len(fake.peers) == (2 if prober == "a1" else 3)


def test_a_connection_is_probed_by_tcp_keepalive(fake: FakeServer) -> None:
    """After `keepalive` seconds without traffic the kernel probes the
    connection every half of that, three times, and data unacknowledged for
    as long ends it too (Linux's options, read back from the socket); None
    leaves the socket as it was."""
    c = connect(fake, keepalive=20)
    assert c.sock is not None
    s: Any = c.sock
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert [s.getsockopt(socket.IPPROTO_TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL,
                                                           socket.TCP_KEEPCNT)] == [20, 10, 3]
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == (20 + 3 * 10) * 1000  # ms
    assert connect(fake).sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10  # type: ignore[attr-defined]
    assert connect(fake, keepalive=None).sock.getsockopt(  # type: ignore[attr-defined]
        socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    for bad in (0, 0.5, 40000, float("nan")):
        with pytest.raises(ValueError, match="keepalive must be from 1 to 32767 seconds, or None"):
            connect(fake, keepalive=bad)


class _ProbesUnanswered:
    """A connected socket whose reads fail as the kernel's do once its
    keepalive probes went unanswered (ETIMEDOUT)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recv(self, size: int) -> bytes:
        raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))


def test_a_connection_the_keepalive_probes_found_dead_is_lost(fake: FakeServer) -> None:
    """The kernel's ETIMEDOUT (a TimeoutError, as Python makes it) is a lost
    connection, not the socket's own timeout: recv raises ConnectionClosed
    and the next request connects again."""
    module = SimpleNamespace(create_connection=lambda a, timeout=None: _ProbesUnanswered(
        fake.create_connection(a, timeout)))
    c = Client("127.0.0.1", 1, socket_module=module)  # type: ignore[arg-type]
    with pytest.raises(ConnectionClosed, match="no answer from the server to TCP keepalive probes or data"):
        c.recv(timeout=1)
    assert c.sock is None


class _GivenUp(_ProbesUnanswered):
    """A connected socket whose reads fail with `err`, as the kernel's do
    once it gave up on data the server never acknowledged and the network
    reported an error meanwhile (EHOSTUNREACH: the server's machine no
    longer answers ARP), or once it aborted the connection."""

    def __init__(self, sock: socket.socket, err: int) -> None:
        super().__init__(sock)
        self._err = err

    def recv(self, size: int) -> bytes:
        raise OSError(self._err, os.strerror(self._err))


@pytest.mark.parametrize("err", [errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNABORTED])
def test_a_connection_the_kernel_ended_with_any_error_is_lost(fake: FakeServer, err: int) -> None:
    """Not only a reset or ETIMEDOUT: a request waiting for its reply raises
    ConnectionClosed, and the next one connects again instead of sending on
    the dead socket."""
    made: list[Any] = []

    def create_connection(address: tuple[str, int], timeout: float | None = None) -> Any:
        sock = fake.create_connection(address, timeout)
        made.append(_GivenUp(sock, err) if not made else sock)
        return made[-1]

    module = SimpleNamespace(create_connection=create_connection)
    c = Client("127.0.0.1", 1, socket_module=module)  # type: ignore[arg-type]
    with pytest.raises(ConnectionClosed, match=os.strerror(err)):
        c.request(c.ping(), timeout=1)
    assert c.sock is None
    req = c.ping()
    assert len(made) == 2 and fake.read() == {"type": "ping", "req_id": req}
    fake.peer.sendall(frame({"type": "pong", "req_id": req}))
    assert c.request(req, timeout=5)["type"] == "pong"


@pytest.mark.parametrize("sent", [
    b'INFO {"server_id":"NDUJ","version":"2.10.22","proto":1}\r\n',  # a NATS server's greeting: the wrong port
    b"\x16\x03\x01\x00\x7a\x02\x00\x00\x76\x03\x03",  # a TLS server's hello
    struct.pack(">I", 0xFFFF_FFFF) + b"\x00" * 8,  # a server gone wrong
])
def test_a_frame_header_over_max_frame_drops_the_connection_with_a_clear_error(fake: FakeServer,
                                                                                sent: bytes) -> None:
    # The body such a header announces never comes (or is no message): the
    # client neither waits for it nor buffers it, whatever the timeout.
    c = connect(fake, timeout=5)
    req = c.ping()
    fake.read()
    fake.peer.sendall(frame({"type": "fill", "req_id": None, "order_id": 5}) + sent)
    (n,) = struct.unpack_from(">I", sent)
    with pytest.raises(ConnectionClosed, match=rf"a frame of {n} bytes, over max_frame") as info:
        c.request(req)
    assert repr(sent[:4])[:-1] in str(info.value)  # what came, to tell what answered
    assert c.sock is None
    assert c.recv(timeout=0)["type"] == "fill"


def test_max_frame_is_the_largest_frame_taken(fake: FakeServer) -> None:
    c = connect(fake, timeout=5, max_frame=64)
    req = c.ping()
    fake.read()
    body = {"type": "fill", "req_id": None, "pad": ""}
    body["pad"] = "x" * (64 - len(orjson.dumps(body)))
    fake.peer.sendall(frame(body) + frame({**body, "pad": body["pad"] + "x"}))
    assert c.recv()["pad"] == body["pad"]
    with pytest.raises(ConnectionClosed, match=r"a frame of 65 bytes, over max_frame \(64\)"):
        c.request(req)
    with pytest.raises(ValueError, match="max_frame"):
        connect(fake, max_frame=0)
    with pytest.raises(ValueError, match="max_frame"):
        connect(fake, max_frame=1 << 32)

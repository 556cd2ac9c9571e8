"""pyengine.client against a real server: the login it repeats after a
reconnect, a closed client, a failed re-login, ClusterClient's sessions, IPv6
addresses, the server's last words before it closes a connection, a refused
connection."""

from __future__ import annotations

import fcntl
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from pyengine.client import Client, ClusterClient, ConnectionClosed, ServerError

from .conftest import accounts_config

ES = "ESZ6"

ACCOUNTS = accounts_config({7: "seven", 8: "eight"})


def test_a_refused_login_is_not_the_one_repeated_after_a_reconnect(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    with server.client() as c:
        c.login(7, "seven", cancel_on_disconnect=False)
        with pytest.raises(ServerError) as info:
            c.login(8, "eight")
        assert info.value.code == "already_logged_in"
        reply = c.reconnect()
        assert reply is not None and (reply["account"], reply["cancel_on_disconnect"]) == (7, False)
    with server.client() as c:
        with pytest.raises(ServerError) as info:
            c.login(8, "wrong")
        assert info.value.code == "auth_failed"
        assert c.reconnect() is None  # no login to repeat
        assert c.login(8, "eight")["account"] == 8


def test_a_closed_client_stays_closed_until_reconnect(server: Any) -> None:
    with server.client() as c:
        c.login(3, cancel_on_disconnect=False)
        assert c.request(c.new_order(ES, "buy", 1, 449_000, client_order_id="one"))["type"] == "ack"
    with pytest.raises(ConnectionClosed, match="the client is closed"):
        c.new_order(ES, "buy", 1, 449_025, client_order_id="two")
    with pytest.raises(ConnectionClosed, match="the client is closed"):
        c.request(c._next_req, timeout=1)
    with pytest.raises(ConnectionClosed, match="the client is closed"):
        c.login(3)
    assert c.sock is None
    server.wait_log(r"event=session_close")
    assert sum("event=login " in line for line in server.lines) == 1  # no session of its own making
    reply = c.reconnect()  # only this opens it again
    assert reply is not None and reply["claimed_orders"] == 1
    assert [o["client_order_id"] for o in c.open_orders()] == ["one"]
    c.close()


def test_a_failed_relogin_drops_the_connection_and_the_next_request_tries_again(server_factory: Any) -> None:
    config = ACCOUNTS + "\n[limits]\nhost_logins = 1\nhost_login_window = 600.0\n"
    first = server_factory(config)
    port = first.port
    c = Client("127.0.0.1", port, timeout=5)
    c.login(7, "seven", cancel_on_disconnect=False)
    assert first.stop() == 0
    with pytest.raises(ConnectionClosed):
        c.request(c.ping())
    second = server_factory(config, "--port", str(port))
    with Client("127.0.0.1", port, timeout=5) as other:
        other.login(8, "eight")  # the host's one login with a secret for the window
    with pytest.raises(ServerError) as info:
        c.request(c.ping())  # connects, and the login is throttled
    assert info.value.code == "login_throttled"
    assert c.sock is None
    with pytest.raises(ServerError) as info:
        c.request(c.new_order(ES, "buy", 1, 449_000))  # logs in again first: not sent unauthenticated
    assert info.value.code == "login_throttled"
    with pytest.raises(ServerError) as info:
        c.reconnect()  # asked for: the same
    assert info.value.code == "login_throttled"
    assert c.sock is None
    assert second.stop() == 0
    server_factory(config, "--port", str(port))  # a fresh throttle
    assert c.request(c.new_order(ES, "buy", 1, 449_000))["type"] == "ack"
    c.close()


def answer_status(listener: socket.socket, leader_port: int, knows: bool) -> None:
    """Take a connection and answer its ``status`` as a cluster node: with
    one shard trading ES, led by the server on `leader_port`, if it `knows`
    the directory, else with none."""
    s, _ = listener.accept()
    with s:
        (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
        req = orjson.loads(s.recv(n, socket.MSG_WAITALL))
        leader = f"127.0.0.1:{leader_port}"
        shards = {"a": {"leader": leader, "instruments": [ES], "nodes": {"a1": leader}}} if knows else {}
        reply = orjson.dumps({"type": "status", "req_id": req["req_id"], "shard": "a", "role": "follower",
                              "shards": shards})
        s.sendall(struct.pack(">I", len(reply)) + reply)


def directory_node(leader_port: int, knows_after: int = 0) -> tuple[socket.socket, threading.Thread]:
    """A stand-in for a cluster node answering ``status`` on each of
    `knows_after` + 1 connections: with no shard on the first `knows_after`
    (its directory is still on its way), then with the shard."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        for asked in range(knows_after + 1):
            try:
                answer_status(listener, leader_port, asked == knows_after)
            except OSError:  # the test is over: its listener closed
                return

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return listener, thread


def test_cluster_client_asks_again_a_node_that_knows_no_shard_yet(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    listener, thread = directory_node(server.port, knows_after=3)
    with listener:
        with ClusterClient([f"127.0.0.1:{listener.getsockname()[1]}"], account=7, secret="seven", timeout=5) as cc:
            thread.join(5)
            assert not thread.is_alive()  # asked four times
            assert cc.shard_of == {ES: "a"}
            es = cc.for_symbol(ES)
            assert es.request(es.new_order(ES, "buy", 1, 449_000))["type"] == "ack"


def test_cluster_client_asks_again_a_node_that_knew_no_shard_and_restarts(server_factory: Any) -> None:
    """A node that answered with no shard, then refuses connections for a
    while (it restarts), is asked again until it answers with them."""
    server = server_factory(ACCOUNTS)
    first = socket.create_server(("127.0.0.1", 0))
    port = first.getsockname()[1]
    restarted = threading.Event()

    def node() -> None:
        with first:
            answer_status(first, server.port, knows=False)
        time.sleep(0.5)
        with socket.create_server(("127.0.0.1", port)) as again:
            restarted.set()
            answer_status(again, server.port, knows=True)

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    with ClusterClient([f"127.0.0.1:{port}"], account=7, secret="seven", timeout=10) as cc:
        assert restarted.is_set() and cc.shard_of == {ES: "a"}
    thread.join(5)


def test_cluster_client_gives_up_on_nodes_that_know_no_shard(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    listener, _ = directory_node(server.port, knows_after=1000)
    with listener:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConnectionError, match=rf"no node of {address} knew the cluster's shards within 0.5 s"):
            ClusterClient([address], account=7, secret="seven", timeout=0.5)


def test_cluster_client_of_a_single_server(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    address = f"127.0.0.1:{server.port}"
    with pytest.raises(ConnectionError, match=rf"^{address} is a single server, not a cluster node$"):
        ClusterClient([address], account=7, secret="seven")


def test_cluster_client_keeps_no_session_whose_login_failed(server_factory: Any) -> None:
    server = server_factory(ACCOUNTS)
    listener, thread = directory_node(server.port)
    with listener:
        cc = ClusterClient([f"127.0.0.1:{listener.getsockname()[1]}"], account=7, secret="wrong", timeout=5)
        thread.join(5)
    with cc:
        for _ in range(2):  # each call logs in (and fails) anew
            with pytest.raises(ServerError) as info:
                cc.for_symbol(ES)
            assert info.value.code == "auth_failed"
        cc._login = (7, "seven", True)
        es = cc.for_symbol(ES)
        assert es.request(es.new_order(ES, "buy", 1, 449_000))["type"] == "ack"


def ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_a_server_on_ipv6_loopback(server_factory: Any) -> None:
    server = server_factory(None, "--host", "::1")
    for address in ("::1", f"[::1]:{server.port}", "[::1]"):
        with Client(address, server.port, timeout=5) as c:
            assert c.address == ("::1", server.port)
            c.login(7)
            assert c.request(c.ping())["type"] == "pong"


def test_connection_closed_carries_the_servers_last_words(server_factory: Any) -> None:
    server = server_factory("[server]\nmax_frame = 100\n\n[limits]\nidle_timeout = 0.5\n")
    with server.client() as c:
        c.login(7)
        with pytest.raises(ConnectionClosed, match="frame_too_large") as info:
            c.request(c.new_order(ES, "buy", 1, 449_000, client_order_id="a-long-client-id"))
        assert info.value.code == "frame_too_large" and info.value.reply == c.recv(timeout=0)  # kept for recv too
        assert c.request(c.ping())["type"] == "pong"  # the next request connects again
        server.wait_log(r"event=session_close .*reason=idle_timeout")
        with pytest.raises(ConnectionClosed, match="idle_timeout") as info:
            c.request(c.ping())
        assert info.value.code == "idle_timeout"
        assert c.recv(timeout=0)["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed) as info:  # recv says why it has no more
            c.recv(timeout=0)
        assert info.value.code == "idle_timeout"
        assert c.request(c.ping())["type"] == "pong"
        wait_for_lines(server, "reason=idle_timeout", 2)
        with pytest.raises(ConnectionClosed, match="idle_timeout") as info:
            for _ in range(100):  # the first send may still go out; the server's words are not read
                c.send({"type": "ping"})
        assert c.request(c.ping())["type"] == "pong"
        assert c.sock is not None
        c.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(ConnectionClosed) as info:
            c.request(c.ping())
        assert info.value.code is None and info.value.reply is None  # that connection's end had no words


def wait_for_lines(server: Any, text: str, count: int) -> None:
    """Until the server's log has `count` lines with `text`."""
    deadline = time.monotonic() + 10
    while sum(text in line for line in server.lines) < count:
        assert time.monotonic() < deadline, f"fewer than {count} log lines with {text!r}"
        time.sleep(0.02)


def test_a_refused_connection_is_not_asked_again_in_a_login(server_factory: Any) -> None:
    full = server_factory("[server]\nmax_connections = 1\n")
    with full.client() as holder:
        assert holder.request(holder.ping())["type"] == "pong"
        c = Client("127.0.0.1", full.port, timeout=5, find_leader_for=30)
        with pytest.raises(ConnectionClosed, match="too_many_connections") as info:
            c.login(7)
        assert info.value.code == "too_many_connections"
        assert sum("event=connection_refused" in line for line in full.lines) == 1
        # Of several addresses, the refusing one is left for the next.
        room = server_factory()
        c = Client([f"127.0.0.1:{full.port}", f"127.0.0.1:{room.port}"], timeout=5, find_leader_for=30)
        assert c.login(7)["type"] == "logged_in" and c.address == ("127.0.0.1", room.port)
        assert sum("event=connection_refused" in line for line in full.lines) == 2
        c.close()


def test_threads_that_share_a_client_under_a_lock_each_get_their_replies(server: Any) -> None:
    """What the class promises of one thread at a time: a reply one
    thread's request() reads is kept for the other's."""
    lock = threading.Lock()
    got: dict[str, list[str]] = {}
    with server.client() as c:
        c.login(3)

        def trade(name: str) -> None:
            mine = []
            for i in range(100):
                with lock:
                    req = c.new_order(ES, "buy", 1, 449_000 - 25 * i, client_order_id=f"{name}{i}")
                with lock:
                    mine.append(c.request(req)["client_order_id"])
            got[name] = mine

        threads = [threading.Thread(target=trade, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert got == {name: [f"{name}{i}" for i in range(100)] for name in ("a", "b")}


class Interrupted(Exception):
    pass


def test_a_send_interrupted_midway_drops_the_connection(server_factory: Any) -> None:
    """A send cut short by an exception (KeyboardInterrupt, gevent.Timeout;
    here a signal's handler) while the server takes in nothing may have
    sent part of its frame: the connection is dropped, not used for the
    next request, whose frame the server would take for the rest of that one."""
    server = server_factory("[server]\nmax_frame = 67108864\nmax_unsent = 67108864\n")
    c = server.client(timeout=5)
    c.login(7)

    def interrupt(signum: int, frame: Any) -> None:
        # Only once the send has begun (bytes wait in the socket's send queue): a slow machine may still be
        # encoding the message, which sends nothing and keeps the connection.
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if not queued:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            return
        raise Interrupted

    sock = c.sock
    assert sock is not None
    previous = signal.signal(signal.SIGALRM, interrupt)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            c.send({"type": "ping", "pad": "x" * (32 << 20)})  # more than the socket buffers hold
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        server.proc.send_signal(signal.SIGCONT)
    assert c.sock is None
    assert c.request(c.ping())["type"] == "pong"  # on a new connection, logged in again
    assert c.request(c.new_order(ES, "buy", 1, 449_000))["type"] == "ack"
    assert c.recv(timeout=0) == {"type": "disconnected", "address": f"127.0.0.1:{server.port}"}  # no exception said
    c.close()


@contextmanager
def paused(server: Any) -> Iterator[None]:
    """The server's process stopped (SIGSTOP) for the block: a machine cut off looks the same."""
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.proc.send_signal(signal.SIGCONT)


def test_a_login_unanswered_in_time_drops_a_connection_that_held_a_session_and_tells_recv(server: Any) -> None:
    c = server.client(timeout=1, find_leader_for=0)
    c.login(7, cancel_on_disconnect=False)
    c.request(c.subscribe(ES))
    with paused(server), pytest.raises(TimeoutError):
        c.login(8, cancel_on_disconnect=False)
    assert c.sock is None
    assert c.recv(timeout=0) == {"type": "disconnected", "address": f"127.0.0.1:{server.port}"}
    assert c.request(c.ping())["type"] == "pong"  # logged in again as 7, the login in place
    c.close()


@pytest.mark.parametrize("find_leader_for", [0.0, 1.5])  # the login sent once, or again on a new connection
def test_a_login_that_timed_out_leaves_no_connection_whose_login_is_unknown(server: Any,
                                                                            find_leader_for: float) -> None:
    """The server takes the connection, and the login, while paused (a
    machine cut off looks the same): the login times out, and the server
    may yet accept it. The connection goes with it: a login() again, or a
    request, is sent on a new one, not on one where the first login may be
    in place (already_logged_in)."""
    c = server.client(timeout=1, find_leader_for=find_leader_for)
    with paused(server), pytest.raises(TimeoutError):
        c.login(7, cancel_on_disconnect=False)
    assert c.sock is None
    assert c.login(7, cancel_on_disconnect=False)["type"] == "logged_in"
    assert c.request(c.new_order(ES, "buy", 1, 449_000, client_order_id="one"))["type"] == "ack"
    server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            c.reconnect()  # logs in as before, unanswered
        assert c.sock is None
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert [o["client_order_id"] for o in c.open_orders()] == ["one"]  # on a new connection, logged in again
    c.close()


@pytest.mark.parametrize("subscribed", [True, False])
def test_a_connection_left_without_connection_closed_is_told_to_recv(server_factory: Any, subscribed: bool) -> None:
    """A request times out (the server paused), the server dies meanwhile,
    and the next request goes out on a new connection, to the next address,
    logged in again, with no ConnectionClosed raised: a subscriber would
    wait for pushes that never come. A ``disconnected`` message after the
    last one received on the old connection tells ``recv`` (whether it held
    a subscription or only a session)."""
    first, second = server_factory(), server_factory()
    c = Client([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"], timeout=5)
    c.login(7, cancel_on_disconnect=False)
    if subscribed:
        assert c.request(c.subscribe(ES))["type"] == "book_snapshot"
    c.request(c.new_order(ES, "buy", 1, 449_000))
    first.proc.send_signal(signal.SIGSTOP)
    with pytest.raises(TimeoutError):
        c.request(c.ping(), timeout=0.5)
    first.kill()
    assert c.request(c.ping())["type"] == "pong"
    assert c.address == ("127.0.0.1", second.port)
    told = []
    with pytest.raises(TimeoutError):
        while True:
            told.append(c.recv(timeout=0.5)["type"])
    # The old connection's market data (the order's book update) before it.
    assert told == (["book_update", "disconnected"] if subscribed else ["disconnected"])
    c.close()


def test_a_connection_left_by_reconnect_or_close_or_after_connection_closed_tells_nothing_more(
        server_factory: Any) -> None:
    server = server_factory()
    c = server.client(timeout=5)
    c.login(7)
    c.request(c.subscribe(ES))
    c.reconnect()  # asked for
    c.request(c.subscribe(ES))
    server.kill()
    with pytest.raises(ConnectionClosed):
        c.request(c.ping())
    with pytest.raises(ConnectionClosed):
        c.recv(timeout=0.5)  # told once, by the request: no message for recv
    c.close()

"""Each session's output in C (csrc/binding/outbox.c): queued in its Link by
Ledger.send (and by the Router), written by Ledger.flush to a real socket,
and what the flush reports when the socket is full, the output is over the
limit or the send fails."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from pyengine._server import OUT_SLOW, OUT_WAIT, Ledger, Link


class Peer:
    """A session's socket (non-blocking, as gevent's) and its client's end."""

    def __init__(self, sid: int, ledger: Ledger, max_unsent: int = 0, sndbuf: int = 0) -> None:
        self.server_end, self.client_end = socket.socketpair()
        self.server_end.setblocking(False)
        self.client_end.setblocking(False)
        if sndbuf:
            self.server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.link = Link(sid, self, 0, 0, fd=self.server_end.fileno(), max_unsent=max_unsent)
        ledger.attach(self.link)

    def received(self) -> bytes:
        out = b""
        while True:
            try:
                data = self.client_end.recv(1 << 20)
            except BlockingIOError:
                return out
            if not data:
                return out
            out += data

    def close(self) -> None:
        self.server_end.close()
        self.client_end.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def test_a_flush_writes_every_sessions_output_in_order(peers: list[Peer]) -> None:
    ledger = Ledger()
    a, b = Peer(1, ledger), Peer(2, ledger)
    peers += [a, b]
    for i in range(3):
        ledger.send(a.link, frame(b"a%d" % i))
    ledger.send(b.link, frame(b"b"))
    assert (a.link.unsent, b.link.unsent) == (18, 5) and a.received() == b""  # nothing before the flush
    assert ledger.flush() is None
    assert a.received() == frame(b"a0") + frame(b"a1") + frame(b"a2") and b.received() == frame(b"b")
    assert a.link.unsent == 0 and not a.link.writing
    assert ledger.flush() is None  # nothing queued: nothing written, nothing reported
    assert a.received() == b""


def test_a_full_socket_leaves_the_rest_to_the_writer(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger, sndbuf=4096)
    peers.append(p)
    big = frame(bytes(range(256)) * 4096)  # 1 MiB: more than the socket takes at once
    ledger.send(p.link, big)
    assert ledger.flush() == [(p, OUT_WAIT)]
    assert p.link.writing and 0 < p.link.unsent < len(big)
    ledger.send(p.link, frame(b"next"))
    assert ledger.flush() is None  # the writer has the output: the flush leaves it alone
    got = p.received()
    while p.link.unsent:  # as the writer does, each time the socket drains
        p.link.write()
        got += p.received()
    assert got + p.received() == big + frame(b"next")
    assert not p.link.writing


def test_output_over_the_limit_is_a_slow_reader(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger, max_unsent=10_000, sndbuf=4096)
    peers.append(p)
    for _ in range(100):
        ledger.send(p.link, frame(b"x" * 1000))
    assert ledger.flush() == [(p, OUT_SLOW)]  # the socket took some; what is left passes 10,000 bytes
    assert p.link.take_output() and p.link.unsent == 0


def test_one_large_reply_is_not_a_slow_reader_but_what_piles_up_behind_it_is(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger, max_unsent=10_000, sndbuf=4096)
    peers.append(p)
    big = frame(b"o" * 1_000_000)  # an account's `orders`, queued while nothing else waited
    ledger.send(p.link, big)
    ledger.send(p.link, frame(b"x" * 5000))  # behind it: counted, within the limit
    assert ledger.flush() == [(p, OUT_WAIT)] and p.link.unsent > 10_000
    got = p.received()
    for _ in range(3):  # the reader reads; the writer sends what the socket takes
        p.link.write()
        got += p.received()
    for _ in range(2):  # more piles up behind the reply than the limit allows
        ledger.send(p.link, frame(b"y" * 3000))
    assert ledger.flush() == [(p, OUT_SLOW)]
    assert got == (big + frame(b"x" * 5000))[: len(got)]


def test_the_exemption_ends_with_its_frame(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger, max_unsent=10_000, sndbuf=4096)
    peers.append(p)
    ledger.send(p.link, frame(b"o" * 200_000))
    ledger.send(p.link, frame(b"x" * 9000))
    assert ledger.flush() == [(p, OUT_WAIT)]
    while p.link.unsent > 9004:  # the large frame goes out, a little at a time
        p.client_end.recv(4096)
        p.link.write()
    assert 0 < p.link.unsent  # some of the frame behind it is left, and counts in full now
    ledger.send(p.link, frame(b"y" * 9500))
    assert ledger.flush() == [(p, OUT_SLOW)]


def test_a_failed_send_reports_its_errno(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger)
    peers.append(p)
    p.client_end.close()
    ledger.send(p.link, frame(b"lost"))
    report = ledger.flush()
    assert report is not None and report[0][0] is p and report[0][1] in (errno.EPIPE, errno.ECONNRESET)
    ledger.send(p.link, frame(b"again"))
    with pytest.raises(OSError):
        p.link.write()


def test_a_link_whose_socket_is_gone_drops_its_output(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger)
    peers.append(p)
    ledger.send(p.link, frame(b"queued"))
    p.link.forget_socket()
    assert p.link.unsent == 0
    ledger.send(p.link, frame(b"later"))
    assert ledger.flush() is None and p.received() == b"" and p.link.unsent == 0


def test_a_link_without_a_socket_keeps_its_output() -> None:
    ledger = Ledger()
    link = Link(1, None, 0, 0)
    ledger.attach(link)
    ledger.send(link, frame(b"one"))
    ledger.send(link, frame(b"two"))
    assert link.take_output() == frame(b"one") + frame(b"two") and link.unsent == 0
    assert link.take_output() == b""


def test_bad_arguments() -> None:
    ledger = Ledger()
    link = Link(1, None, 0, 0)
    with pytest.raises(TypeError, match="send takes"):
        ledger.send(link, "not bytes")  # type: ignore[arg-type]  # on purpose
    with pytest.raises(TypeError, match="initialised Link"):
        ledger.send(object(), b"")  # type: ignore[arg-type]  # on purpose
    for kw in ({"fd": -2}, {"max_unsent": -1}):
        with pytest.raises(ValueError, match="fd a descriptor or -1"):
            Link(1, None, 0, 0, **kw)  # type: ignore[arg-type]


def test_output_queued_behind_a_partial_send_keeps_its_order(peers: list[Peer]) -> None:
    ledger = Ledger()
    p = Peer(1, ledger, sndbuf=4096)
    peers.append(p)
    frames = [frame(b"%06d" % i * 100) for i in range(600)]  # 604 bytes each
    for f in frames[:300]:
        ledger.send(p.link, f)
    assert ledger.flush() == [(p, OUT_WAIT)]
    got = p.received()
    for f in frames[300:]:  # past the buffer's end: the sent part makes room, then it grows
        ledger.send(p.link, f)
    while p.link.unsent:
        p.link.write()
        got += p.received()
    assert got + p.received() == b"".join(frames)


def test_a_report_that_runs_out_of_memory_is_given_by_the_next_flush() -> None:
    """Whichever allocation of a flush fails, every session whose socket it
    found full is told so (OUT_WAIT) once, by that flush or the next: a
    writer never woken would leave its session's output unsent for good."""
    import _testcapi as testcapi  # CPython's own test module: a build without it fails here, not skips

    failed_at = []
    for k in range(30):
        ledger = Ledger()
        made = [Peer(i, ledger, sndbuf=4096) for i in range(1, 11)]  # the report's list grows on the way
        for p in made:
            ledger.send(p.link, frame(bytes(1 << 18)))  # more than the socket takes at once
        testcapi.set_nomemory(k, k + 1)  # the k-th allocation from here fails, no other
        try:
            first = ledger.flush()
        except MemoryError:
            first = None
            failed_at.append(k)
        finally:
            testcapi.remove_mem_hooks()
        told = (first or []) + (ledger.flush() or [])
        assert sorted(told, key=lambda t: t[0].link.sid) == [(p, OUT_WAIT) for p in made], (k, told)
        assert all(p.link.writing for p in made)
        for p in made:
            p.close()
    assert len(failed_at) >= 2, f"allocations failed at {failed_at}: the report was never cut short halfway"

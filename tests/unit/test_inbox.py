"""The Inbox (csrc/binding/inbox.c): a session's received bytes, split into
the protocol's frames, fed by hand or read from a real socket."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import orjson
import pytest

from pyengine._server import Inbox
from pyengine.server.protocol import MAX_FRAME, FrameError, encode


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def inbox(max_frame: int = MAX_FRAME) -> Inbox:
    return Inbox(max_frame, FrameError)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_frames_split_at_any_byte_boundary() -> None:
    bodies = [orjson.dumps({"type": "ping", "req_id": 1}), orjson.dumps({"type": "ping", "req_id": 2}),
              orjson.dumps({"a": "b" * 300})]
    data = b"".join(frame(b) for b in bodies)
    for cut in range(len(data) + 1):
        r = inbox()
        r.feed(data[:cut])
        got = r.frames()
        r.feed(data[cut:])
        assert got + r.frames() == bodies
        assert r.held == 0
        r.close()


def test_framing_errors() -> None:
    r = inbox()
    r.feed(struct.pack(">I", 0))
    with pytest.raises(FrameError) as info:
        r.frames()
    assert info.value.code == "empty_frame" and str(info.value) == "a frame of length 0"
    r = inbox(max_frame=100)
    r.feed(struct.pack(">I", 101))  # refused from the header alone
    with pytest.raises(FrameError) as info:
        r.frames()
    assert info.value.code == "frame_too_large"
    assert str(info.value) == "a frame of 101 bytes is over the limit of 100"
    r = inbox()
    r.feed(struct.pack(">I", 10) + b"abc")
    assert r.frames() == [] and r.held == 7
    with pytest.raises(FrameError) as info:
        r.close()
    assert info.value.code == "truncated_frame" and str(info.value) == "the stream ended 7 bytes into a frame"


def test_the_frames_before_a_broken_header_come_first() -> None:
    r = inbox(max_frame=100)
    r.feed(frame(b"one") + frame(b"two") + struct.pack(">I", 101) + b"x" * 101)
    assert r.frames() == [b"one", b"two"]
    for _ in range(2):  # raised, and raised again: the stream stays broken
        with pytest.raises(FrameError) as info:
            r.frames()
        assert info.value.code == "frame_too_large"
    with pytest.raises(FrameError) as info:
        r.close()  # what is left is the broken header, not a truncated frame
    assert info.value.code == "frame_too_large"


def test_encode_round_trip() -> None:
    msg = {"type": "ack", "req_id": "x", "order_id": 2**63 - 1, "price": None}
    r = inbox()
    r.feed(encode(msg))
    assert r.frames() == [orjson.dumps(msg)]


def test_read_takes_what_the_socket_has(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r = inbox()
    with pytest.raises(BlockingIOError):
        r.read(b.fileno())
    data = frame(b"first") + frame(b"second")
    a.sendall(data[:7])
    assert r.read(b) == 7  # a socket, or its file descriptor
    assert r.frames() == [] and r.held == 7
    a.sendall(data[7:])
    assert r.read(b.fileno()) == len(data) - 7
    assert r.frames() == [b"first", b"second"] and r.held == 0
    a.close()
    assert r.read(b.fileno()) == 0  # the peer closed its side
    r.close()


def test_read_brings_in_a_frame_larger_than_one_read(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    limit = 300_000
    body = bytes(range(256)) * (limit // 256)
    r = inbox(max_frame=limit)
    a.setblocking(False)
    data, sent, got = frame(body) + frame(b"next"), 0, []
    while not got or len(got) < 2:
        if sent < len(data):
            try:
                sent += a.send(data[sent : sent + 100_000])
            except BlockingIOError:
                pass
        try:
            r.read(b.fileno())
        except BlockingIOError:
            continue
        got += r.frames()
    assert got == [body, b"next"] and r.held == 0


def test_read_of_a_closed_descriptor_raises_oserror() -> None:
    a, b = socket.socketpair()
    fd = b.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError):
        inbox().read(fd)


def test_a_header_reserves_nothing_for_its_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r = inbox(max_frame=16 << 20)
    a.sendall(struct.pack(">I", 16 << 20) + b"x")  # announces 16 MiB, sends one byte
    assert r.read(b.fileno()) == 5
    assert r.held == 5 and r.frames() == []


def test_an_inbox_needs_a_limit_and_an_exception_class() -> None:
    for bad in (0, 2**32, 2**64 + 100):  # not cut to fewer bits
        with pytest.raises((ValueError, OverflowError)):
            Inbox(bad, FrameError)
    with pytest.raises(ValueError, match="max_frame"):
        Inbox(0, FrameError)
    with pytest.raises(ValueError, match="exception class"):
        Inbox(100, print)  # type: ignore[arg-type]  # on purpose
    r = inbox()
    with pytest.raises(TypeError, match="initialised once"):
        r.__init__(100, FrameError)  # type: ignore[misc]  # a second __init__ is the point

"""Framing and request validation of the wire protocol (no server needed)."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine.server.protocol import (
    Cancel,
    FrameError,
    FrameReader,
    Login,
    Modify,
    NewOrder,
    Ping,
    RequestError,
    encode,
    parse,
)


def frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


def test_frames_split_at_any_byte_boundary() -> None:
    data = frame({"type": "ping", "req_id": 1}) + frame({"type": "ping", "req_id": 2}) + frame({"a": "b" * 300})
    for cut in range(len(data) + 1):
        r = FrameReader()
        frames = r.feed(data[:cut]) + r.feed(data[cut:])
        assert [orjson.loads(f) for f in frames] == [{"type": "ping", "req_id": 1}, {"type": "ping", "req_id": 2}, {"a": "b" * 300}]
        r.close()


def test_framing_errors() -> None:
    with pytest.raises(FrameError) as info:
        FrameReader().feed(struct.pack(">I", 0))
    assert info.value.code == "empty_frame"
    with pytest.raises(FrameError) as info:
        FrameReader(max_frame=100).feed(struct.pack(">I", 101))  # refused from the header alone
    assert info.value.code == "frame_too_large"
    r = FrameReader()
    r.feed(struct.pack(">I", 10) + b"abc")
    with pytest.raises(FrameError) as info:
        r.close()
    assert info.value.code == "truncated_frame"


def test_encode_round_trip() -> None:
    msg = {"type": "ack", "req_id": "x", "order_id": 2**63 - 1, "price": None}
    data = encode(msg)
    assert FrameReader().feed(data) == [orjson.dumps(msg)]


def test_parse_requests() -> None:
    assert parse(orjson.dumps({"type": "ping"})) == Ping(None)
    assert parse(orjson.dumps({"type": "login", "req_id": 3, "account": 7})) == Login(3, 7, None, True)
    assert parse(orjson.dumps({"type": "new_order", "req_id": "a", "symbol": "X", "side": "buy", "qty": 5, "price": 10})) == NewOrder(
        "a", "X", "buy", 5, 10, "limit", "gtc", False, "none", None
    )
    market = parse(orjson.dumps({"type": "new_order", "symbol": "X", "side": "sell", "qty": 5, "order_type": "market"}))
    assert (market.tif, market.price) == ("ioc", None)
    assert parse(orjson.dumps({"type": "cancel", "client_order_id": "c"})) == Cancel(None, None, "c")
    assert parse(orjson.dumps({"type": "modify", "order_id": 4, "qty": 0})) == Modify(None, 4, None, 0, None)
    assert parse(orjson.dumps({"type": "modify", "client_order_id": "c", "price": 9})) == Modify(None, None, "c", None, 9)


@pytest.mark.parametrize(
    "msg, code",
    [
        (b"nope", "bad_json"),
        (b"3", "bad_message"),
        (orjson.dumps({"type": 5}), "unknown_type"),
        (orjson.dumps({"type": "login"}), "missing_field"),
        (orjson.dumps({"type": "login", "account": True}), "bad_field"),
        (orjson.dumps({"type": "login", "account": 2**32}), "bad_field"),
        (orjson.dumps({"type": "new_order", "symbol": "X", "qty": 1, "price": 1}), "missing_field"),
        (orjson.dumps({"type": "new_order", "symbol": "X", "side": ["buy"], "qty": 1, "price": 1}), "bad_field"),
        (orjson.dumps({"type": "new_order", "symbol": "X", "side": "buy", "qty": 1}), "bad_field"),
        (orjson.dumps({"type": "new_order", "symbol": "X", "side": "buy", "qty": 1, "price": 1, "tif": "fok", "post_only": True}), "bad_field"),
        (orjson.dumps({"type": "cancel", "order_id": 1, "client_order_id": "a"}), "bad_field"),
        (orjson.dumps({"type": "cancel", "order_id": 0}), "bad_field"),
        (orjson.dumps({"type": "modify", "order_id": 1}), "missing_field"),
        (orjson.dumps({"type": "modify", "order_id": 1, "qty": "1"}), "bad_field"),
        (orjson.dumps({"type": "mass_cancel", "symbol": 3}), "bad_field"),
        (orjson.dumps({"type": "ping", "req_id": 1.5}), "bad_field"),
    ],
)
def test_parse_errors(msg: bytes, code: str) -> None:
    with pytest.raises(RequestError) as info:
        parse(msg)
    assert info.value.code == code
    assert str(info.value)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_a_request_error(data: bytes) -> None:
    try:
        parse(data)
    except RequestError as exc:
        assert exc.code


@given(st.dictionaries(st.sampled_from(["type", "req_id", "symbol", "side", "qty", "price", "order_id",
                                        "client_order_id", "account", "tif", "order_type", "post_only", "stp"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=20),
                                 st.sampled_from(["new_order", "cancel", "modify", "login", "buy", "sell", "gtc"]),
                                 st.lists(st.integers(), max_size=2))))
def test_any_message_parses_or_gives_a_request_error(msg: dict) -> None:
    try:
        body = orjson.dumps(msg)
    except TypeError:
        return  # not JSON (an integer over 64 bits)
    try:
        parse(body)
    except RequestError as exc:
        assert exc.code in {"bad_json", "bad_message", "unknown_type", "missing_field", "bad_field"}

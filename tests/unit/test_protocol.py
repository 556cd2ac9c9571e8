"""Request validation of the wire protocol (no server needed); framing: test_inbox.py."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine.server.protocol import (
    Cancel,
    Login,
    Modify,
    NewOrder,
    Ping,
    RequestError,
    parse,
)


def frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return struct.pack(">I", len(body)) + body


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


@pytest.mark.parametrize("literal", [b"18446744073709551616", b"-9223372036854775809", b"1e300"])
def test_an_integer_past_64_bits_is_out_of_range(literal: bytes) -> None:
    # The decoder gives such a literal as a float; the error still says what is wrong.
    with pytest.raises(RequestError) as info:
        parse(b'{"type": "cancel", "order_id": ' + literal + b"}")
    assert (info.value.code, str(info.value)) == ("bad_field", "order_id is out of range [1, 9223372036854775807]")
    with pytest.raises(RequestError) as info:
        parse(b'{"type": "ping", "req_id": ' + literal + b"}")
    assert (info.value.code, str(info.value)) == ("bad_field", "req_id must be a 64-bit integer or a string")

@pytest.mark.parametrize(("literal", "message"), [
    (b"-1", "seconds=-1 is out of range [0, 86400]"),
    (b"1000000", "seconds=1000000 is out of range [0, 86400]"),
    (b"86400.5", "seconds=86400.5 is out of range [0, 86400]"),
    (b"1e300", "seconds=1e+300 is out of range [0, 86400]"),
    (b'"5"', "seconds must be a number in [0, 86400], not '5'"),
    (b"true", "seconds must be a number in [0, 86400], not a boolean"),
])
def test_a_dead_man_switch_out_of_range_is_told_apart_from_one_of_another_type(literal: bytes,
                                                                              message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse(b'{"type": "cancel_all_after", "seconds": ' + literal + b"}")
    assert (info.value.code, str(info.value)) == ("bad_field", message)



_BAD_IDS = [({}, "missing_field"), ({"order_id": 1, "client_order_id": "a"}, "bad_field"),
            ({"order_id": 0}, "bad_field"), ({"order_id": 2**63}, "bad_field"), ({"order_id": "1"}, "bad_field"),
            ({"client_order_id": "x" * 17}, "bad_field"), ({"client_order_id": ""}, "bad_field"),
            ({"client_order_id": "\u00e9"}, "bad_field"), ({"client_order_id": 7}, "bad_field")]


def test_every_request_naming_an_order_takes_the_same_ids() -> None:
    """docs/protocol.md, cancel: exactly one id, order_id 1 to 2**63 - 1, a
    client order id 1 to 16 printable ASCII characters; the same answers."""
    answers: dict[str, list[tuple[str, str]]] = {}
    for kind in ("cancel", "modify", "order_status"):
        extra = {"qty": 1} if kind == "modify" else {}
        for fields, code in _BAD_IDS:
            with pytest.raises(RequestError) as info:
                parse(orjson.dumps({"type": kind, **fields, **extra}))
            answers.setdefault(kind, []).append((info.value.code, str(info.value)))
            assert info.value.code == code, (kind, fields)
        for fields in ({"order_id": 2**63 - 1}, {"client_order_id": "a"}):
            parse(orjson.dumps({"type": kind, **fields, **extra}))
    assert answers["cancel"] == answers["modify"] == answers["order_status"]


# One message of each type, each with every field it may carry.
_FULL_MESSAGES = [
    {"type": "login", "req_id": 1, "account": 7, "secret": "s", "cancel_on_disconnect": False},
    {"type": "new_order", "req_id": 2, "symbol": "X", "side": "buy", "qty": 5, "price": 10,
     "order_type": "limit", "tif": "ioc", "post_only": False, "stp": "cancel_both", "client_order_id": "c"},
    {"type": "cancel", "req_id": 3, "order_id": 4, "client_order_id": "c"},
    {"type": "modify", "req_id": 4, "order_id": 4, "client_order_id": "c", "qty": 3, "price": 9},
    {"type": "mass_cancel", "req_id": 5, "symbol": "X", "account": 8, "all_accounts": False},
    {"type": "subscribe", "req_id": 6, "symbol": "X"},
    {"type": "unsubscribe", "req_id": 7, "symbol": "X"},
    {"type": "ping", "req_id": 8},
    {"type": "snapshot", "req_id": 9},
    {"type": "halt", "req_id": 10, "symbol": "X"},
    {"type": "resume", "req_id": 11, "symbol": "X"},
]


def _outcome(msg: dict) -> object:
    try:
        return parse(orjson.dumps(msg))
    except RequestError as exc:
        return (exc.code, str(exc), exc.req_id)


@pytest.mark.parametrize(
    ("msg", "key"),
    [(m, k) for m in _FULL_MESSAGES for k in m if k != "type"]
    + [(m, k) for m in _FULL_MESSAGES for k in ("qty", "price", "order_id", "symbol", "side") if k not in m],
    ids=lambda v: v if isinstance(v, str) else v["type"],
)
def test_a_null_field_is_a_missing_field(msg: dict, key: str) -> None:
    """docs/protocol.md: null counts as absent, for every field of every
    message: the same request, or the same error (missing_field if required)."""
    for rest in (msg, {k: v for k, v in msg.items() if k not in ("client_order_id", "price")}):
        absent = {k: v for k, v in rest.items() if k != key}
        assert _outcome({**absent, key: None}) == _outcome(absent)
    required = {"new_order": ("symbol", "side", "qty"), "login": ("account",)}
    if key in required.get(msg["type"], ()):
        assert _outcome({**msg, key: None})[0] == "missing_field"


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

"""The server's Intake (csrc/binding/intake.c) against a model of the
per-order requests: for any frame, through a real server's Intake and a real
session (over a socketpair), the commands queued, the pending requests, the
in-flight and open counts and the replies on the wire are the model's.

The model is written here from the protocol's rules (a request's form, then
the server's rules: rate, login, the open-order limit, ownership), as
testing/reference.py is the engine's model. An instrument's order limits are
the engine's (SET_LIMITS): two instruments have them, and the Intake leaves
their orders to the engine."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine._ffi import ffi, lib
from pyengine._server import CommandBuffer, Inbox, Intake, Ledger
from pyengine.server.app import Server
from pyengine.server.codes import NO_COID, ORDER_TYPE_CODES, SIDE_CODES, STP_CODES, TIF_CODES
from pyengine.server.config import InstrumentConfig, LimitsConfig, ServerConfig
from pyengine.server.protocol import MAX_FRAME, Cancel, FrameError, Modify, NewOrder, Ping, RequestError, encode, parse
from pyengine.server.session import Session

from .conftest import add_session, run_python

INSTRUMENTS = (
    InstrumentConfig("ESZ6", 25, 1),
    InstrumentConfig("NQZ6", 25, 1, max_qty=100),
    InstrumentConfig("CLF7", 1, 1, max_notional=1_000_000),
)
ACCOUNT = 7
_WORTH = " (or their worth: a request that goes through many orders or levels counts as more)"
FIELDS = ("type", "side", "order_type", "tif", "stp", "flags", "instrument", "account", "order_id", "price", "qty")


class World:
    """A real server (not started) and one real session of it; another
    session of the same account owns order 901, the session order 900."""

    def __init__(self, *, account: int | None = ACCOUNT, admin: bool = False, rate: float = 0, burst: int = 1,
                 max_open: int = 3, capacity: int = 64, turn_after: float = 0.0) -> None:
        self.turn_after = turn_after
        config = ServerConfig(port=0, in_capacity=64, out_capacity=64, instruments=INSTRUMENTS, stats_interval=0,
                              limits=LimitsConfig(max_open_orders=max_open, rate=rate, burst=burst))
        self.server = Server(config)
        self.server.commands = type(self.server.commands)(self.server.engine, self.server.ledger, capacity)
        self.server.intake = self._intake(max_open)
        self.socks = socket.socketpair()
        self.peer_end = self.socks[1]
        self.peer_end.setblocking(False)
        self.session = self._session(1, self.socks[0])
        self.other_socks = socket.socketpair()
        self.other = other = self._session(2, self.other_socks[0])
        if account is not None:
            self.session.link.login(account, admin)
            other.link.login(account, False)
        self.ledger = self.server.ledger
        self.ledger.count_open(ACCOUNT, 1)
        self.ledger.own(self.session.link, 900, 0, None)
        self.ledger.own(other.link, 901, 0, None)
        self.replies: list[dict[str, Any]] = []
        self._replies = Inbox(MAX_FRAME, FrameError)

    def _intake(self, max_open: int) -> Any:
        s = self.server
        return Intake(ledger=s.ledger, commands=s.commands.buffer, events=s.requests,
                      instruments=s.engine.instrument_ids, max_open=max_open, loads=orjson.loads,
                      turn_after=self.turn_after)

    def _session(self, sid: int, sock: socket.socket) -> Session:
        return add_session(self.server, sock, sid)

    def take(self, frame: bytes) -> bool:
        """As the session's reader does it; False if the command buffer is full."""
        left = self.server.intake.take(self.session.link, frame)
        if left is False:
            return False
        if left is not None:
            assert isinstance(left, tuple)
            self.server.request(self.session, left[0])
        return True

    def drain(self, inbox: Inbox) -> bool:
        """As the session's reader does it, the frames in `inbox`; False if
        the command buffer is full."""
        while (left := self.server.intake.drain(self.session.link, inbox)) is not None:
            if left is False:
                return False
            if left is True:  # it ran turn_after: the reader lets the loop turn, then drains on
                continue
            assert isinstance(left, tuple)
            self.server.request(self.session, left[0])
        return True

    def close(self) -> None:
        self.server.stop()
        for s in (*self.socks, *self.other_socks):
            s.close()

    def commands(self) -> list[dict[str, Any]]:
        buf = self.server.commands.buffer
        recs = ffi.from_buffer("struct runner_cmd[]", buf)
        out = []
        for r in recs[0 : buf.queued]:
            fields = {name: getattr(r.cmd, name) for name in FIELDS}
            fields["coid"] = bytes(ffi.buffer(r.cmd.coid))
            fields["tag"] = r.tag
            out.append(fields)
        return out

    def wire(self) -> list[dict[str, Any]]:
        """The replies the client has received so far."""
        self.server.flush_sessions()
        while True:
            try:
                data = self.peer_end.recv(1 << 16)
            except BlockingIOError:
                break
            self._replies.feed(data)
            self.replies += [orjson.loads(f) for f in self._replies.frames()]
        return self.replies

    def state(self) -> tuple[Any, ...]:
        return (self.commands(), self.session.link.pending(), self.ledger.in_flight(ACCOUNT),
                self.ledger.open(ACCOUNT), self.wire())


# ---- the model of a per-order request's form (docs/protocol.md) -----------------

INT64 = (-(2**63), 2**63 - 1)


def _json_type(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "an object"}.get(type(v), "null")


def _shown(v: Any) -> str:
    return repr(v[:40]) + ("..." if len(v) > 40 else "") if type(v) is str else _json_type(v)


class Fault(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


def _int(msg: dict[str, Any], key: str, lo: int = INT64[0], required: bool = True) -> int | None:
    v = msg.get(key)
    if v is None:
        if required:
            raise Fault("missing_field", f"{key} is required")
        return None
    if type(v) is float and abs(v) >= 2**63:  # an integer literal past 64 bits, as the decoder gives it
        raise Fault("bad_field", f"{key} is out of range [{lo}, {INT64[1]}]")
    if type(v) is not int:
        raise Fault("bad_field", f"{key} must be an integer, not {_json_type(v)}")
    if not lo <= v <= INT64[1]:
        raise Fault("bad_field", f"{key}={v} is out of range [{lo}, {INT64[1]}]")
    return v


def _choice(msg: dict[str, Any], key: str, choices: dict[str, int], default: str | None) -> str:
    v = msg.get(key)
    if v is None:
        v = default
    if v is None:
        raise Fault("missing_field", f"{key} is required")
    if type(v) is not str or v not in choices:
        raise Fault("bad_field", f"{key} must be one of {sorted(choices)}, not {_shown(v)}")
    return v


def _coid(msg: dict[str, Any]) -> str | None:
    v = msg.get("client_order_id")
    if v is None:
        return None
    if type(v) is not str:
        raise Fault("bad_field", f"client_order_id must be a string, not {_json_type(v)}")
    if not 1 <= len(v) <= 16 or not all(" " <= c <= "~" for c in v):
        raise Fault("bad_field", f"client_order_id must be 1 to 16 printable ASCII characters, not {_shown(v)}")
    return v


def _target(msg: dict[str, Any]) -> tuple[int | None, str | None]:
    order_id, coid = _int(msg, "order_id", 1, required=False), _coid(msg)
    if order_id is None and coid is None:
        raise Fault("missing_field", "order_id or client_order_id is required")
    if order_id is not None and coid is not None:
        raise Fault("bad_field", "give one of order_id and client_order_id, not both")
    return order_id, coid


def model_new_order(msg: dict[str, Any], req_id: Any) -> NewOrder:
    order_type = _choice(msg, "order_type", ORDER_TYPE_CODES, "limit")
    tif = _choice(msg, "tif", TIF_CODES, "ioc" if order_type == "market" else "gtc")
    post_only = msg.get("post_only")
    if post_only is None:
        post_only = False
    elif type(post_only) is not bool:
        raise Fault("bad_field", f"post_only must be true or false, not {_json_type(post_only)}")
    price = _int(msg, "price", required=False)
    if order_type == "market":
        if price is not None:
            raise Fault("bad_field", "a market order has no price (pass price=None)")
        if tif == "gtc":
            raise Fault("bad_field", "a market order cannot be gtc: use tif='ioc' or 'fok'")
        if post_only:
            raise Fault("bad_field", "post_only needs a limit order")
    elif price is None:
        raise Fault("bad_field", "a limit order needs a price")
    elif post_only and tif != "gtc":
        raise Fault("bad_field", "post_only needs tif='gtc'")
    symbol = msg.get("symbol")
    if symbol is None:
        raise Fault("missing_field", "symbol is required")
    if type(symbol) is not str:
        raise Fault("bad_field", f"symbol must be a string, not {_json_type(symbol)}")
    side = _choice(msg, "side", SIDE_CODES, None)
    qty = _int(msg, "qty")
    assert qty is not None
    return NewOrder(req_id, symbol, side, qty, price, order_type, tif, post_only, _choice(msg, "stp", STP_CODES, "none"),
                    _coid(msg))


def model_modify(msg: dict[str, Any], req_id: Any) -> Modify:
    order_id, coid = _target(msg)
    qty, price = _int(msg, "qty", required=False), _int(msg, "price", required=False)
    if qty is None and price is None:
        raise Fault("missing_field", "modify needs qty, price or both")
    return Modify(req_id, order_id, coid, qty, price)


PER_ORDER: dict[str, Any] = {"new_order": model_new_order, "cancel": lambda m, r: Cancel(r, *_target(m)),
                             "modify": model_modify}


def model_parse(frame: bytes) -> Any:
    """A request as the model reads it: the per-order ones by the rules
    above, any other by protocol.parse (Python's, not under test here)."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        msg = None
    if type(msg) is dict and type(msg.get("type")) is str and msg["type"] in PER_ORDER:
        req_id = msg.get("req_id")
        if req_id is None or type(req_id) in (int, str):
            try:
                return PER_ORDER[msg["type"]](msg, req_id)
            except Fault as f:
                raise RequestError(f.code, f.message, req_id) from None
    return parse(frame)


class Model:
    """The per-order requests as the protocol and the server's rules have them."""

    def __init__(self, *, account: int | None = ACCOUNT, admin: bool = False, rate: float = 0, burst: int = 1,
                 max_open: int = 3) -> None:
        self.account, self.admin, self.rate, self.tokens, self.max_open = account, admin, rate, burst, max_open
        self.next = 0
        self.pending: dict[int, tuple[str, Any, Any]] = {}
        self.in_flight, self.open = 0, 1
        self.commands: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.owners = {900: "mine", 901: "other"}
        self.ids = {inst.symbol: i for i, inst in enumerate(INSTRUMENTS)}

    def state(self) -> tuple[Any, ...]:
        return self.commands, self.pending, self.in_flight, self.open, self.replies

    def over_rate(self, req_id: Any) -> bool:
        """Every message spends a token, a request or not: True (answered) when none is left."""
        if not self.rate:
            return False
        if self.tokens < 1:  # the bucket refills at `rate`: nothing within a test at the rates used here
            self.error("rate_limited", f"over {self.rate:g} messages a second{_WORTH}", req_id)
            return True
        self.tokens -= 1
        return False

    def error(self, code: str, message: str, req_id: Any = None) -> None:
        self.replies.append({"type": "error", "req_id": req_id, "code": code, "message": message})

    def reject(self, req_id: Any, code: str, message: str, coid: str | None, order_id: int | None) -> None:
        self.replies.append({"type": "reject", "req_id": req_id, "code": code, "message": message,
                             "client_order_id": coid, "order_id": order_id, "seq": None})

    def take(self, frame: bytes) -> None:
        try:
            req = model_parse(frame)
        except RequestError as exc:
            if self.over_rate(exc.req_id):
                return
            self.error(exc.code, str(exc), exc.req_id)
            return
        if self.over_rate(req.req_id):
            return
        if type(req) is Ping:
            self.replies.append({"type": "pong", "req_id": req.req_id})
            return
        if self.account is None:
            self.error("not_logged_in", "log in first", req.req_id)
            return
        if type(req) is NewOrder:
            self.new_order(req)
        elif isinstance(req, (Cancel, Modify)):
            self.cancel_or_modify(req)

    def queue(self, kind: str, req_id: Any, extra: Any, **fields: Any) -> None:
        self.next += 1
        self.pending[self.next] = (kind, req_id, extra)
        command: dict[str, Any] = {name: 0 for name in FIELDS}
        command.update(account=self.account, coid=NO_COID, tag=1 << 32 | self.next)
        command.update(fields)
        self.commands.append(command)

    def new_order(self, req: NewOrder) -> None:
        inst = self.ids.get(req.symbol, 2**32 - 1)
        rests = req.order_type == "limit" and req.tif == "gtc"
        if rests and self.max_open and self.open + self.in_flight >= self.max_open:
            return self.reject(req.req_id, "max_open_orders_exceeded",
                               f"account {self.account} has {self.open} open and {self.in_flight} unanswered new "
                               f"orders: at most {self.max_open} may rest",
                               req.client_order_id, None)
        self.in_flight += 1
        self.queue("new_order", req.req_id, req.client_order_id, type=lib.ENG_CMD_NEW, side=SIDE_CODES[req.side],
                   order_type=ORDER_TYPE_CODES[req.order_type], tif=TIF_CODES[req.tif], stp=STP_CODES[req.stp],
                   flags=lib.ENG_CMD_F_POST_ONLY if req.post_only else 0, instrument=inst,
                   price=req.price or 0, qty=req.qty, coid=coid_bytes(req.client_order_id))

    def cancel_or_modify(self, req: Cancel | Modify) -> None:
        if req.order_id is not None and self.owners.get(req.order_id, "mine") != "mine" and not self.admin:
            return self.reject(req.req_id, "not_owner", "order belongs to another session", None, req.order_id)
        flags = lib.ENG_CMD_F_ANY_ACCOUNT if self.admin else 0
        coid = coid_bytes(req.client_order_id) if req.order_id is None else NO_COID
        if type(req) is Cancel:
            self.queue("cancel", req.req_id, req.client_order_id, type=lib.ENG_CMD_CANCEL, flags=flags,
                       order_id=req.order_id or 0, coid=coid)
            return
        assert type(req) is Modify
        flags |= (lib.ENG_CMD_F_KEEP_PRICE if req.price is None else 0) | (
            lib.ENG_CMD_F_KEEP_QTY if req.qty is None else 0)
        self.queue("modify", req.req_id, req.client_order_id, type=lib.ENG_CMD_MODIFY, flags=flags,
                   order_id=req.order_id or 0, price=req.price or 0, qty=req.qty or 0, coid=coid)


def coid_bytes(coid: str | None) -> bytes:
    return NO_COID if coid is None else coid.encode().ljust(len(NO_COID), b"\0")


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        w.close()


GOOD = {
    "type": st.sampled_from(["new_order", "cancel", "ping", "modify"]),
    "req_id": st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=6)),
    "symbol": st.sampled_from(["ESZ6", "NQZ6", "CLF7", "ZZZ"]),
    "side": st.sampled_from(["buy", "sell"]),
    "qty": st.integers(-5, 300),
    "price": st.one_of(st.integers(1, 50_000), st.integers(-(2**63), 2**63 - 1)),
    "order_type": st.sampled_from(["limit", "market"]),
    "tif": st.sampled_from(["gtc", "ioc", "fok"]),
    "post_only": st.booleans(),
    "stp": st.sampled_from(["none", "cancel_newest", "cancel_oldest", "cancel_both"]),
    "client_order_id": st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                                         max_size=16),
                                 st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x80), max_size=18)),
    "order_id": st.sampled_from([900, 901, 902, 0, -1, 2**63]),
}
JUNK = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=4),
                 st.integers(-(2**63), 2**64 - 1), st.lists(st.integers(0, 9), max_size=2))


# The keys each request needs; others are optional (or another request's).
NEEDED = {"new_order": {"symbol", "side", "qty", "price"}, "cancel": {"order_id"}, "modify": {"order_id", "qty"}}


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    """Mostly well-formed requests, with a field now and then missing, of
    the wrong type or out of range, or one that does not belong."""
    kind = draw(GOOD["type"])
    clean = draw(st.booleans())  # half of them with every needed field, none of them junk
    msg: dict[str, Any] = {"type": kind if clean or draw(st.integers(0, 9)) else draw(JUNK)}
    needed = NEEDED.get(kind, set())
    for key, good in GOOD.items():
        if key == "type":
            continue
        if (clean and key in needed) or draw(st.integers(0, 9)) < (9 if key in needed else 3):
            msg[key] = draw(good) if clean or draw(st.integers(0, 7)) else draw(JUNK)
    return msg


frames = st.one_of(st.builds(orjson.dumps, messages()), st.sampled_from([b"{", b"[1]", b'"x"', b"nul"]))


@settings(max_examples=600, deadline=None)
@given(st.lists(frames, min_size=1, max_size=8), st.sampled_from([None, ACCOUNT, ACCOUNT]), st.booleans())
def test_the_intake_is_the_model(frames: list[bytes], account: int | None, admin: bool) -> None:
    # max_open 6: 1 open and up to 8 new orders in flight reach it at times.
    w, m = World(account=account, admin=admin, max_open=6), Model(account=account, admin=admin, max_open=6)
    try:
        for frame in frames:
            assert w.take(frame)
            m.take(frame)
            assert w.state() == m.state(), frame
    finally:
        w.close()


def test_an_integer_past_64_bits_is_out_of_range(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    w.take(b'{"type": "new_order", "req_id": 1, "symbol": "ESZ6", "side": "buy", "qty": 18446744073709551616, '
           b'"price": 450000}')
    w.take(b'{"type": "cancel", "req_id": 2, "order_id": -9223372036854775809}')
    w.take(b'{"type": "modify", "req_id": 3, "order_id": 900, "qty": 1e300}')
    assert [(r["req_id"], r["code"], r["message"]) for r in w.wire()] == [
        (1, "bad_field", "qty is out of range [-9223372036854775808, 9223372036854775807]"),
        (2, "bad_field", "order_id is out of range [1, 9223372036854775807]"),
        (3, "bad_field", "qty is out of range [-9223372036854775808, 9223372036854775807]")]
    assert w.commands() == []


def test_the_intake_takes_the_usual_requests(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    new = {"type": "new_order", "req_id": 1, "symbol": "ESZ6", "side": "buy", "qty": 2, "price": 450_000,
           "client_order_id": 'q"\\'}
    for msg in (new, {"type": "cancel", "req_id": "c", "order_id": 900},
                {"type": "cancel", "req_id": 2, "client_order_id": "x"},
                {"type": "new_order", "symbol": "CLF7", "side": "sell", "qty": 1, "order_type": "market"},
                {"type": "modify", "req_id": 3, "order_id": 900, "price": 450_025}):
        w.take(orjson.dumps(msg))
    assert w.session.link.pending() == {1: ("new_order", 1, 'q"\\'), 2: ("cancel", "c", None),
                                        3: ("cancel", 2, "x"), 4: ("new_order", None, None), 5: ("modify", 3, None)}
    assert len(w.commands()) == 5 and w.ledger.in_flight(ACCOUNT) == 2 and w.wire() == []
    # Refused here, with the replies Python sent before: not its order, over
    # the open-order limit (1 open + 2 in flight), not logged in.
    w.take(orjson.dumps({"type": "cancel", "order_id": 901}))
    w.take(orjson.dumps(new))
    assert [(r["type"], r["code"]) for r in w.wire()] == [("reject", "not_owner"),
                                                          ("reject", "max_open_orders_exceeded")]
    # An order that never rests is not held to the limit; it counts in flight.
    for tif in ("ioc", "fok"):
        w.take(orjson.dumps({**new, "tif": tif, "req_id": tif}))
    w.take(orjson.dumps({**new, "order_type": "market", "price": None, "req_id": "m"}))
    assert len(w.wire()) == 2 and len(w.commands()) == 8 and w.ledger.in_flight(ACCOUNT) == 5
    nobody = World(account=None)
    worlds.append(nobody)
    nobody.take(orjson.dumps(new))
    assert nobody.wire() == [{"type": "error", "req_id": 1, "code": "not_logged_in", "message": "log in first"}]
    assert len(w.commands()) == 8 and nobody.commands() == []  # nothing queued for a refusal


def test_an_order_id_no_client_was_told_of_is_not_this_sessions_to_name(worlds: list[World]) -> None:
    # Another session of the account is open: an order id beyond those routed
    # is its new order in flight (or none), which the engine would take for
    # this session's.
    w = World()
    worlds.append(w)
    w.session.link.account_shared = True
    w.ledger.known_order_id = 901
    w.take(orjson.dumps({"type": "cancel", "req_id": 1, "order_id": 902}))
    w.take(orjson.dumps({"type": "modify", "req_id": 2, "order_id": 903, "qty": 1}))
    assert [(r["type"], r["req_id"], r["code"], r["order_id"], r["seq"]) for r in w.wire()] == [
        ("reject", 1, "unknown_order", 902, None), ("reject", 2, "unknown_order", 903, None)]
    assert w.commands() == []
    w.take(orjson.dumps({"type": "cancel", "req_id": 3, "order_id": 5}))  # known, held by none: the engine's
    w.ledger.catch_up(50)  # a new leader's log not routed yet: any id may be known
    w.take(orjson.dumps({"type": "cancel", "req_id": 4, "order_id": 902}))
    w.ledger.catch_up(0)
    w.session.link.account_shared = False  # alone: no other session's order to take
    w.take(orjson.dumps({"type": "cancel", "req_id": 5, "order_id": 904}))
    assert [c["order_id"] for c in w.commands()] == [5, 902, 904] and len(w.wire()) == 2


def test_a_client_order_id_another_open_session_has_in_flight_is_its(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    w.session.link.account_shared = True
    w.other.link.tag("new_order", 7, "X")  # the other session's new order, unanswered
    w.take(orjson.dumps({"type": "cancel", "req_id": 1, "client_order_id": "X"}))
    w.session.link.tag("new_order", 8, "X")  # this one's too: the engine may take the other's
    w.take(orjson.dumps({"type": "modify", "req_id": 2, "client_order_id": "X", "qty": 1}))
    w.other.link.close()  # gone: what it had in flight is nobody's once answered
    w.take(orjson.dumps({"type": "cancel", "req_id": 3, "client_order_id": "X"}))
    assert [(r["req_id"], r["code"], r["client_order_id"]) for r in w.wire()] == [(1, "not_owner", "X"),
                                                                                  (2, "not_owner", "X")]
    assert [c["coid"].rstrip(b"\0") for c in w.commands()] == [b"X"]


class LeadingNode:
    """A cluster node of the server that leads its shard (cluster_node.py, as requests.py sees it)."""

    leading = True
    cluster = type("Cfg", (), {"node": "a1", "shard": "a"})()

    def leader_address(self) -> str:
        return "127.0.0.1:7001"

    def status(self) -> dict[str, Any]:
        return {"role": "leader"}


def test_a_node_taking_the_lead_takes_no_login_until_its_log_is_routed(worlds: list[World]) -> None:
    w = World(account=None)
    worlds.append(w)
    w.server.cluster = LeadingNode()  # type: ignore[assignment]
    w.ledger.catch_up(40)
    w.take(orjson.dumps({"type": "login", "req_id": 1, "account": ACCOUNT}))
    (refused,) = w.wire()
    assert (refused["code"], refused["leader"]) == ("not_leader", None) and "taking the lead" in refused["message"]
    w.ledger.catch_up(0)  # as the Router does once it routes the event of seq 40
    w.take(orjson.dumps({"type": "login", "req_id": 2, "account": ACCOUNT}))
    w.server.cluster = None  # the server's stop has no node to stop
    assert [(r["type"], r["role"]) for r in w.wire()[1:]] == [("logged_in", "leader")]


def test_the_intake_keeps_the_rate_limit(worlds: list[World]) -> None:
    w, m = World(rate=0.001, burst=1), Model(rate=0.001, burst=1)
    worlds.append(w)
    frame = orjson.dumps({"type": "cancel", "req_id": 5, "order_id": 900})
    for _ in range(2):  # the second: refused
        w.take(frame)
        m.take(frame)
    assert w.state() == m.state()
    assert w.wire() == [{"type": "error", "req_id": 5, "code": "rate_limited",
                         "message": "over 0.001 messages a second" + _WORTH}]


def test_every_message_spends_a_token(worlds: list[World]) -> None:
    # Not JSON, a per-order request with a bad field, and not a request at all:
    # each costs the server as a request does, and is counted alike.
    w, m = World(rate=0.001, burst=3), Model(rate=0.001, burst=3)
    worlds.append(w)
    frames = [b"{not json", orjson.dumps({"type": "cancel", "req_id": 6, "order_id": "x"}),
              orjson.dumps({"type": "cancel", "req_id": 7, "order_id": 900}),
              orjson.dumps({"type": "cancel", "req_id": 8, "order_id": "x"}), b"{not json", b"[1]"]
    for frame in frames:
        w.take(frame)
        m.take(frame)
    assert w.state() == m.state()
    assert [(r["code"], r["req_id"]) for r in w.wire()] == [
        ("bad_json", None), ("bad_field", 6), ("rate_limited", 8), ("rate_limited", None), ("rate_limited", None)]
    assert len(w.commands()) == 1  # the one well-formed cancel


def test_the_open_order_limit_is_the_intakes_and_an_instruments_the_engines(worlds: list[World]) -> None:
    w = World(max_open=3)
    worlds.append(w)
    # Over NQZ6's max_qty and over CLF7's max_notional (past int64, even):
    # queued all the same, for the engine to judge.
    for symbol, qty, price in (("NQZ6", 101, 1), ("CLF7", 2**62, 2**62), ("CLF7", 1, 1)):
        w.take(orjson.dumps({"type": "new_order", "symbol": symbol, "side": "buy", "qty": qty, "price": price}))
    assert [(r["code"], r["message"]) for r in w.wire()] == [
        ("max_open_orders_exceeded", "account 7 has 1 open and 2 unanswered new orders: at most 3 may rest"),
    ]
    assert [c["qty"] for c in w.commands()] == [101, 2**62]  # 1 open + 2 in flight: the limit


def test_an_intake_is_initialised_once(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    with pytest.raises(TypeError, match="initialised once"):
        w.server.intake.__init__(ledger=w.ledger)  # type: ignore[misc]  # a second __init__ is the point


def test_an_intake_refuses_a_ledger_or_a_command_buffer_not_initialised(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    s = w.server
    args: dict[str, Any] = dict(ledger=s.ledger, commands=s.commands.buffer, events=s.requests, instruments={},
                                max_open=0, loads=orjson.loads)
    with pytest.raises(ValueError, match="Intake: the Ledger is not initialised"):
        Intake(**dict(args, ledger=Ledger.__new__(Ledger)))
    with pytest.raises(ValueError, match="Intake: the CommandBuffer is not initialised"):
        Intake(**dict(args, commands=CommandBuffer.__new__(CommandBuffer)))


@pytest.mark.parametrize("needed", ["ledger", "commands", "events", "instruments", "max_open", "loads"])
def test_an_intake_needs_every_argument_but_turn_after(worlds: list[World], needed: str) -> None:
    w = World()
    worlds.append(w)
    s = w.server
    args: dict[str, Any] = dict(ledger=s.ledger, commands=s.commands.buffer, events=s.requests, instruments={},
                                max_open=0, loads=orjson.loads)
    Intake(**args)
    with pytest.raises(TypeError, match=f"Intake needs .*{needed}"):
        Intake(**{k: v for k, v in args.items() if k != needed})


def test_an_intake_whose_init_failed_keeps_nothing_and_may_be_initialised(worlds: list[World]) -> None:
    class Half:
        def undecodable(self, *args: Any) -> None: ...

        def refused(self, *args: Any) -> None: ...

    w = World()
    worlds.append(w)
    s = w.server
    args: dict[str, Any] = dict(ledger=s.ledger, commands=s.commands.buffer, events=s.requests, instruments={},
                                max_open=0, loads=orjson.loads)
    half = Half()
    refs = sys.getrefcount(half)
    intake = Intake.__new__(Intake)
    with pytest.raises(AttributeError, match="rejected"):
        intake.__init__(**dict(args, events=half))  # type: ignore[misc]  # an __init__ again is the point
    assert sys.getrefcount(half) == refs  # the callbacks bound before the failure are let go
    intake.__init__(**args)  # type: ignore[misc]
    assert intake.take(w.session.link, b'{"type":"cancel","order_id":900}') is None


def test_the_intake_needs_every_callback(worlds: list[World]) -> None:
    class Partial:
        def refused(self, session: Session, req_id: Any, code: str, message: str) -> None: ...

    w = World()
    worlds.append(w)
    s = w.server
    with pytest.raises(AttributeError, match="undecodable"):
        Intake(ledger=s.ledger, commands=s.commands.buffer, events=Partial(),  # type: ignore[arg-type]  # on purpose
               instruments={}, max_open=0, loads=orjson.loads)


def test_a_full_command_buffer_takes_nothing(worlds: list[World]) -> None:
    w = World(capacity=1)
    worlds.append(w)
    cancel = orjson.dumps({"type": "cancel", "order_id": 900})
    assert w.take(cancel)
    assert not w.take(cancel)  # full: the reader makes room, then hands it over again
    assert len(w.commands()) == 1 and len(w.session.link.pending()) == 1
    seen = len(w.wire())
    # What needs no command is answered at once, full or not.
    assert w.take(orjson.dumps({"type": "ping", "req_id": 7}))
    assert w.take(orjson.dumps({"type": "cancel", "req_id": 8, "order_id": "x"}))
    replies = w.wire()[seen:]
    assert [r["type"] for r in replies] == ["pong", "error"] and replies[1]["req_id"] == 8
    assert len(w.commands()) == 1


def test_every_frame_is_decoded_once(worlds: list[World], monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    worlds.append(w)
    decoded: list[bytes] = []

    def loads(frame: bytes) -> Any:
        decoded.append(frame)
        return orjson.loads(frame)

    w.server.intake = Intake(ledger=w.ledger, commands=w.server.commands.buffer, events=w.server.requests,
                             instruments=w.server.engine.instrument_ids, max_open=3, loads=loads)
    monkeypatch.setattr("pyengine.server.protocol._loads", None)  # Python never decodes a frame again
    frames = [orjson.dumps(m) for m in ({"type": "ping", "req_id": 1}, {"type": "cancel", "order_id": "x"},
                                        {"type": "cancel", "order_id": 900})]
    for f in frames:
        w.take(f)
    assert decoded == frames
    assert [r["type"] for r in w.wire()] == ["pong", "error"]
    assert encode({"type": "pong", "req_id": 1})[4:] == orjson.dumps(w.wire()[0])


def _framed(frames: list[bytes]) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=1, max_size=8), st.sampled_from([None, ACCOUNT]), st.booleans(),
       st.integers(min_value=1, max_value=64), st.sampled_from([0.0, 1e-9]))
def test_draining_an_inbox_is_taking_its_frames_one_by_one(frames: list[bytes], account: int | None, admin: bool,
                                                           chunk: int, turn_after: float) -> None:
    # The bytes arrive in chunks of `chunk`; each chunk is drained at once
    # (with a turn_after of 1 ns, a frame a drain).
    one_by_one = World(account=account, admin=admin, max_open=6)
    drained = World(account=account, admin=admin, max_open=6, turn_after=turn_after)
    try:
        for frame in frames:
            assert one_by_one.take(frame)
        inbox = Inbox(MAX_FRAME, FrameError)
        data = _framed(frames)
        for at in range(0, len(data), chunk):
            inbox.feed(data[at : at + chunk])
            assert drained.drain(inbox)
        assert inbox.held == 0
        assert drained.state() == one_by_one.state()
    finally:
        one_by_one.close()
        drained.close()


def test_draining_stops_at_a_request_for_python_and_at_a_full_command_buffer(worlds: list[World]) -> None:
    w = World(capacity=2)
    worlds.append(w)
    cancel = orjson.dumps({"type": "cancel", "order_id": 900})
    inbox = Inbox(MAX_FRAME, FrameError)
    inbox.feed(_framed([cancel, orjson.dumps({"type": "ping", "req_id": 1}), cancel, cancel, cancel]))
    # The first cancel is queued; the ping is Python's and stops the drain
    # before the cancels behind it are looked at.
    left = w.server.intake.drain(w.session.link, inbox)
    assert left == ({"type": "ping", "req_id": 1},)  # decoded, for Python
    assert len(w.commands()) == 1
    # The second cancel fills the buffer; the third waits in the inbox, whole.
    assert w.server.intake.drain(w.session.link, inbox) is False
    assert len(w.commands()) == 2 and inbox.held == 2 * (4 + len(cancel))
    assert w.server.intake.drain(w.session.link, inbox) is False  # still no room: still nothing taken
    assert inbox.held == 2 * (4 + len(cancel)) and len(w.session.link.pending()) == 2


def test_a_drain_that_has_held_the_loop_for_turn_after_leaves_the_rest_for_the_next(worlds: list[World]) -> None:
    """Frames each answered through Python (malformed ones, say) would hold
    the loop, and every other session, as long as a read's worth of them
    takes: a drain that has run `turn_after` returns True, the frames left
    still in the inbox, and the next drain goes on from there. Every drain
    carries out one frame at least."""
    w = World(turn_after=1e-12)  # under a nanosecond: a bound still
    worlds.append(w)
    cancel = orjson.dumps({"type": "cancel", "order_id": 900})
    inbox = Inbox(MAX_FRAME, FrameError)
    inbox.feed(_framed([b"x", b"y", cancel]))
    assert w.server.intake.drain(w.session.link, inbox) is True
    assert [r["type"] for r in w.wire()] == ["error"] and inbox.held == len(_framed([b"y", cancel]))
    assert w.server.intake.drain(w.session.link, inbox) is True
    assert len(w.wire()) == 2 and not w.commands()
    assert w.server.intake.drain(w.session.link, inbox) is None
    assert inbox.held == 0 and len(w.commands()) == 1 and len(w.wire()) == 2


@pytest.mark.parametrize("turn_after", [-1.0, float("nan"), float("inf"), 61.0])
def test_an_intake_takes_a_turn_after_of_0_to_60_seconds(worlds: list[World], turn_after: float) -> None:
    w = World()
    worlds.append(w)
    with pytest.raises(ValueError, match="turn_after"):
        Intake(ledger=w.ledger, commands=w.server.commands.buffer, events=w.server.requests,
               instruments=w.server.engine.instrument_ids, max_open=3, loads=orjson.loads, turn_after=turn_after)


def test_a_key_given_twice_counts_with_its_last_value(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    assert w.take(b'{"type": "cancel", "order_id": 901, "order_id": 900}')
    assert [c["order_id"] for c in w.commands()] == [900]  # the session's own order: 901 is another session's


def test_draining_carries_out_the_frames_before_a_broken_header(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    inbox = Inbox(MAX_FRAME, FrameError)
    inbox.feed(_framed([orjson.dumps({"type": "cancel", "order_id": 900})]) + (0).to_bytes(4, "big"))
    with pytest.raises(FrameError) as info:
        w.drain(inbox)
    assert info.value.code == "empty_frame"
    assert len(w.commands()) == 1  # the good frame before it went through


# A dict key that hashes as the field "side" does and, armed, runs `spoil`
# on the message when the lookup of "side" compares it, then fills the
# memory freed with strings (for the child interpreters of the tests below).
COLLIDING = """
class Colliding:
    def __init__(self, msg, spoil):
        self.msg, self.spoil, self.armed = msg, spoil, False

    def __hash__(self):
        return hash("side")

    def __eq__(self, other):
        if self.armed:
            self.armed = False
            self.spoil(self.msg)
            taken.extend("".join(["Q"] * 48) for _ in range(10000))
        return False

taken = []
"""


def test_read_order_holds_the_fields_it_read_while_it_reads_on() -> None:
    """A key of the message whose __eq__ runs while a later field is looked
    up (its hash is that field's name's) drops a field read before: the
    field read is still the one returned. Run apart: it returned a freed
    object."""
    proc = run_python(COLLIDING + textwrap.dedent("""
        from pyengine._server import read_order

        msg = {"type": "new_order", "symbol": "".join(["XY", "Z" * 46])}  # as long as the strings taken
        key = Colliding(msg, lambda m: m.update(symbol=None))
        msg[key] = 1
        msg.update(side="buy", qty=5, price=100)
        key.armed = True
        print(read_order("new_order", msg)[:4], key.armed)
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "('XY" + "Z" * 46 + "', 'buy', 5, 100) False\n"


def test_the_intake_holds_the_type_and_req_id_it_read_while_it_reads_on() -> None:
    """A `loads` whose message has a key with an __eq__ that replaces the
    message's type and req_id while a later field is looked up: the reply
    still names the req_id the message came with. Run apart: it named a
    freed object (another string had taken its memory)."""
    proc = run_python(COLLIDING + textwrap.dedent("""
        from pyengine._server import CommandBuffer, Inbox, Intake, Ledger, Link

        class Events:
            def refused(self, session, req_id, code, message):
                print(req_id, code)

            def __getattr__(self, name):
                return lambda *args: None

        def loads(frame):
            msg = {"type": "".join(["new_", "order"]), "req_id": "".join(["r"] * 48), "symbol": "ESZ6"}
            key = Colliding(msg, lambda m: m.update(type=None, req_id=None))
            msg[key] = 1
            msg.update(side="buy", qty=5, price=100)
            key.armed = True
            return msg

        intake = Intake(ledger=Ledger(), commands=CommandBuffer(4), events=Events(), instruments={}, max_open=0,
                        loads=loads)
        inbox = Inbox(1 << 20, ValueError)
        inbox.feed(len(b"{}").to_bytes(4, "big") + b"{}")
        print(intake.drain(Link(1, None, 0, 0), inbox))
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "r" * 48 + " not_logged_in\nNone\n"


@pytest.mark.parametrize("reentry", ["inbox.frames()", "intake.drain(link, inbox)"])
def test_the_frames_of_an_inbox_being_drained_are_not_taken_meanwhile(reentry: str) -> None:
    """A callback of the drain takes frames from the inbox being drained:
    refused, and the drain goes on from where it was. Run apart: the drain
    took the frame it carried out past the end of the inbox, and crashed."""
    proc = run_python(textwrap.dedent("""
        import orjson
        from pyengine._server import CommandBuffer, Inbox, Intake, Ledger, Link

        class FrameError(Exception):
            pass

        class Events:
            def undecodable(self, session, error):
                inbox.feed(framed(b'{"type":"ping","req_id":3}'))  # bytes may come meanwhile
                REENTRY

            def __getattr__(self, name):
                return lambda *args: None

        def framed(*frames):
            return b"".join(len(f).to_bytes(4, "big") + f for f in frames)

        inbox = Inbox(1 << 20, FrameError)
        intake = Intake(ledger=Ledger(), commands=CommandBuffer(4), events=Events(), instruments={}, max_open=0,
                        loads=orjson.loads)
        link = Link(1, None, 0, 0)
        inbox.feed(framed(b"junk", b'{"type":"ping","req_id":2}'))
        try:
            intake.drain(link, inbox)
        except RuntimeError as exc:
            print("refused:", exc)
        print(intake.drain(link, inbox), intake.drain(link, inbox), inbox.held)
    """).replace("REENTRY", reentry))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["refused: the Inbox is being drained",
                                        "({'type': 'ping', 'req_id': 2},) ({'type': 'ping', 'req_id': 3},) 0"]


def test_drain_takes_a_link_and_an_inbox(worlds: list[World]) -> None:
    w = World()
    worlds.append(w)
    with pytest.raises(TypeError, match=r"drain takes \(link, inbox\)"):
        w.server.intake.drain(w.session.link, b"")  # type: ignore[arg-type]  # on purpose
    with pytest.raises(TypeError, match=r"drain takes \(link, inbox\)"):
        w.server.intake.drain(Inbox(MAX_FRAME, FrameError), w.session.link)  # type: ignore[arg-type]  # on purpose

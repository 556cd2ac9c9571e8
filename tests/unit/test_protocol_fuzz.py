"""Fuzzing of the wire protocol: the frame splitter and the request decoder.

What the properties establish, for inputs of the sizes drawn here:

* A session's ``Inbox`` (csrc/binding/inbox.c) splits every well-formed
  stream, fed in any chunks (empty ones and single bytes included) with the
  whole frames taken after each, into exactly the frames that were encoded,
  after which ``close`` passes; frames made by ``encode`` come back as their
  messages. A stream cut inside a frame gives the complete frames, then
  ``truncated_frame`` at ``close``.
* On any byte stream the inbox yields frames or raises ``FrameError`` with a
  documented code, nothing else, and every call returns promptly. The code is
  the one a whole-stream reading finds, whatever the chunking; a header of
  length 0 (``empty_frame``, zero-length frames are not allowed) or over the
  limit (``frame_too_large``) is refused once the chunk that completes those
  four bytes is fed, before any body; the frames yielded are a prefix of the stream's
  frames and include every frame completed by an earlier call.
* ``parse`` of any bytes, of any JSON value, of every request type with one
  or two fields removed or replaced by an odd value (wrong type, null, just
  past a limit, bool for int, float, huge number, misspelt choice, long or
  non-ASCII string, array, object, nesting up to the JSON depth limit) or
  with unknown fields added, returns or raises exactly what an independent
  model calls for: the request with the message's fields and the documented
  defaults, or a ``RequestError`` with a non-empty message, the request's
  ``req_id`` and one of the codes the message's faults allow. No other
  exception escapes, with no more stack than a server session has. The model
  follows docs/protocol.md.
* Valid requests of every type decode to the fields they were given, and
  every request type protocol.py knows is covered here.

The number of examples of each test scales with the Hypothesis profile that
tests/conftest.py loads (``PYENGINE_HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import itertools
import math
import operator
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyengine._server import Inbox
from pyengine.server import protocol
from pyengine.server.protocol import (
    MAX_FRAME,
    Cancel,
    CancelAllAfter,
    ResetMmp,
    SetMmp,
    FrameError,
    Login,
    MassCancel,
    Modify,
    NewOrder,
    OrderQuery,
    Orders,
    Ping,
    Request,
    RequestError,
    SetTradingState,
    Snapshot,
    Status,
    Subscribe,
    Unsubscribe,
    encode,
    parse,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
COID_MAX = 16
WATCHDOG_SECONDS = 10.0
DEFAULT_RECURSION_LIMIT = 1000

FRAME_CODES = frozenset({"empty_frame", "frame_too_large", "truncated_frame"})
PARSE_CODES = frozenset({"bad_json", "bad_message", "unknown_type", "missing_field", "bad_field"})
ABSENT_CODES = frozenset({"missing_field", "bad_field"})

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")
TIFS = ("gtc", "ioc", "fok")
STPS = ("none", "cancel_newest", "cancel_oldest", "cancel_both")
KINDS = (
    "new_order",
    "cancel",
    "modify",
    "mass_cancel",
    "login",
    "ping",
    "subscribe",
    "unsubscribe",
    "snapshot",
    "status",
    "halt",
    "resume",
    "orders",
    "order_status",
    "cancel_all_after",
    "set_mmp",
    "reset_mmp",
)
FIELDS: dict[str, tuple[str, ...]] = {
    "new_order": ("symbol", "side", "qty", "price", "order_type", "tif", "post_only", "stp", "client_order_id"),
    "cancel": ("order_id", "client_order_id"),
    "modify": ("order_id", "client_order_id", "qty", "price"),
    "mass_cancel": ("symbol", "account", "all_accounts"),
    "login": ("account", "secret", "cancel_on_disconnect"),
    "ping": (),
    "subscribe": ("symbol",),
    "unsubscribe": ("symbol",),
    "snapshot": (),
    "status": (),
    "halt": ("symbol",),
    "resume": ("symbol",),
    "orders": ("symbol",),
    "order_status": ("order_id", "client_order_id"),
    "cancel_all_after": ("seconds",),
    "set_mmp": ("symbol", "qty_limit", "window_ms"),
    "reset_mmp": ("symbol",),
}
KNOWN_KEYS = tuple(sorted({"type", "req_id", *(key for keys in FIELDS.values() for key in keys)}))
KNOWN_STRINGS = (*KINDS, *SIDES, *ORDER_TYPES, *TIFS, *STPS, "BUY", " buy", "buy\u0000", "GTC", "Limit", "")


def _examples(n: int) -> int:
    """`n` examples under the default ``ci`` profile (100), scaled to the loaded one."""
    loaded: int = settings().max_examples
    return max(1, n * loaded // 100)


@contextmanager
def _watchdog(seconds: float = WATCHDOG_SECONDS) -> Iterator[None]:
    """Fail, rather than hang, when the block runs longer than `seconds`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise AssertionError(f"still running after {seconds} s: a loop that does not end")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stack_depth() -> int:
    depth = 0
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


@contextmanager
def _server_stack() -> Iterator[None]:
    """Run the block with the stack a server session's reader has: the
    interpreter's default recursion limit above a shallow start. pytest and
    Hypothesis raise the limit while a test runs, which would hide a
    RecursionError the server hits; this gives at least the server's room."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + DEFAULT_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


# ---- framing ------------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@dataclass(frozen=True)
class Split:
    """What reading a whole stream at once gives: its complete frames (and
    the offset just past each), then the framing error, if any, with the
    stream length at which a bad header is known (None: found by ``close``)."""

    frames: list[bytes]
    ends: list[int]
    code: str | None
    at: int | None


def _split(stream: bytes, max_frame: int) -> Split:
    frames: list[bytes] = []
    ends: list[int] = []
    pos = 0
    while len(stream) - pos >= 4:
        n = int.from_bytes(stream[pos : pos + 4], "big")
        if n == 0:
            return Split(frames, ends, "empty_frame", pos + 4)
        if n > max_frame:
            return Split(frames, ends, "frame_too_large", pos + 4)
        if pos + 4 + n > len(stream):
            break
        frames.append(stream[pos + 4 : pos + 4 + n])
        pos += 4 + n
        ends.append(pos)
    return Split(frames, ends, "truncated_frame" if pos < len(stream) else None, None)


@dataclass(frozen=True)
class Fed:
    """What an Inbox gave for a stream fed in chunks: the frames, the
    FrameError code if one was raised, the bytes fed when taking the frames
    raised it (None: raised by ``close``, or none), and the bytes fed before
    that chunk."""

    frames: list[bytes]
    code: str | None
    at: int | None
    before: int


def _feed(chunks: list[bytes], max_frame: int) -> Fed:
    inbox = Inbox(max_frame, FrameError)
    frames: list[bytes] = []
    fed = 0
    with _watchdog():
        for chunk in chunks:
            before, fed = fed, fed + len(chunk)
            inbox.feed(chunk)
            try:
                # The frames before a broken header come first, then the error.
                while got := inbox.frames():
                    assert type(got) is list and all(type(f) is bytes for f in got)
                    frames += got
            except FrameError as exc:
                _check_frame_error(exc)
                return Fed(frames, exc.code, fed, before)
        try:
            inbox.close()
        except FrameError as exc:
            _check_frame_error(exc)
            return Fed(frames, exc.code, None, fed)
    return Fed(frames, None, None, fed)


def _check_frame_error(exc: FrameError) -> None:
    assert exc.code in FRAME_CODES, exc.code
    assert str(exc)


def _check_fed(fed: Fed, split: Split) -> None:
    assert fed.code == split.code, (fed.code, split.code)
    if split.at is None:
        assert fed.at is None
        assert fed.frames == split.frames
    else:
        assert fed.at is not None and fed.before < split.at <= fed.at, "a bad header must be refused on arrival"
        assert fed.frames == split.frames[: len(fed.frames)]
        completed_earlier = sum(end <= fed.before for end in split.ends)
        assert len(fed.frames) >= completed_earlier, "a frame completed by an earlier call was lost"


@st.composite
def _chunks(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """`stream` cut anywhere: at random points (empty chunks included), into
    single bytes, or not at all."""
    how = draw(st.sampled_from(["cuts", "bytes", "whole"] if len(stream) <= 4096 else ["cuts", "whole"]))
    if how == "bytes":
        return [stream[i : i + 1] for i in range(len(stream))]
    if how == "whole":
        return [stream]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=16)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


max_frames = st.one_of(st.integers(1, 80), st.just(MAX_FRAME))


def _bodies(max_frame: int) -> st.SearchStrategy[bytes]:
    """Frame bodies of 1 to `max_frame` bytes, the limit itself included."""
    return st.one_of(
        st.binary(min_size=1, max_size=min(max_frame, 300)),
        st.binary(min_size=1, max_size=4).map(lambda b: (b * max_frame)[:max_frame]),
    )


@st.composite
def _well_formed(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    max_frame = draw(max_frames)
    return max_frame, draw(st.lists(_bodies(max_frame), max_size=8))


def _segments(max_frame: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        _bodies(max_frame).map(_frame),
        st.just(bytes(4)),
        st.integers(max_frame + 1, UINT32_MAX).map(lambda n: n.to_bytes(4, "big")),
        st.binary(max_size=12),
    )


@st.composite
def _any_stream(draw: st.DrawFn) -> tuple[int, bytes]:
    """Garbage, or frames, empty and oversize headers and noise strung together
    and perhaps cut short."""
    max_frame = draw(max_frames)
    if draw(st.booleans()):
        return max_frame, draw(st.binary(max_size=400))
    stream = b"".join(draw(st.lists(_segments(max_frame), max_size=8)))
    return max_frame, stream[: draw(st.one_of(st.just(len(stream)), st.integers(0, len(stream))))]


@settings(max_examples=_examples(200))
@given(st.data())
def test_well_formed_streams_split_into_their_frames(data: st.DataObject) -> None:
    max_frame, bodies = data.draw(_well_formed(), label="max_frame, bodies")
    stream = b"".join(map(_frame, bodies))
    fed = _feed(data.draw(_chunks(stream), label="chunks"), max_frame)
    assert fed.code is None
    assert fed.frames == bodies


@settings(max_examples=_examples(150))
@given(st.data())
def test_a_stream_cut_inside_a_frame_is_truncated(data: st.DataObject) -> None:
    max_frame, bodies = data.draw(_well_formed(), label="max_frame, bodies")
    last = data.draw(_bodies(max_frame), label="last")
    cut = data.draw(st.integers(1, len(last) + 3), label="cut")
    stream = b"".join(map(_frame, bodies)) + _frame(last)[:cut]
    fed = _feed(data.draw(_chunks(stream), label="chunks"), max_frame)
    assert fed.code == "truncated_frame" and fed.at is None
    assert fed.frames == bodies


@settings(max_examples=_examples(150))
@given(st.data())
def test_a_bad_header_is_refused_as_soon_as_it_arrives(data: st.DataObject) -> None:
    max_frame, bodies = data.draw(_well_formed(), label="max_frame, bodies")
    size = data.draw(st.one_of(st.just(0), st.integers(max_frame + 1, UINT32_MAX)), label="size")
    i = data.draw(st.integers(0, len(bodies)), label="i")
    head = b"".join(map(_frame, bodies[:i])) + size.to_bytes(4, "big")
    stream = head + data.draw(st.binary(max_size=64), label="after")
    fed = _feed(data.draw(_chunks(stream), label="chunks"), max_frame)
    assert fed.code == ("empty_frame" if size == 0 else "frame_too_large")
    split = _split(stream, max_frame)
    assert split.at == len(head)
    _check_fed(fed, split)


@settings(max_examples=_examples(300))
@given(st.data())
def test_any_stream_gives_its_frames_or_a_frame_error(data: st.DataObject) -> None:
    max_frame, stream = data.draw(_any_stream(), label="max_frame, stream")
    _check_fed(_feed(data.draw(_chunks(stream), label="chunks"), max_frame), _split(stream, max_frame))


plain_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(INT64_MIN, UINT64_MAX),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=_examples(100))
@given(st.data())
def test_encoded_messages_come_back_through_the_inbox(data: st.DataObject) -> None:
    objects = st.dictionaries(st.text(max_size=8), plain_json, max_size=5)
    messages = data.draw(st.lists(objects, max_size=5), label="messages")
    stream = b"".join(map(encode, messages))
    fed = _feed(data.draw(_chunks(stream), label="chunks"), MAX_FRAME)
    assert fed.code is None
    assert [orjson.loads(f) for f in fed.frames] == messages


# ---- the model of request validation ------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What ``parse`` must do: return `request` (when not None) or raise a
    RequestError with a code in `codes` that carries `req_id`."""

    request: Request | None = None
    codes: frozenset[str] = frozenset()
    req_id: Any = None


class _Fields:
    """Reads a message's fields as docs/protocol.md describes them and notes
    the error codes its faults allow. ``null`` is exactly a field left out,
    for every field: the default if it has one, ``missing_field`` if it is
    required.

    The readers give the field's value, its default, or None when it is
    absent or at fault; a request is made only when there is no fault."""

    def __init__(self, msg: dict[str, Any], req_id: Any) -> None:
        self.msg = msg
        self.req_id = req_id
        self.codes: set[str] = set()
        self.bad: set[str] = set()

    def fault(self, key: str, codes: frozenset[str] = frozenset({"bad_field"})) -> None:
        self.bad.add(key)
        self.codes |= codes

    def integer(self, key: str, lo: int, hi: int, required: bool) -> Any:
        v = self.msg.get(key)
        if v is None:
            if required:
                self.fault(key, frozenset({"missing_field"}))
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fault(key)
            return None
        return v

    def text(self, key: str, required: bool) -> Any:
        v = self.msg.get(key)
        if v is None:
            if required:
                self.fault(key, frozenset({"missing_field"}))
            return None
        if not isinstance(v, str):
            self.fault(key)
            return None
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> Any:
        v = self.msg.get(key)
        if v is None:
            if default is None:
                self.fault(key, frozenset({"missing_field"}))
            return default
        if not isinstance(v, str) or v not in choices:
            self.fault(key)
            return None
        return v

    def flag(self, key: str, default: bool) -> Any:
        v = self.msg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.fault(key)
            return None
        return v

    def client_order_id(self) -> str | None:
        v = self.msg.get("client_order_id")
        if v is None:
            return None
        if not isinstance(v, str) or not 1 <= len(v) <= COID_MAX or not all(" " <= c <= "~" for c in v):
            self.fault("client_order_id")
            return None
        return v

    def target(self) -> tuple[int | None, str | None]:
        order_id = self.integer("order_id", 1, INT64_MAX, required=False)
        coid = self.client_order_id()
        if not self.bad & {"order_id", "client_order_id"} and (order_id is None) == (coid is None):
            self.fault("order_id", frozenset({"bad_field"}) if order_id is not None else ABSENT_CODES)
        return order_id, coid

    def result(self, make: Callable[[], Request]) -> Expected:
        return Expected(None if self.codes else make(), frozenset(self.codes), self.req_id)


def _model_new_order(f: _Fields) -> Expected:
    symbol = f.text("symbol", required=True)
    side = f.choice("side", SIDES, None)
    qty = f.integer("qty", INT64_MIN, INT64_MAX, required=True)
    price = f.integer("price", INT64_MIN, INT64_MAX, required=False)
    order_type = f.choice("order_type", ORDER_TYPES, "limit")
    tif = f.choice("tif", TIFS, "ioc" if order_type == "market" else "gtc")
    post_only = f.flag("post_only", False)
    stp = f.choice("stp", STPS, "none")
    coid = f.client_order_id()
    if not f.bad & {"order_type", "tif", "post_only", "price"}:
        if order_type == "market":
            unshaped = price is not None or tif == "gtc" or post_only
        else:
            unshaped = price is None or (post_only and tif != "gtc")
        if unshaped:
            f.fault("order_type")
    return f.result(lambda: NewOrder(f.req_id, symbol, side, qty, price, order_type, tif, post_only, stp, coid))


def _model_cancel(f: _Fields) -> Expected:
    order_id, coid = f.target()
    return f.result(lambda: Cancel(f.req_id, order_id, coid))


def _model_modify(f: _Fields) -> Expected:
    order_id, coid = f.target()
    qty = f.integer("qty", INT64_MIN, INT64_MAX, required=False)
    price = f.integer("price", INT64_MIN, INT64_MAX, required=False)
    if not f.bad & {"qty", "price"} and qty is None and price is None:
        f.fault("qty", frozenset({"missing_field"}))  # a modify changes the qty, the price or both
    return f.result(lambda: Modify(f.req_id, order_id, coid, qty, price))


def _model_login(f: _Fields) -> Expected:
    account = f.integer("account", 0, UINT32_MAX, required=True)
    secret = f.text("secret", required=False)
    cancel_on_disconnect = f.flag("cancel_on_disconnect", True)
    return f.result(lambda: Login(f.req_id, account, secret, cancel_on_disconnect))


def _model_mass_cancel(f: _Fields) -> Expected:
    symbol = f.text("symbol", required=False)
    account = f.integer("account", 0, UINT32_MAX, required=False)
    all_accounts = f.flag("all_accounts", False)
    if not f.bad & {"account", "all_accounts"} and account is not None and all_accounts:
        f.fault("all_accounts")
    return f.result(lambda: MassCancel(f.req_id, symbol, account, all_accounts))


def _model_order_status(f: _Fields) -> Expected:
    order_id, coid = f.target()  # as a cancel's
    return f.result(lambda: OrderQuery(f.req_id, order_id, coid))


def _model_cancel_all_after(f: _Fields) -> Expected:
    v = f.msg.get("seconds")
    if v is None:
        f.fault("seconds", frozenset({"missing_field"}))
    elif type(v) not in (int, float) or not 0 <= v <= 86400:
        f.fault("seconds")
    return f.result(lambda: CancelAllAfter(f.req_id, v))


def _model_set_mmp(f: _Fields) -> Expected:
    symbol = f.text("symbol", required=True)
    qty_limit = f.integer("qty_limit", 0, INT64_MAX, required=True)
    window_ms = f.integer("window_ms", 0, 86_400_000, required=False)
    return f.result(lambda: SetMmp(f.req_id, symbol, qty_limit, window_ms or 0))


def _model_subscribe(f: _Fields) -> Expected:
    symbol = f.text("symbol", required=True)
    return f.result(lambda: Subscribe(f.req_id, symbol))


def _model_unsubscribe(f: _Fields) -> Expected:
    symbol = f.text("symbol", required=True)
    return f.result(lambda: Unsubscribe(f.req_id, symbol))


def _model_trading_state(halt: bool) -> Callable[[_Fields], Expected]:
    def model(f: _Fields) -> Expected:
        symbol = f.text("symbol", required=True)
        return f.result(lambda: SetTradingState(f.req_id, symbol, halt))

    return model


MODELS: dict[str, Callable[[_Fields], Expected]] = {
    "new_order": _model_new_order,
    "cancel": _model_cancel,
    "modify": _model_modify,
    "login": _model_login,
    "mass_cancel": _model_mass_cancel,
    "subscribe": _model_subscribe,
    "unsubscribe": _model_unsubscribe,
    "ping": lambda f: f.result(lambda: Ping(f.req_id)),
    "snapshot": lambda f: f.result(lambda: Snapshot(f.req_id)),
    "status": lambda f: f.result(lambda: Status(f.req_id)),
    "orders": lambda f: (lambda symbol: f.result(lambda: Orders(f.req_id, symbol)))(f.text("symbol", required=False)),
    "order_status": _model_order_status,
    "cancel_all_after": _model_cancel_all_after,
    "set_mmp": _model_set_mmp,
    "reset_mmp": lambda f: (lambda symbol: f.result(lambda: ResetMmp(f.req_id, symbol)))(f.text("symbol", required=True)),
    "halt": _model_trading_state(True),
    "resume": _model_trading_state(False),
}


def _expect(body: bytes) -> Expected:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Expected(codes=frozenset({"bad_json"}))
    if not isinstance(msg, dict):
        return Expected(codes=frozenset({"bad_message"}))
    req_id = msg.get("req_id")
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, (int, str))):
        return Expected(codes=frozenset({"bad_field"}))
    kind = msg.get("type")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return Expected(codes=frozenset({"unknown_type"}), req_id=req_id)
    return model(_Fields(msg, req_id))


def _typed(values: tuple[Any, ...]) -> list[tuple[type, Any]]:
    """Fields with their types: ``1 == True`` must not pass for a match."""
    return [(type(v), v) for v in values]


def _check_parse(body: bytes) -> None:
    """``parse(body)`` does what the model expects; any other exception escapes
    and fails the test."""
    expected = _expect(body)
    assert expected.codes <= PARSE_CODES
    with _watchdog(), _server_stack():
        try:
            got = parse(body)
        except RequestError as exc:
            assert expected.codes, f"refused a valid request with {exc.code} ({exc}); expected {expected.request!r}"
            assert exc.code in expected.codes, f"{exc.code} ({exc}); expected one of {sorted(expected.codes)}"
            assert isinstance(exc.args[0], str) and str(exc)
            assert _typed((exc.req_id,)) == _typed((expected.req_id,)), "the error must carry the request's req_id"
            return
    assert expected.request is not None, f"accepted {got!r}; expected one of {sorted(expected.codes)}"
    assert type(got) is type(expected.request)
    assert _typed(got) == _typed(expected.request)


# ---- messages -----------------------------------------------------------------


class Raw(bytes):
    """JSON text put into a message as it is."""


def _dump(value: Any) -> bytes:
    """JSON text of `value`, including what orjson will not write: integers of
    any size, NaN and infinities (as the non-JSON words), raw text."""
    if isinstance(value, Raw):
        return bytes(value)
    if value is None or isinstance(value, (bool, str)):
        return orjson.dumps(value)
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        if math.isnan(value):
            return b"NaN"
        if math.isinf(value):
            return b"Infinity" if value > 0 else b"-Infinity"
        return repr(value).encode()
    if isinstance(value, list):
        return b"[" + b",".join(map(_dump, value)) + b"]"
    return b"{" + b",".join(orjson.dumps(k) + b":" + _dump(v) for k, v in value.items()) + b"}"


int64s = st.integers(INT64_MIN, INT64_MAX)
req_ids = st.one_of(st.integers(INT64_MIN, UINT64_MAX), st.text(max_size=20))
coids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=COID_MAX)
symbols = st.one_of(st.sampled_from(["ESZ6", "X", ""]), st.text(max_size=20))

specials = st.sampled_from(
    [
        Raw(b"1e400"),
        Raw(b"-1e400"),
        Raw(b"1.0"),
        Raw(b"1E2"),
        Raw(b"-0"),
        Raw(b"-0.0"),
        Raw(b"9223372036854775808"),
        Raw(b"18446744073709551616"),
        Raw(b"1" + b"0" * 400),
        Raw(b"NaN"),
        Raw(b'"\\ud800"'),
        Raw(b'"\\u0000"'),
        Raw(b'"b\\u0075y"'),
        Raw(b'"\xff"'),
        Raw(b"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]"),
    ]
)
edge_ints = st.one_of(
    st.sampled_from(
        [INT64_MIN - 1, INT64_MIN, INT64_MAX, INT64_MAX + 1, UINT32_MAX, UINT32_MAX + 1, UINT64_MAX, UINT64_MAX + 1]
    ),
    st.sampled_from([-(2**64), 10**30]),
    st.integers(-3, 3),
)
plausible_values = st.one_of(st.none(), st.booleans(), st.integers(0, 10), st.sampled_from(KNOWN_STRINGS), coids)
# Characters UTF-8 can encode: a lone surrogate has no UTF-8 form for the wire to
# carry, so it reaches the parser only escaped, as one of the `specials`.
strange_values = st.one_of(
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=20),
    st.builds(operator.mul, st.characters(codec="utf-8"), st.integers(COID_MAX + 1, 5000)),
    st.lists(st.one_of(int64s, st.text(max_size=4)), max_size=3),
    st.dictionaries(st.sampled_from(KNOWN_KEYS), st.one_of(int64s, st.sampled_from(KNOWN_STRINGS)), max_size=3),
    specials,
)

INT_LIMITS = {
    "qty": (INT64_MIN, INT64_MAX),
    "price": (INT64_MIN, INT64_MAX),
    "order_id": (1, INT64_MAX),
    "account": (0, UINT32_MAX),
}
CHOICES = {"type": KINDS, "side": SIDES, "order_type": ORDER_TYPES, "tif": TIFS, "stp": STPS}
FLAGS = ("post_only", "cancel_on_disconnect", "all_accounts")


def _near_values(key: str) -> st.SearchStrategy[Any]:
    """Values at the edge of what `key` takes, on either side of it."""
    if key in INT_LIMITS:
        lo, hi = INT_LIMITS[key]
        return st.sampled_from([lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, True, False, float(lo + 1), str(lo + 1), None])
    if key in CHOICES:
        return st.sampled_from(CHOICES[key]).flatmap(
            lambda c: st.sampled_from([c, c.upper(), c.title(), f" {c}", f"{c}\u0000", c[:-1], c + "s", [c], None])
        )
    if key in FLAGS:
        return st.sampled_from([True, False, 0, 1, "true", None, [True]])
    if key == "client_order_id":
        odd_ids = ["", " ", "x" * COID_MAX, "x" * (COID_MAX + 1), "\x1f", "\x7f", "\u00e9", "a\tb", 0, None]
        return st.one_of(coids, st.sampled_from(odd_ids))
    if key == "req_id":
        return st.sampled_from([0, -1, INT64_MIN, UINT64_MAX, UINT64_MAX + 1, "", "\u00e9", 1.0, True, None, [1], {}])
    return st.sampled_from(["", " ", "X" * COID_MAX, "\u00e9", "\u0000", 0, True, None, ["X"]])


@st.composite
def odd_values(draw: st.DrawFn) -> Any:
    """A value for a field: a number at or past a limit, a plausible value
    (of this field or another), or something stranger, a third of the time
    each (``st.one_of`` would weigh its flattened branches equally)."""
    return draw(draw(st.sampled_from([edge_ints, plausible_values, strange_values])))


json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        int64s,
        st.integers(-(10**400), 10**400),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(KNOWN_STRINGS),
        specials,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)
request_like = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.one_of(st.sampled_from(KINDS), json_values),
    st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, max_size=8),
)


class _Absent:
    pass


ABSENT = _Absent()


def _put(draw: st.DrawFn, msg: dict[str, Any], key: str, value: Any, optional: bool = False) -> None:
    """Set ``msg[key] = value``; an `optional` field (its default being
    `value`) may be left out instead, or given as null, which is the same."""
    ways = ["given", "absent", "null"] if optional else ["given"]
    how = draw(st.sampled_from(ways))
    if how == "given":
        msg[key] = value
    elif how == "null":
        msg[key] = None


@st.composite
def valid_requests(draw: st.DrawFn, kinds: Sequence[str] = KINDS) -> tuple[dict[str, Any], Request]:
    """A valid request of one of `kinds`, optional fields given or not, and
    the request it must decode to."""
    kind = draw(st.sampled_from(kinds), label="type")
    msg: dict[str, Any] = {"type": kind}
    req_id = draw(st.one_of(st.just(ABSENT), st.none(), req_ids), label="req_id")
    if req_id is ABSENT:
        req_id = None
    else:
        msg["req_id"] = req_id
    request: Request
    if kind == "new_order":
        symbol, side, qty = draw(symbols), draw(st.sampled_from(SIDES)), draw(int64s)
        order_type = draw(st.sampled_from(ORDER_TYPES))
        if order_type == "limit":
            price: int | None = draw(int64s)
            tif = draw(st.sampled_from(TIFS))
            post_only = draw(st.booleans()) if tif == "gtc" else False
        else:
            price, tif, post_only = None, draw(st.sampled_from(("ioc", "fok"))), False
        stp = draw(st.sampled_from(STPS))
        coid = draw(st.one_of(st.none(), coids))
        msg.update(symbol=symbol, side=side, qty=qty)
        _put(draw, msg, "order_type", order_type, optional=order_type == "limit")
        _put(draw, msg, "price", price, optional=price is None)
        _put(draw, msg, "tif", tif, optional=tif == ("ioc" if order_type == "market" else "gtc"))
        _put(draw, msg, "post_only", post_only, optional=not post_only)
        _put(draw, msg, "stp", stp, optional=stp == "none")
        _put(draw, msg, "client_order_id", coid, optional=coid is None)
        request = NewOrder(req_id, symbol, side, qty, price, order_type, tif, post_only, stp, coid)
    elif kind in ("cancel", "modify"):
        order_id, coid = draw(st.one_of(st.tuples(st.integers(1, INT64_MAX), st.none()), st.tuples(st.none(), coids)))
        _put(draw, msg, "order_id", order_id, optional=order_id is None)
        _put(draw, msg, "client_order_id", coid, optional=coid is None)
        if kind == "cancel":
            request = Cancel(req_id, order_id, coid)
        else:
            qty, price = draw(st.one_of(st.none(), int64s)), draw(st.one_of(st.none(), int64s))
            if qty is None and price is None:
                qty = draw(int64s)
            _put(draw, msg, "qty", qty, optional=qty is None)
            _put(draw, msg, "price", price, optional=price is None)
            request = Modify(req_id, order_id, coid, qty, price)
    elif kind == "login":
        account = draw(st.integers(0, UINT32_MAX))
        secret = draw(st.one_of(st.none(), st.text(max_size=40)))
        cod = draw(st.booleans())
        msg["account"] = account
        _put(draw, msg, "secret", secret, optional=secret is None)
        _put(draw, msg, "cancel_on_disconnect", cod, optional=cod)
        request = Login(req_id, account, secret, cod)
    elif kind == "mass_cancel":
        symbol_or_none = draw(st.one_of(st.none(), symbols))
        account_or_none, all_accounts = draw(
            st.one_of(st.tuples(st.none(), st.booleans()), st.tuples(st.integers(0, UINT32_MAX), st.just(False)))
        )
        _put(draw, msg, "symbol", symbol_or_none, optional=symbol_or_none is None)
        _put(draw, msg, "account", account_or_none, optional=account_or_none is None)
        _put(draw, msg, "all_accounts", all_accounts, optional=not all_accounts)
        request = MassCancel(req_id, symbol_or_none, account_or_none, all_accounts)
    elif kind in ("subscribe", "unsubscribe"):
        msg["symbol"] = symbol = draw(symbols)
        request = (Subscribe if kind == "subscribe" else Unsubscribe)(req_id, symbol)
    elif kind == "orders":
        symbol_or_none = draw(st.one_of(st.none(), symbols))
        _put(draw, msg, "symbol", symbol_or_none, optional=symbol_or_none is None)
        request = Orders(req_id, symbol_or_none)
    elif kind == "order_status":
        if draw(st.booleans()):
            msg["order_id"] = order_id = draw(st.integers(1, INT64_MAX))
            request = OrderQuery(req_id, order_id, None)
        else:
            msg["client_order_id"] = coid = draw(coids)
            request = OrderQuery(req_id, None, coid)
    elif kind == "set_mmp":
        msg["symbol"] = symbol = draw(symbols)
        msg["qty_limit"] = qty_limit = draw(st.integers(0, INT64_MAX))
        window_ms = draw(st.integers(0, 86_400_000))
        _put(draw, msg, "window_ms", window_ms, optional=window_ms == 0)
        request = SetMmp(req_id, symbol, qty_limit, window_ms)
    elif kind == "reset_mmp":
        msg["symbol"] = symbol = draw(symbols)
        request = ResetMmp(req_id, symbol)
    elif kind == "cancel_all_after":
        msg["seconds"] = seconds = draw(st.one_of(st.integers(0, 86400), st.floats(0, 86400)))
        request = CancelAllAfter(req_id, seconds)
    elif kind in ("halt", "resume"):
        msg["symbol"] = symbol = draw(symbols)
        request = SetTradingState(req_id, symbol, kind == "halt")
    else:
        request = {"ping": Ping, "snapshot": Snapshot, "status": Status}[kind](req_id)
    return msg, request


@st.composite
def almost_valid_requests(draw: st.DrawFn) -> bytes:
    """A valid request with one or two fields removed, replaced by an odd
    value, or an unknown field added."""
    msg, _ = draw(valid_requests())
    fields = FIELDS[msg["type"]]
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["remove", "replace", "replace", "add"]))
        if how == "add":
            msg[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in KNOWN_KEYS))] = draw(json_values)
            continue
        of_the_type = draw(st.integers(0, 4)) > 0
        if fields and of_the_type:
            key = draw(st.sampled_from(fields))
        else:
            key = draw(st.sampled_from(sorted({"type", "req_id", *msg})))
        if how == "remove":
            msg.pop(key, None)
        else:
            msg[key] = draw(odd_values())
    return _dump(msg)


# ---- parse ----------------------------------------------------------------------


def test_every_request_type_is_fuzzed() -> None:
    """A request type added to the protocol needs its model here."""
    assert set(protocol.REQUEST_TYPES) == set(KINDS) == set(MODELS) == set(FIELDS)


@settings(max_examples=_examples(300))
@given(st.binary(max_size=300))
def test_any_bytes_parse_as_the_model_says(body: bytes) -> None:
    _check_parse(body)


@settings(max_examples=_examples(300))
@given(st.one_of(json_values, request_like))
def test_any_json_value_parses_as_the_model_says(value: Any) -> None:
    _check_parse(_dump(value))


@settings(max_examples=_examples(300))
@given(valid_requests())
def test_valid_requests_decode_to_their_fields(case: tuple[dict[str, Any], Request]) -> None:
    msg, request = case
    body = orjson.dumps(msg)
    with _server_stack():
        got = parse(body)
    assert type(got) is type(request)
    for key, value in msg.items():
        if key != "type" and value is not None:
            assert _typed((getattr(got, key),)) == _typed((value,)), key
    assert _typed(got) == _typed(request)
    assert _expect(body) == Expected(request, frozenset(), request.req_id)


@settings(max_examples=_examples(300))
@given(almost_valid_requests())
def test_almost_valid_requests_parse_as_the_model_says(body: bytes) -> None:
    _check_parse(body)


@pytest.mark.parametrize("key", KNOWN_KEYS)
@settings(max_examples=_examples(40))
@given(data=st.data())
def test_each_field_at_and_past_its_limits_parses_as_the_model_says(key: str, data: st.DataObject) -> None:
    kinds = [kind for kind in KINDS if key in ("type", "req_id", *FIELDS[kind])]
    msg, _ = data.draw(valid_requests(kinds), label="valid")
    how = data.draw(st.sampled_from(["near", "near", "odd", "remove"]), label="how")
    if how == "remove":
        msg.pop(key, None)
    else:
        msg[key] = data.draw(_near_values(key) if how == "near" else odd_values(), label=key)
    _check_parse(_dump(msg))


@settings(max_examples=_examples(100))
@given(
    key=st.sampled_from(
        ["type", "req_id", "side", "order_type", "tif", "stp", "post_only", "symbol", "qty", "client_order_id"]
    ),
    depth=st.integers(1, 1100),
    array=st.booleans(),
)
@example(key="type", depth=1000, array=True)
@example(key="side", depth=1000, array=False)
def test_deeply_nested_values_parse_as_the_model_says(key: str, depth: int, array: bool) -> None:
    opening, closing = (b"[", b"]") if array else (b'{"a":', b"}")
    nested = Raw(opening * depth + b"0" + closing * depth)
    _check_parse(_dump({"type": "new_order", "symbol": "X", "side": "buy", "qty": 1, "price": 1, key: nested}))

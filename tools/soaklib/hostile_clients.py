"""Hostile clients: malformed frames, invalid requests, requests before
login and acts for other accounts, each of which must get the documented
refusal."""

from __future__ import annotations

import json
import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

import gevent

from pyengine.client import Client, ConnectionClosed, ServerError

from .common import (HEADER, HOSTILE_BASE, REPLY_TIMEOUT, TRACKED_BASE, UNLISTED_ACCOUNT, OrderBoard, Soak, frame,
                     reset_on_close)


@dataclass(frozen=True)
class Expect:
    types: frozenset[str]
    codes: frozenset[str] = frozenset()  # empty: any code

    def accepts(self, reply: dict[str, Any]) -> bool:
        return reply.get("type") in self.types and (not self.codes or reply.get("code") in self.codes)

    def __str__(self) -> str:
        return f"{'/'.join(sorted(self.types))} {'/'.join(sorted(self.codes)) or '(any code)'}"


def error(*codes: str) -> Expect:
    return Expect(frozenset({"error"}), frozenset(codes))


def reject(*codes: str) -> Expect:
    return Expect(frozenset({"reject"}), frozenset(codes))


REJECT_OR_ERROR = Expect(frozenset({"reject", "error"}))


class HostileFrame(NamedTuple):
    case: str
    data: bytes
    expect: Expect
    req_id: int | None  # None: the reply cannot carry one


# Frames that cannot be parsed into a request, at any time: the reply has no req_id.
UNPARSABLE: tuple[tuple[str, bytes, Expect], ...] = (
    ("bad_json:cut_short", b'{"type": "ping", "req_id": 1', error("bad_json")),
    ("bad_json:not_utf8", b'{"type": "ping", "req_id": "\xff\xfe"}', error("bad_json")),
    ("bad_json:infinity", b'{"type": "new_order", "qty": 1e999}', error("bad_json")),
    ("bad_json:too_deep", b"[" * 2000 + b"]" * 2000, error("bad_json")),
    ("bad_json:trailing", b'{"type": "ping"} {"type": "ping"}', error("bad_json")),
    ("bad_json:binary", bytes(range(48)), error("bad_json")),
    ("not_object:array", b'[{"type": "ping"}]', error("bad_message")),
    ("not_object:string", b'"ping"', error("bad_message")),
    ("not_object:number", b"42", error("bad_message")),
    ("not_object:null", b"null", error("bad_message")),
    ("unknown_type:missing", b'{"qty": 1}', error("unknown_type")),
    ("unknown_type:number", b'{"type": 7}', error("unknown_type")),
    ("wrong_type:req_id", b'{"type": "ping", "req_id": [1]}', error("bad_field")),
    ("huge:req_id", b'{"type": "ping", "req_id": 100000000000000000000000000000}', error("bad_field")),
)

_ORDER = {"type": "new_order", "symbol": "ESZ6", "side": "buy", "qty": 1, "price": 440_000}
_NOT_LOGGED_IN = error("not_logged_in")

# Requests only a logged-in session may send, before its login.
BEFORE_LOGIN: tuple[tuple[str, dict[str, Any], Expect], ...] = (
    ("before_login:new_order", _ORDER, _NOT_LOGGED_IN),
    ("before_login:cancel", {"type": "cancel", "order_id": 1}, _NOT_LOGGED_IN),
    ("before_login:modify", {"type": "modify", "order_id": 1, "qty": 2}, _NOT_LOGGED_IN),
    ("before_login:mass_cancel", {"type": "mass_cancel"}, _NOT_LOGGED_IN),
    ("before_login:snapshot", {"type": "snapshot"}, _NOT_LOGGED_IN),
    ("before_login:halt", {"type": "halt", "symbol": "ESZ6"}, _NOT_LOGGED_IN),
    ("bad_login:account_type", {"type": "login", "account": "7"}, error("bad_field")),
    ("bad_login:account_huge", {"type": "login", "account": 1 << 40}, error("bad_field")),
    ("bad_login:no_account", {"type": "login"}, error("missing_field")),
    ("bad_login:cod_type", {"type": "login", "account": HOSTILE_BASE, "cancel_on_disconnect": "yes"},
     error("bad_field")),
)

# Requests of a logged-in session that must be refused.
AFTER_LOGIN: tuple[tuple[str, dict[str, Any], Expect], ...] = (
    ("unknown_type:name", {"type": "drop_tables"}, error("unknown_type")),
    ("wrong_type:qty_string", {**_ORDER, "qty": "10"}, error("bad_field")),
    ("wrong_type:qty_float", {**_ORDER, "qty": 1.5}, error("bad_field")),
    ("wrong_type:qty_bool", {**_ORDER, "qty": True}, error("bad_field")),
    ("wrong_type:price_string", {**_ORDER, "price": "440000"}, error("bad_field")),
    ("wrong_type:side", {**_ORDER, "side": 1}, error("bad_field")),
    ("wrong_type:symbol", {**_ORDER, "symbol": 5}, error("bad_field")),
    ("wrong_type:tif", {**_ORDER, "tif": "day"}, error("bad_field")),
    ("wrong_type:order_type", {**_ORDER, "order_type": "stop"}, error("bad_field")),
    ("wrong_type:post_only", {**_ORDER, "post_only": "yes"}, error("bad_field")),
    ("wrong_type:coid_too_long", {**_ORDER, "client_order_id": "x" * 17}, error("bad_field")),
    ("wrong_type:coid_control", {**_ORDER, "client_order_id": "a\nb"}, error("bad_field")),
    ("wrong_type:cancel_id_string", {"type": "cancel", "order_id": "7"}, error("bad_field")),
    ("wrong_type:mass_cancel_symbol", {"type": "mass_cancel", "symbol": 7}, error("bad_field")),
    ("bad_shape:market_with_price", {**_ORDER, "order_type": "market"}, error("bad_field")),
    ("bad_shape:limit_without_price", {k: v for k, v in _ORDER.items() if k != "price"}, error("bad_field")),
    ("bad_shape:cancel_both_ids", {"type": "cancel", "order_id": 7, "client_order_id": "a"}, error("bad_field")),
    ("bad_shape:cancel_no_id", {"type": "cancel"}, error("missing_field")),
    ("missing:qty", {k: v for k, v in _ORDER.items() if k != "qty"}, error("missing_field")),
    ("missing:side", {k: v for k, v in _ORDER.items() if k != "side"}, error("missing_field")),
    ("missing:symbol", {k: v for k, v in _ORDER.items() if k != "symbol"}, error("missing_field")),
    ("missing:modify_qty", {"type": "modify", "order_id": 7}, error("missing_field")),
    ("huge:qty_over_int64", {**_ORDER, "qty": 10**30}, error("bad_field", "bad_json")),
    ("huge:qty_int64_outside_band", {**_ORDER, "qty": (1 << 63) - 1, "price": 1_000}, REJECT_OR_ERROR),
    ("huge:price_int64", {**_ORDER, "price": (1 << 63) - 1}, REJECT_OR_ERROR),
    ("huge:price_int64_min", {**_ORDER, "price": -(1 << 63)}, REJECT_OR_ERROR),
    ("huge:price_over_int64", {**_ORDER, "price": 1 << 64}, error("bad_field", "bad_json")),
    ("huge:order_id", {"type": "cancel", "order_id": 1 << 64}, error("bad_field", "bad_json")),
    ("huge:account", {"type": "mass_cancel", "account": 1 << 40}, error("bad_field")),
    ("unknown:symbol_order", {**_ORDER, "symbol": "NOPE"}, reject("unknown_instrument")),
    ("unknown:symbol_subscribe", {"type": "subscribe", "symbol": "NOPE"}, error("unknown_symbol")),
    ("unknown:not_subscribed", {"type": "unsubscribe", "symbol": "ESZ6"}, error("not_subscribed")),
    ("login:again", {"type": "login", "account": HOSTILE_BASE}, error("already_logged_in")),
    ("privilege:mass_cancel_all", {"type": "mass_cancel", "all_accounts": True}, error("not_admin")),
    ("privilege:mass_cancel_account", {"type": "mass_cancel", "account": TRACKED_BASE}, error("not_admin")),
    ("privilege:snapshot", {"type": "snapshot"}, error("not_admin")),
    ("privilege:halt", {"type": "halt", "symbol": "ESZ6"}, error("not_admin")),
    ("privilege:resume", {"type": "resume", "symbol": "ESZ6"}, error("not_admin")),
)

_OTHERS_ORDER = reject("not_owner", "unknown_order")


def other_account_case(rng: random.Random, board: OrderBoard) -> tuple[str, dict[str, Any], Expect]:
    """Act on an order of another account."""
    kind = rng.randrange(4)
    if kind == 0:
        return "other_account:cancel", {"type": "cancel", "order_id": board.order_id(rng)}, _OTHERS_ORDER
    if kind == 1:
        return "other_account:modify", {"type": "modify", "order_id": board.order_id(rng), "qty": 1}, _OTHERS_ORDER
    if kind == 2:
        message = {"type": "modify", "order_id": board.order_id(rng), "qty": (1 << 63) - 1}
        return "other_account:modify_huge", message, _OTHERS_ORDER
    message = {"type": "cancel", "client_order_id": board.client_order_id(rng)}
    return "other_account:cancel_by_coid", message, reject("unknown_order")


class HostileClient:
    """Sends what a well-behaved client never would; see the module docstring."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.report = soak.report
        self.name = f"hostile-{index}"
        self.account = HOSTILE_BASE + index
        self.rng = soak.rng(self.name)
        self.next_req = 0

    def run(self) -> None:
        while not self.soak.stop.is_set():
            try:
                r = self.rng.random()
                if r < 0.25:
                    self._framing_case()
                elif r < 0.27 and self.soak.may_fail_login():
                    self._failed_login()
                else:
                    self._session()
            except (OSError, ServerError, ConnectionClosed) as exc:
                self.report.fail("hostile", f"{self.name}: {exc!r}")
                gevent.sleep(1.0)
            gevent.sleep(self.rng.uniform(0.02, 0.2))

    def _sent(self, case: str) -> None:
        self.report.count("hostile_frames")
        self.report.count(f"hostile:{case.split(':')[0]}")

    def _with_req_id(self, case: str, message: dict[str, Any], expect: Expect) -> HostileFrame:
        self.next_req += 1
        # The json module, not orjson: it writes integers of any size.
        body = json.dumps({**message, "req_id": self.next_req}).encode()
        return HostileFrame(case, frame(body), expect, self.next_req)

    def _unparsable(self, n: int) -> list[HostileFrame]:
        return [HostileFrame(case, frame(body), expect, None)
                for case, body, expect in self.rng.choices(UNPARSABLE, k=n)]

    def _session(self) -> None:
        """Pipelined batches before and after login, then a ping."""
        client = self.soak.connect()
        before = [self._with_req_id(*case) for case in self.rng.choices(BEFORE_LOGIN, k=self.rng.randint(0, 4))]
        self._batch(client, before + self._unparsable(self.rng.randint(0, 2)))
        if client.login(self.account)["claimed_orders"]:
            self.report.fail("hostile", f"{self.name}: account {self.account} was handed orders it never entered")
        after = [self._with_req_id(*case) for case in self.rng.choices(AFTER_LOGIN, k=self.rng.randint(2, 10))]
        after += [self._with_req_id(*other_account_case(self.rng, self.soak.board))
                  for _ in range(self.rng.randint(0, 4))]
        self._batch(client, after + self._unparsable(self.rng.randint(0, 3)))
        pong = client.request(client.ping(), timeout=REPLY_TIMEOUT)
        if pong.get("type") != "pong":
            self.report.fail("hostile", f"{self.name}: a ping after the hostile frames got {pong}")
        if self.rng.random() < 0.5:
            reset_on_close(client.sock)
        client.close()

    def _batch(self, client: Client, frames: list[HostileFrame]) -> None:
        """Send the frames at once, then match each reply to its frame: by
        req_id, or in order for the frames that cannot carry one."""
        if not frames:
            return
        self.rng.shuffle(frames)
        client.send_raw(b"".join(f.data for f in frames))
        by_id: dict[Any, HostileFrame] = {f.req_id: f for f in frames if f.req_id is not None}
        anonymous = deque(f for f in frames if f.req_id is None)
        for f in frames:
            self._sent(f.case)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while by_id or anonymous:
            try:
                reply = client.recv(timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                cases = [f.case for f in (*by_id.values(), *anonymous)]
                self.report.fail("hostile", f"{self.name}: no reply within {REPLY_TIMEOUT:g} s to {cases}")
                return
            req_id = reply.get("req_id")
            matched = by_id.pop(req_id, None) if req_id is not None else (anonymous.popleft() if anonymous else None)
            if matched is None:
                self.report.fail("hostile", f"{self.name}: a reply to no frame of ours: {reply}")
            elif not matched.expect.accepts(reply):
                self.report.fail("hostile", f"{matched.case}: expected {matched.expect}, got {reply}")

    def _framing_case(self) -> None:
        """A frame that breaks the stream: an error, then the server closes."""
        kind = self.rng.choice(("too_large", "empty", "truncated", "garbage", "cut_by_reset"))
        client = self.soak.connect()
        if self.rng.random() < 0.5:
            client.login(self.account)
        self._sent(f"framing:{kind}")
        if kind == "cut_by_reset":  # nothing to read back: the server must just survive it
            client.send_raw(HEADER.pack(200) + b'{"type": "new_order", "sym')
            reset_on_close(client.sock)
            client.close()
            return
        data, expected_code, end_stream = self._framing_bytes(kind)
        client.send_raw(data)
        if end_stream:
            client.sock.shutdown(socket.SHUT_WR)
        self._expect_error_then_close(client, f"framing:{kind}", expected_code)

    def _framing_bytes(self, kind: str) -> tuple[bytes, str | None, bool]:
        """(bytes, the code of the last error expected or None for any, whether
        to end our side of the stream after them)."""
        if kind == "too_large":
            return HEADER.pack(self.rng.randint(1 << 20, (1 << 32) - 1)) + b'{"type": "ping"}', "frame_too_large", False
        if kind == "empty":
            return HEADER.pack(0), "empty_frame", False
        if kind == "truncated":
            n = self.rng.randint(20, 4000)
            return HEADER.pack(n) + self.rng.randbytes(self.rng.randint(0, n - 1)), "truncated_frame", True
        return self.rng.randbytes(self.rng.randint(1, 300)), None, True

    def _expect_error_then_close(self, client: Client, case: str, code: str | None) -> None:
        replies: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + REPLY_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                replies.append(client.recv(timeout=left))
            self.report.fail("hostile", f"{case}: the server kept the connection open; replies {replies[-3:]}")
        except (ConnectionClosed, ConnectionError):
            if any(r.get("type") != "error" for r in replies) or (code is not None and
                                                                  (not replies or replies[-1].get("code") != code)):
                self.report.fail("hostile", f"{case}: expected error {code or '(any)'} and a close, got {replies[-3:]}")
        except TimeoutError:
            self.report.fail("hostile", f"{case}: neither a close nor a reply within {REPLY_TIMEOUT:g} s")
        finally:
            client.close()

    def _failed_login(self) -> None:
        client = self.soak.connect()
        self._sent("auth:unlisted_account")
        try:
            client.login(UNLISTED_ACCOUNT)
            self.report.fail("hostile", f"a login as unlisted account {UNLISTED_ACCOUNT} was accepted")
        except ServerError as exc:
            if exc.code != "auth_failed":
                self.report.fail("hostile", f"a login as an unlisted account got {exc.reply}")
        client.close()

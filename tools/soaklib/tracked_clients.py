"""Tracked clients: well-behaved sessions that keep an exact account of every
order, check each reply and push against it, and at the end verify the open
orders on the server."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
from idpool import IdPool

from pyengine.client import ConnectionClosed, ServerError

from .common import (BARRIER_COID, MARKETS, REPLY_TIMEOUT, TRACKED_BASE, TRACKED_MAX_OPEN, SetupError, Soak,
                     compare_open, mass_cancel_all)


@dataclass
class TrackedOrder:
    order_id: int
    symbol: str
    price: int | None
    leaves: int
    resting: bool  # a GTC limit order: it may rest in the book
    post_only: bool
    client_order_id: str | None
    end: str | None = None  # "filled" or "cancelled:<reason>"


@dataclass(frozen=True)
class Pending:
    kind: str  # new_order, cancel, modify, barrier
    order_id: int = 0  # of a cancel or modify
    qty: int = 0  # of a new order
    symbol: str = ""
    resting: bool = False
    post_only: bool = False


class TrackedClient:
    """A well-behaved session that keeps an exact account of its orders and
    checks every reply and push against it (see the module docstring)."""

    def __init__(self, soak: Soak, index: int, rate: float) -> None:
        self.soak = soak
        self.report = soak.report
        self.account = TRACKED_BASE + index
        self.name = f"tracked-{index}"
        self.rng = soak.rng(self.name)
        self.interval = 1.0 / rate
        self.orders: dict[int, TrackedOrder] = {}
        self.idle = IdPool()  # open resting orders with no cancel or modify in flight
        self.pending: dict[int, Pending] = {}
        self.next_req = 0
        self.next_coid = 0
        self.closing = False
        self.reader_done = gevent.event.Event()
        self.barrier_passed = gevent.event.Event()
        self.client = soak.connect()
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "ack": self._on_ack, "reject": self._on_reject, "fill": self._on_fill,
            "cancelled": self._on_cancelled, "modified": self._on_modified, "error": self._on_error,
        }
        self._reader: gevent.Greenlet | None = None
        self._sender: gevent.Greenlet | None = None

    # ---- lifetime

    def start(self) -> None:
        try:
            claimed = self.client.login(self.account, cancel_on_disconnect=False)["claimed_orders"]
        except (OSError, ServerError, ConnectionClosed) as exc:
            raise SetupError(f"{self.name} cannot log in as account {self.account}: {exc!r}") from None
        if claimed:
            raise SetupError(f"account {self.account} has {claimed} open orders from before the soak")
        self._reader = gevent.spawn(self._read_loop)
        self._sender = gevent.spawn(self._send_loop)

    def stop_sending(self) -> None:
        if self._sender is not None:
            self._sender.join(timeout=5)

    def wait_answered(self, timeout: float = REPLY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline and not self.reader_done.is_set():
            gevent.sleep(0.05)
        if self.pending:
            self.report.fail("accounting", f"{self.name}: {len(self.pending)} request(s) never answered, e.g. "
                                           f"{list(self.pending.items())[:3]}")

    def barrier(self, timeout: float = REPLY_TIMEOUT) -> None:
        """A request through the engine after all the load: once it is
        answered, every event for this session's orders has arrived."""
        self._send({"type": "cancel", "client_order_id": BARRIER_COID}, Pending("barrier"))
        if not self.barrier_passed.wait(timeout):
            self.report.fail("accounting", f"{self.name}: no answer to the final request through the engine")

    def hand_over(self, timeout: float = REPLY_TIMEOUT) -> None:
        """Close our end of the stream; the server then leaves the open
        orders to the account's next session, and closes its end."""
        self.closing = True
        self.client.sock.shutdown(socket.SHUT_WR)
        if not self.reader_done.wait(timeout):
            self.report.fail("accounting", f"{self.name}: the server did not close the session after its end of stream")
        self.client.close()

    def expected_open(self) -> dict[int, int]:
        return {o.order_id: o.leaves for o in self.orders.values() if o.end is None and o.resting}

    def unfinished_takers(self) -> list[int]:
        return [o.order_id for o in self.orders.values() if o.end is None and not o.resting]

    def tally(self) -> Counter[str]:
        """Orders by how they ended: filled, cancelled or open."""
        return Counter(("open" if o.end is None else o.end.split(":")[0]) for o in self.orders.values())

    # ---- sending

    def _send_loop(self) -> None:
        next_at = time.monotonic()
        while not self.soak.stop.is_set() and not self.reader_done.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
                continue
            try:
                self._send_one()
            except OSError as exc:
                if not self.reader_done.is_set():
                    self.report.fail("connections", f"{self.name}: send failed: {exc!r}")
                return
            next_at = max(next_at + self.interval, time.monotonic() - 1.0)

    def _send(self, message: dict[str, Any], pending: Pending) -> None:
        self.next_req += 1
        message["req_id"] = self.next_req
        self.pending[self.next_req] = pending
        self.client.send(message)

    def _send_one(self) -> None:
        r = self.rng.random()
        if self.idle and (len(self.idle) >= TRACKED_MAX_OPEN or r < 0.22):
            self._send_cancel()
        elif self.idle and r < 0.30:
            self._send_modify()
        elif r < 0.80:
            self._send_limit()
        elif r < 0.96:
            self._send_taker("ioc" if r < 0.92 else "fok")
        else:
            self._send_market()

    def _coid(self) -> str | None:
        if self.rng.random() >= 0.3:
            return None
        self.next_coid += 1
        return f"t{self.next_coid}"

    def _send_limit(self) -> None:
        market = self.rng.choice(MARKETS)
        side = self.rng.choice(("buy", "sell"))
        depth = self.rng.randint(0, 10)
        price = market.mid - depth * market.tick if side == "buy" else market.mid + depth * market.tick
        qty = self.rng.randint(1, 10)
        post_only = self.rng.random() < 0.1
        message: dict[str, Any] = {"type": "new_order", "symbol": market.symbol, "side": side, "qty": qty,
                                   "price": price, "post_only": post_only}
        coid = self._coid()
        if coid is not None:
            message["client_order_id"] = coid
        self._send(message, Pending("new_order", qty=qty, symbol=market.symbol, resting=True, post_only=post_only))

    def _send_taker(self, tif: str) -> None:
        market = self.rng.choice(MARKETS)
        side = self.rng.choice(("buy", "sell"))
        through = self.rng.randint(0, 3) * market.tick
        price = market.mid + through if side == "buy" else market.mid - through
        qty = self.rng.randint(1, 10)
        message = {"type": "new_order", "symbol": market.symbol, "side": side, "qty": qty, "price": price, "tif": tif}
        self._send(message, Pending("new_order", qty=qty, symbol=market.symbol))

    def _send_market(self) -> None:
        market = self.rng.choice(MARKETS)
        qty = self.rng.randint(1, 10)
        message = {"type": "new_order", "symbol": market.symbol, "side": self.rng.choice(("buy", "sell")),
                   "qty": qty, "order_type": "market"}
        self._send(message, Pending("new_order", qty=qty, symbol=market.symbol))

    def _target(self, order: TrackedOrder) -> dict[str, Any]:
        if order.client_order_id is not None and self.rng.random() < 0.3:
            return {"client_order_id": order.client_order_id}
        return {"order_id": order.order_id}

    def _send_cancel(self) -> None:
        order = self.orders[self.idle.pop_random(self.rng)]
        self._send({"type": "cancel", **self._target(order)}, Pending("cancel", order_id=order.order_id))

    def _send_modify(self) -> None:
        order = self.orders[self.idle.pop_random(self.rng)]
        if order.post_only:
            self._send({"type": "cancel", **self._target(order)}, Pending("cancel", order_id=order.order_id))
            return
        message: dict[str, Any] = {"type": "modify", **self._target(order)}
        if order.leaves > 1 and self.rng.random() < 0.5:
            message["qty"] = order.leaves - 1  # same price, less: keeps its priority
        else:
            tick = next(m.tick for m in MARKETS if m.symbol == order.symbol)
            message["qty"] = order.leaves + self.rng.randint(0, 3)
            message["price"] = (order.price or 0) + self.rng.choice((-tick, tick))
        self._send(message, Pending("modify", order_id=order.order_id))

    # ---- receiving

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    message = self.client.recv()
                except TimeoutError:
                    continue
                handler = self._handlers.get(message.get("type", ""))
                if handler is not None:
                    handler(message)
        except (ConnectionClosed, OSError) as exc:
            if not self.closing:
                self.report.fail("connections", f"{self.name}: the connection ended during the run: {exc!r}")
        finally:
            self.reader_done.set()

    def _fail(self, message: str) -> None:
        self.report.fail("accounting", f"{self.name} (account {self.account}): {message}")

    def _take_pending(self, m: dict[str, Any], *kinds: str) -> Pending | None:
        pending = self.pending.pop(m.get("req_id"), None)  # type: ignore[arg-type]
        if pending is None or pending.kind not in kinds:
            self._fail(f"a {m.get('type')} answering no {'/'.join(kinds)} of ours: {m} (ours: {pending})")
            return None
        return pending

    def _order(self, m: dict[str, Any]) -> TrackedOrder | None:
        order = self.orders.get(m["order_id"])
        if order is None:
            self._fail(f"a {m['type']} for order {m['order_id']}, which the client never saw acknowledged: {m}")
        elif order.end is not None:
            self._fail(f"a {m['type']} for order {order.order_id}, which had ended ({order.end}): {m}")
            return None
        return order

    def _end(self, order: TrackedOrder, how: str) -> None:
        order.end = how
        self.idle.discard(order.order_id)

    def _on_ack(self, m: dict[str, Any]) -> None:
        pending = self._take_pending(m, "new_order")
        if pending is None:
            return
        oid = m["order_id"]
        if oid in self.orders or m["qty"] != pending.qty or m["symbol"] != pending.symbol:
            self._fail(f"an ack that does not match the order sent ({pending}): {m}")
            return
        self.orders[oid] = TrackedOrder(oid, m["symbol"], m["price"], m["qty"], pending.resting, pending.post_only,
                                        m["client_order_id"])
        if pending.resting:
            self.idle.add(oid)
        self.soak.board.add(oid, m["client_order_id"])
        self.report.count("tracked_acks")

    def _on_reject(self, m: dict[str, Any]) -> None:
        pending = self._take_pending(m, "new_order", "cancel", "modify", "barrier")
        if pending is None:
            return
        code = m["code"]
        if pending.kind == "barrier":
            if code != "unknown_order":
                self._fail(f"the final request got {m}")
            self.barrier_passed.set()
        elif pending.kind == "new_order":
            self.report.count("tracked_rejects")
            if code != "post_only_would_cross":
                self._fail(f"a valid order was rejected: {m}")
        else:
            self._on_late_reject(pending, m)

    def _on_late_reject(self, pending: Pending, m: dict[str, Any]) -> None:
        """A cancel or modify rejected: only because the order had ended,
        and its end arrived first."""
        order = self.orders[pending.order_id]
        if m["code"] != "unknown_order" or order.end is None:
            self._fail(f"{pending.kind} of order {order.order_id} rejected while the client holds it open "
                       f"(leaves {order.leaves}): {m}")
            if order.end is None:
                self.idle.add(order.order_id)
            return
        self.report.count("tracked_late_cancels")

    def _on_fill(self, m: dict[str, Any]) -> None:
        order = self._order(m)
        if order is None:
            return
        if m["leaves"] != order.leaves - m["qty"]:
            self._fail(f"fill of {m['qty']} on order {order.order_id} with leaves {order.leaves} says leaves "
                       f"{m['leaves']}")
        order.leaves = m["leaves"]
        self.report.count("tracked_fills")
        if order.leaves == 0:
            self._end(order, "filled")

    def _on_cancelled(self, m: dict[str, Any]) -> None:
        if m.get("req_id") is not None:
            pending = self._take_pending(m, "cancel")
            if pending is not None and pending.order_id != m["order_id"]:
                self._fail(f"a cancel of order {pending.order_id} answered for order {m['order_id']}")
        order = self._order(m)
        if order is None:
            return
        reason = m["reason"]
        if m["leaves"] != order.leaves:
            self._fail(f"order {order.order_id} cancelled with leaves {m['leaves']}, the client has {order.leaves}")
        if m.get("req_id") is None and reason == "user":
            self._fail(f"order {order.order_id} cancelled by someone else (the client never asked): {m}")
        if m.get("req_id") is None and order.resting and reason in ("ioc", "fok", "market_remainder"):
            self._fail(f"a GTC order cancelled as an immediate one: {m}")
        self.report.count("tracked_cancels")
        self._end(order, f"cancelled:{reason}")

    def _on_modified(self, m: dict[str, Any]) -> None:
        pending = self._take_pending(m, "modify")
        order = self._order(m)
        if pending is None or order is None:
            return
        order.leaves = m["qty"]
        order.price = m["price"]
        self.idle.add(order.order_id)
        self.report.count("tracked_modifies")

    def _on_error(self, m: dict[str, Any]) -> None:
        self.pending.pop(m.get("req_id"), None)  # type: ignore[arg-type]
        self._fail(f"an error reply to a well-formed request: {m}")


def finish_tracked(soak: Soak, clients: list[TrackedClient]) -> None:
    """The end check of the accounting (see the module docstring)."""
    for c in clients:
        c.wait_answered()
    gevent.sleep(0.5)  # the last frames of dropped sessions reach the engine
    for c in clients:
        c.barrier()
    for c in clients:
        c.hand_over()
    for c in clients:
        verify_tracked(soak, c)


def verify_tracked(soak: Soak, tracked: TrackedClient) -> None:
    report = soak.report
    label = f"{tracked.name} (account {tracked.account})"
    unfinished = tracked.unfinished_takers()
    if unfinished:
        report.fail("accounting", f"{label}: {len(unfinished)} IOC/FOK/market order(s) acknowledged but neither "
                                  f"filled nor cancelled, e.g. {unfinished[:5]}")
    expected = tracked.expected_open()
    try:
        client = soak.connect()
        claimed = client.login(tracked.account, cancel_on_disconnect=False)["claimed_orders"]
        cancelled, count = mass_cancel_all(client)
        client.close()
    except (OSError, ServerError, ConnectionClosed) as exc:
        report.fail("accounting", f"{label}: could not claim the open orders: {exc!r}")
        return
    if claimed != len(expected):
        report.fail("accounting", f"{label}: the next login claimed {claimed} open orders, the client has "
                                  f"{len(expected)} open")
    compare_open(report, "accounting", label, expected, cancelled, count)
    tally = tracked.tally()
    report.count("verified_open", len(expected))
    for how, n in tally.items():
        report.count(f"tracked_orders_{how}", n)

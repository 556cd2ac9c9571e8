"""A careful pure-Python price-time matcher, for comparison with the C core.

What a good Python programmer would write for speed, covering what the
benchmark flow uses (GTC limit orders, market IOC orders, cancels with an
owner check) with the engine's semantics and the same event objects:

- a dict price -> OrderedDict(order id -> [qty, account]) per side, so a level
  keeps time priority and cancel is O(1);
- a heap of prices per side for the best price, with lazy deletion of emptied
  levels;
- a dict order id -> (side, price) for cancel.

It is not the model of the tests (that is ``pyengine.testing.ReferenceEngine``,
which is written to be obviously correct, not fast).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from pyengine import Accepted, CancelReason, Cancelled, Rejected, RejectReason, Side, Trade
from pyengine.enums import REJECT_MESSAGES

_NEW = tuple.__new__
_BUY, _SELL = Side.BUY, Side.SELL
_USER, _REMAINDER = CancelReason.USER, CancelReason.MARKET_REMAINDER
_UNKNOWN = (RejectReason.UNKNOWN_ORDER, REJECT_MESSAGES[RejectReason.UNKNOWN_ORDER])
_NOT_OWNER = (RejectReason.NOT_OWNER, REJECT_MESSAGES[RejectReason.NOT_OWNER])


class PyMatcher:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.levels: tuple[dict[int, OrderedDict], dict[int, OrderedDict]] = ({}, {})  # bids, asks
        self.heaps: tuple[list[int], list[int]] = ([], [])  # -price for bids, price for asks
        self.where: dict[int, tuple[int, int]] = {}  # order id -> (side 0/1, price)
        self.seq = 0
        self.next_id = 0
        self.next_trade = 0

    def _best(self, side: int) -> int | None:
        heap, levels = self.heaps[side], self.levels[side]
        while heap:
            key = heap[0]
            price = -key if side == 0 else key
            if price in levels:
                return price
            heapq.heappop(heap)
        return None

    def submit(self, side: str, qty: int, price: int | None, account: int) -> list:
        """A GTC limit order, or a market IOC order when price is None."""
        self.seq += 1
        self.next_id += 1
        oid, seq = self.next_id, self.seq
        s = 0 if side == "buy" else 1
        sym = self.symbol
        aggressor = _BUY if s == 0 else _SELL
        events = [_NEW(Accepted, (seq, oid, sym, aggressor, price, qty, account, None))]
        opp = 1 - s
        opp_levels = self.levels[opp]
        where = self.where
        while qty:
            best = self._best(opp)
            if best is None or (price is not None and (best > price if s == 0 else best < price)):
                break
            level = opp_levels[best]
            while qty and level:
                maker_id, maker = next(iter(level.items()))
                q = qty if qty < maker[0] else maker[0]
                qty -= q
                maker[0] -= q
                self.next_trade += 1
                events.append(
                    _NEW(
                        Trade,
                        (seq, self.next_trade, sym, best, q, maker_id, oid, maker[1], account, aggressor, maker[0], qty),
                    )
                )
                if maker[0] == 0:
                    del level[maker_id]
                    del where[maker_id]
            if not level:
                del opp_levels[best]
        if qty:
            if price is None:
                events.append(_NEW(Cancelled, (seq, oid, qty, _REMAINDER)))
            else:
                levels = self.levels[s]
                level = levels.get(price)
                if level is None:
                    level = levels[price] = OrderedDict()
                    heapq.heappush(self.heaps[s], -price if s == 0 else price)
                level[oid] = [qty, account]
                where[oid] = (s, price)
        return events

    def cancel(self, order_id: int, account: int) -> list:
        self.seq += 1
        at = self.where.get(order_id)
        if at is None:
            return [_NEW(Rejected, (self.seq, *_UNKNOWN, None, order_id))]
        side, price = at
        level = self.levels[side][price]
        qty, owner = level[order_id]
        if owner != account:
            return [_NEW(Rejected, (self.seq, *_NOT_OWNER, None, order_id))]
        del level[order_id]
        del self.where[order_id]
        if not level:
            del self.levels[side][price]
        return [_NEW(Cancelled, (self.seq, order_id, qty, _USER))]

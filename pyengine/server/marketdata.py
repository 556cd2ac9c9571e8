"""Market data: an L2 book per instrument, public trades, subscriptions.

The books are kept from the engine's level events, so they are exactly the
engine's books at each point of the event stream. Each instrument has its own
market-data sequence number, one per message, so a subscriber sees a gap at
once. Level changes are gathered while the dispatcher routes a batch of
events and go out as one ``book_update`` per instrument (the latest state of
each changed level), after that batch's ``trade`` messages.
"""

from __future__ import annotations

from typing import Any

from .codes import SIDE_NAMES
from .protocol import encode
from .seam import FrameSink

__all__ = ["MarketData"]


class MarketData:
    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        n = len(symbols)
        # books[i][side] maps price -> (total qty, order count); side 1 bids, 2 asks.
        self.books: list[tuple[dict[int, tuple[int, int]], ...]] = [({}, {}, {}) for _ in range(n)]
        self.seq = [0] * n
        self.halted = [False] * n
        self.subscribers: list[set[FrameSink]] = [set() for _ in range(n)]
        self._changes: dict[int, dict[tuple[int, int], tuple[int, int]]] = {}
        self._trades: dict[int, list[tuple[int, int, int, int]]] = {}

    def router_tables(self) -> tuple[Any, ...]:
        """What the dispatcher's Router (csrc/binding/route.c) updates in
        place for each level event (as ``level`` does) and each trade (it
        gathers (trade id, price, qty, aggressor side) for subscribed
        instruments): the books, the subscriber sets, the changes and the
        trades gathered for the next flush."""
        return self.books, self.subscribers, self._changes, self._trades

    def level(self, inst: int, side: int, price: int, total: int, count: int) -> None:
        """A level changed (total 0: it is gone). The dispatcher's Router
        does the same in C; this is for the books recovered at start."""
        book = self.books[inst][side]
        if total:
            book[price] = (total, count)
        else:
            book.pop(price, None)
        if self.subscribers[inst]:
            self._changes.setdefault(inst, {})[(side, price)] = (total, count)

    def trading_state(self, inst: int, halted: bool) -> None:
        """An instrument was halted or resumed: subscribers hear it in order
        with the book changes and trades around it."""
        self.flush()
        self.halted[inst] = halted
        self._publish(inst, {"type": "trading_state", "symbol": self.symbols[inst], "seq": 0,
                             "state": "halted" if halted else "open"})

    def flush(self) -> None:
        """Send what this batch of events changed to the subscribers."""
        for inst, trades in self._trades.items():
            symbol = self.symbols[inst]
            for trade_id, price, qty, aggressor in trades:
                self._publish(
                    inst,
                    {
                        "type": "trade",
                        "symbol": symbol,
                        "seq": 0,
                        "trade_id": trade_id,
                        "price": price,
                        "qty": qty,
                        "aggressor_side": SIDE_NAMES[aggressor],
                    },
                )
        self._trades.clear()
        for inst, changes in self._changes.items():
            self._publish(
                inst,
                {
                    "type": "book_update",
                    "symbol": self.symbols[inst],
                    "seq": 0,
                    "changes": [[SIDE_NAMES[side], price, total, count]
                                for (side, price), (total, count) in changes.items()],
                },
            )
        self._changes.clear()

    def _publish(self, inst: int, message: dict[str, Any]) -> None:
        self.seq[inst] += 1
        message["seq"] = self.seq[inst]
        frame = encode(message)
        for session in tuple(self.subscribers[inst]):
            session.send(frame)

    def snapshot(self, inst: int, req_id: Any) -> dict[str, Any]:
        """The whole book now, as the reply to a subscribe."""
        bids, asks = self.books[inst][1], self.books[inst][2]
        return {
            "type": "book_snapshot",
            "req_id": req_id,
            "symbol": self.symbols[inst],
            "seq": self.seq[inst],
            "state": "halted" if self.halted[inst] else "open",
            "bids": [[p, *bids[p]] for p in sorted(bids, reverse=True)],
            "asks": [[p, *asks[p]] for p in sorted(asks)],
        }

    def subscribe(self, session: FrameSink, inst: int, req_id: Any) -> dict[str, Any]:
        """Add `session` to the instrument's subscribers; the book's snapshot
        its updates start from (the ``book_snapshot`` reply)."""
        self.join(session, inst)
        return self.snapshot(inst, req_id)

    def join(self, session: FrameSink, inst: int) -> None:
        """Add `session` to the instrument's subscribers, for one that reads
        the book where it is kept (``books``) rather than from a snapshot.
        Anything gathered so far goes out first, so a snapshot taken now and
        the updates after it meet exactly."""
        self.flush()
        self.subscribers[inst].add(session)

    def unsubscribe(self, session: FrameSink, inst: int) -> bool:
        if session in self.subscribers[inst]:
            self.subscribers[inst].discard(session)
            return True
        return False

    def drop(self, session: FrameSink) -> None:
        for subs in self.subscribers:
            subs.discard(session)

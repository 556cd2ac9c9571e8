"""A set of order ids with O(1) add, discard and random choice, for the load
tools (tools/loadgen.py, tools/soak.py), which cancel a random open order of
their own many thousand times a second."""

from __future__ import annotations

import random


class IdPool:
    """Order ids with O(1) add, discard and random choice."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, oid: int) -> None:
        if oid not in self._pos:
            self._pos[oid] = len(self._ids)
            self._ids.append(oid)

    def discard(self, oid: int) -> None:
        pos = self._pos.pop(oid, None)
        if pos is None:
            return
        last = self._ids.pop()
        if pos < len(self._ids):
            self._ids[pos] = last
            self._pos[last] = pos

    def pop_random(self, rng: random.Random) -> int:
        oid = self._ids[rng.randrange(len(self._ids))]
        self.discard(oid)
        return oid

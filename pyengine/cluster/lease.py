"""The shard's leadership lease: one key in a JetStream key-value bucket.

The key ``lease.<shard>`` holds who leads (node, term, the address clients
use, the shard's instruments). Its revision changes with every write, and
every write is a compare-and-set on the revision the writer last saw, so of
two nodes racing for it exactly one wins.

Time is only ever measured on each node's own monotonic clock, never
compared across machines:

- the leader renews every ``ttl / 4`` (the next attempt at once when one
  took longer); a renewal sent at ``t`` makes it leader until
  ``t + ttl - margin`` (``margin = ttl / 4``), and a leader that has not
  renewed by then stops acting as one, whether or not it heard anything;
- a follower notes when it *saw* each revision; when it has seen none for
  ``ttl``, the lease has expired and it may try to take it (term + 1).

A write whose answer is lost (a timeout) may still have been stored; the
key holding this node's own value (its node and term, which no other node
writes) says it was, and the node writes once more on that revision, so
that its hold dates from a write it heard back from.

A follower sees a revision after the leader sent it, so the leader's own
deadline always passes first: by the time anyone takes over, the old leader
has stopped. Fencing in the log (shardlog.append) covers what clocks cannot:
a leader paused mid-append can never store anything after its successor's
first message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from ..log import fields
from .shardlog import lease_key

__all__ = ["Lease", "LeaseValue"]

log = logging.getLogger("pyengine.cluster")

# A write of the key that got no usable answer (a timeout, no quorum, the
# connection down, JetStream electing): the lease is as it was; try later.
_UNANSWERED = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


@dataclass(frozen=True)
class LeaseValue:
    node: str
    term: int
    address: str
    instruments: tuple[str, ...]

    def encode(self) -> bytes:
        return json.dumps({"node": self.node, "term": self.term, "address": self.address,
                           "instruments": list(self.instruments)}).encode()

    @staticmethod
    def decode(raw: bytes) -> LeaseValue:
        d = json.loads(raw)
        return LeaseValue(str(d["node"]), int(d["term"]), str(d.get("address", "")),
                          tuple(d.get("instruments", ())))


class Lease:
    def __init__(self, kv: KeyValue, shard: str, node: str, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kv = kv
        self.key = lease_key(shard)
        self.node = node
        self.ttl = ttl
        self.margin = ttl / 4
        self.clock = clock
        self.value: LeaseValue | None = None  # as last seen
        self.revision = 0  # of the value last seen; 0: none
        self.seen_at = clock()
        self.valid_until = 0.0  # while we hold it: we lead until then

    # ---- seeing it -----------------------------------------------------------

    def observe(self, revision: int, value: LeaseValue | None) -> None:
        """The key as a watch delivered it (or a read or a write of ours
        found it). Revisions only grow: an older one arriving late (a watch
        behind a renewal's answer) changes nothing; but one of a higher term
        is newer whatever its revision (the bucket was made again: its
        revisions start from 1, and its first lease is above every term of
        the log)."""
        newer_term = value is not None and self.value is not None and value.term > self.value.term
        if revision > self.revision or newer_term:
            self.revision, self.value, self.seen_at = revision, value, self.clock()

    async def refresh(self) -> None:
        """Read the key now (when a watch may have missed something)."""
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            # No key (deleted, or a bucket made again holds none yet): the
            # next take creates it, where an update of a revision would fail.
            self.revision, self.value, self.seen_at = 0, None, self.clock()
            return
        except _UNANSWERED:
            return
        if entry.revision is not None:  # a read has one (its message's stream sequence)
            self.observe(entry.revision, LeaseValue.decode(entry.value) if entry.value else None)

    def expired(self) -> bool:
        """Nobody holds it, by this node's clock: no new revision for ttl."""
        return self.value is None or self.clock() - self.seen_at > self.ttl

    @property
    def term(self) -> int:
        return self.value.term if self.value else 0

    def holding(self) -> bool:
        """We lead, and our own deadline has not passed."""
        return self.value is not None and self.value.node == self.node and self.clock() < self.valid_until

    # ---- taking and keeping it ---------------------------------------------

    async def acquire(self, address: str, instruments: tuple[str, ...], above: int = 0) -> bool:
        """Take the lease (term + 1) if it is still the revision we last saw.
        The term is above `above` too (the highest in the log): a key deleted
        and made again starts from nothing, and the log's readers pass over a
        message of a term below one they have seen."""
        value = LeaseValue(self.node, max(self.term, above) + 1, address, instruments)
        try:
            return await self._write(value)
        except _UNANSWERED as exc:
            log.warning("lease_acquire_failed", extra=fields(key=self.key, error=type(exc).__name__))
        return await self._confirm(value)

    async def renew(self) -> bool:
        """Renew; False once we no longer hold it (someone else took it, or
        our deadline passed while the key could not be written)."""
        value, revision = self.value, self.revision
        if value is None or value.node != self.node:
            return False
        try:
            stored = await self._write(value)
            if not stored and self.revision > revision and self.value == value:
                # The key moved on to our own value: an earlier renewal was
                # stored and only its answer lost. Renew on what it holds now.
                # (A read-back that failed leaves the revision refused: no retry.)
                stored = await self._write(value)
        except _UNANSWERED as exc:
            log.warning("lease_renew_failed", extra=fields(key=self.key, error=type(exc).__name__,
                                                            left_s=round(self.valid_until - self.clock(), 3)))
            return self.holding()
        if not stored:
            self.valid_until = 0.0
        return stored

    async def _confirm(self, value: LeaseValue) -> bool:
        """A write of `value` got no answer, yet may have been stored. If the
        key holds it (only this node writes its own node and term), write it
        once more on the revision read: our hold then dates from a write
        whose answer we have, as every hold must."""
        await self.refresh()
        if self.value != value:
            return False
        try:
            return await self._write(value)
        except _UNANSWERED:
            return False

    async def _write(self, value: LeaseValue) -> bool:
        """Write `value` on the revision last seen (create the key if none).
        True: stored, and we hold the lease until ttl - margin after sending;
        False: the key moved on (read again). Raises what _UNANSWERED names
        when no answer came: stored or not, nobody can say."""
        sent = self.clock()
        try:
            if self.revision == 0:
                revision = await self.kv.create(self.key, value.encode())
            else:
                revision = await self.kv.update(self.key, value.encode(), last=self.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            await self.refresh()
            return False
        self.observe(revision, value)
        self.valid_until = sent + self.ttl - self.margin
        return True

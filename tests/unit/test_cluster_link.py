"""How a node waits for JetStream at start-up (pyengine.cluster.link.patiently,
and the replica's first subscription to its shard's log)."""

from __future__ import annotations

import asyncio

from typing import Any

import nats.errors
import nats.js.errors
import pytest

from pyengine.cluster.replica import FOLLOWING, Replica

from pyengine.cluster.link import patiently


def test_a_cluster_still_placing_its_peers_is_waited_for() -> None:
    tries: list[int] = []

    async def create() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise nats.js.errors.BadRequestError(
                code=400, err_code=10005, description="no suitable peers for placement, peer offline"
            )
        return "made"

    assert asyncio.run(patiently("the snapshot store", create, timeout=10)) == "made"
    assert len(tries) == 3


def test_any_other_refusal_stands() -> None:
    async def create() -> str:
        raise nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name already in use")

    with pytest.raises(nats.js.errors.BadRequestError, match="10058"):
        asyncio.run(patiently("the shard's stream", create, timeout=10))


def test_waiting_has_an_end() -> None:
    async def create() -> str:
        raise nats.js.errors.BadRequestError(code=400, err_code=10005, description="no suitable peers for placement")

    with pytest.raises(ConnectionError, match=r"^the lease bucket: JetStream was not ready within 0.5 s "
                                              r"\(BadRequestError: .*no suitable peers for placement.*\)$"):
        asyncio.run(patiently("the lease bucket", create, timeout=0.5))


def test_following_the_log_waits_for_a_slow_jetstream() -> None:
    """The subscription that follows the shard's log is made at start-up:
    a JetStream that times out once (a busy machine) is asked again, as
    the node's entry is; the replica follows from the message after the
    last one applied."""
    calls: list[dict[str, Any]] = []

    class Js:
        async def subscribe(self, subject: str, **kw: Any) -> str:
            calls.append(dict(kw, subject=subject))
            if len(calls) == 1:
                raise nats.errors.TimeoutError
            return "subscription"

    class Link:
        js = Js()

    replica = Replica.__new__(Replica)
    replica.link, replica.shard, replica.applied = Link(), "a", 41  # type: ignore[assignment]
    replica.role, replica._took_lease = FOLLOWING, False
    asyncio.run(replica._follow())
    assert len(calls) == 2 and replica._sub == "subscription"
    assert calls[1]["config"].opt_start_seq == 42 and calls[1]["ordered_consumer"]

"""How a node waits for JetStream at start-up (pyengine.cluster.link.patiently)."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest

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

    with pytest.raises(ConnectionError, match="the lease bucket: JetStream did not answer within 0.5 s"):
        asyncio.run(patiently("the lease bucket", create, timeout=0.5))

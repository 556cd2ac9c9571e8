"""How a node waits for JetStream at start-up (pyengine.cluster.link.patiently,
and the replica's first subscription to its shard's log)."""

from __future__ import annotations

import asyncio

from typing import Any

import nats.errors
import nats.js.errors
import pytest

from pyengine.cluster.replica import FOLLOWING, Replica

from pyengine.cluster import link
from pyengine.cluster.link import patiently
from pyengine.cluster.shardlog import ensure_stream


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


def test_a_start_waits_for_a_restore_of_its_log() -> None:
    """A stream being restored answers "not found" to its information and
    "already in use" (10058) to its making until its last chunk is in (as
    nats-server 2.15 does, shown against a real cluster in the change that
    made this rule): a node's start asks again, and takes up the restored
    stream once it is there; where before the start failed on "not found"."""
    restoring = [2]  # the tries still to meet the restore under way
    calls: list[str] = []

    class Info:
        class config:  # noqa: N801 (the attribute nats-py's StreamInfo has)
            num_replicas = 3
            metadata = {"pyengine_log": "20261207T000000000000Z"}

    class Js:
        async def stream_info(self, name: str) -> Any:
            calls.append("info")
            if restoring[0]:
                raise nats.js.errors.NotFoundError(code=404, err_code=10059, description="stream not found")
            return Info

        async def add_stream(self, config: Any) -> Any:
            calls.append("add")
            restoring[0] -= 1
            raise nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name already in use")

    start = patiently("the shard's stream", lambda: ensure_stream(Js(), "a", 3), timeout=10)  # type: ignore[arg-type]
    assert asyncio.run(start) == "20261207T000000000000Z"
    assert calls == ["info", "add", "info"] * 2  # the second try's last look finds the restored stream


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


def test_a_long_wait_is_logged_with_what_it_waits_on(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A NATS server without JetStream answers no responders, as one not
    ready does: past a few seconds (here 0.3 s) the wait says so at info, then
    at intervals (here 0.5 s), rather than in debug lines alone until the end."""
    monkeypatch.setattr(link, "_WAIT_NOTICE", 0.3)
    monkeypatch.setattr(link, "_WAIT_NOTICE_EVERY", 0.5)

    async def waited() -> str:
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5

        async def create() -> str:
            if loop.time() < until:
                raise nats.errors.NoRespondersError()
            return "made"
        return await patiently("the shard's stream", create, timeout=10)

    with caplog.at_level("DEBUG", logger="pyengine.cluster"):
        assert asyncio.run(waited()) == "made"
    notices = [r for r in caplog.records if r.getMessage() == "jetstream_waiting"]
    assert 2 <= len(notices) <= 5 and {r.levelname for r in notices} == {"INFO"}  # from 0.3 s, every 0.5 s
    assert notices[0].kv["what"] == "the shard's stream" and notices[0].kv["error"].startswith("NoRespondersError")
    assert notices[0].kv["timeout_s"] == 10
    assert any(r.getMessage() == "jetstream_not_ready" for r in caplog.records)


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

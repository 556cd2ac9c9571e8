"""One node's connection to the NATS cluster and the JetStream objects of its shard."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from ..log import Throttle, fields
from .config import ClusterConfig
from .shardlog import KV_BUCKET, NoLeaderYet, ensure_stream
from .snapshots import open_store

__all__ = ["Link", "connect", "not_yet", "patiently"]

log = logging.getLogger("pyengine.cluster")

T = TypeVar("T")


@dataclass
class Link:
    nc: NATS
    js: JetStreamContext  # for the log: appends, stream info, consumers
    kv: KeyValue  # the leases (short timeouts: a lease is renewed well within its ttl)
    snapshots: ObjectStore

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except (nats.errors.Error, asyncio.TimeoutError):
            await self.nc.close()


async def connect(cluster: ClusterConfig, timeout: float = 120.0) -> Link:
    """Connect to the NATS servers and make sure the shard's stream, the
    lease bucket and the snapshot store exist. Raises ConnectionError when
    no server answers within `timeout` seconds."""

    # The client reports every failed try, and tries every 0.2 s while no
    # server answers: a line each 5 s at most for each kind of error.
    error_lines = Throttle(5.0)

    async def on_error(exc: Exception) -> None:
        if (held := error_lines.allow(type(exc))) is not None:
            log.warning("nats_error", extra=fields(error=f"{type(exc).__name__}: {exc}", held_back=held))

    async def on_disconnected() -> None:
        log.warning("nats_disconnected", extra=fields(node=cluster.node))

    async def on_reconnected() -> None:
        log.info("nats_reconnected", extra=fields(node=cluster.node, server=nc.connected_url.netloc
                                                  if nc.connected_url else None))

    try:
        nc = await asyncio.wait_for(nats.connect(
            list(cluster.nats), name=f"pyengine-{cluster.shard}-{cluster.node}", connect_timeout=2,
            reconnect_time_wait=0.2, max_reconnect_attempts=-1, ping_interval=5, max_outstanding_pings=2,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
        ), timeout)
    except (asyncio.TimeoutError, nats.errors.Error, OSError) as exc:
        raise ConnectionError(f"no NATS server answered at {', '.join(cluster.nats)}: "
                              f"{str(exc) or type(exc).__name__}") from None
    # Short timeouts: a JetStream object just made answers once it has a
    # leader, and a request sent before that is lost, not queued.
    js = nc.jetstream(timeout=1.0)
    try:
        await patiently("the shard's stream", lambda: ensure_stream(js, cluster.shard, cluster.log_replicas), timeout)
        kv = await patiently("the lease bucket", lambda: _lease_bucket(nc, cluster), timeout)
        store = await patiently("the snapshot store", lambda: open_store(js, cluster.log_replicas), timeout)
    except nats.js.errors.APIError as exc:  # not "not yet": a refusal, as of more replicas than NATS servers
        await nc.close()
        raise ConnectionError(f"JetStream refused the shard's storage: {exc.description or type(exc).__name__} "
                              f"(err_code {exc.err_code})") from None
    except ConnectionError:
        await nc.close()
        raise
    log.info("nats_connected", extra=fields(node=cluster.node, shard=cluster.shard, replicas=cluster.log_replicas,
                                            server=nc.connected_url.netloc if nc.connected_url else None))
    return Link(nc, js, kv, store)


# What JetStream answers while it elects a leader for a stream just created
# or just lost: try again shortly.
_NOT_YET = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
            nats.js.errors.NoStreamResponseError, NoLeaderYet)
# The API error code of "no suitable peers for placement": a replicated
# stream asked for before the NATS cluster has seen all its peers (they are
# still starting, or one restarts). Also not yet.
_NO_PEERS_YET = 10005


def not_yet(exc: Exception) -> bool:
    """What JetStream answers while it is not ready: ask again shortly."""
    return isinstance(exc, _NOT_YET) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code == _NO_PEERS_YET
    )


async def patiently(what: str, call: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """`call()`, again after a pause while JetStream is not ready, for up to
    `timeout` seconds; for start-up, not for anything that must be quick.
    A wait past a few seconds is logged (`jetstream_waiting`), then every
    30 s: a NATS server without JetStream looks just like one not ready."""
    clock = asyncio.get_running_loop().time
    start = clock()
    notice = start + _WAIT_NOTICE
    while True:
        try:
            return await call()
        except Exception as exc:
            if not not_yet(exc):
                raise
            error = f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"
            if clock() > start + timeout:
                raise ConnectionError(f"{what}: JetStream was not ready within {timeout:g} s ({error})") from None
            if clock() >= notice:
                log.info("jetstream_waiting", extra=fields(what=what, waited_s=round(clock() - start),
                                                           timeout_s=timeout, error=error))
                notice = clock() + _WAIT_NOTICE_EVERY
            else:
                log.debug("jetstream_not_ready", extra=fields(what=what, error=type(exc).__name__))
            await asyncio.sleep(0.2)


_WAIT_NOTICE = 5.0  # s: longer than a NATS cluster's usual election
_WAIT_NOTICE_EVERY = 30.0


async def _lease_bucket(nc: NATS, cluster: ClusterConfig) -> KeyValue:
    kv_js = nc.jetstream(timeout=max(0.2, min(1.0, cluster.lease_ttl / 4)))
    try:
        return await kv_js.key_value(KV_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await kv_js.create_key_value(KeyValueConfig(
            bucket=KV_BUCKET, history=1, replicas=cluster.log_replicas, storage=StorageType.FILE))

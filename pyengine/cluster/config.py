"""The ``[cluster]`` part of the server's configuration.

    [cluster]
    nats = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
    shard = "a"                  # this node's shard (--shard)
    node = "a1"                  # this node's name, unique in its shard (--node)
    replicas = 3                 # copies of the shard's log (default: 3, or fewer NATS URLs)
    lease_ttl = 2.0              # seconds without a renewal before a follower may take over
    advertise = "10.0.0.4:7001"  # the address clients are sent to (default: the listening one); IPv6: "[addr]:7001"
    checkpoint_interval = 5.0    # seconds between state-hash checkpoints in the log (when it changed); 0: none

    [cluster.instruments]        # shard -> its instruments (default: one shard, every instrument)
    a = ["ESZ6", "NQZ6"]
    b = ["CLF7", "BTC-PERP"]

With no ``[cluster]`` and no ``--nats``, the server runs alone, as always.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ClusterConfig", "cluster_from_table", "check_cluster"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ClusterConfig:
    nats: tuple[str, ...] = ()
    shard: str = ""
    node: str = ""
    replicas: int | None = None
    lease_ttl: float = 2.0
    advertise: str | None = None
    checkpoint_interval: float = 5.0
    instruments: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def log_replicas(self) -> int:
        return self.replicas if self.replicas is not None else min(3, len(self.nats))

    def shard_symbols(self, symbols: list[str]) -> list[str]:
        """This shard's instruments, in the order of the configuration's."""
        if not self.instruments:
            return list(symbols)
        mine = set(self.instruments[self.shard])
        return [s for s in symbols if s in mine]


class _Error(ValueError):
    pass


_SCHEMES = ("nats", "tls", "ws", "wss")


def _is_nats_url(url: str) -> bool:
    """A URL the NATS client can connect to: nats://, tls://, ws:// or
    wss:// (nats:// when none is given), a host, and a port if any that is
    a number."""
    scheme, sep, _ = url.partition("://")
    try:
        parts = urlsplit(url if sep else "nats://" + url)
        parts.port
    except ValueError:  # a bracket unclosed, a port not a number
        return False
    return (scheme in _SCHEMES or not sep) and bool(parts.hostname)


def cluster_from_table(table: dict[str, Any], error: type[ValueError] = _Error) -> dict[str, Any]:
    """The ClusterConfig keyword arguments of a ``[cluster]`` TOML table."""
    allowed = {"nats", "shard", "node", "replicas", "lease_ttl", "advertise", "checkpoint_interval", "instruments"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise error(f"[cluster]: unknown keys: {', '.join(unknown)}")
    kw: dict[str, Any] = {}
    if "nats" in table:
        nats = table["nats"]
        urls = nats.split(",") if isinstance(nats, str) else nats
        if not isinstance(urls, list) or not all(isinstance(u, str) and u.strip() for u in urls):
            raise error("[cluster]: nats must be a URL, a comma-separated list of them, or a list of strings")
        kw["nats"] = tuple(u.strip() for u in urls)
    for key in ("shard", "node", "advertise"):
        if key in table:
            if not isinstance(table[key], str):
                raise error(f"[cluster]: {key} must be a string")
            kw[key] = table[key]
    if "replicas" in table:
        if not isinstance(table["replicas"], int) or isinstance(table["replicas"], bool):
            raise error("[cluster]: replicas must be an integer")
        kw["replicas"] = table["replicas"]
    for key in ("lease_ttl", "checkpoint_interval"):
        if key in table:
            if not isinstance(table[key], int | float) or isinstance(table[key], bool):
                raise error(f"[cluster]: {key} must be a number of seconds")
            kw[key] = float(table[key])
    if "instruments" in table:
        shards = table["instruments"]
        if not isinstance(shards, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in shards.values()):
            raise error("[cluster.instruments]: each shard maps to a list of symbols")
        kw["instruments"] = {k: tuple(v) for k, v in shards.items()}
    return kw


def check_cluster(c: ClusterConfig, symbols: list[str], error: type[ValueError] = _Error, *,
                  partial: bool = False) -> None:
    """Raise `error` for a cluster no node could run. `partial`: the NATS
    servers, shard and node may still be missing (the command line gives them)."""
    if not c.nats and not partial:
        raise error("[cluster]: no NATS server (--nats, or nats in [cluster])")
    for url in c.nats:
        if not _is_nats_url(url):
            raise error(f"[cluster]: nats: {url!r} is not a NATS server's URL (nats://HOST:PORT, or HOST:PORT)")
    if len({url.startswith(("ws://", "wss://")) for url in c.nats}) > 1:
        raise error("[cluster]: nats: WebSocket URLs (ws://, wss://) and others together: the NATS client takes "
                    "one kind")
    for what, name in (("shard", c.shard), ("node", c.node)):
        if not name and partial:
            continue
        if not name:
            raise error(f"[cluster]: a node needs its {what} name (--{what}, or {what} in [cluster])")
        if not _NAME.fullmatch(name):
            raise error(f"[cluster]: the {what} name is 1-64 letters, digits, '_' or '-', not {name!r}")
    if c.replicas is not None and not 1 <= c.replicas <= 5:
        raise error(f"[cluster]: replicas must be 1 to 5, not {c.replicas}")
    if not math.isfinite(c.lease_ttl) or c.lease_ttl < 0.2:
        raise error(f"[cluster]: lease_ttl must be at least 0.2 seconds and finite, not {c.lease_ttl:g}")
    if not math.isfinite(c.checkpoint_interval) or c.checkpoint_interval < 0:
        raise error(f"[cluster]: checkpoint_interval must be >= 0 and finite, not {c.checkpoint_interval:g}")
    if c.advertise is not None and not re.fullmatch(r"(?:[^\s:\[\]]+|\[[0-9A-Za-z:.%]+\]):\d{1,5}", c.advertise):
        raise error(f"[cluster]: advertise must be HOST:PORT or [IPv6]:PORT, not {c.advertise!r}")
    if c.instruments:
        for shard in c.instruments:
            if not _NAME.fullmatch(shard):
                raise error(f"[cluster.instruments]: {shard!r} is not a shard name")
        if c.shard and c.shard not in c.instruments:
            raise error(f"[cluster.instruments]: no instruments for shard {c.shard!r}")
        seen: dict[str, str] = {}
        for shard, shard_symbols in c.instruments.items():
            for symbol in shard_symbols:
                if symbol not in symbols:
                    raise error(f"[cluster.instruments]: shard {shard!r} names {symbol!r}, which is not an instrument")
                if symbol in seen:
                    raise error(f"[cluster.instruments]: {symbol!r} is in shards {seen[symbol]!r} and {shard!r}")
                seen[symbol] = shard
        if c.shard and not c.instruments[c.shard]:
            raise error(f"[cluster.instruments]: shard {c.shard!r} has no instruments")
        if unsharded := [s for s in symbols if s not in seen]:
            raise error(f"[cluster.instruments]: {', '.join(map(repr, unsharded))} in no shard: "
                        "no node would trade them (deal every instrument to a shard)")

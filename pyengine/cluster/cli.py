"""The ``pyengine-cluster`` console script: a whole cluster on this machine, to try it out.

    pyengine-cluster up [--dir DIR] [--shards 2] [--nodes 2] [--port 7101]
    pyengine-cluster status [--dir DIR]
    pyengine-cluster down [--dir DIR]

``up`` starts three NATS servers with JetStream and ``--shards`` x ``--nodes``
pyengine-server nodes on loopback (the embedded instruments dealt out over
the shards; node ports from ``--port`` on), waits until every shard has a
leader, and returns, leaving them running; ``status`` asks every node where
it stands; ``down`` stops them all. DIR (default ``./pyengine-cluster``)
holds the configuration, the logs, the NATS stores and the list of
processes. docs/cluster.md tells how to run a cluster across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import string
import sys
import time
from pathlib import Path
from typing import Any

from ..client import Client, ConnectionClosed, ServerError
from ..server.config import DEFAULT_INSTRUMENTS
from ..server.process import ServerProcess, ServerStartError
from .localnats import LocalNats, nats_server_path

__all__ = ["main"]

_STATE = "state.json"


def _config(nats_urls: list[str], shards: dict[str, list[str]]) -> str:
    lines = ["[cluster]", "nats = " + json.dumps(nats_urls), "", "[cluster.instruments]"]
    lines += [f"{name} = {json.dumps(symbols)}" for name, symbols in shards.items()]
    return "\n".join(lines) + "\n"


def _ask(address: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with Client([address], timeout=timeout) as c:
            return c.request(c.status(), timeout=timeout)
    except (OSError, ConnectionClosed, ServerError):
        return None


def up(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / _STATE).exists():
        print(f"a cluster is up in {root} already (pyengine-cluster down --dir {root})", file=sys.stderr)
        return 1
    if not 1 <= args.shards <= min(26, len(DEFAULT_INSTRUMENTS)) or not 1 <= args.nodes <= 9:
        print(f"1 to {min(26, len(DEFAULT_INSTRUMENTS))} shards of 1 to 9 nodes", file=sys.stderr)
        return 2
    try:
        nats_server_path()  # before anything is made for it
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        (root / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cannot keep the cluster's files in {root}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    names = list(string.ascii_lowercase[: args.shards])
    shards = {name: [i.symbol for i in DEFAULT_INSTRUMENTS[k :: args.shards]] for k, name in enumerate(names)}
    nats = LocalNats(root / "nats", detached=True)
    nats.start()
    state: dict[str, Any] = {"nats": [{"name": n.name, "pid": n.proc.pid, "started": _started(n.proc.pid),
                                       "url": n.url} for n in nats.nodes if n.proc is not None], "nodes": []}
    config = root / "cluster.toml"
    config.write_text(_config(nats.urls, shards))
    (root / _STATE).write_text(json.dumps(state, indent=1))
    port = args.port
    for shard in names:
        for i in range(1, args.nodes + 1):
            node = f"{shard}{i}"
            try:
                server = ServerProcess(["--config", str(config), "--shard", shard, "--node", node, "--port", str(port),
                                        "--engine-cpu", "-1"], root / "logs" / f"{node}.log", detached=True,
                                       timeout=120)
            except ServerStartError as exc:
                print(exc, file=sys.stderr)
                down(args)
                return 1
            state["nodes"].append({"shard": shard, "node": node, "address": f"127.0.0.1:{server.port}",
                                   "pid": server.proc.pid, "started": _started(server.proc.pid),
                                   "log": str(server.log_path)})
            (root / _STATE).write_text(json.dumps(state, indent=1))
            port += 1 if port else 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        leaders = {s["shard"] for s in map(_ask, (n["address"] for n in state["nodes"]))
                   if s and s.get("role") == "leader"}
        if leaders == set(names):
            break
        time.sleep(0.2)
    else:
        print("not every shard has a leader yet; see pyengine-cluster status", file=sys.stderr)
    print(f"up in {root}: NATS {', '.join(nats.urls)}")
    return status(args)


def _state(root: Path) -> dict[str, Any] | None:
    """What `up` started in `root`; None (and says so) when nothing is up there."""
    try:
        state: dict[str, Any] = json.loads((root / _STATE).read_text())  # written by `up`
    except (FileNotFoundError, NotADirectoryError):
        print(f"no cluster is up in {root}", file=sys.stderr)
        return None
    except (OSError, ValueError) as exc:
        print(f"{root / _STATE} cannot be read ({exc}): it lists the processes `up` started, by pid, for "
              "`down`; stop those by hand (their logs are in logs/), then remove it", file=sys.stderr)
        return None
    if not isinstance(state, dict) or not isinstance(state.get("nats"), list) or not isinstance(
            state.get("nodes"), list):
        print(f"{root / _STATE} is not what `up` writes: stop its processes by hand, then remove it",
              file=sys.stderr)
        return None
    return state


def status(args: argparse.Namespace) -> int:
    state = _state(Path(args.dir))
    if state is None:
        return 1
    print(f"{'shard':<6} {'node':<6} {'address':<16} {'role':<9} {'leader':<16} {'seq':>9} {'lag':>5}  instruments")
    for n in state["nodes"]:
        s = _ask(n["address"])
        if s is None:
            print(f"{n['shard']:<6} {n['node']:<6} {n['address']:<16} {'down':<9}")
            continue
        instruments = ",".join(s.get("shards", {}).get(n["shard"], {}).get("instruments", []))
        print(f"{n['shard']:<6} {n['node']:<6} {n['address']:<16} {s['role']:<9} {s['leader'] or '-':<16} "
              f"{s['applied_seq']:>9} {s['lag']:>5}  {instruments}")
    return 0


def down(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    state = _state(root)
    if state is None:
        return 1
    # The nodes first (they close their sessions cleanly), then NATS. A
    # process is signalled only while its pid is still the one `up` started
    # (after a reboot or a crash the pid may be another program's).
    stopped = {"nodes": 0, "nats": 0}
    for name in ("nodes", "nats"):
        group = [p for p in state[name] if _ours(p, name)]
        for p in group:
            _signal(p["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in group:
            while _alive(p["pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(p["pid"]) and _ours(p, name):
                _signal(p["pid"], signal.SIGKILL)
        stopped[name] = len(group)
    (root / _STATE).unlink()
    gone = len(state["nodes"]) + len(state["nats"]) - stopped["nodes"] - stopped["nats"]
    print(f"down: {stopped['nodes']} nodes and {stopped['nats']} NATS servers stopped"
          + (f" ({gone} had ended already)" if gone else ""))
    return 0


def _started(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/PID/stat's
    22nd field), None if there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # the command may hold spaces and parentheses


def _ours(p: dict[str, Any], group: str) -> bool:
    """Whether the process `up` recorded in `p` (of `group`: "nodes" or
    "nats") still runs under its pid: it started when `up` saw it start; in
    the state of an `up` that did not record that, its command line is the
    one `up` gave it. Without /proc there is no telling: the pid is taken as
    `up` left it."""
    if not Path("/proc/self/stat").exists():
        return _alive(p["pid"])
    started = _started(p["pid"])
    if started is None:
        return False
    if "started" in p:
        return bool(started == p["started"])
    try:
        args = Path(f"/proc/{p['pid']}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    if group == "nats":
        return Path(args[0]).name.startswith("nats-server") and "-c" in args
    node_arg = any(a == "--node" and b == p.get("node") for a, b in zip(args, args[1:]))
    return "pyengine.server.cli" in args and node_arg


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of ours that exited but was not reaped is not alive either.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyengine-cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("up", "start NATS and the nodes"), ("status", "where each node stands"),
                        ("down", "stop everything")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", default="pyengine-cluster", help="where the cluster keeps its files")
        if name == "up":
            p.add_argument("--shards", type=int, default=2)
            p.add_argument("--nodes", type=int, default=2, help="nodes per shard")
            p.add_argument("--port", type=int, default=7101,
                           help="the first node's port; the others follow (0: any free ports)")
    args = parser.parse_args(argv)
    return {"up": up, "status": status, "down": down}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

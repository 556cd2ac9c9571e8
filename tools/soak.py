"""Soak test for pyengine-server: sustained load, abrupt disconnects, hostile and
slow clients, a memory watch, and an exact account of every acknowledged order.

    python tools/soak.py                                  # 60 s against a server it spawns
    python tools/soak.py --duration 600 --seed 7 --json perf/results/soak.json
    python tools/soak.py --write-config soak.toml         # to run a server of your own:
    pyengine-server --config soak.toml --data-dir /tmp/soak-data --port 7101 &
    python tools/soak.py --port 7101 --server-pid $!

By default it spawns ``python -m pyengine.server.cli`` on a free port with a
fresh temporary ``--data-dir`` (journal on, ``--fsync batch`` as in
production) and a configuration that lists every account the soak uses (so
authentication is on and a session has no admin rights, as in production),
adds one instrument no load generator trades (``SOAK-QUIET``) and lowers
``max_unsent`` to 256 KiB so that slow readers are dropped within seconds at
this modest load (the same code path as the default 8 MiB). ``--write-config``
prints that configuration for a server started by hand; give the same client
counts to both runs.

For ``--duration`` seconds (default 60) it runs, all at once:

1. tools/loadgen.py as a subprocess at ``--loadgen-rate`` (3,000 orders/s,
   4 connections, one worker), restarted every ``--loadgen-cycle`` seconds so
   that the book does not grow without end (its connections close with
   cancel-on-disconnect). Each run must exit 0: no errors, every order
   answered, no connection closed by the server.
2. Tracked clients (4, 400 orders/s in all): well-behaved sessions that log in
   without cancel-on-disconnect and keep an exact account of their orders:
   limit orders near the touch, IOC, FOK and market orders, cancels (by
   order id and client order id) and modifies. Every reply and push is
   checked against that account as it arrives (fill and cancel ``leaves``,
   ``unknown_order`` rejects only for orders already over, no cancel the
   client did not ask for, no fill for an order it never saw acknowledged).
3. Disconnect clients (3): log in (cancel-on-disconnect at random), place
   resting orders on SOAK-QUIET and wait for their acks, send a few IOC, FOK
   or market orders on the traded instruments (in ``--taker-drops`` of the
   cycles, 60%), and drop the connection without waiting for them (a plain
   close or a TCP reset): those orders trade or end at once, so they must
   never be handed over. The next login of the account must take over
   exactly the resting orders the dropped session left without
   cancel-on-disconnect (``claimed_orders``), and a mass cancel of them must
   return exactly those order ids with their full quantity (nothing trades
   on SOAK-QUIET: its buys rest at or below 10,000, its sells at or above
   20,000). Accounts are reused only a second after a drop, so that the
   server has seen it; a claim of 0 where orders were expected is retried
   once, two seconds later, before it counts as a failure.
4. Hostile clients (2): malformed frames (garbage bytes, a length header over
   the maximum frame, an empty frame, truncated frames), frames that are not
   JSON, JSON that is not an object, wrong field types, missing fields,
   unknown message types, huge numbers, requests before login, a second
   login, and acting for another account (cancel or modify another account's
   order by id, cancel by another account's client order id, mass cancel of
   another account, snapshot, halt). Frames are sent in pipelined batches and
   each must get the documented ``error`` (or a ``reject``, never an ``ack``)
   or, for framing errors, an error and a disconnect; then a ``ping`` must
   still get its ``pong``. A failed login is tried at most once every 20 s,
   under the server's login throttle (5 failures a minute lock out the host).
5. Slow readers (2): subscribe to the market data of every traded instrument
   with a 4 KiB receive buffer and an Ethernet-sized MSS, do not read for
   ``--slow-hold`` seconds, then drain the socket: if it ends, the server
   disconnected the reader. At least one must be, and the spawned server
   must log each of those closes as ``slow_reader``.
6. The server's RSS (VmRSS of /proc/PID/status), sampled every second.

Then all load stops and the end checks run:

- Accounting: each tracked client waits for the answers to all its requests,
  sends one more request that goes through the engine (a cancel of a client
  order id it never used) so that every fill for its orders has arrived,
  then closes its end of the stream and waits for the server to close (the
  server has then handed its open orders to the account). A fresh session
  of the account logs in: ``claimed_orders`` must equal the number of the
  client's GTC orders acknowledged and neither filled nor cancelled, and a
  mass cancel must return exactly those order ids, each with the open
  quantity the client computed (acknowledged quantity minus its fills, as
  modified). An order the server lost (never filled or cancelled, yet not
  open) or holds without the client knowing, or a wrong quantity, fails the
  run; so does an IOC, FOK or market order with no end.
- Every disconnect account is claimed and mass-cancelled one last time, with
  the checks of 3.
- The server is up: a fresh session logs in, pings, and enters and cancels an
  order.
- With a spawned server: every book is empty once the soak's orders are
  cancelled (no order is left that no session accounts for), the server
  logged no error, and it exits 0 on SIGTERM.
- Memory is flat (not judged when ``PYENGINE_SANITIZED`` is set: under
  AddressSanitizer RSS measures its quarantine of freed memory): the RSS at the end of the load is at most the RSS after
  warm-up plus 25% or plus 20 MB, whichever is larger. Warm-up is the first
  half of the run (``--warmup-fraction``): the server allocates its rings up
  front (the output ring 262,144 events x 104 B = 26 MiB, the input ring
  4.5 MiB, the journal's about 6 MiB) and their pages become resident only as
  they are first written, which at the default load takes about 30 s (RSS
  rises from 30 to 77 MB in 32 s, then stays within 2.5 MB). From then on the
  server's live data is bounded (every loadgen restart empties the book;
  sessions, subscriptions and unsent output come and go), so only allocator
  noise may still move it; 20 MB over the second half of a 60 s run is a
  leak of about 0.7 MB/s (some 140 bytes per command at this load), over the
  second half of a 10-minute run one of 70 KB/s.

Prints a summary (``--json FILE`` writes it too) and exits 0 on PASS, 1 on
FAIL, 2 if it could not start (bad arguments, no server).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soaklib.common import CHECKS, END_PHASE_TIMEOUT, LOG, MAX_CLIENTS, Options, Report, SetupError, Soak  # noqa: E402
from soaklib.disconnect_clients import Disconnector  # noqa: E402
from soaklib.end_checks import check_alive, check_book_empty, check_memory, check_slow_readers, probe  # noqa: E402
from soaklib.hostile_clients import HostileClient  # noqa: E402
from soaklib.loadgen_runner import LOADGEN_KEYS, LoadgenRunner  # noqa: E402
from soaklib.server import RssSampler, Target, server_config, spawn_server, stop_server  # noqa: E402
from soaklib.slow_readers import SlowReader  # noqa: E402
from soaklib.tracked_clients import TrackedClient, finish_tracked  # noqa: E402


# ---- options ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog="See the module docstring for the checks.")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, help="a running server (default: spawn one)")
    ap.add_argument("--server-pid", type=int, help="pid of the server given by --port, for the RSS samples")
    ap.add_argument("--fsync", choices=("always", "batch", "off"), default="batch", help="of the spawned server")
    ap.add_argument("--engine-cpu", type=int, default=-1,
                    help="--engine-cpu of the spawned server (default -1: not pinned, the load shares the machine)")
    ap.add_argument("--max-unsent", type=int, default=256 * 1024, help="max_unsent of the spawned server (bytes)")
    ap.add_argument("--loadgen-rate", type=float, default=3000.0, help="orders/s offered by tools/loadgen.py")
    ap.add_argument("--loadgen-connections", type=int, default=4)
    ap.add_argument("--loadgen-cycle", type=float, default=15.0, help="seconds of each loadgen run")
    ap.add_argument("--tracked-clients", type=int, default=4)
    ap.add_argument("--tracked-rate", type=float, default=400.0, help="orders/s of all tracked clients together")
    ap.add_argument("--disconnect-clients", type=int, default=3)
    ap.add_argument("--taker-drops", type=float, default=0.6,
                    help="fraction of drops with IOC/FOK/market orders in flight (default 0.6)")
    ap.add_argument("--hostile-clients", type=int, default=2)
    ap.add_argument("--slow-readers", type=int, default=2)
    ap.add_argument("--slow-hold", type=float, default=4.0, help="seconds a slow reader does not read")
    ap.add_argument("--warmup-fraction", type=float, default=0.5,
                    help="of the run before the RSS start sample (default 0.5: the server's rings fill first)")
    ap.add_argument("--rss-tolerance", type=float, default=0.25, help="allowed RSS growth after warm-up (fraction)")
    ap.add_argument("--rss-slack-mb", type=float, default=20.0, help="... or this many MB, whichever is larger")
    ap.add_argument("--json", dest="json_path", metavar="FILE", help="write the summary here")
    ap.add_argument("--server-log", metavar="FILE", help="copy the spawned server's log here")
    ap.add_argument("--write-config", metavar="FILE", help="write the server configuration the soak needs, and exit")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    counts = (args.loadgen_connections, args.tracked_clients, args.disconnect_clients, args.hostile_clients,
              args.slow_readers)
    if any(not 0 <= n <= MAX_CLIENTS for n in counts) or args.loadgen_connections < 1 or args.tracked_clients < 1:
        ap.error(f"client counts must be 0..{MAX_CLIENTS} (at least 1 loadgen connection and 1 tracked client)")
    if args.duration <= 0 or args.tracked_rate <= 0 or args.loadgen_rate <= 0:
        ap.error("--duration, --tracked-rate and --loadgen-rate must be positive")
    if not 0 <= args.warmup_fraction < 1 or not 0 <= args.taker_drops <= 1:
        ap.error("--warmup-fraction must be in [0, 1) and --taker-drops in [0, 1]")
    opts = Options(
        duration=args.duration, seed=args.seed, host=args.host, port=args.port, server_pid=args.server_pid,
        fsync=args.fsync, engine_cpu=args.engine_cpu, max_unsent=args.max_unsent, loadgen_rate=args.loadgen_rate,
        loadgen_connections=args.loadgen_connections, loadgen_cycle=args.loadgen_cycle,
        tracked_clients=args.tracked_clients, tracked_rate=args.tracked_rate,
        disconnect_clients=args.disconnect_clients, taker_drops=args.taker_drops,
        hostile_clients=args.hostile_clients,
        slow_readers=args.slow_readers, slow_hold=args.slow_hold, warmup_fraction=args.warmup_fraction,
        rss_tolerance=args.rss_tolerance, rss_slack_mb=args.rss_slack_mb, json_path=args.json_path,
        server_log=args.server_log,
    )
    return opts, args


# ---- the run ----------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run leaves for the summary."""

    opts: Options
    report: Report
    target: Target | None = None
    tracked: list[TrackedClient] = field(default_factory=list)
    loadgen: LoadgenRunner | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0
    end_seconds: float = 0.0


def guarded(report: Report, name: str, fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception as exc:  # a bug of the soak itself: report it, keep the others going
            LOG.exception("%s crashed", name)
            report.fail("tool", f"{name} crashed: {exc!r}")

    return run


def generators(soak: Soak, loadgen: LoadgenRunner) -> Iterator[tuple[str, Callable[[], None]]]:
    yield "loadgen", loadgen.run
    opts = soak.opts
    for i in range(opts.disconnect_clients):
        yield f"disconnect-{i}", Disconnector(soak, i).run
    for i in range(opts.hostile_clients):
        yield f"hostile-{i}", HostileClient(soak, i).run
    for i in range(opts.slow_readers):
        yield f"slow-{i}", SlowReader(soak, i).run


def wait_for_load(soak: Soak, target: Target, until: float) -> None:
    """Sleep through the load phase, watching the server and logging progress."""
    next_progress = time.monotonic() + 10.0
    while (left := until - time.monotonic()) > 0:
        if target.proc is not None and target.proc.poll() is not None:
            soak.report.fail("server_alive", f"the server exited with status {target.proc.returncode} during the run")
            return
        gevent.sleep(min(0.5, left))
        if time.monotonic() >= next_progress:
            c = soak.report.counts
            LOG.info("%.0f s left: tracked acks %d, disconnects %d, hostile frames %d, slow readers %d",
                     max(0.0, until - time.monotonic()), c["tracked_acks"], c["disconnects"], c["hostile_frames"],
                     c["slow_readers_started"])
            next_progress += 10.0


def drive(run: Run, target: Target, workdir: Path) -> None:
    opts, report = run.opts, run.report
    soak = Soak(opts, target.host, target.port, report)
    probe(soak)
    t0 = time.monotonic()
    until = t0 + opts.duration
    sampler = RssSampler(target.pid, t0) if target.pid else None
    sampler_greenlet = gevent.spawn(sampler.run) if sampler else None
    rate = opts.tracked_rate / opts.tracked_clients
    run.tracked = [TrackedClient(soak, i, rate) for i in range(opts.tracked_clients)]
    for tracked in run.tracked:
        tracked.start()
    run.loadgen = LoadgenRunner(soak, until, workdir)
    greenlets = {name: gevent.spawn(guarded(report, name, fn)) for name, fn in generators(soak, run.loadgen)}
    wait_for_load(soak, target, until)
    soak.stop.set()
    end_kb = sampler.sample() if sampler else None
    run.load_seconds = time.monotonic() - t0
    LOG.info("load phase over after %.1f s; end checks", run.load_seconds)
    for tracked in run.tracked:
        tracked.stop_sending()
    gevent.joinall(list(greenlets.values()), timeout=END_PHASE_TIMEOUT)
    for name, greenlet in greenlets.items():
        if not greenlet.ready():
            report.fail("tool", f"{name} did not finish within {END_PHASE_TIMEOUT:g} s of the end of the load")
            greenlet.kill(block=False)
    finish_tracked(soak, run.tracked)
    check_alive(soak)
    if opts.spawn:
        check_book_empty(soak)
    if sampler_greenlet is not None:
        sampler_greenlet.kill()
    run.memory = check_memory(opts, sampler, end_kb)
    if run.memory.get("measured") and run.memory["judged"] and not run.memory["flat"]:
        m = run.memory
        report.fail("memory", f"RSS grew from {m['start_mb']:.1f} MB after warm-up to {m['end_mb']:.1f} MB "
                              f"(limit {m['limit_mb']:.1f} MB)")
    run.end_seconds = time.monotonic() - t0 - run.load_seconds


@contextmanager
def server_target(opts: Options, workdir: Path, report: Report) -> Iterator[Target]:
    if not opts.spawn:
        assert opts.port is not None
        yield Target(opts.host, opts.port, opts.server_pid)
        return
    with ExitStack() as stack:
        sink = stack.enter_context(open(opts.server_log, "w")) if opts.server_log else None
        target = spawn_server(opts, workdir, sink)
        try:
            yield target
        finally:
            stop_server(target, report)


def run_soak(opts: Options) -> Run:
    run = Run(opts, Report())
    with tempfile.TemporaryDirectory(prefix="pyengine-soak-") as tmp:
        with server_target(opts, Path(tmp), run.report) as target:
            run.target = target
            drive(run, target, Path(tmp))
    check_slow_readers(run.report, run.target.watch if run.target else None)
    return run


# ---- the summary ------------------------------------------------------------------


SPAWNED_ONLY = ("book_empty", "server_log", "server_exit")


def check_status(run: Run, check: str) -> str:
    if run.report.failure_counts[check]:
        return "FAIL"
    skipped = (check in SPAWNED_ONLY and not run.opts.spawn) or (check == "memory" and not run.memory.get("judged"))
    return "skipped" if skipped else "ok"


def summarize(run: Run) -> dict[str, Any]:
    c = run.report.counts
    lg = run.loadgen.totals if run.loadgen else Counter()
    target = run.target
    watch = target.watch if target else None
    # Every loadgen new order is answered by an ack or a reject; its "sent" counts cancels too.
    loadgen_orders = lg["acked"] + lg["rejected"]
    tracked_orders = c["tracked_acks"] + c["tracked_rejects"]
    failed = [check for check in CHECKS if run.report.failure_counts[check]]
    return {
        "result": "PASS" if run.report.passed else "FAIL",
        "reasons": [f"{check}: {msg}" for check in failed for msg in run.report.failures[check]],
        "duration_s": round(run.load_seconds, 1),
        "end_checks_s": round(run.end_seconds, 1),
        "seed": run.opts.seed,
        "server": {"host": target.host if target else None, "port": target.port if target else None,
                   "spawned": run.opts.spawn, "journal": "temporary data dir" if run.opts.spawn else "unknown",
                   "fsync": run.opts.fsync if run.opts.spawn else None,
                   "exit_code": target.exit_code if target else None},
        "orders_sent": loadgen_orders + tracked_orders + c["disconnect_orders"],
        "acks": lg["acked"] + c["tracked_acks"] + c["disconnect_acks"],
        "fills": lg["fills"] + c["tracked_fills"],
        "loadgen": {"runs": run.loadgen.runs if run.loadgen else 0, **{k: lg[k] for k in LOADGEN_KEYS}},
        "tracked": {"clients": len(run.tracked), "orders": tracked_orders, "acks": c["tracked_acks"],
                    "rejects": c["tracked_rejects"], "fills": c["tracked_fills"], "cancels": c["tracked_cancels"],
                    "modifies": c["tracked_modifies"], "late_cancel_rejects": c["tracked_late_cancels"],
                    "filled": c["tracked_orders_filled"], "cancelled": c["tracked_orders_cancelled"],
                    "open_verified_on_server": c["verified_open"]},
        "disconnects": c["disconnects"],
        "disconnect_detail": {"cancel_on_disconnect": c["disconnects_cod"], "no_cancel_on_disconnect":
                              c["disconnects_no_cod"], "close": c["disconnects_close"],
                              "reset": c["disconnects_reset"], "orders": c["disconnect_orders"],
                              "resting_acks": c["disconnect_acks"], "claims_checked": c["claims_checked"],
                              "claims_verified_by_mass_cancel": c["claims_verified_by_mass_cancel"],
                              "claim_retries": c["claim_retries"],
                              "phantom_orders_claimed": c["claim_phantom_orders"],
                              "missing_orders_claimed": c["claim_missing_orders"]},
        "hostile_frames": c["hostile_frames"],
        "hostile_by_kind": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("hostile:")},
        "slow_readers": {"started": c["slow_readers_started"], "disconnected": c["slow_readers_disconnected"],
                         "not_disconnected": c["slow_readers_not_disconnected"],
                         "cut_short_by_the_end": c["slow_readers_cut_short"],
                         "server_log_slow_reader": watch.close_reasons["slow_reader"] if watch else None},
        "rss": run.memory,
        "checks": {check: check_status(run, check) for check in CHECKS},
        "failure_counts": dict(run.report.failure_counts),
    }


def print_summary(s: dict[str, Any]) -> None:
    t, d, sl, rss = s["tracked"], s["disconnect_detail"], s["slow_readers"], s["rss"]
    server = s["server"]
    hostile = ", ".join(f"{kind} {n}" for kind, n in s["hostile_by_kind"].items())
    where = (f"spawned, journal in a {server['journal']}, fsync {server['fsync']}" if server["spawned"]
             else "given by --port")
    lines = [
        f"pyengine soak: {s['result']}",
        f"  duration          {s['duration_s']:.1f} s of load (+{s['end_checks_s']:.1f} s of end checks), seed "
        f"{s['seed']}, server {server['host']}:{server['port']} ({where})",
        f"  orders sent       {s['orders_sent']}  (loadgen {s['loadgen']['acked'] + s['loadgen']['rejected']} in "
        f"{s['loadgen']['runs']} runs, tracked {t['orders']}, disconnect clients {d['orders']})",
        f"  acks              {s['acks']}",
        f"  fills             {s['fills']}",
        f"  disconnects       {s['disconnects']}  (cancel_on_disconnect {d['cancel_on_disconnect']} / "
        f"without {d['no_cancel_on_disconnect']}; close {d['close']} / reset {d['reset']}; "
        f"{d['claims_checked']} claims checked: {d['phantom_orders_claimed']} phantom and "
        f"{d['missing_orders_claimed']} missing orders)",
        f"  hostile frames    {s['hostile_frames']}  ({hostile})",
        f"  slow readers      {sl['started']} started, {sl['disconnected']} disconnected by the server, "
        f"{sl['not_disconnected']} not, {sl['cut_short_by_the_end']} cut short by the end"
        + (f"; server log: {sl['server_log_slow_reader']} slow_reader closes"
           if sl["server_log_slow_reader"] is not None else ""),
    ]
    if rss.get("measured"):
        lines.append(f"  RSS (MB)          start {rss['start_mb']:.1f} (at {rss['start_at_s']:.1f} s)  end "
                     f"{rss['end_mb']:.1f}  max {rss['max_mb']:.1f}  (limit {rss['limit_mb']:.1f}: "
                     + (f"{'flat' if rss['flat'] else 'GREW'})" if rss["judged"] else
                        "not judged: the server runs under a sanitizer, whose quarantine RSS measures)"))
    else:
        lines.append("  RSS (MB)          not measured (no --server-pid)")
    lines += [
        f"  accounting        tracked: {t['acks']} acks = {t['filled']} filled + {t['cancelled']} cancelled + "
        f"{t['open_verified_on_server']} open (claimed and mass-cancelled on the server)",
        "  checks            " + ", ".join(f"{k} {v}" for k, v in s["checks"].items()),
    ]
    if s["reasons"]:
        lines.append("FAIL reasons:")
        lines += [f"  - {reason}" for reason in s["reasons"]]
        more = sum(s["failure_counts"].values()) - len(s["reasons"])
        if more > 0:
            lines.append(f"  ... and {more} more")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s soak %(levelname)s %(message)s")
    if args.write_config:
        Path(args.write_config).write_text(server_config(opts))
        return 0
    try:
        run = run_soak(opts)
    except SetupError as exc:
        LOG.error("%s", exc)
        return 2
    summary = summarize(run)
    print_summary(summary)
    if opts.json_path:
        Path(opts.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["result"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The checks before and after the load: the server runs the soak's
configuration, is still up, holds no order no session accounts for; slow
readers were dropped; memory stayed flat."""

from __future__ import annotations

import os
import time
from typing import Any

import gevent

from pyengine.client import ConnectionClosed, ServerError

from .common import MARKETS, PROBE_ACCOUNT, QUIET, QUIET_BID, REPLY_TIMEOUT, Options, Report, SetupError, Soak
from .server import LogWatch, RssSampler


def probe(soak: Soak) -> None:
    """The server speaks the protocol and runs the soak's configuration."""
    try:
        with soak.connect() as client:
            client.login(PROBE_ACCOUNT)
            client.request(client.subscribe(QUIET.symbol), timeout=REPLY_TIMEOUT)
    except ServerError as exc:
        raise SetupError(f"the server does not run the soak's configuration ({exc}); see --write-config") from None
    except (OSError, ConnectionClosed) as exc:
        raise SetupError(f"cannot reach the server at {soak.host}:{soak.port}: {exc!r}") from None


def check_alive(soak: Soak) -> None:
    """A fresh session logs in, pings, enters and cancels an order."""
    try:
        with soak.connect(timeout=5.0) as client:
            client.login(PROBE_ACCOUNT)
            pong = client.request(client.ping(), timeout=5.0)
            ack = client.request(client.new_order(QUIET.symbol, "buy", 1, QUIET_BID - 500), timeout=5.0)
            done = client.request(client.cancel(order_id=ack.get("order_id")), timeout=5.0)
        if (pong.get("type"), ack.get("type"), done.get("type")) != ("pong", "ack", "cancelled"):
            soak.report.fail("server_alive", f"unexpected replies: {pong}, {ack}, {done}")
    except (OSError, ServerError, ConnectionClosed) as exc:
        soak.report.fail("server_alive", f"a fresh client could not log in, ping and trade: {exc!r}")


def books_with_orders(soak: Soak) -> dict[str, dict[str, Any]]:
    left = {}
    with soak.connect() as client:
        for symbol in (*(m.symbol for m in MARKETS), QUIET.symbol):
            snapshot = client.request(client.subscribe(symbol), timeout=REPLY_TIMEOUT)
            if snapshot["bids"] or snapshot["asks"]:
                left[symbol] = {"bids": snapshot["bids"][:5], "asks": snapshot["asks"][:5]}
    return left


def check_book_empty(soak: Soak, timeout: float = 10.0) -> None:
    """Once the soak's orders are cancelled, no order is left in any book."""
    deadline = time.monotonic() + timeout
    try:
        while left := books_with_orders(soak):
            if time.monotonic() > deadline:
                soak.report.fail("book_empty", f"orders no session accounts for are left in the book: {left}")
                return
            gevent.sleep(0.5)
    except (OSError, ServerError, ConnectionClosed) as exc:
        soak.report.fail("book_empty", f"could not read the books: {exc!r}")


def check_slow_readers(report: Report, watch: LogWatch | None) -> None:
    """Slow readers that did not read for the whole hold were disconnected
    (at least one), and, by the spawned server's log, as slow readers."""
    c = report.counts
    if c["slow_readers_not_disconnected"] and not c["slow_readers_disconnected"]:
        report.fail("slow_readers", f"none of {c['slow_readers_not_disconnected']} slow readers that did not read "
                                    "for the whole hold was disconnected")
    logged = watch.close_reasons["slow_reader"] if watch is not None else None
    if logged is not None and logged < c["slow_readers_disconnected"]:
        report.fail("slow_readers", f"{c['slow_readers_disconnected']} slow readers saw their connection end, but "
                                    f"the server logged only {logged} slow_reader closes")


def check_memory(opts: Options, sampler: RssSampler | None, end_kb: int | None) -> dict[str, Any]:
    if sampler is None or end_kb is None:
        return {"measured": False}
    warm_at = opts.duration * opts.warmup_fraction
    start_kb = sampler.first_after(warm_at) or end_kb
    limit_kb = start_kb + max(start_kb * opts.rss_tolerance, opts.rss_slack_mb * 1024)
    # Under AddressSanitizer RSS measures its quarantine of freed memory
    # (up to 256 MB, filled at the pace memory is freed), not what is live.
    judged = not os.environ.get("PYENGINE_SANITIZED")
    return {"measured": True, "judged": judged, "start_mb": start_kb / 1024, "start_at_s": warm_at,
            "end_mb": end_kb / 1024,
            "max_mb": (sampler.max_kb() or end_kb) / 1024, "limit_mb": limit_kb / 1024, "flat": end_kb <= limit_kb,
            "samples_mb": [[round(at, 1), round(kb / 1024, 1)] for at, kb in sampler.samples]}

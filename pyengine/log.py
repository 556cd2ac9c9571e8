"""Structured logging: one event per line, ``key=value`` fields.

    2026-11-25T16:00:00.123Z level=info event=listening host=127.0.0.1 port=7001

Log with ``log.info("listening", extra=fields(host=h, port=p))``: the
message is the event name and the fields follow it. The level comes from the
``--log-level`` flag or the ``PYENGINE_LOG`` environment variable (debug,
info, warning, error), info by default.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["fields", "setup_logging", "KeyValueFormatter", "LEVELS", "Throttle"]

LEVELS = ("debug", "info", "warning", "error")


def fields(**kv: object) -> dict[str, Any]:
    """The ``extra=`` of a structured log call."""
    return {"kv": kv}


def _value(v: object) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' "=\n'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class Throttle:
    """`lines` log lines per `interval` seconds at most for each kind of
    failure (its `key`: the exception's type, say), for a failure that may
    come back at every turn of the event loop (a line and its traceback each
    time would cost more than the failure), or a request a client may send
    as fast as it likes; another kind is not held back by it. An interval
    begins at the first line after the last one ended. ``allow(key)`` is
    None while the line is held back, else how many of that kind were held
    back since its last line."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic, *,
                 lines: int = 1) -> None:
        self.interval = interval
        self.lines = lines
        self._clock = clock
        self._kinds: dict[object, tuple[float, int, int]] = {}  # key -> (interval's end, lines left, held back)

    def allow(self, key: object = None) -> int | None:
        now = self._clock()
        end, left, held = self._kinds.get(key, (float("-inf"), 0, 0))
        if now >= end:
            self._kinds[key] = (now + self.interval, self.lines - 1, 0)
            return held
        if left:
            self._kinds[key] = (end, left - 1, held)
            return 0
        self._kinds[key] = (end, 0, held + 1)
        return None


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        parts = [stamp, f"level={record.levelname.lower()}", f"event={_value(record.getMessage())}"]
        for k, v in getattr(record, "kv", {}).items():
            parts.append(f"{k}={_value(v)}")
        if record.exc_info:
            parts.append("exc=" + _value(self.formatException(record.exc_info)))
        return " ".join(parts)


def setup_logging(level: str | None = None, stream: TextIO | None = None) -> None:
    """Send pyengine's logs to `stream` (stderr) at `level`, else PYENGINE_LOG,
    else info."""
    name = (level or os.environ.get("PYENGINE_LOG") or "info").lower()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {name!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("pyengine")
    root.handlers[:] = [handler]
    root.setLevel(name.upper())
    root.propagate = False

"""tools/loadgen.py as a subprocess, restarted every --loadgen-cycle seconds."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import gevent.subprocess

from .common import LOG, MIN_LOADGEN_RUN, Soak

LOADGEN = Path(__file__).resolve().parents[1] / "loadgen.py"

LOADGEN_KEYS = ("sent", "acked", "rejected", "cancelled", "cancel_rejects", "fills", "errors", "unanswered")


class LoadgenRunner:
    """tools/loadgen.py in runs of --loadgen-cycle seconds until the end of the load."""

    def __init__(self, soak: Soak, until: float, workdir: Path) -> None:
        self.soak = soak
        self.until = until
        self.workdir = workdir
        self.totals: Counter[str] = Counter()
        self.runs = 0

    def run(self) -> None:
        while not self.soak.stop.is_set():
            remaining = self.until - time.monotonic()
            if remaining < MIN_LOADGEN_RUN:
                return
            self._one(min(self.soak.opts.loadgen_cycle, remaining))

    def _one(self, seconds: float) -> None:
        opts = self.soak.opts
        out = self.workdir / f"loadgen-{self.runs}.json"
        cmd = [sys.executable, str(LOADGEN), "--host", self.soak.host, "--port", str(self.soak.port),
               "--rate", str(opts.loadgen_rate), "--connections", str(opts.loadgen_connections), "--workers", "1",
               "--duration", f"{seconds:.3f}", "--warmup", "0", "--seed", str(opts.seed * 1000 + self.runs),
               "--json", str(out)]
        self.runs += 1
        proc = gevent.subprocess.Popen(cmd, stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        except gevent.subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            self.soak.report.fail("loadgen", f"run {self.runs} did not finish")
        if proc.returncode != 0:
            tail = " | ".join((stdout + stderr).strip().splitlines()[-3:])
            self.soak.report.fail("loadgen", f"run {self.runs} exited {proc.returncode}: {tail}")
        if out.exists():
            result = json.loads(out.read_text())
            for key in LOADGEN_KEYS:
                self.totals[key] += int(result.get(key, 0))
        LOG.debug("loadgen run %d: %s", self.runs, stdout.strip().splitlines()[:1])

"""tools/soak.py for a few seconds against the server it spawns: it passes, and
every kind of client it runs did its part (orders, disconnects, hostile
frames, slow readers dropped by the server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak(tmp_path: Path) -> None:
    out = tmp_path / "results" / "soak.json"  # its directory made as needed
    # Eight seconds on a busy machine (other tests run beside this one) carry
    # little market data: a quarter of the soak's max_unsent still drops a
    # slow reader within its hold, through the same code path.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--duration", "8", "--max-unsent", str(64 * 1024),
         "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "pyengine soak: PASS" in proc.stdout
    s = json.loads(out.read_text())
    assert s["result"] == "PASS" and not s["reasons"]
    # Under a sanitizer RSS is its quarantine: memory is measured, not judged.
    sanitized = bool(os.environ.get("PYENGINE_SANITIZED"))
    assert s["checks"].pop("memory") == ("skipped" if sanitized else "ok")
    assert all(status == "ok" for status in s["checks"].values()), s["checks"]
    assert s["orders_sent"] > 0 and s["acks"] > 0 and s["fills"] > 0
    assert s["tracked"]["acks"] > 0 and s["loadgen"]["acked"] > 0
    assert s["disconnects"] > 0 and s["disconnect_detail"]["claims_checked"] > 0
    assert s["hostile_frames"] > 0
    assert s["slow_readers"]["disconnected"] > 0
    assert s["rss"]["measured"] and s["rss"]["max_mb"] > 0

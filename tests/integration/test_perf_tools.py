"""The benchmark scripts run and report well-formed results (in their
quickest settings; no timing is asserted)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"bench_engine": ["--depths", "10,1000"], "bench_mixed": ["--ops", "3000"], "bench_batch": ["--ops", "3000"]}


# pyperf workers get a scrubbed environment; a sanitizer build needs its
# runtime preloaded and its options passed on to them as well.
SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "PYTHONMALLOC")


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    inherit = [name for name in SANITIZER_ENV if name in os.environ]
    if inherit and args[0].startswith("perf/bench_"):
        args = [*args, f"--inherit-environ={','.join(inherit)}"]
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize(
    "suite, names",
    [
        ("bench_engine", [f"{b}[depth={d}]" for d in (10, 1000) for b in
                          ("add_resting", "cancel", "match_1_level", "sweep_5_levels", "modify_keep",
                           "modify_reprice", "market")]),
        ("bench_mixed", ["mixed_one_call", "mixed_process_batch", "mixed_process_batch_out", "mixed_pure_python"]),
        ("bench_batch", ["process_batch_3000[handover]", "process_batch_3000[out]", "process_batch_3000[counts]"]),
        ("bench_protocol", ["decode_validate_order", "encode_fill"]),
    ],
)
def test_pyperf_suite(tmp_path: Path, suite: str, names: list[str]) -> None:
    out = tmp_path / "out.json"
    run([f"perf/{suite}.py", *QUICK.get(suite, []), "--debug-single-value", "--quiet", "-o", str(out)])
    data = json.loads(out.read_text())
    got = {b["metadata"]["name"]: b for b in data["benchmarks"]}
    assert sorted(got) == sorted(names)
    for b in got.values():
        values = [v for run_ in b["runs"] for v in run_.get("values", [])]
        assert values and all(v > 0 for v in values)


def test_compare_python_checks_the_trades() -> None:
    proc = run(["perf/compare_python.py", "--ops", "3000", "--repeat", "1"])
    assert "the same on every path" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if "x pure Python" in line]
    assert len(lines) == 3


def test_replay_l3_counts(tmp_path: Path) -> None:
    rows = [
        "id,timestamp,exchange_timestamp,price,volume,action,direction",
        "1,0,0,100.0,0.5,created,bid",
        "2,0,0,101.0,0.25,created,ask",
        "3,0,0,100.0,0.5,created,ask",      # trades with 1 in full
        "3,0,0,100.0,0.0,deleted,ask",      # already filled by us
        "2,0,0,101.0,0.25,changed,ask",     # skipped
        "2,0,0,101.0,0.25,deleted,ask",     # cancel
        "9,0,0,101.0,0.25,deleted,ask",     # never entered: skipped
    ]
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    proc = run(["tools/replay_l3.py", "--data", str(path), "--repeat", "1"])
    assert "7 rows -> 3 adds, 2 cancels (2 rows skipped)" in proc.stdout
    assert "1 trades, 1 cancels of orders already filled" in proc.stdout
    assert "1 trades, 1 rejected" in proc.stdout

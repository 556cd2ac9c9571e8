"""The C floor with the engine thread's round trip: perf/floor_epoll.c --handoff.

    python perf/floor_handoff.py --port 0 [--host 127.0.0.1] [--server-cpu N] [--engine-cpu N]

The C floor (perf/floor_epoll.py builds it) with each reply sent by way of
a second thread, pinned as pyengine-server's engine thread is (the last
CPU by default), through two rings and the engine thread's wake-up protocol:
what the design's hand-off to the engine thread and back costs on this
machine, before any engine or Python. perf/loadgen_table.py --floors runs it
beside the other floors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Beside this file, and not on the path under PYTHONSAFEPATH.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor_epoll import build  # noqa: E402


def main() -> None:
    binary = build()
    os.execv(binary, [str(binary), "--handoff", *sys.argv[1:]])


if __name__ == "__main__":
    main()

"""The C floor server (perf/floor_epoll.c), built if need be, then run.

    python perf/floor_epoll.py --port 0 [--host 127.0.0.1] [--server-cpu N]

Builds floor_epoll.c if need be (tools/cbuild.py: with the system C
compiler, -O2 -Wall -Wextra -Werror, once per source and compiler), then
replaces this process with it (same pid: a SIGTERM reaches the C server).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# tools/cbuild.py: not on the path under PYTHONSAFEPATH.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from cbuild import build as build_c  # noqa: E402

SOURCE = Path(__file__).resolve().with_suffix(".c")


def build() -> Path:
    """The path of the built server; compiles it when it is not there yet."""
    return build_c(SOURCE, "floor_epoll")


def main() -> None:
    binary = build()
    os.execv(binary, [str(binary), *sys.argv[1:]])


if __name__ == "__main__":
    main()

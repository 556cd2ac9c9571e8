"""The C floor server (perf/floor_epoll.c), built if need be, then run.

    python perf/floor_epoll.py --port 0 [--host 127.0.0.1] [--server-cpu N]

Compiles floor_epoll.c with the system C compiler (``$CC``, else ``cc``) and
-O2 -Wall -Wextra -Werror into a directory named by a hash of the source,
the compiler and the flags (under the system's temporary directory), unless
that binary is there already, then replaces this process with it (same pid:
a SIGTERM reaches the C server).

Why not a CMake target: the floor is no part of the engine or its extension,
and the benchmark must run from an installed package (``pip install .``
keeps no CMake build directory) with the same optimisation whatever build
type the C tests were configured with. tests/integration/test_perf_tools.py
builds and runs it, so a warning fails the suite like one in csrc/.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().with_suffix(".c")
FLAGS = ("-std=gnu11", "-O2", "-pthread", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Werror")


def build() -> Path:
    """The path of the built server; compiles it when it is not there yet."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    key = hashlib.sha256(SOURCE.read_bytes() + repr((compiler, FLAGS)).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"pyengine-floor-{key}" / "floor_epoll"
    if out.exists():
        return out
    out.parent.mkdir(exist_ok=True)
    partial = out.with_name(f"floor_epoll.{os.getpid()}")  # a build beside ours cannot interleave with it
    proc = subprocess.run([*compiler, *FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building {SOURCE.name} failed:\n{proc.stdout}{proc.stderr}")
    os.replace(partial, out)
    return out


def main() -> None:
    binary = build()
    os.execv(binary, [str(binary), *sys.argv[1:]])


if __name__ == "__main__":
    main()

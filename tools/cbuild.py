"""Build a one-file C program of the measurement tools on demand.

The C floors (perf/floor_epoll.c) and the load generator's C worker
(tools/loadgen_worker.c) are compiled with the system C compiler (``$CC``,
else ``cc``) and -O2 -Wall -Wextra -Werror into a directory named by a hash
of the source, the compiler and the flags (under the system's temporary
directory), unless that binary is there already. That directory must be
the user's own and writable by no one else: a program another user put
under its predictable name would otherwise be run.

Why not CMake targets: they are no part of the engine or its extension, and
the benchmarks must run from an installed package (``pip install .`` keeps
no CMake build directory) with the same optimisation whatever build type
the C tests were configured with. The integration tests build and run
each (tests/integration/test_perf_tools.py, test_loadgen.py), so a warning
fails the suite like one in csrc/.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("-std=gnu11", "-O2", "-pthread", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Werror")


def own_directory(path: Path) -> None:
    """Make `path` if need be; SystemExit unless it is a directory (not a
    link) of this user's that no one else can write to."""
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise SystemExit(f"{path} is not a directory of this user's that no one else can write to (a program "
                         "in it could be another's): remove it, or set TMPDIR to a directory of your own")


def build(source: Path, name: str) -> Path:
    """The path of `source` built as `name`; compiled when it is not there yet.
    Raises SystemExit with the compiler's output when it does not build."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    key = hashlib.sha256(source.read_bytes() + repr((compiler, FLAGS)).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"pyengine-{name}-{key}" / name
    own_directory(out.parent)
    if out.exists():
        return out
    partial = out.with_name(f"{name}.{os.getpid()}")  # a build beside ours cannot interleave with it
    proc = subprocess.run([*compiler, *FLAGS, "-o", str(partial), str(source)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building {source.name} failed:\n{proc.stdout}{proc.stderr}")
    os.replace(partial, out)
    return out

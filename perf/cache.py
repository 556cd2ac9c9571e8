"""Inputs the benchmarks make once and keep between runs (pyperf runs each
benchmark in many processes, and a flow of millions of orders takes a
while to make).

They are kept in a directory of this user's that no one else can write to
(tools/cbuild.py's ``own_directory``), under names keyed by the code that
makes them and its parameters: a file another user planted, or one made by
an older version of the flow, is never read.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

# tools/cbuild.py: not on the path under PYTHONSAFEPATH.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from cbuild import own_directory  # noqa: E402


def cached(name: str, make: Callable[[], bytes], sources: Sequence[Path], *params: object) -> bytes:
    """The bytes `make()` returns, kept as `name` for these `sources` (the
    files of the code that makes them) and `params`."""
    digest = hashlib.sha256(repr(params).encode())
    for source in sources:
        digest.update(source.read_bytes())
    folder = Path(tempfile.gettempdir()) / f"pyengine-bench-{os.getuid()}"
    own_directory(folder)
    path = folder / f"{name}-{digest.hexdigest()[:16]}.bin"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    partial = path.with_name(f"{path.name}.{os.getpid()}")  # a process beside this one writes its own
    partial.write_bytes(data)
    os.replace(partial, path)
    return data

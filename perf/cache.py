"""Inputs the benchmarks make once and keep between runs (pyperf runs each
benchmark in many processes, and a flow of millions of orders takes a
while to make).

They are kept in a directory of this user's that no one else can write to
(tools/cbuild.py's ``own_directory``), under names keyed by the code that
makes them, the engine (its compiled core, which runs the generators, and
pyengine/batch.py, which packs the records) and the parameters: a file
another user planted, or one made by older code, is never read. Writing one
removes the others of its name and parameters.
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

import pyengine._cengine  # noqa: E402
import pyengine.batch  # noqa: E402


def cached(name: str, make: Callable[[], bytes], sources: Sequence[Path], *params: int) -> bytes:
    """The bytes `make()` returns, kept as `name` with these `params` for
    these `sources` (the files of the code that makes them) and the
    engine."""
    digest = hashlib.sha256()
    for source in [*sources, Path(pyengine._cengine.__file__ or ""), Path(pyengine.batch.__file__)]:
        digest.update(source.read_bytes())
    folder = Path(tempfile.gettempdir()) / f"pyengine-bench-{os.getuid()}"
    own_directory(folder)
    stem = "-".join([name, *map(str, params)])
    path = folder / f"{stem}-{digest.hexdigest()[:16]}.bin"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    partial = path.with_name(f"{path.name}.{os.getpid()}")  # a process beside this one writes its own
    partial.write_bytes(data)
    os.replace(partial, path)
    for old in folder.glob(f"{stem}-{'[0-9a-f]' * 16}.bin"):  # made by other code: never read again
        if old != path:
            old.unlink(missing_ok=True)
    return data

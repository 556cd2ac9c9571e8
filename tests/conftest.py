"""Shared fixtures: every rule test runs against every engine implementation.

Hypothesis profiles: ``ci`` (the default) and ``quick``; choose one with the
environment variable ``PYENGINE_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from pyengine.testing import ReferenceEngine

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("quick", max_examples=15, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("PYENGINE_HYPOTHESIS_PROFILE", "ci"))


def _implementations() -> list[Any]:
    from pyengine import Engine

    return [pytest.param(ReferenceEngine, id="reference"), pytest.param(Engine, id="engine")]


@pytest.fixture(params=_implementations())
def engine_cls(request: pytest.FixtureRequest) -> Any:
    """An engine class: ``ReferenceEngine`` and ``pyengine.Engine``."""
    return request.param


@pytest.fixture(autouse=True)
def pyengine_logger() -> Iterator[None]:
    """The ``pyengine`` logger as each test found it: setup_logging() gives
    it a handler of its own and stops its propagation, which would keep
    later tests' caplog from seeing its records."""
    logger = logging.getLogger("pyengine")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = state


@dataclass
class FailingAlloc:
    """A process started with `env` fails every allocation (of the fixture's
    kind) of `bytes` or more while the file `flag` exists
    (tests/failing_alloc.c)."""

    env: dict[str, str]
    flag: Path
    bytes: int


def _preloadable(tmp_path: Path, name: str) -> Path:
    """tests/`name`.c built with the system C compiler (``$CC``, else
    ``cc``), for a child process to preload."""
    if os.environ.get("LD_PRELOAD"):
        pytest.skip("another library is preloaded (a sanitizer's)")
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if shutil.which(compiler[0]) is None:
        pytest.skip("no C compiler")
    source = Path(__file__).with_name(f"{name}.c")
    lib = tmp_path / f"{name}.so"
    proc = subprocess.run([*compiler, "-std=gnu11", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                           "-o", str(lib), str(source), "-ldl"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lib


def _failing_alloc(tmp_path: Path, kind: str, nbytes: int) -> FailingAlloc:
    """tests/failing_alloc.c, armed for `kind` ("realloc" or "malloc")."""
    lib = _preloadable(tmp_path, "failing_alloc")
    fail = FailingAlloc({}, tmp_path / f"fail-{kind}", nbytes)
    var = f"PYENGINE_FAIL_{kind.upper()}"
    fail.env = dict(os.environ, LD_PRELOAD=str(lib), **{f"{var}_FLAG": str(fail.flag), f"{var}_BYTES": str(nbytes)})
    return fail


@pytest.fixture
def failing_realloc(tmp_path: Path) -> FailingAlloc:
    """Reallocs of 512 KiB or more fail: the engine grows its event buffer
    with realloc, so a command that needs a bigger one runs out of memory."""
    return _failing_alloc(tmp_path, "realloc", 512 * 1024)


@pytest.fixture
def failing_malloc(tmp_path: Path) -> FailingAlloc:
    """Mallocs of 100,000 bytes or more fail: the engine serializes a
    snapshot into one malloc'ed buffer, 56 bytes an order, so the snapshot
    of a book of 2000 orders runs out of memory."""
    return _failing_alloc(tmp_path, "malloc", 100_000)


@dataclass
class FailingSync:
    """A process started with `env` fails every fdatasync (EIO) while the
    file `flag` exists, and appends the path of each file it syncs to the
    file `log` (fdatasync) or `fsync_log` (fsync) (tests/failing_sync.c)."""

    env: dict[str, str]
    flag: Path
    log: Path
    fsync_log: Path

    def synced(self) -> list[str]:
        """The paths of the files fdatasync'ed so far, in order."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def fsynced(self) -> list[str]:
        """The paths of the files (directories among them) fsync'ed so far, in order."""
        return self.fsync_log.read_text().splitlines() if self.fsync_log.exists() else []


@pytest.fixture
def failing_sync(tmp_path: Path) -> FailingSync:
    """fdatasync fails as on a disk error: the journal syncs its segments
    with it."""
    flag, log, fsync_log = tmp_path / "fail-sync", tmp_path / "synced", tmp_path / "fsynced"
    lib = _preloadable(tmp_path, "failing_sync")
    return FailingSync(dict(os.environ, LD_PRELOAD=str(lib), PYENGINE_FAIL_SYNC_FLAG=str(flag),
                            PYENGINE_SYNC_LOG=str(log), PYENGINE_FSYNC_LOG=str(fsync_log)), flag, log, fsync_log)

"""tools/cbuild.py: the measurement tools' C programs, built once into the
system's temporary directory and run from there, only from a directory
that no other user could have put a program of theirs into."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cbuild() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cbuild", ROOT / "tools" / "cbuild.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cbuild"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path, Path]:
    """cbuild, a C program's source, and where it was built (in a temporary
    directory of this test's own)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    module = cbuild()
    source = tmp_path / "probe.c"
    source.write_text("int main(void) { return 3; }\n")
    out = module.build(source, "probe")
    assert subprocess.run([str(out)]).returncode == 3
    assert module.build(source, "probe") == out  # built once
    return module, source, out


def plant(out: Path) -> None:
    """Another's program at the path the build would run."""
    out.write_text("#!/bin/sh\nexit 7\n")
    out.chmod(0o755)


@pytest.mark.parametrize("how", ["anyone_writes", "symlink", "another_user"])
def test_a_build_directory_another_user_could_fill_is_refused(built: tuple[ModuleType, Path, Path],
                                                              tmp_path: Path, how: str) -> None:
    module, source, out = built
    shutil.rmtree(out.parent)
    if how == "anyone_writes":
        out.parent.mkdir()
        out.parent.chmod(0o777)
    elif how == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        out.parent.symlink_to(elsewhere)
    else:
        if os.getuid() != 0:
            pytest.skip("giving a directory to another user takes root")
        out.parent.mkdir()
        os.chown(out.parent, 65534, 65534)
    plant(out)
    with pytest.raises(SystemExit, match="not a directory of this user's"):
        module.build(source, "probe")

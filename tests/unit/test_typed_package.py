"""The package is typed for its users (PEP 561): the wheel holds the
``py.typed`` marker and the stubs of the compiled modules, and a type
checker run on a user's script, away from the clone, sees the API's types,
numpy integers included wherever the API takes them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import pyengine

ROOT = Path(__file__).resolve().parents[2]
TYPED = ["pyengine/py.typed", "pyengine/_calls.pyi", "pyengine/_cengine.pyi", "pyengine/_server.pyi"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory that holds the package as installed: the environment's
    own when it is a regular install (the sanitizer stage of
    tools/run_tests.sh), else the wheel built from the clone, unpacked."""
    here = Path(pyengine.__file__).resolve().parent
    if here != ROOT / "pyengine":
        for name in TYPED:
            assert (here.parent / name).is_file(), f"the installed package lacks {name}"
        return here.parent
    out = tmp_path_factory.mktemp("wheel")
    # A build directory of its own: the clone's is the in-place install's, built with other settings.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                           "-C", f"build-dir={out / 'build'}", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("pyengine-*.whl")
    with zipfile.ZipFile(wheel) as z:
        held = set(z.namelist())
        for name in TYPED:
            assert name in held, f"the wheel lacks {name}"
        z.extractall(out / "site")
    return out / "site"


def type_check(installed: Path, tmp_path: Path, code: str) -> tuple[str, int]:
    """mypy (strict) on `code`, run outside the clone with the package as installed."""
    (tmp_path / "use.py").write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(installed))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
                           str(tmp_path / "cache"), "--python-version", "3.11", "use.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr, proc.returncode


def test_a_type_checker_sees_the_api_types(installed: Path, tmp_path: Path) -> None:
    out, status = type_check(installed, tmp_path, """\
        from pyengine import Engine, pack_cancel_all
        eng = Engine()
        reveal_type(eng.add_instrument("X"))
        reveal_type(eng.book("X"))
        reveal_type(pack_cancel_all(1))
        eng.submit("X", "buy", 1.5, 10)
    """)
    assert status == 1, out
    assert 'use.py:3: note: Revealed type is "int"' in out, out
    level = "tuple[int, int, int, fallback=pyengine.events.Level]"
    assert f'use.py:4: note: Revealed type is "tuple[str, list[{level}], list[{level}]' in out
    assert 'use.py:5: note: Revealed type is "bytes"' in out
    assert 'Argument 3 to "submit" of "Core" has incompatible type "float"' in out
    assert "py.typed" not in out


def test_numpy_integers_type_check_wherever_they_are_taken(installed: Path, tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    out, status = type_check(installed, tmp_path, """\
        import numpy as np
        from pyengine import Engine
        from pyengine.batch import (pack_cancel, pack_cancel_all, pack_modify, pack_new_order, pack_reset_mmp,
                                    pack_set_mmp, pack_set_order_limits, pack_set_state)

        i, a, q = np.int64(1), np.uint32(7), np.int64(5)
        eng = Engine(expected_orders=q)
        eng.add_instrument("X", tick_size=q, lot_size=q, price_band=(i, q), market_protection=q)
        eng.submit("X", "buy", q, q, account=a)
        eng.cancel_all(a, "X")
        eng.set_mmp(a, "X", q, q)
        eng.reset_mmp(a, "X")
        eng.mmp(a, "X")
        eng.set_order_limits("X", max_qty=q, max_notional=q)
        eng.process_batch(
            pack_new_order(a, "buy", q, q, account=a, order_id=i, ts=q)
            + pack_cancel(i, account=a, ts=q)
            + pack_modify(i, q, q, account=a, ts=q)
            + pack_set_state(a, "halted", ts=q)
            + pack_set_state(a, i)
            + pack_cancel_all(a, a, ts=q)
            + pack_set_mmp(account=a, instrument=a, qty_limit=q, window=q, ts=q)
            + pack_reset_mmp(account=a, instrument=a, ts=q)
            + pack_set_order_limits(a, q, q, ts=q)
        )
    """)
    assert status == 0, out


def test_the_numpy_dtypes_type_check_as_structured_dtypes(installed: Path, tmp_path: Path) -> None:
    # As docs/batch.md uses them: typed as object (or Any: an ndarray of
    # floats to numpy's stubs), its field indexing failed the strict check.
    pytest.importorskip("numpy")
    out, status = type_check(installed, tmp_path, """\
        import numpy as np
        import pyengine
        from pyengine.batch import EVENT_DTYPE
        reveal_type(pyengine.COMMAND_DTYPE)
        cmds = np.zeros(2, dtype=pyengine.COMMAND_DTYPE)
        cmds["price"] = [100, 101]
        events = np.frombuffer(b"", dtype=EVENT_DTYPE)
        print(events[events["type"] == 3][["price", "qty"]])
    """)
    assert status == 0, out
    assert 'use.py:4: note: Revealed type is "numpy.dtype[numpy.void]"' in out, out


def test_a_source_tree_without_its_compiled_core_says_how_to_build_or_where_to_import_from(tmp_path: Path) -> None:
    source = Path(pyengine.__file__).parent
    copy = tmp_path / "pyengine"
    copy.mkdir()
    for path in source.glob("*.py"):  # the modules as a clone holds them, not built
        (copy / path.name).write_bytes(path.read_bytes())
    # -S: no site packages, no editable install of the clone: the copy is what is imported.
    proc = subprocess.run([sys.executable, "-S", "-c", "import pyengine"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"})
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"ImportError: pyengine's compiled core is not built in {copy}: a clone is imported from its root once "
        'built in place there (pip install -e "."); a pyengine installed with pip install is imported from '
        "anywhere but a clone's root")

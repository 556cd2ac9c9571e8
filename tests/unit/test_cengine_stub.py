"""pyengine/_cengine.pyi, the type stub of the cffi extension, is the one that
tools/cengine_stub.py writes from the built module, and a type checker reading
it tells a struct's fields and a C function's arguments apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "pyengine" / "_cengine.pyi"


def test_the_stub_is_written_from_the_built_module(tmp_path: Path) -> None:
    fresh = tmp_path / "_cengine.pyi"
    proc = subprocess.run([sys.executable, "tools/cengine_stub.py", str(fresh)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fresh.read_text() == STUB.read_text(), (
        "pyengine/_cengine.pyi is not the C API's: run `python tools/cengine_stub.py` after reinstalling")


def test_help_writes_no_stub(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "cengine_stub.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: cengine_stub.py [-h] [output]")
    assert list(tmp_path.iterdir()) == []  # not a stub named --help


def _check(tmp_path: Path, code: str) -> tuple[str, int]:
    (tmp_path / "_cengine.pyi").write_text(STUB.read_text())
    (tmp_path / "use.py").write_text("from _cengine import ffi, lib\n\n" + code)
    out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                                     "--python-version", "3.11", str(tmp_path / "use.py")])
    return out + err, status


def test_a_type_checker_reads_fields_and_arguments(tmp_path: Path) -> None:
    out, status = _check(tmp_path, """\
def open_orders() -> int:
    st = ffi.new("struct eng_stats *")
    eng = lib.eng_create(ffi.NULL)
    lib.eng_get_stats(eng, st)
    name: bytes = ffi.string(lib.eng_strerror(lib.ENG_OK))
    lib.eng_destroy(eng)
    return st.open_orders + len(name)
""")
    assert status == 0, out


def test_a_type_checker_finds_a_wrong_field_and_a_wrong_argument(tmp_path: Path) -> None:
    out, status = _check(tmp_path, """\
st = ffi.new("struct eng_stats *")
st.open_order
lib.eng_get_stats(st, st)
""")
    assert status == 1, out
    assert '"struct_eng_stats" has no attribute "open_order"' in out
    assert 'Argument 1 to "eng_get_stats" of "_Lib" has incompatible type "struct_eng_stats"' in out

"""Generate the C source of the cffi extension ``pyengine._cengine``.

Run by CMake at build time (see CMakeLists.txt), in API mode: the generated
module calls the core through compiled C, never through libffi (ABI-mode calls
cost about 2.5x more). The declarations come from ``csrc/pyengine.h`` (the
umbrella of ``pyengine_engine.h``, ``pyengine_journal.h`` and
``pyengine_runner.h``) after the C preprocessor has expanded its tables, so the
headers are the only place the API is written down.

Usage: python _ffi_build.py PREPROCESSED_HEADER OUTPUT_C
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI


def build_ffi(cdef: str) -> FFI:
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source("pyengine._cengine", '#include "pyengine.h"')
    return ffi


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cdef = Path(argv[1]).read_text(encoding="utf-8")
    build_ffi(cdef).emit_c_code(argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

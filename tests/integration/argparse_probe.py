"""Parse command lines with a program's own argparse parser, and run nothing.

    python tests/integration/argparse_probe.py PROGRAM < ARGUMENT_LISTS.json

PROGRAM is a script's path from the clone root (run as ``python PROGRAM``
runs it) or one of the project's console scripts (its entry point, from
pyproject.toml). Each argument list on stdin (a JSON list of lists) runs the
program until its first ``ArgumentParser.parse_args`` returns, and stops it
there. Prints one JSON result per list: ``{"parsed": namespace}``, or
``{"exit": status, "stderr": ...}`` when argparse stopped first (an unknown
option, a bad value, ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import runpy
import sys
import tomllib
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[2]


class Parsed(BaseException):
    """Raised where parse_args would return (not an Exception: no script catches it)."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


_parse_args = argparse.ArgumentParser.parse_args


def _stop_after_parsing(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> NoReturn:
    raise Parsed(_parse_args(self, args, namespace))


def probe(program: str, args: list[str]) -> dict[str, Any]:
    console = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    saved_argv, saved_path = sys.argv, sys.path[:]
    pyperf = sys.modules.get("pyperf")
    if pyperf is not None:
        pyperf.Runner._created.clear()  # one Runner a process, and each run makes one
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            sys.argv = [program, *args]
            if program in console:
                module, _, func = console[program].partition(":")
                getattr(importlib.import_module(module), func)(args)
            else:
                sys.path.insert(0, str((ROOT / program).parent))
                runpy.run_path(str(ROOT / program), run_name="__main__")
    except Parsed as done:
        return {"parsed": vars(done.namespace)}
    except SystemExit as exc:
        return {"exit": exc.code if isinstance(exc.code, int) else int(exc.code is not None), "stderr": err.getvalue()}
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return {"exit": None, "stderr": f"{program} returned without parsing its arguments"}


def main() -> int:
    argparse.ArgumentParser.parse_args = _stop_after_parsing  # type: ignore[assignment]
    program = sys.argv[1]
    results = [probe(program, args) for args in json.load(sys.stdin)]
    print(json.dumps(results, default=repr))
    return 0


if __name__ == "__main__":
    sys.exit(main())

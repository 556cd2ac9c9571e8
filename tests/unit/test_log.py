"""Structured log lines."""

from __future__ import annotations

import io
import logging
import re

import pytest

from pyengine.log import fields, setup_logging


def test_key_value_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    setup_logging("debug", stream=out)
    log = logging.getLogger("pyengine.test")
    log.debug("thing_happened", extra=fields(port=7001, text="two words", empty=""))
    line = out.getvalue().strip()
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=debug event=thing_happened port=7001 text="two words" empty=""',
        line,
    ), line


def test_level_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setenv("PYENGINE_LOG", "warning")
    setup_logging(None, stream=out)
    log = logging.getLogger("pyengine.test")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in out.getvalue() and "event=shown" in out.getvalue()
    with pytest.raises(ValueError):
        setup_logging("chatty")

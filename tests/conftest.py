"""Shared fixtures: every rule test runs against every engine implementation.

Hypothesis profiles: ``ci`` (the default) and ``quick``; choose one with the
environment variable ``PYENGINE_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
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

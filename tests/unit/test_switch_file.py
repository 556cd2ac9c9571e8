"""A single server's dead-man switches in its data directory
(pyengine/server/switch_file.py): replaced whole, read back, a store a kill
cut short leaving the table before it, an unreadable file taken as none."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pyengine.server.switch_file import FILE, SwitchFile


def test_a_table_is_stored_whole_and_read_back(tmp_path: Path) -> None:
    kept = SwitchFile(tmp_path)
    assert kept.load() == {}  # none yet
    kept.store({8: 30.0, 7: 1.5})
    assert SwitchFile(tmp_path).load() == {7: 1.5, 8: 30.0}
    kept.store({})
    assert SwitchFile(tmp_path).load() == {}
    kept.clear()
    assert not (tmp_path / FILE).exists() and SwitchFile(tmp_path).load() == {}
    kept.clear()  # cleared twice: nothing to do


def test_a_store_a_kill_cut_short_leaves_the_table_before_it(tmp_path: Path) -> None:
    SwitchFile(tmp_path).store({7: 2.0})
    (tmp_path / f"{FILE}.tmp").write_bytes(b'{"9": 1')  # what a kill in the middle of the next store leaves
    assert SwitchFile(tmp_path).load() == {7: 2.0}
    assert not (tmp_path / f"{FILE}.tmp").exists()


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'{"7": 0}', b'{"7": "soon"}', b'{"x": 1}', b"\xff"])
def test_an_unreadable_file_is_logged_and_taken_as_no_switch(tmp_path: Path, body: bytes,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE).write_bytes(body)
    with caplog.at_level(logging.ERROR, logger="pyengine.server"):
        assert SwitchFile(tmp_path).load() == {}
    assert [r.getMessage() for r in caplog.records] == ["switches_unreadable"]

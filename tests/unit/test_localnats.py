"""The ports a local NATS cluster's servers are given (pyengine.cluster.localnats.free_ports)."""

from __future__ import annotations

import socket

import pytest

from pyengine.cluster import localnats
from pyengine.cluster.localnats import free_ports


def test_ports_are_chosen_free_and_below_the_range_the_kernel_hands_out() -> None:
    ephemeral = localnats._ephemeral_ports()
    for _ in range(20):
        ports = free_ports(9)
        assert len(set(ports)) == 9
        assert all(localnats._bindable(p) for p in ports)
        assert all(localnats._FIRST_CHOSEN_PORT <= p < ephemeral.start for p in ports), (ports, ephemeral)


def test_a_port_in_use_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine ports from a range of 90 (so every one is a candidate), one of them listened on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = min(port - 45, 65_536 - 90)
        monkeypatch.setattr(localnats, "_FIRST_CHOSEN_PORT", first)
        monkeypatch.setattr(localnats, "_ephemeral_ports", lambda: range(first + 90, 65_536))
        for _ in range(20):
            ports = free_ports(9)
            assert port not in ports
            assert all(first <= p < first + 90 for p in ports)


def test_with_no_room_below_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    ephemeral = localnats._ephemeral_ports()
    monkeypatch.setattr(localnats, "_ephemeral_ports", lambda: range(localnats._FIRST_CHOSEN_PORT + 1, 65_536))
    ports = free_ports(9)
    assert len(set(ports)) == 9
    assert all(localnats._bindable(p) for p in ports)
    assert all(p in ephemeral for p in ports)  # where the kernel hands ports out

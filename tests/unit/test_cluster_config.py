"""The [cluster] table's checks (pyengine/cluster/config.py)."""

from __future__ import annotations

import pytest

from pyengine.cluster.config import ClusterConfig, check_cluster


@pytest.mark.parametrize("advertise", ["10.0.0.4:7001", "node-a.example:7001", "[::1]:7101", "[fe80::1%eth0]:7001"])
def test_an_advertised_address_is_a_host_and_a_port(advertise: str) -> None:
    check_cluster(ClusterConfig(nats=("nats://127.0.0.1:4222",), shard="a", node="a1", advertise=advertise), [])


@pytest.mark.parametrize("advertise", ["::1:7101", "[::1]", "10.0.0.4", "host:port", "[::1]7101", "a b:7001"])
def test_an_advertised_address_without_a_port_is_refused(advertise: str) -> None:
    with pytest.raises(ValueError, match="advertise must be HOST:PORT or \\[IPv6\\]:PORT"):
        check_cluster(ClusterConfig(nats=("nats://127.0.0.1:4222",), shard="a", node="a1", advertise=advertise), [])

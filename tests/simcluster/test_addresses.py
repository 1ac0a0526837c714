"""Pod addresses: per-node loopback ranges, never 127.0.0.x, quarantined after release."""

from __future__ import annotations

import socket

import pytest

from simcluster.addresses import AddressesExhausted, AddressPool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_addresses_are_unique_in_the_node_range() -> None:
    pool = AddressPool(3, quarantine=60.0, start=0)
    first = [pool.allocate([8080]) for _ in range(300)]
    assert len(set(first)) == 300
    assert all(a.startswith("127.3.") and not a.endswith((".0", ".255")) for a in first)
    assert first[:2] == ["127.3.0.1", "127.3.0.2"] and first[254] == "127.3.1.1"
    assert pool.cidr == "127.3.0.0/16" and pool.in_use == 300


def test_released_addresses_wait_out_their_quarantine() -> None:
    clock = Clock()
    pool = AddressPool(4, quarantine=60.0, clock=clock, start=0, size=2)
    first, second = pool.allocate([8080]), pool.allocate([8080])
    pool.release(first)
    with pytest.raises(AddressesExhausted):
        pool.allocate([8080])  # the only free address is still in quarantine
    clock.now = 60.5
    assert pool.allocate([8080]) == first
    assert second != first


def test_an_address_whose_port_is_taken_is_skipped() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.9.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        pool = AddressPool(9, quarantine=60.0, start=0)
        assert pool.allocate([port]) == "127.9.0.2"


def test_node_index_bounds() -> None:
    for index in (0, 255):
        with pytest.raises(ValueError):
            AddressPool(index, quarantine=1.0)

"""Pod IP addresses: one loopback range per node, never reused too soon.

Every pod gets its own 127.x.y.z address so that its workload can listen on the
port the pod declares (8080 for all of them) and a node-local prober can reach
exactly that pod. Node i hands out 127.i.y.z (so 127.0.0.x, where other services
live, is never used), cycling through the range from a random start so that two
simulated clusters on one machine rarely meet; an address whose port is already
taken by someone else is skipped after a test bind. A released address is held
back for a quarantine period, so a prober still probing a deleted pod never
reaches its successor.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterable

from .errors import SimError

_PER_NODE = 256 * 254  # y in 0..255, z in 1..254


class AddressesExhausted(SimError):
    """Every address of the node's range is in use or in quarantine."""


class AddressPool:
    def __init__(
        self,
        node_index: int,
        quarantine: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        start: int | None = None,
        size: int = _PER_NODE,
    ) -> None:
        """``start`` and ``size`` pin the cursor and shrink the range (for tests)."""
        if not 1 <= node_index <= 254:
            raise ValueError(f"node index must be 1..254, got {node_index}")
        self._node = node_index
        self._quarantine = quarantine
        self._clock = clock
        self._size = min(size, _PER_NODE)
        self._next = random.SystemRandom().randrange(self._size) if start is None else start
        self._in_use: set[str] = set()
        self._held: dict[str, float] = {}

    @property
    def cidr(self) -> str:
        return f"127.{self._node}.0.0/16"

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def _address(self, slot: int) -> str:
        return f"127.{self._node}.{slot // 254}.{slot % 254 + 1}"

    def allocate(self, ports: Iterable[int]) -> str:
        """A free address on which every one of ``ports`` can be bound."""
        wanted = list(ports)
        now = self._clock()
        for _ in range(self._size):
            address = self._address(self._next)
            self._next = (self._next + 1) % self._size
            if address in self._in_use or self._held.get(address, 0.0) > now:
                continue
            if not all(_bindable(address, port) for port in wanted):
                continue
            self._held.pop(address, None)
            self._in_use.add(address)
            return address
        raise AddressesExhausted(f"no free pod address in {self.cidr}")

    def release(self, address: str) -> None:
        """Return ``address``; it is not handed out again for the quarantine period."""
        if address in self._in_use:
            self._in_use.discard(address)
            self._held[address] = self._clock() + self._quarantine
        # Forget quarantines that are over, so the dict stays small.
        now = self._clock()
        for old in [a for a, t in self._held.items() if t <= now]:
            del self._held[old]


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The workload sets SO_REUSEADDR too: TIME_WAIT leftovers do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True

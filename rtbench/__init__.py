"""Code shared by every rtbench component: the wire contract and small helpers.

Kept deliberately small and free of domain logic: the agent, the collector, rtctl
and the simulated cluster never import each other, only this package.

- ``rtbench.v1``: code generated from ``proto/rtbench/v1`` (``scripts/gen-proto``).
- ``rtbench.clock``: nanosecond clocks and the NTP-style offset estimate.
- ``rtbench.backoff``: the full-jitter exponential backoff of the reconnect loops.
- ``rtbench.grpcsecurity``: how a client reaches the collector (address rules, bearer
  token, TLS), shared by the agent's uplink and rtctl.
"""

from __future__ import annotations

__version__ = "0.1.0"

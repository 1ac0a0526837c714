"""Which real nodes exist on this machine, so that a crashed one can be cleaned up.

A real node leaves a lot behind when its owner dies without ``stop()``: containerd
and its shims keep running, pods keep their network namespaces, veths, addresses
and cgroups, and the bridge stays. Each node therefore records itself, before it
starts anything, in ``/run/rtbench/nodes/<id>.json``: its owner's PID and that
process's start time (so a reused PID is not mistaken for the owner), its
directories, socket, bridge, subnet and cgroup tree. The next node to start finds
the entries whose owner is dead and recovers them (containerd.py).

The same entries hand out what two nodes side by side must not share: a /22 of
198.18.0.0/15 (RFC 2544's benchmarking range, so nothing routes it anywhere) and
a bridge name. All reads and writes happen under one ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "RUN_DIR",
    "NodeEntry",
    "allocate_subnet",
    "entries",
    "locked",
    "owner_alive",
    "process_start_time",
    "remove_entry",
    "write_entry",
]

RUN_DIR = Path("/run/rtbench")
"""Short on purpose: unix socket paths must stay under 108 bytes."""
NODES_DIR = RUN_DIR / "nodes"
LOCK_FILE = RUN_DIR / "nodes.lock"
SUPERNET = ipaddress.ip_network("198.18.0.0/15")
SUBNET_PREFIX = 22
"""1022 pod addresses per node, 128 nodes side by side."""


@dataclass
class NodeEntry:
    """What is needed to find and remove everything of one node."""

    id: str
    owner_pid: int
    owner_start: int
    base: str
    run_dir: str
    socket: str
    bridge: str
    subnet: str
    cgroup: str
    containerd_pid: int = 0
    ip_forward_before: str = ""
    """The host's net.ipv4.ip_forward before the first live node (restored by the last)."""

    def path(self) -> Path:
        return NODES_DIR / f"{self.id}.json"


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(entry: NodeEntry) -> bool:
    return process_start_time(entry.owner_pid) == entry.owner_start


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The registry's lock (blocking; call from a thread in async code)."""
    NODES_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def entries() -> list[NodeEntry]:
    """Every recorded node; unreadable files are skipped (call under the lock)."""
    found: list[NodeEntry] = []
    if not NODES_DIR.is_dir():
        return found
    for path in sorted(NODES_DIR.glob("*.json")):
        try:
            found.append(NodeEntry(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def write_entry(entry: NodeEntry) -> None:
    NODES_DIR.mkdir(parents=True, exist_ok=True)
    tmp = entry.path().with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(entry), indent=1))
    os.replace(tmp, entry.path())


def remove_entry(entry: NodeEntry) -> None:
    with contextlib.suppress(FileNotFoundError):
        entry.path().unlink()


def allocate_subnet(taken: list[str]) -> str:
    """The first /22 of the benchmarking range that no entry holds."""
    used = {ipaddress.ip_network(s) for s in taken}
    for candidate in SUPERNET.subnets(new_prefix=SUBNET_PREFIX):
        if candidate not in used:
            return str(candidate)
    raise RuntimeError(f"all {SUPERNET} subnets are taken by live rtbench nodes")

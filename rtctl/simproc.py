"""A /proc for each simulated node, so the agents measure the simulated memory, not the host's.

The memory footprint per pod (MemAvailable before - after all pods are ready,
divided by the pods on the node) is one of the figures a report shows. The
agents read it from ``/proc/meminfo``; on the local stack all simulated nodes
share one real machine, whose MemAvailable moves with whatever else runs on it,
so the figure would be noise. The simulator knows what each node's pods cost
(runtime overhead from the profile, plus the workload processes' RSS) and serves
it as ``GET /_sim/nodes/NODE/meminfo``, but only over HTTP, and an agent reads
a directory (``--proc-root``).

``ProcMirror`` bridges the two: it keeps ``ROOT/NODE/meminfo`` a copy of the
simulator's answer, refreshed every ``interval`` seconds (atomically, so an
agent never reads half a file), next to links to the host's ``stat``,
``cpuinfo`` and ``sys`` (CPU figures stay the real machine's: the simulated
nodes really share its cores). The agents sample every 200 ms and the memory
settles long before a pod is ready, so a copy that is up to ``interval`` old
does not change the figure.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ProcMirror"]

log = logging.getLogger(__name__)

HOST_ENTRIES = ("stat", "cpuinfo", "sys")
"""Read from the real /proc: CPU time and the node's facts other than memory."""


class ProcMirror:
    """Keeps ``root/<node>/`` a /proc whose meminfo is the simulated node's."""

    def __init__(
        self, sim_url: str, nodes: Sequence[str], root: Path, interval: float = 0.05
    ) -> None:
        self.sim_url = sim_url
        self.nodes = tuple(nodes)
        self.root = root
        self.interval = interval
        self.copies = 0
        """meminfo files written so far (for tests and the curious)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def proc_root(self, node: str) -> Path:
        return self.root / node

    def start(self) -> None:
        """Lay out the directories and the first copies, then refresh in a thread.

        The first copy is written before this returns, so an agent started next
        never sees a /proc without meminfo. Raises OSError (URLError is one) when the
        simulator cannot be read at all.
        """
        for node in self.nodes:
            directory = self.proc_root(node)
            directory.mkdir(parents=True, exist_ok=True)
            for entry in HOST_ENTRIES:
                link = directory / entry
                if not link.is_symlink():
                    link.symlink_to(Path("/proc") / entry)
            self._copy(node)
        self._thread = threading.Thread(target=self._refresh, name="sim-meminfo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _copy(self, node: str) -> None:
        url = f"{self.sim_url}/_sim/nodes/{node}/meminfo"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read()
        target = self.proc_root(node) / "meminfo"
        partial = target.with_name(".meminfo.partial")
        partial.write_bytes(text)
        os.replace(partial, target)
        self.copies += 1

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            for node in self.nodes:
                try:
                    self._copy(node)
                except OSError as exc:
                    # The simulator stops after the agents; until then a failure is worth
                    # one line, and the copy simply stays as it was.
                    if not self._failing and not self._stop.is_set():
                        log.warning("cannot mirror %s's meminfo: %s", node, exc)
                    self._failing = True
                    continue
                if self._failing:
                    log.info("mirroring the simulated meminfo again")
                    self._failing = False

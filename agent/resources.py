"""Node and pod resources from /proc and the pods' cgroups, sampled while a run lasts.

DESIGN.md measures memory per pod the way the Kata and VU Amsterdam studies did:
(node MemAvailable before - after all pods are ready) / pods on the node. So the
sampler takes a node sample the moment the first pod of a run appears while it
is idle (the "before"), then every ``sample_interval_s`` while pods are
tracked, and only every ``idle_sample_interval_s`` in between runs. A periodic
sample cannot be the "after": rtctl deletes a run as soon as every replica
answered and is ready, often within 100 ms of the last ready, so the next
periodic sample may already see the pods' memory freed. Hence one more node
sample whenever a pod of a run is seen to become ready or to give its first
response (``milestone()``, called through ``SampleOnMilestones``, the outbox in
front of the uplink): taken at once, right after the event is stamped, unless
an extra sample was taken less than ``EXTRA_SAMPLE_GAP_S`` ago, in which case
one follows when that gap has passed (a burst of 100 readies costs a few
samples, and the last ready still gets one after it). CPU busy is the fraction
of all CPUs' time that was not idle or iowait since the previous sample (of
either kind), from the first line of /proc/stat.

Per pod, the pod cgroup's own account is read where the agent can see it:
``memory.current`` (cgroup v2) or ``memory.usage_in_bytes`` (v1), found by
globbing for the pod UID under the kubepods hierarchy once and then cached
(systemd driver: ``kubepods.slice/kubepods-burstable.slice/
kubepods-burstable-pod<uid with _>.slice``; cgroupfs driver, as K3s uses:
``kubepods/burstable/pod<uid>``). A pod whose cgroup cannot be found or read
is skipped silently and counted: the agent may run without the host's cgroup
tree, and the node sample still holds.

Reading these small files is done on the event loop: each read takes
microseconds, less than handing it to a thread would.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, events_pb2

from .outbox import Outbox

if TYPE_CHECKING:
    from .observing import ObserveSettings

__all__ = [
    "EXTRA_SAMPLE_GAP_S",
    "CgroupFinder",
    "CpuTimes",
    "ResourceSampler",
    "SampleOnMilestones",
    "local_facts",
    "read_meminfo",
]

log = logging.getLogger(__name__)

KUBEPODS_DEPTH = 3
"""How deep under the cgroup root the kubepods hierarchy may start (kind, K3s in Docker)."""
LOOKUP_RETRY_S = 1.0
"""A pod's cgroup appears with its sandbox; until then look again at most this often."""
MEMORY_FILES = ("memory.current", "memory.usage_in_bytes")
EXTRA_SAMPLE_GAP_S = 0.01
"""At least this long between two extra (milestone) node samples. Reading meminfo and
stat takes tens of µs, so even a sample per gap is under 1% of a core; the "after"
sample it delays by at most this much still comes long before rtctl's delete."""
MILESTONES = frozenset((events_pb2.PHASE_READY, events_pb2.PHASE_FIRST_RESPONSE))
"""The events after which memory per pod needs a node sample (its "after")."""


def read_meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo as bytes per key (the kernel writes kB)."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
            values[key.strip()] = int(fields[0]) * scale
    return values


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies from the aggregate ``cpu`` line of /proc/stat."""

    busy: int
    total: int

    @classmethod
    def read(cls, path: Path) -> CpuTimes:
        with path.open() as stat:
            first = stat.readline().split()
        if not first or first[0] != "cpu":
            raise ValueError(f"{path}: no aggregate cpu line")
        # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
        # is already counted in user and nice.
        ticks = [int(v) for v in first[1:9]]
        total = sum(ticks)
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return cls(busy=total - idle, total=total)

    def busy_since(self, before: CpuTimes) -> float:
        elapsed = self.total - before.total
        if elapsed <= 0:
            return 0.0
        return min(1.0, max(0.0, (self.busy - before.busy) / elapsed))


class CgroupFinder:
    """Finds each pod's cgroup memory file under the kubepods hierarchy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._bases: list[Path] | None = None
        self._found: dict[str, Path] = {}
        self._looked: dict[str, float] = {}

    def bases(self) -> list[Path]:
        """The kubepods hierarchy roots (found once)."""
        if self._bases is None:
            self._bases = []
            level = [self.root]
            for _ in range(KUBEPODS_DEPTH):
                below: list[Path] = []
                for directory in level:
                    try:
                        children = [c for c in directory.iterdir() if c.is_dir()]
                    except OSError:
                        continue
                    for child in children:
                        if child.name in ("kubepods", "kubepods.slice") or child.name.endswith(
                            "-kubepods.slice"
                        ):
                            self._bases.append(child)
                        else:
                            below.append(child)
                level = below
        return self._bases

    def memory_file(self, uid: str, now: float | None = None) -> Path | None:
        found = self._found.get(uid)
        if found is not None:
            return found
        now = time.monotonic() if now is None else now
        if now - self._looked.get(uid, -LOOKUP_RETRY_S) < LOOKUP_RETRY_S:
            return None
        self._looked[uid] = now
        underscored = uid.replace("-", "_")
        patterns = (
            f"*pod{underscored}.slice",
            f"*/*pod{underscored}.slice",
            f"pod{uid}",
            f"*/pod{uid}",
        )
        for base in self.bases():
            for pattern in patterns:
                for directory in base.glob(pattern):
                    for name in MEMORY_FILES:
                        if (directory / name).is_file():
                            self._found[uid] = directory / name
                            return self._found[uid]
        return None

    def forget(self, uid: str) -> None:
        self._found.pop(uid, None)
        self._looked.pop(uid, None)


def local_facts(proc_root: Path) -> agent_pb2.NodeFacts:
    """What the node says about itself without the API: kernel, architecture, CPUs, memory."""
    facts = agent_pb2.NodeFacts(architecture=platform.machine())
    try:
        facts.kernel_version = (proc_root / "sys/kernel/osrelease").read_text().strip()
    except OSError:
        facts.kernel_version = platform.release()
    try:
        cpuinfo = (proc_root / "cpuinfo").read_text()
        facts.cpu_count = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    except OSError:
        pass
    if not facts.cpu_count:
        facts.cpu_count = os.cpu_count() or 0
    try:
        facts.memory_total_bytes = read_meminfo(proc_root / "meminfo").get("MemTotal", 0)
    except (OSError, ValueError):
        pass
    return facts


class ResourceSampler:
    """Samples the node, and each tracked pod's cgroup, into the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        settings: ObserveSettings,
        pods: Callable[[], Collection[events_pb2.PodRef]],
    ) -> None:
        self._outbox = outbox
        self._s = settings
        self._pods = pods
        self._cgroups = CgroupFinder(settings.cgroup_root)
        self._cpu: CpuTimes | None = None
        self._wakeup = asyncio.Event()
        self._waiting_idle = False
        self._start_now = False
        self._last_extra = -math.inf
        self._extra_due: float | None = None
        self._warned = False
        self.node_samples = 0
        """Node samples taken, periodic and extra."""
        self.extra_samples = 0
        """Of those, the ones taken for a milestone (a pod ready or answering)."""
        self.pod_samples = 0
        self.unreadable = 0
        """Node or pod files that could not be read (counted, logged once)."""
        self.pods_skipped = 0
        """Pod samples not taken because the pod's cgroup was not (yet) found."""

    def pods_changed(self) -> None:
        """The tracked pods changed; the first pod of a run gets its "before" at once."""
        if self._waiting_idle and self._pods():
            self._start_now = True
            self._wakeup.set()

    def milestone(self) -> None:
        """A pod of a run became ready or answered: a node sample now, or once the gap passed.

        Called synchronously from the observers, right after the event was stamped and
        handed over, so the sample's time follows the event's.
        """
        if self._extra_due is not None:
            return  # one is due shortly, after this milestone too
        now = time.monotonic()
        if now - self._last_extra >= EXTRA_SAMPLE_GAP_S:
            self._extra(now)
        else:
            self._extra_due = self._last_extra + EXTRA_SAMPLE_GAP_S
            self._wakeup.set()

    def forget(self, uid: str) -> None:
        self._cgroups.forget(uid)

    async def run(self) -> None:
        try:
            self._cpu = CpuTimes.read(self._s.proc_root / "stat")
        except (OSError, ValueError) as exc:
            self._unreadable(exc)
        while True:
            pods = self._pods()
            self.sample(pods)
            interval = self._s.sample_interval_s if pods else self._s.idle_sample_interval_s
            await self._wait(time.monotonic() + interval, idle=not pods)

    async def _wait(self, until: float, *, idle: bool) -> None:
        """Until the next periodic sample (or a first pod while idle), taking extra ones due."""
        self._waiting_idle = idle
        self._start_now = False
        try:
            while not self._start_now:
                now = time.monotonic()
                if self._extra_due is not None and now >= self._extra_due:
                    self._extra(now)
                    continue
                if now >= until:
                    return
                due = until if self._extra_due is None else min(until, self._extra_due)
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(due - now):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        finally:
            self._waiting_idle = False

    def _extra(self, now: float) -> None:
        self._extra_due = None
        self._last_extra = now
        self.extra_samples += 1
        self.sample(())

    def sample(self, pods: Collection[events_pb2.PodRef]) -> None:
        """One node sample and one sample per pod whose cgroup is readable."""
        now = wall_ns()
        proc = self._s.proc_root
        try:
            memory = read_meminfo(proc / "meminfo")
            cpu = CpuTimes.read(proc / "stat")
        except (OSError, ValueError) as exc:
            self._unreadable(exc)
        else:
            busy = cpu.busy_since(self._cpu) if self._cpu is not None else 0.0
            self._cpu = cpu
            self._outbox.put_sample(
                events_pb2.ResourceSample(
                    time_ns=now,
                    mem_total_bytes=memory.get("MemTotal", 0),
                    mem_available_bytes=memory.get("MemAvailable", memory.get("MemFree", 0)),
                    cpu_busy=busy,
                )
            )
            self.node_samples += 1
        for ref in pods:
            path = self._cgroups.memory_file(ref.uid)
            if path is None:
                self.pods_skipped += 1
                continue
            try:
                used = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                self.unreadable += 1
                self._cgroups.forget(ref.uid)
                continue
            sample = events_pb2.ResourceSample(time_ns=now, pod_memory_bytes=used)
            sample.pod.CopyFrom(ref)
            self._outbox.put_sample(sample)
            self.pod_samples += 1

    def _unreadable(self, exc: Exception) -> None:
        self.unreadable += 1
        if not self._warned:
            self._warned = True
            log.warning("cannot read node resources under %s: %s", self._s.proc_root, exc)


class SampleOnMilestones:
    """An ``Outbox`` in front of another: passes every record on, and after an event
    that a pod of a run became ready or gave its first response asks the sampler for
    an extra node sample (the "after" of memory per pod)."""

    def __init__(self, outbox: Outbox, sampler: ResourceSampler) -> None:
        self._outbox = outbox
        self._sampler = sampler

    def put_event(self, event: events_pb2.Event) -> None:
        self._outbox.put_event(event)
        if event.phase in MILESTONES and event.pod.run_id:
            self._sampler.milestone()

    def put_probe(self, probe: events_pb2.ProbeResult) -> None:
        self._outbox.put_probe(probe)

    def put_sample(self, sample: events_pb2.ResourceSample) -> None:
        self._outbox.put_sample(sample)

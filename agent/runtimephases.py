"""From containerd observations to pod events: CRI labels, the wait for the watch, once each.

containerd knows containers, not pods. The CRI plugin labels every container it
makes with its pod's UID and whether it is the pod's sandbox or an app
container; this module reads those labels (``CriContainer``) and turns an
observation (a phase of a container at a time) into an ``rtbench.v1`` event of
that pod. The event carries the PodRef the pod watch built (run id, workload
labels), which only the watch has, and containerd may report a task before the
watch has seen its pod. So ``PhaseEmitter`` holds observations of pods the
watch does not know, at most ``hold_max`` of them for at most ``hold_s``, emits
them when the watch sees the pod (``pod_seen``), and drops them past the limit
with a counted debug line: pods outside the agent's label selector end that way
on a shared node, which is why it is only a debug line.

Each (container id, phase) is emitted at most once; the marks are forgotten
when containerd deletes the container, and the oldest go first past
``EMITTED_MAX``. A pod the watch has forgotten (gone) keeps its PodRef here a
while, because its containers' exits may still be coming.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rtbench.clock import mono_ns, wall_ns
from rtbench.containerd import containers_pb2
from rtbench.v1 import events_pb2 as rt

from .containerd import timestamp_ns
from .outbox import Outbox

__all__ = [
    "KIND_LABEL",
    "POD_UID_LABEL",
    "STARTS",
    "CriContainer",
    "Observation",
    "PhaseEmitter",
    "PodLookup",
    "RuntimeCounters",
    "remember",
]

log = logging.getLogger("agent.runtimeevents")  # one logger for the whole reader

POD_UID_LABEL = "io.kubernetes.pod.uid"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
KIND_LABEL = "io.cri-containerd.kind"

HOLD_S = 30.0
"""How long an observation waits for the watch to see its pod: the watch sees a pod when
it is scheduled, before its sandbox exists, unless it is reconnecting (backoff at most
5 s) or relisting; 30 s covers both with room."""
HOLD_MAX = 10_000
"""Observations held at once (about 2000 pods of 5 phases): bounds the memory a node full
of pods outside the label selector can take."""
CACHE_MAX = 16_384
"""Containers whose labels are remembered (and pods whose PodRef is), oldest out first."""
EMITTED_MAX = 65_536
"""(container, phase) pairs remembered as emitted, beyond the /containers/delete cleanup."""

STARTS = {
    "sandbox": (rt.PHASE_SANDBOX_CREATED, rt.PHASE_SANDBOX_STARTED),
    "container": (rt.PHASE_CONTAINER_CREATED, rt.PHASE_CONTAINER_STARTED),
}
"""The create and start phases of each CRI kind; only app containers have an exit phase."""

K = TypeVar("K")
V = TypeVar("V")

PodLookup = Callable[[str], rt.PodRef | None]
"""The PodRef the pod watch built for a UID, None if it does not know the pod (yet)."""


def remember(store: OrderedDict[K, V], key: K, value: V, *, limit: int = CACHE_MAX) -> None:
    """Store ``key`` as the newest entry, dropping the oldest beyond ``limit``."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


@dataclass(frozen=True)
class CriContainer:
    """A container as the CRI plugin labelled it."""

    id: str
    kind: str
    """sandbox (the pause container, or the VM of a sandboxed runtime) or container."""
    pod_uid: str
    pod: str
    """namespace/name, for log lines only: the PodRef comes from the watch."""
    name: str
    """The container's name in the pod spec; empty for the sandbox."""
    runtime: str
    """containerd's runtime (io.containerd.runc.v2, io.containerd.kata-fc.v2, ...)."""
    created_ns: int

    @classmethod
    def parse(cls, container: containers_pb2.Container) -> CriContainer | None:
        """The container's CRI identity; None without a pod UID and a known kind."""
        labels = container.labels
        kind, uid = labels.get(KIND_LABEL, ""), labels.get(POD_UID_LABEL, "")
        if kind not in STARTS or not uid:
            return None
        return cls(
            id=container.id,
            kind=kind,
            pod_uid=uid,
            pod=f"{labels.get(POD_NAMESPACE_LABEL, '')}/{labels.get(POD_NAME_LABEL, '')}",
            name=labels.get(CONTAINER_NAME_LABEL, "") if kind == "container" else "",
            runtime=container.runtime.name,
            created_ns=timestamp_ns(container.created_at),
        )


@dataclass
class Observation:
    """One phase of one container, waiting to become an event."""

    container: CriContainer
    phase: rt.Phase
    time_ns: int
    uncertainty_ns: int
    attributes: dict[str, str]


@dataclass
class RuntimeCounters:
    """What the reader did, for tests and for the curious (no metrics endpoint yet)."""

    connected: bool = False
    connects: int = 0
    failures: int = 0
    """Connects that failed, and connections lost."""
    envelopes: int = 0
    emitted: int = 0
    ignored: int = 0
    """Task events of containers without CRI labels, or already deleted."""
    other_namespace: int = 0
    """Envelopes of another namespace (the Subscribe filter should leave none)."""
    undecodable: int = 0
    """Payloads that did not parse as the message their type URL names (skipped)."""
    held: int = 0
    dropped: int = 0
    recovered: int = 0
    unrecoverable: int = 0


class PhaseEmitter:
    """Turns observations into events of the watch's pods: held until known, once each."""

    def __init__(
        self,
        outbox: Outbox,
        pods: PodLookup,
        counters: RuntimeCounters,
        *,
        on_started: Callable[[str], None] | None = None,
        hold_s: float = HOLD_S,
        hold_max: int = HOLD_MAX,
    ) -> None:
        self._outbox = outbox
        self._pods = pods
        self._counters = counters
        self._on_started = on_started
        self.hold_s = hold_s
        self._hold_max = hold_max
        self._refs: OrderedDict[str, rt.PodRef] = OrderedDict()
        self._emitted: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._held: dict[str, list[tuple[float, Observation]]] = {}

    def emitted(self, container_id: str, phase: int) -> bool:
        return (container_id, phase) in self._emitted

    def forget(self, container_id: str) -> None:
        """containerd deleted the container: its marks can go."""
        for phase in (*STARTS["sandbox"], *STARTS["container"], rt.PHASE_CONTAINER_EXITED):
            self._emitted.pop((container_id, phase), None)

    def offer(self, observation: Observation) -> None:
        """Emit now if the watch knows the pod, else hold (or drop when full)."""
        if self.emitted(observation.container.id, observation.phase):
            return
        uid = observation.container.pod_uid
        ref = self._ref(uid)
        if ref is not None:
            self._emit(observation, ref)
        elif self._counters.held >= self._hold_max:
            self._drop(observation.container, 1, f"{self._hold_max} observations already held")
        else:
            self._held.setdefault(uid, []).append((_now() + self.hold_s, observation))
            self._counters.held += 1

    def pod_seen(self, uid: str) -> None:
        """The watch knows this pod now: emit what was held for it."""
        held = self._held.get(uid)
        if held is None:
            return
        ref = self._ref(uid)
        if ref is None:
            return
        del self._held[uid]
        self._counters.held -= len(held)
        for _, observation in held:
            self._emit(observation, ref)

    def sweep(self) -> None:
        """Drops held observations whose pod the watch did not see within ``hold_s``."""
        now = _now()
        for uid in [u for u, held in self._held.items() if held[0][0] <= now]:
            held = self._held[uid]
            keep = [(deadline, o) for deadline, o in held if deadline > now]
            expired = len(held) - len(keep)
            self._counters.held -= expired
            if keep:
                self._held[uid] = keep
            else:
                del self._held[uid]
            why = f"pod not seen by the watch in {self.hold_s:g} s"
            self._drop(held[0][1].container, expired, why)

    def _ref(self, uid: str) -> rt.PodRef | None:
        ref = self._pods(uid)
        if ref is not None:
            remember(self._refs, uid, ref)
            return ref
        # The watch may have forgotten a pod that is gone; its containers still exit.
        return self._refs.get(uid)

    def _emit(self, observation: Observation, ref: rt.PodRef) -> None:
        info = observation.container
        mark = (info.id, int(observation.phase))
        if mark in self._emitted:
            return
        remember(self._emitted, mark, None, limit=EMITTED_MAX)
        event = rt.Event(
            phase=observation.phase,
            source=rt.SOURCE_CONTAINERD,
            time_ns=observation.time_ns,
            # The same instant on this agent's monotonic clock: containerd stamps with
            # the node's wall clock, which is ours.
            monotonic_ns=mono_ns() - (wall_ns() - observation.time_ns),
            uncertainty_ns=observation.uncertainty_ns,
            container=info.name,
        )
        event.pod.CopyFrom(ref)
        event.attributes.update(observation.attributes)
        if info.runtime:
            event.attributes["runtime"] = info.runtime
        self._outbox.put_event(event)
        self._counters.emitted += 1
        if observation.phase == rt.PHASE_CONTAINER_STARTED and self._on_started is not None:
            self._on_started(info.pod_uid)

    def _drop(self, info: CriContainer, count: int, why: str) -> None:
        self._counters.dropped += count
        log.debug(
            "containerd: dropped %d observation(s) of pod %s (uid %s): %s; %d dropped so far",
            count,
            info.pod,
            info.pod_uid,
            why,
            self._counters.dropped,
        )


def _now() -> float:
    return mono_ns() / 1e9

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

Each (container id, phase) is offered at most once: the first observation
decides it (emitted, held, or dropped with its pod), and so does giving up on
it (``give_up``: a missed phase whose bracket was too wide); later ones,
exact or bracketed, are ignored. The marks are forgotten when containerd
deletes the container, and the oldest go first past ``EMITTED_MAX``. A pod
the watch has forgotten (gone) keeps its PodRef here a while, because its
containers' exits may still be coming.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from rtbench.clock import mono_ns, wall_ns
from rtbench.containerd import containers_pb2, task_types_pb2
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
    "recover",
    "remember",
]

log = logging.getLogger("agent.runtimeevents")  # one logger for the whole reader

POD_UID_LABEL = "io.kubernetes.pod.uid"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
KIND_LABEL = "io.cri-containerd.kind"
NODE_LABEL = "rtbench.dev/node"
"""Set by rtbench's embedded real-pod nodes, whose kubelets share one containerd: the
node a container belongs to. Real kubelets never set it (one containerd per node)."""

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
"""(container, phase) pairs remembered as decided, beyond the /containers/delete cleanup."""

STARTS = {
    "sandbox": (rt.PHASE_SANDBOX_CREATED, rt.PHASE_SANDBOX_STARTED),
    "container": (rt.PHASE_CONTAINER_CREATED, rt.PHASE_CONTAINER_STARTED),
}
"""The create and start phases of each CRI kind; only app containers have an exit phase."""

_STARTED = frozenset(
    {task_types_pb2.RUNNING, task_types_pb2.PAUSED, task_types_pb2.PAUSING, task_types_pb2.STOPPED}
)
"""Task states that prove the task was started (a STOPPED one ran and exited)."""

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
    def parse(cls, container: containers_pb2.Container, node: str = "") -> CriContainer | None:
        """The container's CRI identity; None without a pod UID and a known kind, or
        when its ``NODE_LABEL`` names a node other than ``node``."""
        labels = container.labels
        kind, uid = labels.get(KIND_LABEL, ""), labels.get(POD_UID_LABEL, "")
        if kind not in STARTS or not uid:
            return None
        if node and labels.get(NODE_LABEL, node) != node:
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
        on_container: Callable[[str, int, int], None] | None = None,
        hold_s: float = HOLD_S,
        hold_max: int = HOLD_MAX,
    ) -> None:
        self._outbox = outbox
        self._pods = pods
        self._counters = counters
        self._on_container = on_container
        """Told (pod uid, phase, earliest time) of each app container's create and start."""
        self.hold_s = hold_s
        self._hold_max = hold_max
        self._refs: OrderedDict[str, rt.PodRef] = OrderedDict()
        self._decided: OrderedDict[tuple[str, int], None] = OrderedDict()
        """(container, phase) offered or given up; a bracket computed later from a later
        lower bound would not contain a time that lies before that bound."""
        self._held: dict[str, list[tuple[float, Observation]]] = {}

    def decided(self, container_id: str, phase: int) -> bool:
        """An observation of this phase was offered, or it was given up."""
        return (container_id, phase) in self._decided

    def give_up(self, container_id: str, phase: int) -> None:
        """A missed phase left to the pod watch: counted, and never bracketed later."""
        self._counters.unrecoverable += 1
        remember(self._decided, (container_id, int(phase)), None, limit=EMITTED_MAX)

    def forget(self, container_id: str) -> None:
        """containerd deleted the container: its marks can go."""
        for phase in (*STARTS["sandbox"], *STARTS["container"], rt.PHASE_CONTAINER_EXITED):
            self._decided.pop((container_id, phase), None)

    def offer(self, observation: Observation) -> None:
        """Emit now if the watch knows the pod, else hold (or drop when full); only the
        first observation of a (container, phase) counts."""
        mark = (observation.container.id, int(observation.phase))
        if mark in self._decided:
            return
        remember(self._decided, mark, None, limit=EMITTED_MAX)
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
        if self._on_container is not None and observation.phase in (
            rt.PHASE_CONTAINER_CREATED,
            rt.PHASE_CONTAINER_STARTED,
        ):
            lower = observation.time_ns - observation.uncertainty_ns
            self._on_container(info.pod_uid, observation.phase, lower)

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


def recover(
    phases: PhaseEmitter,
    counters: RuntimeCounters,
    containers: Mapping[str, CriContainer | None],
    tasks: list[task_types_pb2.Process],
    *,
    listed_at: int,
    lower_ns: int,
    max_uncertainty_ns: int,
) -> list[Observation]:
    """What a task list tells of phases missed while disconnected (agent/runtimeevents.py
    explains the rules): offers the exact exits of stopped tasks, gives up on the phases
    whose bracket would be wider than ``max_uncertainty_ns``, and returns the bracketed
    creates and starts, from ``lower_ns`` (or the container's creation, if later) to the
    exit or ``listed_at``."""
    bracketed: list[Observation] = []
    for task in tasks:
        cid = task.container_id or task.id
        info = containers.get(cid)
        if info is None or task.id not in ("", cid):
            continue
        attributes = {"via": "recovery", "container_id": cid, "pid": str(task.pid)}
        exited = 0
        if task.status == task_types_pb2.STOPPED and task.HasField("exited_at"):
            exited = timestamp_ns(task.exited_at)
        end = exited or listed_at
        start = max(info.created_ns, lower_ns)
        created, started = STARTS[info.kind]
        for phase in (created, started):
            if phases.decided(cid, phase):
                continue
            if phase == started and task.status == task_types_pb2.CREATED:
                continue  # not started yet: the stream will tell
            width = max(0, end - start)
            if phase == started and task.status not in _STARTED:
                phases.give_up(cid, phase)  # UNKNOWN: started or not, nobody knows
            elif width <= max_uncertainty_ns:
                marked = {**attributes, "recovered": "bounds", "bracket_start_ns": str(start)}
                bracketed.append(Observation(info, phase, end, width, marked))
            else:
                phases.give_up(cid, phase)
        if exited and info.kind == "container":
            if not phases.decided(cid, rt.PHASE_CONTAINER_EXITED):
                counters.recovered += 1
                exit_attributes = {**attributes, "exit_code": str(task.exit_status)}
                phases.offer(
                    Observation(info, rt.PHASE_CONTAINER_EXITED, exited, 0, exit_attributes)
                )
    return bracketed


def _now() -> float:
    return mono_ns() / 1e9

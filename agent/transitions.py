"""Pod transitions: what changed since the agent last saw each pod.

The watch delivers whole pod objects, not transitions, and after a dropped
connection or a 410 the agent lists again and gets whole objects once more. So
transitions are derived here by comparing each object with what was already
derived for its UID, which makes the result independent of how often and by
which path (watch, list, relist) an object arrives: a reconnect neither loses a
transition (the next object still shows it) nor repeats one (it was already
emitted). Nothing here does I/O; the watcher stamps each object on arrival and
this module only decides which events the object implies.

| phase              | emitted when the object shows ...         | api_time_ns                     |
|--------------------|-------------------------------------------|---------------------------------|
| scheduled          | the pod for the first time (bound to us)  | PodScheduled lastTransitionTime |
| container_started  | a container running (or terminated after  | state.running.startedAt         |
|                    | a run no object showed)                   |                                 |
| running            | status.phase Running                      | 0 (the API keeps no time)       |
| ready              | the Ready condition True                  | Ready lastTransitionTime        |
| container_exited   | a container terminated, or a              | terminated.finishedAt           |
|                    | lastState.terminated after a restart      |                                 |
| failed             | a reason in FAILURE_REASONS, or           | finishedAt where there is one   |
|                    | status.phase Failed                       |                                 |
| deletion_requested | metadata.deletionTimestamp                | deletionTimestamp - grace       |
| gone               | a DELETED event, or absence from a relist | 0                               |

A pod can go without ever showing a deletionTimestamp: deleted with grace 0, or
deleted and removed while the watch was down and the history compacted (410).
Then deletion_requested is inferred when it goes (``inferred_from=gone``),
because the request certainly happened: it is stamped like gone, with
``uncertainty_ns`` reaching back to when the pod was last seen without one.
A relist's gone carries the same bound; watch events carry none.

Repeats, decided: scheduled, running, ready, deletion_requested and gone happen
at most once per UID (a readiness flap later is availability, which the prober
measures). container_started and container_exited happen once per container
instance, keyed (container, restart index), so a restart is visible and a
relist does not repeat it. failed happens once per pod for each distinct
(container, reason) pair, the pod's own phase Failed counting as container ""
(a container's first OOMKilled matters; every later one is a container_exited).
Container failures seen after deletion was requested are not failures, only exits.

A pod first seen in a list (the agent started, or the pod came and went on
while the watch was down) was not watched before: everything its first object
shows happened earlier, at an unknown time since the pod's creation. Those
events are stamped with the list's arrival like any other, but marked
``seen_late`` (the reason) with ``uncertainty_ns`` reaching back to the pod's
``creationTimestamp``, so no reader takes them for live observations: the
collector leaves them out of latencies (a gap, not a wrong number). What later
objects show is live again.

A pod already tracked that a relist shows again (the watch was down and its
history expired: 410) may show transitions the watch missed. They happened
while the watch was down, after the last moment the agent's view was known
current: the watcher's ``in_sync_at`` (the arrival of its last list, event or
bookmark), or the pod's ``last_seen`` when no such moment is given. Those events
are stamped with the list's arrival like any other, marked ``caught_up=relist``
with the gap in ``gap_ns``, and ``uncertainty_ns`` reaches back over the gap:
the transition lies in [time_ns - uncertainty_ns, time_ns]. (A watch line
arrives a little after the write it reports, so a transition can precede that
moment by the watch's delivery delay: milliseconds on a healthy API server.)
Unlike ``seen_late`` these are latencies with an error bar, like the probe's
bracket: the collector counts them with their uncertainty, because the bound is
known and as short as the outage, while a gap would turn every watch hiccup
into a missing pod. Live watch events carry no uncertainty.

The deletion request's API time is ``deletionTimestamp`` minus
``deletionGracePeriodSeconds``, because the API server sets the timestamp to the
end of the grace period, not to the moment of the request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from rtbench.v1 import events_pb2

__all__ = [
    "ADDRESS_FROM_API",
    "ADDRESS_FROM_CRI",
    "ADDRESS_FROM_NODE",
    "CAUGHT_UP",
    "FAILURE_REASONS",
    "LATE_REASON",
    "PROBE_PATH_ANNOTATION",
    "PROBE_PORT_ANNOTATION",
    "RUN_ID_LABEL",
    "SEEN_LATE",
    "PodTracker",
    "ProbeTarget",
    "Stamp",
    "TrackedPod",
    "parse_time_ns",
    "probe_endpoint",
    "probe_target",
]

Obj = dict[str, Any]

RUN_ID_LABEL = "rtbench.io/run-id"
PROBE_PORT_ANNOTATION = "rtbench.io/probe-port"
PROBE_PATH_ANNOTATION = "rtbench.io/probe-path"

WAITING_FAILURES = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerError",
        "CreateContainerConfigError",
        "RunContainerError",
        # A sandbox the runtime refuses (a handler it lacks, a network it cannot set up):
        # a kubelet retries it for ever; rtbench's real-pod node names it this way.
        "CreatePodSandboxError",
    }
)
TERMINATED_FAILURES = frozenset(
    {"OOMKilled", "Error", "ContainerCannotRun", "StartError", "DeadlineExceeded"}
)
FAILURE_REASONS = WAITING_FAILURES | TERMINATED_FAILURES
"""Container reasons that make a ``failed`` event (pod phase Failed makes one too)."""

_NEVER_RAN = frozenset({"ContainerCannotRun", "StartError"})
"""Terminated reasons of a container whose process never started."""

GONE_MEMORY = 16384
"""UIDs of gone pods remembered, so that a late event cannot bring one back."""

P = events_pb2


class Stamp(NamedTuple):
    """The agent's clocks at the moment an object arrived."""

    wall_ns: int
    mono_ns: int


ADDRESS_FROM_API = "api_pod_ip"
"""A probe address taken from the pod's status in the API (published after a relist)."""
ADDRESS_FROM_CRI = "cri"
"""A probe address the runtime reported for the pod's sandbox (CRI PodSandboxStatus)."""
ADDRESS_FROM_NODE = "cri_host_network"
"""The node's own address, for a pod whose sandbox CRI reported in the node's network."""


@dataclass(frozen=True)
class ProbeTarget:
    """Where the prober reaches a pod's HTTP server, and where the address came from."""

    ip: str
    port: int
    path: str
    source: str = ADDRESS_FROM_API
    """ADDRESS_FROM_API, ADDRESS_FROM_CRI or ADDRESS_FROM_NODE."""


@dataclass
class TrackedPod:
    """What the agent knows about one pod between its first sight and its end."""

    ref: events_pb2.PodRef
    first_sight: Stamp
    last_seen: Stamp
    """When the latest object of this pod arrived."""
    target: ProbeTarget | None = None
    """The probe address from the pod's status in the API (its podIP); None until published."""
    port: int = 0
    """The probe port and path (annotation, first TCP containerPort, default): known from
    the first object on, so an address from the runtime can be probed before the API has one."""
    path: str = "/"
    host_ip: str = ""
    """The node's address as the pod's status gives it (status.hostIP), once published."""
    deleting: bool = False
    emitted: set[tuple[int, str, str]] = field(default_factory=set)
    """(phase, container, key) of every event emitted for this pod."""
    late_since_ns: int = 0
    """For a pod first seen in a list: its creation time (its history before that list
    went unwatched), 1 when unknown; 0 for a pod first seen live in the watch."""


SEEN_LATE = "seen_late"
"""Attribute marking an event whose transition happened before the agent saw the pod."""
LATE_REASON = "first seen in a list: the transition happened before this agent watched the pod"
CAUGHT_UP = "caught_up"
"""Attribute marking an event a relist showed after a watch gap (value ``relist``); its
``gap_ns`` attribute and ``uncertainty_ns`` reach back to when the agent was last in sync."""


def parse_time_ns(value: Any) -> int:
    """A Kubernetes RFC 3339 timestamp in ns since the epoch; 0 if absent or malformed."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        return 0
    whole = int(parsed.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + parsed.microsecond * 1000


def probe_target(pod: Obj, default_port: int, default_path: str) -> ProbeTarget | None:
    """The pod's probe address from its status in the API; None before its podIP is there."""
    ip = (pod.get("status") or {}).get("podIP")
    if not isinstance(ip, str) or not ip:
        return None
    port, path = probe_endpoint(pod, default_port, default_path)
    return ProbeTarget(ip, port, path)


def probe_endpoint(pod: Obj, default_port: int, default_path: str) -> tuple[int, str]:
    """The pod's probe port and path: annotation, else first TCP containerPort, else the
    default (the path: annotation, else the default)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    port = _port(annotations.get(PROBE_PORT_ANNOTATION))
    if port is None:
        for container in (pod.get("spec") or {}).get("containers") or []:
            for declared in container.get("ports") or []:
                if declared.get("protocol", "TCP") == "TCP":
                    port = _port(declared.get("containerPort"))
                    if port is not None:
                        break
            break  # only the first container, as decided
    path = annotations.get(PROBE_PATH_ANNOTATION)
    if not isinstance(path, str) or not path.startswith("/"):
        path = default_path
    return (port if port is not None else default_port), path


def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 1 <= port <= 65535 else None


def pod_ref(pod: Obj, node: str) -> events_pb2.PodRef:
    md = pod.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (md.get("labels") or {}).items()}
    return events_pb2.PodRef(
        uid=str(md.get("uid", "")),
        namespace=str(md.get("namespace", "")),
        name=str(md.get("name", "")),
        node=node,
        run_id=labels.get(RUN_ID_LABEL, ""),
        labels=labels,
    )


def _condition(status: Obj, ctype: str) -> Obj | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == ctype:
            return condition
    return None


class _Emitter:
    """Collects the events one object implies, skipping those emitted before."""

    def __init__(
        self,
        pod: TrackedPod,
        stamp: Stamp,
        via: str,
        *,
        late_since_ns: int = 0,
        caught_up_since: Stamp | None = None,
    ) -> None:
        self.pod = pod
        self.stamp = stamp
        self.via = via
        self.late_since_ns = late_since_ns
        """Nonzero: every event is of a transition that happened before, since then."""
        self.caught_up_since = caught_up_since
        """Set: every event is of a transition the watch missed, since then (a relist)."""
        self.events: list[events_pb2.Event] = []

    def emit(
        self,
        phase: events_pb2.Phase,
        *,
        api_ns: int = 0,
        container: str = "",
        key: str = "",
        reason: str = "",
        uncertainty_ns: int = 0,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        mark = (phase, container, key)
        if mark in self.pod.emitted:
            return
        self.pod.emitted.add(mark)
        event = events_pb2.Event(
            phase=phase,
            source=P.SOURCE_WATCH,
            time_ns=self.stamp.wall_ns,
            monotonic_ns=self.stamp.mono_ns,
            uncertainty_ns=uncertainty_ns,
            api_time_ns=api_ns,
            reason=reason,
            container=container,
        )
        event.pod.CopyFrom(self.pod.ref)
        event.attributes["via"] = self.via
        if attributes:
            event.attributes.update(attributes)
        if self.late_since_ns:
            event.attributes[SEEN_LATE] = LATE_REASON
            if self.late_since_ns > 1:
                since = max(0, self.stamp.wall_ns - self.late_since_ns)
                event.uncertainty_ns = max(event.uncertainty_ns, since)
        elif self.caught_up_since is not None:
            gap = max(0, self.stamp.wall_ns - self.caught_up_since.wall_ns)
            event.attributes[CAUGHT_UP] = "relist"
            event.attributes["gap_ns"] = str(gap)
            event.uncertainty_ns = max(event.uncertainty_ns, gap)
        self.events.append(event)


class PodTracker:
    """Derives each pod's transitions from the objects the watcher hands it."""

    def __init__(self, node: str, *, default_port: int = 8080, default_path: str = "/") -> None:
        self.node = node
        self.default_port = default_port
        self.default_path = default_path
        self.pods: dict[str, TrackedPod] = {}
        self._gone: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pods)

    def get(self, uid: str) -> TrackedPod | None:
        return self.pods.get(uid)

    # -- input -------------------------------------------------------------------------

    def seen(self, pod: Obj, stamp: Stamp, *, via: str = "watch") -> list[events_pb2.Event]:
        """An ADDED or MODIFIED object, or one item of a list."""
        observed = self._observe(pod, stamp, via)
        return observed[1].events if observed is not None else []

    def deleted(self, pod: Obj, stamp: Stamp) -> list[events_pb2.Event]:
        """A DELETED event: what its last state still shows, then gone."""
        uid = (pod.get("metadata") or {}).get("uid")
        known = self.pods.get(uid) if isinstance(uid, str) else None
        before = known.last_seen if known is not None else stamp
        observed = self._observe(pod, stamp, "watch")
        if observed is None:
            return []
        tracked, out = observed
        self._forget(tracked, out, before)
        return out.events

    def relisted(
        self, pods: Iterable[Obj], stamp: Stamp, *, in_sync_at: Stamp | None = None
    ) -> list[events_pb2.Event]:
        """A full list: every pod as seen, and every tracked pod not in it gone.

        ``in_sync_at``: when the agent's view was last known current (the watcher's last
        list, event or bookmark); what the list newly shows of a tracked pod happened
        since then. None: since the pod's ``last_seen``.
        """
        events: list[events_pb2.Event] = []
        listed: set[str] = set()
        for pod in pods:
            uid = (pod.get("metadata") or {}).get("uid")
            if isinstance(uid, str):
                listed.add(uid)
            observed = self._observe(pod, stamp, "list", in_sync_at)
            if observed is not None:
                events.extend(observed[1].events)
        for uid in [u for u in self.pods if u not in listed]:
            tracked = self.pods[uid]
            out = _Emitter(tracked, stamp, "list")
            self._forget(tracked, out, tracked.last_seen, bounded=True)
            events.extend(out.events)
        return events

    # -- derivation ----------------------------------------------------------------------

    def _observe(
        self, pod: Obj, stamp: Stamp, via: str, in_sync_at: Stamp | None = None
    ) -> tuple[TrackedPod, _Emitter] | None:
        md = pod.get("metadata") or {}
        uid = md.get("uid")
        if not isinstance(uid, str) or not uid or uid in self._gone:
            return None
        if (pod.get("spec") or {}).get("nodeName") != self.node:
            return None
        status = pod.get("status") or {}
        tracked = self.pods.get(uid)
        late_since = 0
        caught_up_since: Stamp | None = None
        if tracked is None:
            tracked = TrackedPod(ref=pod_ref(pod, self.node), first_sight=stamp, last_seen=stamp)
            if via == "list":
                late_since = max(parse_time_ns(md.get("creationTimestamp")), 1)
                tracked.late_since_ns = late_since
            self.pods[uid] = tracked
        else:
            if via == "list":
                caught_up_since = in_sync_at or tracked.last_seen
            if dict(tracked.ref.labels) != (md.get("labels") or {}):
                tracked.ref = pod_ref(pod, self.node)
        out = _Emitter(
            tracked, stamp, via, late_since_ns=late_since, caught_up_since=caught_up_since
        )
        scheduled = _condition(status, "PodScheduled") or {}
        out.emit(P.PHASE_SCHEDULED, api_ns=parse_time_ns(scheduled.get("lastTransitionTime")))
        deleting = bool(md.get("deletionTimestamp"))
        for cs in status.get("containerStatuses") or []:
            if isinstance(cs, dict) and isinstance(cs.get("name"), str):
                self._container(out, cs, deleting)
        phase = status.get("phase")
        if phase == "Running":
            out.emit(P.PHASE_RUNNING)
        ready = _condition(status, "Ready")
        if ready is not None and ready.get("status") == "True":
            out.emit(P.PHASE_READY, api_ns=parse_time_ns(ready.get("lastTransitionTime")))
        if phase == "Failed":
            reason = str(status.get("reason") or "Failed")
            out.emit(P.PHASE_FAILED, key=reason, reason=reason)
        if deleting:
            tracked.deleting = True
            requested = parse_time_ns(md["deletionTimestamp"])
            grace = md.get("deletionGracePeriodSeconds")
            if requested and isinstance(grace, int):
                requested -= grace * 1_000_000_000
            out.emit(
                P.PHASE_DELETION_REQUESTED,
                api_ns=requested,
                attributes={"grace_period_s": str(grace)} if grace is not None else None,
            )
        target = tracked.target = probe_target(pod, self.default_port, self.default_path)
        tracked.port, tracked.path = (
            (target.port, target.path)
            if target is not None
            else probe_endpoint(pod, self.default_port, self.default_path)
        )
        host_ip = status.get("hostIP")
        tracked.host_ip = host_ip if isinstance(host_ip, str) else ""
        tracked.last_seen = stamp
        return tracked, out

    def _container(self, out: _Emitter, cs: Obj, deleting: bool) -> None:
        name: str = cs["name"]
        restarts = cs.get("restartCount") or 0
        restarts = restarts if isinstance(restarts, int) and restarts >= 0 else 0
        last = (cs.get("lastState") or {}).get("terminated")
        if isinstance(last, dict) and restarts > 0:
            self._terminated(out, name, restarts - 1, last, deleting)
        state = cs.get("state") or {}
        running = state.get("running")
        if isinstance(running, dict):
            self._started(out, name, restarts, running.get("startedAt"), inferred=False)
        terminated = state.get("terminated")
        if isinstance(terminated, dict):
            self._terminated(out, name, restarts, terminated, deleting)
        waiting = state.get("waiting")
        if isinstance(waiting, dict) and not deleting:
            reason = waiting.get("reason")
            if reason in WAITING_FAILURES:
                out.emit(
                    P.PHASE_FAILED,
                    key=reason,
                    reason=reason,
                    container=name,
                    attributes={"restart_count": str(restarts)},
                )

    def _started(self, out: _Emitter, name: str, instance: int, at: Any, *, inferred: bool) -> None:
        attributes = {"restart_count": str(instance)}
        if inferred:
            attributes["inferred_from"] = "terminated"
        out.emit(
            P.PHASE_CONTAINER_STARTED,
            api_ns=parse_time_ns(at),
            container=name,
            key=str(instance),
            attributes=attributes,
        )

    def _terminated(
        self, out: _Emitter, name: str, instance: int, terminated: Obj, deleting: bool
    ) -> None:
        reason = str(terminated.get("reason") or "")
        if reason not in _NEVER_RAN and terminated.get("startedAt"):
            # A run too short for any object to show it running still started.
            self._started(out, name, instance, terminated.get("startedAt"), inferred=True)
        finished = parse_time_ns(terminated.get("finishedAt"))
        attributes = {"restart_count": str(instance)}
        if "exitCode" in terminated:
            attributes["exit_code"] = str(terminated["exitCode"])
        out.emit(
            P.PHASE_CONTAINER_EXITED,
            api_ns=finished,
            container=name,
            key=str(instance),
            reason=reason,
            attributes=attributes,
        )
        if reason in TERMINATED_FAILURES and not deleting:
            out.emit(
                P.PHASE_FAILED,
                api_ns=finished,
                key=reason,
                reason=reason,
                container=name,
                attributes=attributes,
            )

    def _forget(
        self, tracked: TrackedPod, out: _Emitter, last_seen: Stamp, *, bounded: bool = False
    ) -> None:
        """Gone: emit it (and the deletion request no object showed), then forget the pod.

        ``bounded``: the pod went unseen, somewhere after ``last_seen`` (a relist).
        """
        since = max(0, out.stamp.wall_ns - last_seen.wall_ns)
        attributes = {"last_seen_ns": str(last_seen.wall_ns)}
        if not tracked.deleting:
            out.emit(
                P.PHASE_DELETION_REQUESTED,
                uncertainty_ns=since,
                attributes={**attributes, "inferred_from": "gone"},
            )
        out.emit(
            P.PHASE_GONE,
            reason="missing from relist" if bounded else "",
            uncertainty_ns=since if bounded else 0,
            attributes=attributes if bounded else None,
        )
        uid = tracked.ref.uid
        del self.pods[uid]
        self._gone[uid] = None
        while len(self._gone) > GONE_MEMORY:
            self._gone.popitem(last=False)

"""Everything the agent observes on its node, as one object the uplink runs.

``NodeObserver`` joins the parts: the watcher (watching.py) hands each pod
object, stamped on arrival, to the tracker (transitions.py), whose events go to
the outbox; the tracker's view of each pod decides what the prober
(probing.py) probes and which pods the sampler (resources.py) reads; events of
a pod becoming ready or answering also ask the sampler for a node sample. Unless
``containerd_socket`` is off, the runtime-event reader (runtimeevents.py) adds
containerd's sandbox and container phases for the pods the tracker knows; the
tracker tells it when a pod becomes known, and its containers' creates and
starts hint the prober. It also asks CRI for each started sandbox's address (podaddresses.py):
the prober probes a pod at the address the runtime gave as soon as the watch
knows the pod (port and path come from the pod's spec), at the node's own
address for a hostNetwork pod, and at the API's podIP only when the runtime
gave none (no containerd, or no CRI on its socket). All loops run as named
tasks under one TaskGroup in ``run()``; a task that dies is logged by its name
and ends ``run()``.

``ObserveSettings`` holds the observers' settings; ``__post_init__`` checks them
without I/O, so a bad value stops the agent before it connects anywhere.

Errors, the observers' branch of the agent's tree (agent/errors.py)::

    AgentError
    ├── ConfigError
    │   └── ObserveConfigError     a setting is impossible (also a ValueError)
    ├── TaskDied                   an observer loop returned or crashed
    ├── ContainerdError (containerd.py)  handled inside the reader, never raised by run()
    └── WatchError (watching.py)   the API watch failed
        ├── WatchRetryable         handled inside the watcher, never raised by run()
        │   └── WatchExpired
        └── WatchRefused           run() raises it: RBAC or selector problem
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from rtbench.v1 import agent_pb2, events_pb2

from .errors import AgentError, ConfigError, TaskDied
from .outbox import Outbox
from .podaddresses import PodAddress
from .probing import Prober
from .resources import ResourceSampler, SampleOnMilestones, local_facts
from .runtimeevents import RuntimeEvents
from .runtimephases import remember
from .transitions import (
    ADDRESS_FROM_CRI,
    ADDRESS_FROM_NODE,
    Obj,
    PodTracker,
    ProbeTarget,
    Stamp,
    TrackedPod,
)
from .watching import PodWatcher

__all__ = ["NodeObserver", "ObserveConfigError", "ObserveSettings"]

log = logging.getLogger(__name__)

NODE_READ_ATTEMPTS = 5
"""Tries to read the Node object at start (1 s, 2 s, 4 s ... apart) before giving up."""


class ObserveConfigError(ConfigError, ValueError):
    """A setting of the observers is impossible; the message names it."""


@dataclass(frozen=True)
class ObserveSettings:
    node: str
    """The node whose pods this agent observes (the downward API's spec.nodeName)."""
    namespace: str | None = None
    """None watches all namespaces: runs may create their own namespaces."""
    label_selector: str = "app=c-http-server"
    """The label existing rtbench and Prometheus setups give workload pods."""
    watch_timeout_s: int = 60
    """Server-side timeoutSeconds per watch request: a fresh watch every minute costs
    nothing and bounds how long a silently broken one can last."""
    inactivity_timeout_s: float = 90.0
    """No event or bookmark for this long means a hung connection: reconnect. Longer
    than watch_timeout_s, so a healthy watch always ends on its own first."""
    reconnect_max_s: float = 5.0
    """Cap of the jittered exponential reconnect backoff: a restarted API server is
    back within seconds, and transitions wait in its history meanwhile."""
    probe_first_interval_s: float = 0.001
    """1 ms between a waiting pod's first attempts: the listen is usually near."""
    probe_max_interval_s: float = 0.05
    """Cap of the interval before the first success: a slow pod's first response is
    still known within 50 ms."""
    probe_after_success_interval_s: float = 1.0
    """Availability probing after the first response: once a second, like a
    readiness probe at its shortest period."""
    probe_rate: float = 5000.0
    """Attempts per second shared by all pods on the node; 0 turns the prober off (no
    first_response: watch and containerd phases only, to measure the prober's own effect
    on start-up). Otherwise: A refused attempt costs
    about 15 µs of CPU (mostly the kernel's TCP), so this caps the prober near 8% of
    a core. In a 100-pod burst on 2 nodes (bench/agent_probe.py) 2000/s left each
    waiting pod ~100 attempts/s (p99 error 15-18 ms); 5000/s gave p99 ~8 ms at ~12%
    of a core for the whole agent."""
    probe_timeout_s: float = 1.0
    """A node-local connection that takes longer is not going to answer."""
    probe_port: int = 8080
    """The workload's port, used when the pod declares no containerPort."""
    probe_path: str = "/"
    """The workload answers 200 on /."""
    sample_interval_s: float = 0.2
    """Node memory and CPU while pods are tracked: fine enough to see a burst."""
    idle_sample_interval_s: float = 5.0
    """Between runs: enough to see the node settle, cheap enough to forget."""
    proc_root: Path = Path("/proc")
    """Where meminfo, stat, cpuinfo live (the host's /proc mounted in a DaemonSet)."""
    cgroup_root: Path = Path("/sys/fs/cgroup")
    """The cgroup tree holding the kubepods hierarchy."""
    probe_growth: float = 1.004
    """Interval growth per failed attempt. Growing geometrically per attempt makes the
    interval grow linearly with the time waited (about first + 0.4% of it): still
    ~5 ms after a 1 s wait, 50 ms only after ~12 s, so slow runtimes stay precise
    while a pod that never answers costs ever less. In bursts the budget, not the
    growth, sets the pace."""

    containerd_socket: str = "auto"
    """containerd's socket for nanosecond sandbox and container phases (agent/runtimeevents.py).
    auto: the first of /run/containerd/containerd.sock and /run/k3s/containerd/containerd.sock
    that exists (containerd's and K3s' defaults), looked up again at every connect so a
    containerd that appears later is found; off: do not read containerd; else a path (or
    unix:// URL). Optional by design: without it the watch still reports these phases."""
    containerd_namespace: str = "k8s.io"
    """The containerd namespace in which the CRI plugin keeps Kubernetes' containers."""

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ObserveConfigError(problem)

    def problem(self) -> str | None:
        """The first impossible value, described; None if all are fine (no I/O)."""
        if not self.node or self.node != self.node.strip() or " " in self.node:
            return f"node must be a node name, got {self.node!r}"
        if self.namespace is not None and not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.namespace
        ):
            return f"namespace must be a namespace name or None, got {self.namespace!r}"
        selector_problem = label_selector_problem(self.label_selector)
        if selector_problem:
            return f"label_selector {self.label_selector!r}: {selector_problem}"
        if isinstance(self.watch_timeout_s, bool) or not isinstance(self.watch_timeout_s, int):
            return (
                f"watch_timeout_s must be a whole number of seconds, got {self.watch_timeout_s!r}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s") or f.name in ("probe_rate", "probe_growth"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    return f"{f.name} must be a number, got {value!r}"
                if f.name == "probe_rate" and value == 0:
                    continue  # the prober is off
                if not math.isfinite(value) or value <= 0:
                    return f"{f.name} must be a positive number, got {value!r}"
        if self.probe_first_interval_s > self.probe_max_interval_s:
            return (
                f"probe_first_interval_s ({self.probe_first_interval_s:g}) must not exceed "
                f"probe_max_interval_s ({self.probe_max_interval_s:g})"
            )
        if self.probe_growth < 1:
            return f"probe_growth must be at least 1, got {self.probe_growth!r}"
        if isinstance(self.probe_port, bool) or not isinstance(self.probe_port, int):
            return f"probe_port must be a port number, got {self.probe_port!r}"
        if not 1 <= self.probe_port <= 65535:
            return f"probe_port must be between 1 and 65535, got {self.probe_port}"
        if not self.probe_path.startswith("/") or any(c.isspace() for c in self.probe_path):
            return f"probe_path must start with / and contain no spaces, got {self.probe_path!r}"
        socket = self.containerd_socket
        if socket not in ("auto", "off") and not (
            isinstance(socket, str) and socket.removeprefix("unix://").startswith("/")
        ):
            return f"containerd_socket must be auto, off or an absolute path, got {socket!r}"
        if not isinstance(self.containerd_namespace, str) or not _CONTAINERD_NAMESPACE.fullmatch(
            self.containerd_namespace
        ):
            return (
                "containerd_namespace must be a containerd namespace name, "
                f"got {self.containerd_namespace!r}"
            )
        for name in ("proc_root", "cgroup_root"):
            if not isinstance(getattr(self, name), Path):
                return f"{name} must be a Path, got {getattr(self, name)!r}"
        return None


_CONTAINERD_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
"""containerd's rule for namespace names (and what its filters accept unquoted)."""
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_REQUIREMENT = re.compile(
    rf"!\s*{_KEY}|{_KEY}"
    rf"|{_KEY}\s*(?:==|=|!=)\s*{_VALUE}"
    rf"|{_KEY}\s+(?:in|notin)\s*\(\s*{_VALUE}(?:\s*,\s*{_VALUE})*\s*\)"
    rf"|{_KEY}\s*[<>]\s*-?\d+"
)


def _started_uids(events: list[events_pb2.Event]) -> set[str]:
    """The pods with a container start among ``events``."""
    return {e.pod.uid for e in events if e.phase == events_pb2.PHASE_CONTAINER_STARTED}


def label_selector_problem(selector: str) -> str | None:
    """Why ``selector`` is not a Kubernetes label selector; None if it is (empty = all)."""
    if not isinstance(selector, str):
        return "must be a string"
    depth, start, parts = 0, 0, []
    for index, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return "unbalanced parentheses"
        elif char == "," and depth == 0:
            parts.append(selector[start:index])
            start = index + 1
    if depth:
        return "unbalanced parentheses"
    parts.append(selector[start:])
    if selector.strip() == "":
        return None
    for part in parts:
        if not _REQUIREMENT.fullmatch(part.strip()):
            return f"cannot parse requirement {part.strip()!r}"
    return None


class NodeObserver:
    """Watches, probes and samples one node; records go to the outbox."""

    def __init__(self, api: k8s.ApiClient, outbox: Outbox, settings: ObserveSettings) -> None:
        self._api = api
        self._settings = settings
        self.tracker = PodTracker(
            settings.node, default_port=settings.probe_port, default_path=settings.probe_path
        )
        self.sampler = ResourceSampler(outbox, settings, self._refs)
        # Ready and first-response events, from the tracker and the prober, also ask for a
        # node sample at once: the "after" of memory per pod, before rtctl can delete.
        self._outbox = outbox = SampleOnMilestones(outbox, self.sampler)
        self.prober = Prober(outbox, settings)
        self.watcher = PodWatcher(api, self, settings)
        self.runtime: RuntimeEvents | None = None
        if settings.containerd_socket != "off":
            self.runtime = RuntimeEvents(
                outbox,
                self._known_ref,
                socket=settings.containerd_socket,
                namespace=settings.containerd_namespace,
                node=settings.node,
                on_container=self._container_phase,
                on_address=self.on_address,
            )
            counters = self.runtime.counters
            self.prober.start_hints = lambda: counters.connected
        self._local: agent_pb2.NodeFacts | None = None
        self._node_info: Obj | None = None
        self._addresses: OrderedDict[str, PodAddress] = OrderedDict()
        """The runtime's address of each pod's sandbox (CRI), by pod UID."""

    @property
    def tracked_pods(self) -> int:
        return len(self.tracker)

    async def run(self) -> None:
        """Runs watcher, prober and sampler as named tasks until cancelled.

        Raises ``WatchRefused`` when the API refuses the watch and ``TaskDied`` when
        a loop crashes or returns; the other loops are stopped first.
        """
        node = self._settings.node
        # A full garbage collection walks every object the imports made (kubernetes-
        # asyncio's models: 15-25 ms on a small machine), stalling the prober and the
        # watch stamps. Freezing them once makes those passes nearly free. It is
        # process-wide, which suits the agent: its observers are what must be punctual.
        gc.collect()
        gc.freeze()
        try:
            async with asyncio.TaskGroup() as group:
                loops = [
                    ("watch", self.watcher.run(), True),
                    ("probe", self.prober.run(), True),
                    ("sample", self.sampler.run(), True),
                    ("node-facts", self._read_node(), False),
                ]
                if self.runtime is not None:
                    loops.append(("containerd", self.runtime.run(), True))
                for name, coro, forever in loops:
                    group.create_task(self._guard(name, coro, forever), name=f"{name} {node}")
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1 and isinstance(failed.exceptions[0], Exception):
                raise failed.exceptions[0] from None
            raise

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None], forever: bool) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            log.error("observer task %r on %s failed: %s", name, self._settings.node, exc)
            raise
        except Exception as exc:
            log.exception("observer task %r on %s died", name, self._settings.node)
            raise TaskDied(f"observer task {name!r} died: {exc!r}") from exc
        if forever:
            log.error("observer task %r on %s returned unexpectedly", name, self._settings.node)
            raise TaskDied(f"observer task {name!r} returned unexpectedly")

    # -- WatchHandler -----------------------------------------------------------------------

    def on_list(self, pods: list[Obj], stamp: Stamp) -> None:
        before = set(self.tracker.pods)
        # What the list newly shows of a tracked pod happened since the watcher was last
        # in sync (it updates in_sync_at only after this returns).
        events = self.tracker.relisted(pods, stamp, in_sync_at=self.watcher.in_sync_at)
        for event in events:
            self._outbox.put_event(event)
        # One pass over the relist's events and one sampler update for the whole list,
        # not one per pod: a relist of a full node must stay linear.
        started = _started_uids(events)
        for uid in before | set(self.tracker.pods):
            self._follow(uid, started=uid in started)
        self.sampler.pods_changed()

    def on_event(self, kind: str, pod: Obj, stamp: Stamp) -> None:
        if kind == "DELETED":
            events = self.tracker.deleted(pod, stamp)
        else:
            events = self.tracker.seen(pod, stamp)
        for event in events:
            self._outbox.put_event(event)
        uid = (pod.get("metadata") or {}).get("uid")
        if isinstance(uid, str):
            self._follow(uid, started=uid in _started_uids(events))
            self.sampler.pods_changed()

    def _follow(self, uid: str, *, started: bool) -> None:
        """Point prober and sampler at what the tracker now knows of one pod.

        ``started``: a container of the pod started in the events just derived.
        The caller tells the sampler that the pods changed, once per batch of pods.
        """
        tracked = self.tracker.get(uid)
        if self.runtime is not None and tracked is not None:
            self.runtime.pod_seen(uid)
        if tracked is None:
            self.prober.forget(uid)
            self.sampler.forget(uid)
            self._addresses.pop(uid, None)
        elif tracked.deleting:
            self.prober.forget(uid)
        else:
            address = self._addresses.get(uid)
            if address is not None:
                self.prober.hint_sandbox(uid, address.sandbox_started_ns)
            target = self._target(tracked, address)
            if target is not None and self._settings.probe_rate > 0:
                self.prober.track(
                    tracked.ref,
                    target,
                    tracked.first_sight.wall_ns,
                    late_since_ns=tracked.late_since_ns,
                )
            if started:
                self.prober.hint_started(uid)

    def _container_phase(self, uid: str, phase: int, lower_ns: int) -> None:
        """containerd created or started an app container of the pod (at ``lower_ns`` at
        the earliest): a lower bound for its first response, and a sign the listen is near."""
        if phase == events_pb2.PHASE_CONTAINER_CREATED:
            self.prober.hint_created(uid, lower_ns)
        else:
            self.prober.hint_started(uid)

    def on_address(self, address: PodAddress) -> None:
        """The runtime reported where a pod's sandbox can be reached (a CRI lookup)."""
        remember(self._addresses, address.pod_uid, address)
        if self.tracker.get(address.pod_uid) is not None:
            self._follow(address.pod_uid, started=False)

    def _target(self, tracked: TrackedPod, address: PodAddress | None) -> ProbeTarget | None:
        """Where to probe: the runtime's address when it gave one, else the API's podIP."""
        if address is not None:
            if not address.host_network:
                return ProbeTarget(address.ip, tracked.port, tracked.path, ADDRESS_FROM_CRI)
            node_ip = tracked.host_ip or self._node_address()
            if node_ip:
                return ProbeTarget(node_ip, tracked.port, tracked.path, ADDRESS_FROM_NODE)
        return tracked.target

    def _node_address(self) -> str:
        """The node's InternalIP from the Node object (read at start), "" before that."""
        for entry in (self._node_info or {}).get("addresses") or []:
            if isinstance(entry, dict) and entry.get("type") == "InternalIP":
                return str(entry.get("address") or "")
        return ""

    def _known_ref(self, uid: str) -> events_pb2.PodRef | None:
        tracked = self.tracker.get(uid)
        return tracked.ref if tracked is not None else None

    def _refs(self) -> list[events_pb2.PodRef]:
        return [pod.ref for pod in self.tracker.pods.values()]

    # -- node facts ------------------------------------------------------------------------

    def node_facts(self) -> agent_pb2.NodeFacts:
        """Best known facts: local ones (/proc, platform) at once; kubelet version, os
        image, container runtime version and allocatable pods once the Node object
        has been read (it is read once at start; failure is tolerated)."""
        if self._local is None:
            self._local = local_facts(self._settings.proc_root)
        facts = agent_pb2.NodeFacts()
        facts.CopyFrom(self._local)
        info = (self._node_info or {}).get("nodeInfo") or {}
        facts.kubelet_version = str(info.get("kubeletVersion", ""))
        facts.os_image = str(info.get("osImage", ""))
        facts.container_runtime_version = str(info.get("containerRuntimeVersion", ""))
        if not facts.kernel_version:
            facts.kernel_version = str(info.get("kernelVersion", ""))
        pods = ((self._node_info or {}).get("allocatable") or {}).get("pods")
        if isinstance(pods, str | int) and str(pods).isdigit():
            facts.allocatable_pods = int(pods)
        return facts

    async def _read_node(self) -> None:
        core = k8s.CoreV1Api(self._api)
        node = self._settings.node
        for attempt in range(NODE_READ_ATTEMPTS):
            if attempt:
                await asyncio.sleep(2 ** (attempt - 1))
            try:
                response: Any = await core.read_node(
                    node, _preload_content=False, _request_timeout=aiohttp.ClientTimeout(total=10)
                )
                try:
                    raw = await response.read()
                finally:
                    response.release()
                body = json.loads(raw)
                if response.status == 200 and isinstance(body, dict):
                    self._node_info = body.get("status") or {}
                    return
                problem = (
                    f"{response.status} {body.get('message', '') if isinstance(body, dict) else ''}"
                )
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                problem = repr(exc)
            log.warning("cannot read node %s (%s); node facts stay local for now", node, problem)

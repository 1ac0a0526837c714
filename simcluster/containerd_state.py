"""What a simulated node's containerd knows: its containers, its tasks, its events.

The agent reads sandbox and container phases from containerd: it subscribes to
the event stream and looks each container's CRI labels up to find the pod. To
give it the same view on a simulated node, ``NodeRuntime`` replays the node's
entries of the kubelet's runtime event log (``runtime_events.py``) as the
containerd records and events that CRI would have produced for them:

=================  ===================================================================
runtime event      containerd (topics in publication order, all at the event's time)
=================  ===================================================================
sandbox_created    /containers/create, /tasks/create        (the pause container)
sandbox_started    /tasks/start
container_created  /containers/create, /tasks/create        (the app container)
container_started  /tasks/start                             (pid of the workload)
container_exited   /tasks/exit, /tasks/delete               (CRI deletes exited tasks)
sandbox_stopped    /tasks/exit, /tasks/delete               (pause killed: status 137)
(2 s later)        /containers/delete for every container of the pod, as kubelet GC
=================  ===================================================================

The same state answers the CRI calls the agent makes on the same socket
(simcluster/cri_api.py): each pod's sandbox, as containerd's CRI plugin keeps it
(``SandboxRecord``): known to CRI from its start on (containerd adds a sandbox to
its CRI store when RunPodSandbox returns, after the pause task started; before
that PodSandboxStatus is NOT_FOUND), READY with the pod's IP while it runs (no IP
and network namespace NODE for a hostNetwork pod), NOTREADY with no IP once
stopped, and gone with its containers.

Every envelope carries the runtime event's ``time_ns`` to the nanosecond, and
TaskExit's ``exited_at`` is that same time. Containers keep their CRI labels
(``io.kubernetes.pod.uid/name/namespace``, ``io.kubernetes.container.name``,
``io.cri-containerd.kind``) and, for the sandbox, the pod's own labels. There
is no pause process in the simulator, so sandbox tasks have pid 0, and so has
a container task until its workload process starts (the simulated runtime
spawns at start, where runc would at create). The removal delay exists so a
client that sees a task event late can still look its container up, as on a
real node, where kubelet garbage collection lags the pod's end.

The details that real containerd 1.6 shows and clients depend on are kept:
``type_url`` is the bare message name (``containerd.events.TaskStart``, no
``type.googleapis.com/`` prefix) and task listings leave ``container_id`` empty
and put the container id in ``id``. Records live in namespace ``k8s.io`` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from rtbench.containerd import containers_pb2, events_pb2, events_service_pb2, task_types_pb2
from rtbench.cri import api_pb2 as cri

from .containerd_filters import Filter, map_field
from .errors import NotFound
from .runtime_events import RuntimeEvent, RuntimeEventKind

log = logging.getLogger(__name__)

NAMESPACE = "k8s.io"
"""The namespace CRI keeps Kubernetes' containers in."""
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
REMOVAL_DELAY = 2.0
"""Seconds from a pod's sandbox stop to the removal of its containers."""
SUBSCRIBER_BACKLOG = 100_000
"""Envelopes a subscriber may fall behind by before its stream is ended."""
SANDBOX_EXIT_STATUS = 137
"""The pause process dies of the SIGKILL that StopPodSandbox sends."""
_RUNTIMES = {
    "runc": "io.containerd.runc.v2",
    "crun": "io.containerd.runc.v2",
    "youki": "io.containerd.runc.v2",
    "runsc": "io.containerd.runsc.v1",
    "wasmtime": "io.containerd.wasmtime.v1",
}
"""Runtime handler to containerd shim; runc-compatible runtimes share the runc shim."""


def runtime_name(handler: str) -> str:
    if handler.startswith("kata"):
        return "io.containerd.kata.v2"
    return _RUNTIMES.get(handler, f"io.containerd.{handler}.v2")


@dataclass(frozen=True)
class PodInfo:
    """What the kubelet knows of a pod beyond the runtime event: for labels and images."""

    labels: dict[str, str]
    images: dict[str, str]
    """Container name → image reference."""
    handler: str
    """The runtime handler (the profile's name), for the container's runtime name."""


Describe = Callable[[str], PodInfo | None]
"""Pod UID → PodInfo while the kubelet still runs the pod."""


@dataclass
class ContainerRecord:
    id: str
    pod_uid: str
    labels: dict[str, str]
    image: str
    runtime: str
    created_ns: int
    updated_ns: int

    def message(self) -> containers_pb2.Container:
        out = containers_pb2.Container(id=self.id, labels=self.labels, image=self.image)
        out.runtime.name = self.runtime
        out.created_at.FromNanoseconds(self.created_ns)
        out.updated_at.FromNanoseconds(self.updated_ns)
        return out

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        """containerd's container adaptor: id, image, runtime.name, labels.<key>."""
        head, rest = (path[0], path[1:]) if path else ("", ())
        if head == "labels":
            return map_field(rest, self.labels)
        if head == "runtime" and list(rest) == ["name"]:
            return self.runtime, bool(self.runtime)
        value = {"id": self.id, "image": self.image}.get(head) if not rest else None
        return (value, bool(value)) if value is not None else ("", False)


@dataclass
class TaskRecord:
    container_id: str
    pod_uid: str
    pid: int
    status: int = task_types_pb2.CREATED
    exit_status: int = 0
    exited_ns: int | None = None

    def message(self) -> task_types_pb2.Process:
        # containerd 1.6 leaves container_id empty here and names the task in id.
        out = task_types_pb2.Process(
            id=self.container_id,
            pid=self.pid,
            status=self.status,  # type: ignore[arg-type]
            exit_status=self.exit_status,
        )
        if self.exited_ns is not None:
            out.exited_at.FromNanoseconds(self.exited_ns)
        return out


@dataclass
class SandboxRecord:
    """A pod sandbox as containerd's CRI plugin reports it."""

    id: str
    pod_uid: str
    name: str
    namespace: str
    labels: dict[str, str]
    """The pod's labels and the kubelet's io.kubernetes.pod.* labels."""
    handler: str
    created_ns: int
    started: bool = False
    """CRI knows the sandbox only once it started (RunPodSandbox returned)."""
    ready: bool = False
    ip: str = ""
    host_network: bool = False

    def _metadata(self) -> cri.PodSandboxMetadata:
        return cri.PodSandboxMetadata(name=self.name, uid=self.pod_uid, namespace=self.namespace)

    def _state(self) -> cri.PodSandboxState:
        return cri.SANDBOX_READY if self.ready else cri.SANDBOX_NOTREADY

    def status(self) -> cri.PodSandboxStatus:
        out = cri.PodSandboxStatus(
            id=self.id,
            metadata=self._metadata(),
            state=self._state(),
            created_at=self.created_ns,
            labels=self.labels,
            runtime_handler=self.handler,
        )
        out.network.ip = self.ip
        out.linux.namespaces.options.network = cri.NODE if self.host_network else cri.POD
        return out

    def item(self) -> cri.PodSandbox:
        return cri.PodSandbox(
            id=self.id,
            metadata=self._metadata(),
            state=self._state(),
            created_at=self.created_ns,
            labels=self.labels,
            runtime_handler=self.handler,
        )

    def matches(self, wanted: cri.PodSandboxFilter) -> bool:
        """CRI's filter: id (a prefix, as containerd accepts), state, labels all equal."""
        if wanted.id and not self.id.startswith(wanted.id):
            return False
        if wanted.HasField("state") and wanted.state.state != self._state():
            return False
        return all(self.labels.get(k) == v for k, v in wanted.label_selector.items())


@dataclass(eq=False)
class Subscription:
    """One Subscribe call: its filter and its queue (None ends the stream)."""

    filter: Filter
    queue: asyncio.Queue[events_service_pb2.Envelope | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_BACKLOG)
    )
    overflowed: bool = False

    def offer(self, envelope: events_service_pb2.Envelope, event: Message) -> None:
        if self.overflowed or not self.filter.match(_envelope_adaptor(envelope, event)):
            return
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            self.overflowed = True
            self.end()

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def _envelope_adaptor(
    envelope: events_service_pb2.Envelope, event: Message
) -> Callable[[Sequence[str]], tuple[str, bool]]:
    def adapt(path: Sequence[str]) -> tuple[str, bool]:
        if len(path) == 1 and path[0] in ("namespace", "topic"):
            value = str(getattr(envelope, path[0]))
            return value, bool(value)
        if len(path) == 2 and path[0] == "event":
            # Generated containerd adaptors know the string fields of each event.
            descriptor = event.DESCRIPTOR.fields_by_name.get(path[1])
            if descriptor is not None and descriptor.type == descriptor.TYPE_STRING:
                value = str(getattr(event, path[1]))
                return value, bool(value)
        return "", False

    return adapt


class NodeRuntime:
    """One simulated node's containerd: records, tasks and live subscriptions."""

    def __init__(self, node: str, describe: Describe) -> None:
        self.node = node
        self._describe = describe
        self.containers: dict[str, ContainerRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self.sandboxes: dict[str, SandboxRecord] = {}
        self._pods: dict[str, PodInfo] = {}
        self._subscriptions: set[Subscription] = set()
        self._removals: set[asyncio.TimerHandle] = set()
        self._closed = False

    # -- the feed -----------------------------------------------------------------------

    def apply(self, event: RuntimeEvent) -> None:
        """Turn one runtime event of this node into containerd state and envelopes."""
        if self._closed:
            return  # the API is gone; the pods' last moments are nobody's to hear
        kind = event.kind
        if kind is RuntimeEventKind.SANDBOX_CREATED:
            info = self._describe(event.pod_uid) or PodInfo({}, {}, "runc")
            self._pods[event.pod_uid] = info
            self._create(event, event.sandbox_id, "sandbox", PAUSE_IMAGE, info)
            labels = {**info.labels, **_pod_labels(event)}
            self.sandboxes[event.sandbox_id] = SandboxRecord(
                event.sandbox_id,
                event.pod_uid,
                event.pod,
                event.namespace,
                labels,
                info.handler,
                event.time_ns,
            )
        elif kind is RuntimeEventKind.CONTAINER_CREATED:
            info = self._pods.get(event.pod_uid) or PodInfo({}, {}, "runc")
            image = info.images.get(event.container or "", "")
            self._create(event, _bare(event.container_id), "container", image, info)
        elif kind is RuntimeEventKind.SANDBOX_STARTED:
            sandbox = self.sandboxes.get(event.sandbox_id)
            if sandbox is not None:
                sandbox.started = sandbox.ready = True
                sandbox.ip = "" if event.host_network else event.ip or ""
                sandbox.host_network = event.host_network
            self._start(event, event.sandbox_id)
        elif kind is RuntimeEventKind.CONTAINER_STARTED:
            self._start(event, _bare(event.container_id))
        elif kind is RuntimeEventKind.CONTAINER_EXITED:
            self._exit(event, _bare(event.container_id), event.exit_code or 0)
        elif kind is RuntimeEventKind.SANDBOX_STOPPED:
            sandbox = self.sandboxes.get(event.sandbox_id)
            if sandbox is not None:
                sandbox.ready, sandbox.ip = False, ""
            self._exit(event, event.sandbox_id, SANDBOX_EXIT_STATUS)
            for task in [t for t in self.tasks.values() if t.pod_uid == event.pod_uid]:
                # A task that never got to run (start failed) goes with its pod.
                del self.tasks[task.container_id]
                delete = events_pb2.TaskDelete(container_id=task.container_id, pid=task.pid)
                self._publish(event.time_ns, "/tasks/delete", delete)
            self._pods.pop(event.pod_uid, None)
            self._schedule_removal(event.pod_uid)

    def _create(self, event: RuntimeEvent, cid: str, kind: str, image: str, info: PodInfo) -> None:
        labels = dict(info.labels) if kind == "sandbox" else {}
        labels.update(_pod_labels(event))
        labels["io.cri-containerd.kind"] = kind
        if kind == "container" and event.container:
            labels["io.kubernetes.container.name"] = event.container
        runtime = runtime_name(info.handler)
        t = event.time_ns
        self.containers[cid] = ContainerRecord(cid, event.pod_uid, labels, image, runtime, t, t)
        self.tasks[cid] = TaskRecord(cid, event.pod_uid, pid=0)
        create = events_pb2.ContainerCreate(id=cid, image=image)
        create.runtime.name = runtime
        self._publish(t, "/containers/create", create)
        bundle = f"/run/containerd/io.containerd.runtime.v2.task/{NAMESPACE}/{cid}"
        self._publish(t, "/tasks/create", events_pb2.TaskCreate(container_id=cid, bundle=bundle))

    def _start(self, event: RuntimeEvent, cid: str) -> None:
        task = self.tasks.get(cid)
        if task is None:
            log.warning("%s: start of unknown task %s", self.node, cid)
            return
        task.pid = event.pid or 0
        task.status = task_types_pb2.RUNNING
        self._publish(
            event.time_ns, "/tasks/start", events_pb2.TaskStart(container_id=cid, pid=task.pid)
        )

    def _exit(self, event: RuntimeEvent, cid: str, status: int) -> None:
        task = self.tasks.pop(cid, None)
        pid = task.pid if task is not None else event.pid or 0
        exit_event = events_pb2.TaskExit(container_id=cid, id=cid, pid=pid, exit_status=status)
        exit_event.exited_at.FromNanoseconds(event.time_ns)
        self._publish(event.time_ns, "/tasks/exit", exit_event)
        delete = events_pb2.TaskDelete(container_id=cid, pid=pid, exit_status=status)
        delete.exited_at.FromNanoseconds(event.time_ns)
        self._publish(event.time_ns, "/tasks/delete", delete)

    def _schedule_removal(self, pod_uid: str) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def remove() -> None:
            self._removals.discard(handle)
            now = time.time_ns()
            for record in [c for c in self.containers.values() if c.pod_uid == pod_uid]:
                del self.containers[record.id]
                self._publish(now, "/containers/delete", events_pb2.ContainerDelete(id=record.id))
            for sandbox in [s for s in self.sandboxes.values() if s.pod_uid == pod_uid]:
                del self.sandboxes[sandbox.id]

        handle = loop.call_later(REMOVAL_DELAY, remove)
        self._removals.add(handle)

    def _publish(self, time_ns: int, topic: str, event: Message) -> None:
        envelope = events_service_pb2.Envelope(namespace=NAMESPACE, topic=topic)
        envelope.timestamp.FromNanoseconds(time_ns)
        envelope.event.type_url = event.DESCRIPTOR.full_name
        envelope.event.value = event.SerializeToString()
        for subscription in list(self._subscriptions):
            subscription.offer(envelope, event)
            if subscription.overflowed:
                self._subscriptions.discard(subscription)
                log.warning(
                    "%s: a containerd event subscriber fell %d events behind; its stream ends",
                    self.node,
                    SUBSCRIBER_BACKLOG,
                )

    # -- the API ------------------------------------------------------------------------

    def subscribe(self, event_filter: Filter) -> Subscription:
        subscription = Subscription(event_filter)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def container(self, namespace: str, cid: str) -> ContainerRecord:
        record = self.containers.get(cid) if namespace == NAMESPACE else None
        if record is None:
            raise NotFound(f'container "{cid}" in namespace "{namespace}": not found')
        return record

    def list_containers(self, namespace: str, wanted: Filter) -> list[ContainerRecord]:
        if namespace != NAMESPACE:
            return []
        return [c for c in self.containers.values() if wanted.match(c.field)]

    def task(self, namespace: str, cid: str) -> TaskRecord:
        task = self.tasks.get(cid) if namespace == NAMESPACE else None
        if task is None:
            raise NotFound(f"no running task found: task {cid} not found")
        return task

    def list_tasks(self, namespace: str) -> list[TaskRecord]:
        return list(self.tasks.values()) if namespace == NAMESPACE else []

    def sandbox(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox CRI knows by this id; NotFound as containerd words it."""
        record = self.sandboxes.get(sandbox_id)
        if record is None or not record.started:
            # The id is echoed cut short: a status message travels in a header, and a
            # 100 kB id would turn NOT_FOUND into the client's RESOURCE_EXHAUSTED.
            shown = sandbox_id if len(sandbox_id) <= 80 else f"{sandbox_id[:80]}..."
            raise NotFound(f'an error occurred when try to find sandbox "{shown}": not found')
        return record

    def list_sandboxes(self, wanted: cri.PodSandboxFilter) -> list[SandboxRecord]:
        return [s for s in self.sandboxes.values() if s.started and s.matches(wanted)]

    def close(self) -> None:
        """End every subscription and pending removal (the node is going away)."""
        self._closed = True
        for handle in self._removals:
            handle.cancel()
        self._removals.clear()
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()


def _pod_labels(event: RuntimeEvent) -> dict[str, str]:
    """The labels the kubelet gives every sandbox and container of a pod."""
    return {
        "io.kubernetes.pod.name": event.pod,
        "io.kubernetes.pod.namespace": event.namespace,
        "io.kubernetes.pod.uid": event.pod_uid,
    }


def _bare(container_id: str | None) -> str:
    """The containerd id in a Kubernetes containerID (``containerd://<id>``)."""
    return (container_id or "").removeprefix("containerd://")

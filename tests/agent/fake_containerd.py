"""A containerd stand-in for the runtime-event tests real containerd cannot stage on demand.

Some of the reader's behaviours need a containerd that misbehaves in a precise
way: one whose event stream fails right after the lists answered (every time,
or once, within the settle second), or that delivers a ``/tasks/delete``
without the ``/tasks/exit`` before it. ``FakeContainerd`` serves the four calls
the reader makes (``Events/Subscribe``, ``Containers/Get|List``,
``Tasks/List``) over real gRPC on a unix socket, from containers, tasks and
envelopes the test sets; everything else about containerd is tested against
the real one (tests/agent/containerd.py). With ``cri=True`` it also serves the
CRI calls of the address lookups (``FakeCri``: Version, PodSandboxStatus,
ListPodSandbox) from sandbox statuses the test sets, NOT_FOUND for a sandbox's
first ``not_found`` lookups, as containerd answers until RunPodSandbox returns;
without it, those calls are UNIMPLEMENTED, as on a containerd whose CRI plugin is
disabled.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import grpc
from google.protobuf.message import Message

from rtbench.clock import wall_ns
from rtbench.containerd import (
    containers_pb2,
    containers_pb2_grpc,
    events_service_pb2,
    events_service_pb2_grpc,
    task_types_pb2,
    tasks_pb2,
    tasks_pb2_grpc,
)
from rtbench.cri import api_pb2 as cri_pb2
from rtbench.cri import api_pb2_grpc as cri_grpc

__all__ = ["FakeContainerd", "FakeCri", "cri_container", "envelope", "sandbox_status"]


def cri_container(cid: str, uid: str, kind: str, created_ns: int) -> containers_pb2.Container:
    """A container labelled as the CRI plugin labels it."""
    container = containers_pb2.Container(
        id=cid,
        labels={
            "io.kubernetes.pod.uid": uid,
            "io.cri-containerd.kind": kind,
            "io.kubernetes.container.name": "web" if kind == "container" else "",
        },
    )
    container.runtime.name = "io.containerd.runc.v2"
    container.created_at.FromNanoseconds(created_ns)
    return container


def envelope(topic: str, payload: Message, published_ns: int = 0) -> events_service_pb2.Envelope:
    """An envelope as containerd sends it: bare type name, namespace k8s.io."""
    out = events_service_pb2.Envelope(topic=topic, namespace="k8s.io")
    out.timestamp.FromNanoseconds(published_ns or wall_ns())
    out.event.type_url = payload.DESCRIPTOR.full_name
    out.event.value = payload.SerializeToString()
    return out


def sandbox_status(
    sandbox_id: str, uid: str, ip: str, *, host_network: bool = False
) -> cri_pb2.PodSandboxStatus:
    """A ready sandbox as CRI reports it."""
    status = cri_pb2.PodSandboxStatus(id=sandbox_id, state=cri_pb2.SANDBOX_READY)
    status.metadata.uid, status.metadata.name, status.metadata.namespace = uid, "p", "default"
    status.labels["io.kubernetes.pod.uid"] = uid
    status.network.ip = ip
    status.linux.namespaces.options.network = cri_pb2.NODE if host_network else cri_pb2.POD
    return status


class FakeCri(cri_grpc.RuntimeServiceServicer):
    """The CRI calls of the address lookups, from ``sandboxes``."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, cri_pb2.PodSandboxStatus] = {}
        self.not_found: dict[str, int] = {}
        """Sandbox id -> how many more lookups get NOT_FOUND before its status."""
        self.lookups: dict[str, int] = {}

    async def Version(
        self, request: cri_pb2.VersionRequest, context: grpc.aio.ServicerContext
    ) -> cri_pb2.VersionResponse:
        return cri_pb2.VersionResponse(
            version="0.1.0", runtime_name="fake", runtime_version="1", runtime_api_version="v1"
        )

    async def PodSandboxStatus(
        self, request: cri_pb2.PodSandboxStatusRequest, context: grpc.aio.ServicerContext
    ) -> cri_pb2.PodSandboxStatusResponse:
        sid = request.pod_sandbox_id
        self.lookups[sid] = self.lookups.get(sid, 0) + 1
        if self.not_found.get(sid, 0) > 0:
            self.not_found[sid] -= 1
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sandbox {sid} not found")
        found = self.sandboxes.get(sid)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sandbox {sid} not found")
        return cri_pb2.PodSandboxStatusResponse(status=found)

    async def ListPodSandbox(
        self, request: cri_pb2.ListPodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> cri_pb2.ListPodSandboxResponse:
        items = [
            cri_pb2.PodSandbox(id=s.id, metadata=s.metadata, state=s.state, labels=s.labels)
            for s in self.sandboxes.values()
            if not request.filter.HasField("state") or request.filter.state.state == s.state
        ]
        return cri_pb2.ListPodSandboxResponse(items=items)


class FakeContainerd(
    events_service_pb2_grpc.EventsServicer,
    containers_pb2_grpc.ContainersServicer,
    tasks_pb2_grpc.TasksServicer,
):
    """The reader's four calls on a unix socket; an async context manager."""

    def __init__(self, *, cri: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rtb-fctd-", dir="/tmp"))
        self.socket = self.dir / "containerd.sock"
        self.containers: dict[str, containers_pb2.Container] = {}
        self.tasks: list[task_types_pb2.Process] = []
        self.fail_subscribe = False
        """Every Subscribe fails with UNAVAILABLE as it starts."""
        self.end_first_stream = False
        """The first stream ends (UNAVAILABLE) as soon as Tasks/List has answered."""
        self.subscribes = 0
        self._listed = asyncio.Event()
        self._streams: list[asyncio.Queue[events_service_pb2.Envelope]] = []
        self._server = grpc.aio.server()
        events_service_pb2_grpc.add_EventsServicer_to_server(self, self._server)
        containers_pb2_grpc.add_ContainersServicer_to_server(self, self._server)
        tasks_pb2_grpc.add_TasksServicer_to_server(self, self._server)
        self.cri = FakeCri()
        if cri:
            cri_grpc.add_RuntimeServiceServicer_to_server(self.cri, self._server)
        self._server.add_insecure_port(f"unix:{self.socket}")

    async def __aenter__(self) -> FakeContainerd:
        await self._server.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.stop(None)
        self.socket.unlink(missing_ok=True)
        self.dir.rmdir()

    @property
    def streams(self) -> int:
        """Subscriptions open now."""
        return len(self._streams)

    def publish(self, envelope: events_service_pb2.Envelope) -> None:
        for stream in self._streams:
            stream.put_nowait(envelope)

    # -- the services ------------------------------------------------------------------------

    async def Subscribe(
        self, request: events_service_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_service_pb2.Envelope]:
        self.subscribes += 1
        if self.fail_subscribe:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no stream today")
        if self.subscribes == 1 and self.end_first_stream:
            await self._listed.wait()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first stream lost")
        stream: asyncio.Queue[events_service_pb2.Envelope] = asyncio.Queue()
        self._streams.append(stream)
        try:
            while True:
                yield await stream.get()
        finally:
            self._streams.remove(stream)

    async def Get(
        self, request: containers_pb2.GetContainerRequest, context: grpc.aio.ServicerContext
    ) -> containers_pb2.GetContainerResponse:
        found = self.containers.get(request.id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.id} not found")
        return containers_pb2.GetContainerResponse(container=found)

    async def List(  # both List calls, told apart by the request type
        self,
        request: containers_pb2.ListContainersRequest | tasks_pb2.ListTasksRequest,
        context: grpc.aio.ServicerContext,
    ) -> containers_pb2.ListContainersResponse | tasks_pb2.ListTasksResponse:
        if isinstance(request, tasks_pb2.ListTasksRequest):
            self._listed.set()
            return tasks_pb2.ListTasksResponse(tasks=self.tasks)
        return containers_pb2.ListContainersResponse(containers=list(self.containers.values()))

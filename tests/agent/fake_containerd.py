"""A containerd stand-in for the runtime-event tests real containerd cannot stage on demand.

Some of the reader's behaviours need a containerd that misbehaves in a precise
way: one whose event stream fails right after the lists answered (every time,
or once, within the settle second), or that delivers a ``/tasks/delete``
without the ``/tasks/exit`` before it. ``FakeContainerd`` serves the four calls
the reader makes (``Events/Subscribe``, ``Containers/Get|List``,
``Tasks/List``) over real gRPC on a unix socket, from containers, tasks and
envelopes the test sets; everything else about containerd is tested against
the real one (tests/agent/containerd.py).
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

__all__ = ["FakeContainerd", "cri_container", "envelope"]


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


class FakeContainerd(
    events_service_pb2_grpc.EventsServicer,
    containers_pb2_grpc.ContainersServicer,
    tasks_pb2_grpc.TasksServicer,
):
    """The reader's four calls on a unix socket; an async context manager."""

    def __init__(self) -> None:
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

"""A small client for containerd's gRPC API: the calls the runtime-event reader needs.

containerd knows to the nanosecond when a pod's sandbox and containers were
created, started and exited; Kubernetes reports the same with 1 s resolution and
up to a PLEG relist late. This module reaches containerd on its unix socket and
offers exactly four calls, over the messages described in
proto/rtbench/containerd (long-stable across containerd 1.6, 1.7 and 2.x):
``Events/Subscribe``, ``Containers/Get`` and ``/List``, ``Tasks/List``. The
namespace travels in the ``containerd-namespace`` metadata of every call
except Subscribe, which containerd serves across namespaces and which the
filters narrow instead.

Decoding is done here too. containerd packs an event's payload in an ``Any``
whose type URL is the bare full name (``containerd.events.TaskStart``, no
``type.googleapis.com/`` prefix), which protobuf's ``Any.Is`` and ``Unpack``
refuse; the payload is therefore chosen by the name after the last ``/`` (or
the whole URL), which accepts both spellings.

Errors, the containerd branch of the agent's tree (agent/errors.py)::

    AgentError
    └── ContainerdError          containerd's API failed; the reader reconnects quietly
        ├── ContainerdUnavailable   no socket, not a socket, permission denied, refused,
        │                           or containerd went away (UNAVAILABLE)
        └── ContainerdFailed        any other failed call (DEADLINE_EXCEEDED, INTERNAL ...)

Every one of them is retried: containerd restarts with the node's services, and
a socket that is unreadable now may be fixed by an operator later.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError, Message

from rtbench.containerd import (
    containers_pb2,
    containers_pb2_grpc,
    events_pb2,
    events_service_pb2,
    events_service_pb2_grpc,
    task_types_pb2,
    tasks_pb2,
    tasks_pb2_grpc,
)

from .errors import AgentError

__all__ = [
    "CALL_TIMEOUT_S",
    "DEFAULT_SOCKETS",
    "ContainerdClient",
    "ContainerdError",
    "ContainerdFailed",
    "ContainerdUnavailable",
    "Decoded",
    "Subscription",
    "call_error",
    "decode",
    "resolve_socket",
    "subscribe_filters",
    "timestamp_ns",
]

DEFAULT_SOCKETS = (
    Path("/run/containerd/containerd.sock"),
    Path("/run/k3s/containerd/containerd.sock"),
)
"""Where containerd and K3s's embedded containerd listen by default, in that order."""
NAMESPACE_METADATA = "containerd-namespace"
CALL_TIMEOUT_S = 10.0
"""A unary call to a local daemon that takes longer is stuck: fail it and reconnect."""
MAX_MESSAGE_BYTES = 64 * 2**20
"""Containers/List returns every container with its OCI spec (a few KB each); gRPC's
default 4 MiB limit would refuse the list of a node with a thousand containers."""

TASK_CREATE = "/tasks/create"
TASK_START = "/tasks/start"
TASK_EXIT = "/tasks/exit"
TASK_DELETE = "/tasks/delete"
CONTAINER_CREATE = "/containers/create"
CONTAINER_DELETE = "/containers/delete"

_PAYLOADS: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.TaskCreate,
        events_pb2.TaskStart,
        events_pb2.TaskExit,
        events_pb2.TaskDelete,
        events_pb2.ContainerCreate,
        events_pb2.ContainerDelete,
    )
}


class ContainerdError(AgentError):
    """containerd's API failed; the runtime-event reader reconnects."""


class ContainerdUnavailable(ContainerdError):
    """containerd cannot be reached: no socket, permission denied, refused, gone away."""


class ContainerdFailed(ContainerdError):
    """A call failed for another reason than containerd being unreachable."""


def resolve_socket(setting: str) -> Path:
    """The socket to dial for ``setting`` (auto or a path); does I/O (stat).

    auto is the first default socket that exists, else the first default (whose
    absence the caller then reports). Raises ContainerdUnavailable naming the
    problem when the socket is missing, is not a socket, or is not accessible.
    """
    if setting == "auto":
        path = next((p for p in DEFAULT_SOCKETS if p.exists()), DEFAULT_SOCKETS[0])
        tried = " or ".join(str(p) for p in DEFAULT_SOCKETS)
    else:
        path = Path(setting.removeprefix("unix://"))
        tried = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ContainerdUnavailable(f"no containerd socket at {tried}") from None
    except OSError as exc:
        raise ContainerdUnavailable(f"cannot reach the containerd socket {path}: {exc}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise ContainerdUnavailable(f"{path} is not a socket")
    if not os.access(path, os.R_OK | os.W_OK):
        raise ContainerdUnavailable(
            f"permission denied on the containerd socket {path} (mode "
            f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}; the agent runs as uid "
            f"{os.getuid()})"
        )
    return path


def subscribe_filters(namespace: str) -> list[str]:
    """The Subscribe filters (any one may match): this namespace's task and container topics."""
    return [
        f'namespace=={namespace},topic~="^/tasks/"',
        f'namespace=={namespace},topic~="^/containers/"',
    ]


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    """A protobuf Timestamp as integer ns since the epoch (0 when unset)."""
    return ts.seconds * 1_000_000_000 + ts.nanos


@dataclass(frozen=True)
class Decoded:
    """One envelope, reduced to what the reader uses."""

    namespace: str
    topic: str
    published_ns: int
    """The envelope's timestamp: when containerd (or the shim) published the event."""
    container_id: str
    payload: Message | None
    """The decoded event; None for a payload type this client does not describe."""


def decode(envelope: events_service_pb2.Envelope) -> Decoded:
    """The envelope's payload decoded by its type name; raises ContainerdFailed on garbage."""
    name = envelope.event.type_url.rpartition("/")[2]
    cls = _PAYLOADS.get(name)
    payload: Message | None = None
    container_id = ""
    if cls is not None:
        try:
            payload = cls.FromString(envelope.event.value)
        except DecodeError as exc:
            raise ContainerdFailed(f"undecodable {name} on {envelope.topic}: {exc}") from exc
        container_id = str(getattr(payload, "container_id", "") or getattr(payload, "id", ""))
    return Decoded(
        namespace=envelope.namespace,
        topic=envelope.topic,
        published_ns=timestamp_ns(envelope.timestamp),
        container_id=container_id,
        payload=payload,
    )


def call_error(call: str, exc: grpc.aio.AioRpcError) -> ContainerdError:
    """The ContainerdError of a failed call: unreachable (retry soon) or failed."""
    code = exc.code()
    text = f"containerd {call}: {code.name if code else 'UNKNOWN'} {exc.details() or ''}".strip()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ContainerdUnavailable(text)
    return ContainerdFailed(text)


class Subscription:
    """A started event stream; iterate ``envelopes()`` once, ``cancel()`` when done."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def envelopes(self) -> AsyncIterator[events_service_pb2.Envelope]:
        """The envelopes as published; raises ContainerdError when the stream fails or ends."""
        try:
            async for envelope in self._call:
                yield envelope
        except grpc.aio.AioRpcError as exc:
            raise call_error("Subscribe", exc) from exc
        raise ContainerdUnavailable("containerd ended the event stream")

    def cancel(self) -> None:
        self._call.cancel()


class ContainerdClient:
    """One channel to containerd's socket; an async context manager."""

    def __init__(self, socket: Path, namespace: str) -> None:
        self.socket = socket
        self.namespace = namespace
        self._metadata = ((NAMESPACE_METADATA, namespace),)
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> ContainerdClient:
        self._channel = grpc.aio.insecure_channel(
            f"unix://{self.socket}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # The default backoff after a failed connect grows to 2 minutes; the
                # reader decides itself when to try again.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError("ContainerdClient used outside 'async with'")
        return self._channel

    def subscribe(self) -> Subscription:
        """Starts the event stream of this namespace's task and container topics.

        containerd sends nothing on a new subscription before its first event, so
        there is no moment at which the stream is known to be registered. Calls
        made right after this one travel behind it on the same connection: a list
        taken then sees everything the stream may have missed, but for a
        sub-millisecond race between containerd's handlers of the two calls.
        Errors (containerd unreachable) surface when the envelopes are read.
        """
        stub = events_service_pb2_grpc.EventsStub(self.channel)
        call: Any = stub.Subscribe(
            events_service_pb2.SubscribeRequest(filters=subscribe_filters(self.namespace))
        )
        return Subscription(call)

    async def get_container(self, container_id: str) -> containers_pb2.Container | None:
        """The container's metadata; None if it no longer exists."""
        stub = containers_pb2_grpc.ContainersStub(self.channel)
        try:
            reply = await stub.Get(
                containers_pb2.GetContainerRequest(id=container_id),
                metadata=self._metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise call_error("Containers/Get", exc) from exc
        container: containers_pb2.Container = reply.container
        return container

    async def list_containers(self) -> list[containers_pb2.Container]:
        stub = containers_pb2_grpc.ContainersStub(self.channel)
        try:
            reply = await stub.List(
                containers_pb2.ListContainersRequest(),
                metadata=self._metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            raise call_error("Containers/List", exc) from exc
        return list(reply.containers)

    async def list_tasks(self) -> list[task_types_pb2.Process]:
        """Every task that exists (created, running, or exited and not yet deleted)."""
        stub = tasks_pb2_grpc.TasksStub(self.channel)
        try:
            reply = await stub.List(
                tasks_pb2.ListTasksRequest(), metadata=self._metadata, timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            raise call_error("Tasks/List", exc) from exc
        return list(reply.tasks)

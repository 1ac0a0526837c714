"""containerd's gRPC API on a unix socket per simulated node, for the agent.

On a real node the agent learns sandbox and container start times, to the
nanosecond, from containerd's socket. ``ContainerdSockets`` gives every
simulated node such a socket (``DIR/<node>.sock``), so ``agent run
--containerd-socket DIR/sim-node-1.sock`` measures the same phases on the
simulator as on a cluster. Each socket serves, for its own node's pods only,
the long-stable calls the agent uses (see ``proto/rtbench/containerd/``):

- ``Events/Subscribe``: live envelopes from the moment of the call, filtered
  with containerd's filter syntax (``containerd_filters``), across namespaces
  as containerd does (the ``containerd-namespace`` header does not narrow it;
  ``namespace==k8s.io`` does). A filter it cannot parse is INVALID_ARGUMENT.
- ``Containers/Get``, ``Containers/List``, ``Tasks/Get``, ``Tasks/List``: the
  records of ``containerd_state.NodeRuntime`` in namespace ``k8s.io``. These
  need the ``containerd-namespace`` header (FAILED_PRECONDITION without it, as
  containerd answers); other namespaces are empty. Unknown ids are NOT_FOUND.
  ``Tasks/List``'s filter is ignored, as containerd ignores it.
- the CRI calls the agent makes for pod addresses (``runtime.v1.RuntimeService``
  Version, PodSandboxStatus, ListPodSandbox; simcluster/cri_api.py), served on
  the same socket as containerd and K3s serve CRI.

The servers and every ``NodeRuntime`` live on an event loop of their own, in a
thread (``containerd-api``), as containerd is a process of its own on a node: on
the cluster's loop, busy with a thousand pods, each envelope of a stream waited
for a whole loop iteration, and at 10 nodes x 110 pods the streams fell 7-9 s
behind. One task (``feed``, run by the cluster under its TaskGroup as
``containerd-feed``) follows the runtime event log, describes new pods from the
kubelet's state on the cluster's loop, and hands each event to its node's
``NodeRuntime`` on the servers' loop; the gRPC handlers only read that state and
their subscription queues. Errors: a socket that cannot be served raises
``SimError`` (the CLI exits 1); request errors become gRPC status codes here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import stat
import threading
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError, Message

from rtbench.containerd import (
    containers_pb2,
    events_service_pb2,
    tasks_pb2,
)
from rtbench.cri import api_pb2 as cri_pb2
from rtbench.grpcdecoding import decoding_handler, only_service

from .containerd_filters import parse_all
from .containerd_state import NodeRuntime, PodInfo
from .cri_api import RuntimeService
from .cripod import CriPodWorker
from .errors import BadRequest, NotFound, SimError
from .kubelet import Kubelet
from .nodes import sim_version
from .runtime_events import RuntimeEventKind, RuntimeEventLog

log = logging.getLogger(__name__)

NAMESPACE_HEADER = "containerd-namespace"
SUBSCRIBED_HEADER = "rtbench-sim-subscribed"
"""Sent as soon as a Subscribe call is registered (containerd sends no early headers)."""
STOP_GRACE = 0.5
"""Seconds open calls get to finish when the cluster stops; streams are cut after."""


def socket_path(directory: Path, node: str) -> Path:
    return directory / f"{node}.sock"


def _namespace(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == NAMESPACE_HEADER:
            return value if isinstance(value, str) else value.decode()
    return None


async def _required_namespace(context: grpc.aio.ServicerContext) -> str:
    namespace = _namespace(context)
    if not namespace:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION, "namespace is required: failed precondition"
        )
    assert namespace is not None
    return namespace


class EventsService:
    """``containerd.services.events.v1.Events`` for one node."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime

    async def Subscribe(
        self,
        request: events_service_pb2.SubscribeRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[events_service_pb2.Envelope]:
        try:
            wanted = parse_all(list(request.filters))
        except BadRequest as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"failed parsing subscription filters: {exc}: invalid argument",
            )
        subscription = self.runtime.subscribe(wanted)
        try:
            # Headers go out once the subscription exists: a client that awaits
            # them knows every later event will reach it (containerd sends
            # nothing until the first event; clients must not need this).
            await context.send_initial_metadata(((SUBSCRIBED_HEADER, "1"),))
            while (envelope := await subscription.queue.get()) is not None:
                yield envelope
            if subscription.overflowed:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "subscriber fell too far behind the event stream",
                )
        finally:
            self.runtime.unsubscribe(subscription)


class ContainersService:
    """``containerd.services.containers.v1.Containers`` (Get, List) for one node."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime

    async def Get(
        self, request: containers_pb2.GetContainerRequest, context: grpc.aio.ServicerContext
    ) -> containers_pb2.GetContainerResponse:
        namespace = await _required_namespace(context)
        if not request.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "identifier must not be empty: invalid argument"
            )
        try:
            record = self.runtime.container(namespace, request.id)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        return containers_pb2.GetContainerResponse(container=record.message())

    async def List(
        self, request: containers_pb2.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> containers_pb2.ListContainersResponse:
        namespace = await _required_namespace(context)
        try:
            wanted = parse_all(list(request.filters))
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc}: invalid argument")
        records = self.runtime.list_containers(namespace, wanted)
        return containers_pb2.ListContainersResponse(containers=[r.message() for r in records])


class TasksService:
    """``containerd.services.tasks.v1.Tasks`` (Get, List) for one node."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime

    async def Get(
        self, request: tasks_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.GetResponse:
        namespace = await _required_namespace(context)
        if request.exec_id:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"process {request.exec_id} not found: not found"
            )
        try:
            task = self.runtime.task(namespace, request.container_id)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        return tasks_pb2.GetResponse(process=task.message())

    async def List(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        namespace = await _required_namespace(context)
        tasks = self.runtime.list_tasks(namespace)
        return tasks_pb2.ListTasksResponse(tasks=[t.message() for t in tasks])


def describe_pod(kubelet: Kubelet, pod_uid: str) -> PodInfo | None:
    """Labels, images and runtime handler of a pod the kubelet runs."""
    worker = kubelet.workers.get(pod_uid)
    if worker is None:
        return None
    labels = worker.pod.get("metadata", {}).get("labels") or {}
    return PodInfo(
        labels={str(k): str(v) for k, v in labels.items()},
        images={c.name: c.image for c in worker.containers},
        handler=worker.handler if isinstance(worker, CriPodWorker) else worker.profile.name,
    )


def _containerd_words(kind: type[Message], raw: bytes, exc: DecodeError) -> str:
    return f"error unmarshalling request: {exc}"


class ContainerdSockets:
    """One containerd-like gRPC server per node, on ``directory/<node>.sock``."""

    def __init__(
        self, directory: Path, kubelets: Mapping[str, Kubelet], events: RuntimeEventLog
    ) -> None:
        self.directory = directory.absolute()  # agents want absolute socket paths
        self._events = events
        self._describe = {name: partial(describe_pod, k) for name, k in kubelets.items()}
        self._described: dict[str, PodInfo | None] = {}
        """Pods described by ``feed`` for the runtimes, which run on the servers' loop."""
        self.runtimes = {name: NodeRuntime(name, self._take_described) for name in kubelets}
        self.sockets = {name: socket_path(self.directory, name) for name in kubelets}
        self._servers: list[grpc.aio.Server] = []
        self._bound: list[Path] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _take_described(self, pod_uid: str) -> PodInfo | None:
        return self._described.pop(pod_uid, None)

    async def start(self) -> None:
        """Listen on every node's socket; SimError if one cannot be served.

        The servers run on an event loop of their own, in a thread: containerd is a
        process of its own on a real node, and on the cluster's loop, busy with a
        thousand pods, every envelope of a stream waited a whole loop iteration
        (at 10 x 110 pods the agents' streams fell 7-9 s behind)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimError(f"cannot create {self.directory}: {exc.strerror}") from exc
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, started), name="containerd-api", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            await self._stop_thread(loop)
            raise
        self._loop = loop
        log.info("containerd API for %d nodes in %s", len(self.sockets), self.directory)

    def _serve(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_servers())
        except BaseException as exc:
            started.set_exception(exc)
        else:
            started.set_result(None)
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _start_servers(self) -> None:
        for name, path in self.sockets.items():
            _clear_stale_socket(path)
            runtime = self.runtimes[name]
            server = grpc.aio.server()
            # CRI's ImageService is not served: the agent asks the runtime only.
            services = (
                (EventsService(runtime), only_service(events_service_pb2)),
                (ContainersService(runtime), only_service(containers_pb2)),
                (TasksService(runtime), only_service(tasks_pb2)),
                (
                    RuntimeService(runtime, sim_version()),
                    cri_pb2.DESCRIPTOR.services_by_name["RuntimeService"],
                ),
            )
            server.add_generic_rpc_handlers(
                tuple(
                    decoding_handler(servicer, service, _containerd_words)
                    for servicer, service in services
                )
            )
            try:
                server.add_insecure_port(f"unix:{path}")
            except RuntimeError as exc:
                raise SimError(f"cannot listen on {path}: {exc}") from exc
            self._servers.append(server)
            self._bound.append(path)
            await server.start()

    async def feed(self) -> None:
        """Hand every runtime event to its node's containerd state (runs until stop)."""
        async for event in self._events.subscribe():
            runtime = self.runtimes.get(event.node)
            if runtime is None:
                continue
            if event.kind is RuntimeEventKind.SANDBOX_CREATED:
                # Read here, on the loop that owns the kubelet's state.
                self._described[event.pod_uid] = self._describe[event.node](event.pod_uid)
            if self._loop is None:
                runtime.apply(event)  # before start: no subscriber can be waiting
            else:
                self._loop.call_soon_threadsafe(runtime.apply, event)

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            await self._stop_thread(loop)
        bound, self._bound = self._bound, []
        for path in bound:
            path.unlink(missing_ok=True)

    async def _stop_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        async def stop_servers() -> None:
            for runtime in self.runtimes.values():
                runtime.close()
            servers, self._servers = self._servers, []
            for server in servers:
                await server.stop(STOP_GRACE)

        # Not "if loop.is_running()": start() returns as soon as the servers listen,
        # a moment before the thread enters run_forever, and a stop in that moment
        # must still stop it. Both calls are queued on the loop and run once it runs;
        # the loop stops even when this task is cancelled meanwhile.
        if not loop.is_closed():
            try:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stop_servers(), loop))
            finally:
                loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead simulator; refuse to steal a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SimError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SimError(f"cannot listen on {path}: another process serves it")

"""A real pod on a real runtime: the kubelet's CRI calls for one pod, and its PLEG.

In the real-pod node mode (``--node-mode real``) the kubelet does not imitate a
runtime: each pod bound to the node is started through rtbench's own containerd
(``realnode.RealContainerd``) the way a kubelet does it:

1. the pod's cgroup is made under rtbench's parent, its memory limit the sum of
   the containers' limits (what makes a gVisor pod's limit real);
2. ``RunPodSandbox`` with the RuntimeClass's handler, the kubelet's labels and
   that cgroup; the sandbox's IP comes from ``PodSandboxStatus`` (CNI bridge);
3. per container: ``ImageStatus`` (there is no registry: an image the node lacks
   is ``ErrImagePull``, then ``ImagePullBackOff``, never a hung pull),
   ``CreateContainer``, ``StartContainer``;
4. exits, exit codes and reasons (``OOMKilled``, ``Error``) come from
   ``ContainerStatus``; restarts follow the restart policy after a
   CrashLoopBackOff;
5. deletion: ``StopContainer`` with the grace period, ``StopPodSandbox``,
   ``RemoveContainer``, ``RemovePodSandbox``, the cgroup removed.

What the API sees is published as on a real node: container states at the next
relist (``CriRelister``: one ``ListContainers`` per period, ``ContainerStatus``
only for what changed), waiting reasons and readiness at once, as the kubelet's
sync loop and prober do. A failure the kubelet would retry forever (a handler the
runtime lacks, a sandbox the runtime cannot start) is shown as the container's
waiting reason ``CreatePodSandboxError`` with the runtime's own message, so a run
ends with a named failure instead of waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc

from .containers import STABLE_RUN, container_port, memory_limit
from .objects import Obj, rfc3339
from .podstatus import ContainerView
from .podworker import PodWorkerBase, RestartBackoff, readiness_loop, spec_env

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger(__name__)

NODE_LABEL = "rtbench.dev/node"
"""Set on every sandbox and container this node starts, so each node's relist lists its own."""
CALL_TIMEOUT = 120.0
"""Seconds a CRI call may take before the kubelet gives up on it (a kubelet's default
runtime request timeout is 2 min); a stuck runtime then shows as a failure."""
WORKLOAD_LISTEN_ALL = "0.0.0.0"


class RealRuntime(Protocol):
    """What the kubelet needs from the node's real container runtime."""

    socket: Path

    def create_pod_cgroup(self, uid: str, memory_limit: int | None) -> str:
        """Make the pod's cgroup (limit: the sum of its containers'); its cgroup_parent."""

    def remove_pod_cgroup(self, uid: str) -> None: ...

    def pod_memory_bytes(self, uid: str) -> int | None: ...


class Cri:
    """The two CRI services on one channel to the node's containerd socket."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix://{socket}")
        self.runtime = cri_grpc.RuntimeServiceStub(self.channel)
        self.images = cri_grpc.ImageServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()


def _message(exc: grpc.aio.AioRpcError) -> str:
    return str(exc.details() or exc.code().name)


def _ns_time(ns: int) -> str:
    return rfc3339(ns / 1e9) if ns > 0 else rfc3339()


class CriContainer(RestartBackoff):
    """One container of a real pod: image check, create, start, supervise, restart."""

    worker: CriPodWorker

    def __init__(self, worker: CriPodWorker, spec: Obj) -> None:
        self.worker = worker
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.port = container_port(spec)
        self.limit = memory_limit(spec)
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.restart_count = 0
        self.attempt = 0
        self.container_id: str | None = None
        """The CRI id of the current instance (bare, without ``containerd://``)."""
        self.previous_id: str | None = None
        self.cri_state: int | None = None
        """The runtime state the last relist saw for the current instance."""
        self.started = False
        self.pid: int | None = None
        self.instances = 0
        self.log_paths: list[Path] = []
        self.probe_ready = False
        self.first_attempt = asyncio.Event()
        self._exited = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._probed_instance = 0
        self._backoff = 0.0

    # -- what the kubelet publishes ---------------------------------------------------

    def view(self) -> ContainerView:
        return ContainerView(
            name=self.name,
            image=self.image,
            state=dict(self.state),
            last_state=dict(self.last_state),
            restart_count=self.restart_count,
            container_id=f"containerd://{self.container_id}" if self.container_id else None,
            started=self.started,
        )

    @property
    def readiness_probe(self) -> Obj | None:
        probe = self.spec.get("readinessProbe")
        return probe if isinstance(probe, dict) else None

    def ready(self, view: ContainerView) -> bool:
        if not view.running:
            return False
        return self.readiness_probe is None or self.probe_ready

    @property
    def running(self) -> bool:
        return self.cri_state == cri.CONTAINER_RUNNING

    def log_path(self, instance: int) -> Path:
        return self.log_paths[instance]

    # -- the sync loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Create, start and supervise until the restart policy says stop."""
        try:
            while True:
                code = await self._run_once()
                if code is None:
                    continue  # failed before the process ran; the backoff already waited
                policy = self.worker.restart_policy
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    return
                await self._crash_loop_backoff()
        finally:
            self.first_attempt.set()

    async def _run_once(self) -> int | None:
        w = self.worker
        if not await self._image_present():
            return None
        config = self._config()
        try:
            created = await w.cri.runtime.CreateContainer(
                cri.CreateContainerRequest(
                    pod_sandbox_id=w.sandbox_id, config=config, sandbox_config=w.sandbox_config
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            await self._failed_attempt("CreateContainerError", _message(exc))
            return None
        await self._forget_previous()
        self.previous_id, self.container_id = self.container_id, created.container_id
        self.cri_state = cri.CONTAINER_CREATED
        self.log_paths.append(w.log_dir / config.log_path)
        self.instances += 1
        self._exited.clear()
        try:
            await w.cri.runtime.StartContainer(
                cri.StartContainerRequest(container_id=created.container_id),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            # The runtime could not start the process (gVisor refusing a memory limit,
            # say): the kubelet shows RunContainerError and retries after a back-off,
            # with a new container (the failed one keeps its name until removed).
            self.attempt += 1
            self.restart_count += 1
            await self._failed_attempt("RunContainerError", _message(exc))
            return None
        self.first_attempt.set()
        await self._learn_pid()
        w.changed()
        await self._exited.wait()
        self.stop_prober()
        terminated = self.state.get("terminated") or {}
        started = terminated.get("startedAt")
        if started and _age(started) >= STABLE_RUN:
            self._backoff = 0.0
        return int(terminated.get("exitCode", 0))

    async def _image_present(self) -> bool:
        w = self.worker
        try:
            status = await w.cri.images.ImageStatus(
                cri.ImageStatusRequest(image=cri.ImageSpec(image=self.image)),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            await self._failed_attempt("ErrImagePull", _message(exc))
            return False
        if status.image.id:
            return True
        # No registry is reachable from rtbench's node: an image the node lacks can
        # only fail, as a pull on a node without registry access does.
        message = (
            f'failed to pull image "{self.image}": the image is not on node {w.kubelet.name} '
            "and rtbench's real-pod node pulls from no registry"
        )
        self.set_waiting("ErrImagePull", message)
        w.publish_now(self)
        self.first_attempt.set()
        delay = self._next_backoff()
        await asyncio.sleep(min(delay, 1.0))
        self.set_waiting("ImagePullBackOff", f'Back-off pulling image "{self.image}"')
        w.publish_now(self)
        await asyncio.sleep(max(0.0, delay - 1.0))
        return False

    async def _failed_attempt(self, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", self.worker.namespace, self.worker.name, reason, message)
        self.set_waiting(reason, message)
        self.worker.publish_now(self)
        self.first_attempt.set()
        await asyncio.sleep(self._next_backoff())

    async def _learn_pid(self) -> None:
        """The process id, for the simulator's state and its crash fault (verbose status)."""
        assert self.container_id is not None
        try:
            reply = await self.worker.cri.runtime.ContainerStatus(
                cri.ContainerStatusRequest(container_id=self.container_id, verbose=True),
                timeout=CALL_TIMEOUT,
            )
            pid = json.loads(reply.info.get("info", "{}")).get("pid")
        except (grpc.aio.AioRpcError, ValueError):
            return
        self.pid = pid if isinstance(pid, int) and pid > 0 else None

    async def _forget_previous(self) -> None:
        """Keep one dead instance (for ``--previous`` logs), remove the one before it."""
        if self.previous_id is None:
            return
        try:
            await self.worker.cri.runtime.RemoveContainer(
                cri.RemoveContainerRequest(container_id=self.previous_id), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("removing container %s: %s", self.previous_id, _message(exc))

    def _config(self) -> cri.ContainerConfig:
        w = self.worker
        envs = [cri.KeyValue(key=k, value=v) for k, v in self._env().items()]
        resources = cri.LinuxContainerResources()
        if self.limit is not None:
            resources.memory_limit_in_bytes = self.limit
        labels = {
            "io.kubernetes.container.name": self.name,
            "io.kubernetes.pod.name": w.name,
            "io.kubernetes.pod.namespace": w.namespace,
            "io.kubernetes.pod.uid": w.uid,
            NODE_LABEL: w.kubelet.name,
        }
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=self.name, attempt=self.attempt),
            image=cri.ImageSpec(image=self.image),
            envs=envs,
            labels=labels,
            annotations={"io.kubernetes.container.restartCount": str(self.restart_count)},
            log_path=f"{self.name}/{self.attempt}.log",
            linux=cri.LinuxContainerConfig(resources=resources),
        )
        command = self.spec.get("command")
        if isinstance(command, list):
            config.command.extend(str(c) for c in command)
        args = self.spec.get("args")
        if isinstance(args, list):
            config.args.extend(str(a) for a in args)
        return config

    def _env(self) -> dict[str, str]:
        w = self.worker
        env = spec_env(self.spec, w.field_refs())
        # The workload listens on every address of its own network namespace; a
        # hostNetwork pod shares the node's, so it binds the node's address only.
        env["LISTEN_ADDR"] = w.kubelet.node_ip if w.host_network else WORKLOAD_LISTEN_ALL
        env["PORT"] = str(self.port)
        return env

    # -- what the relist reports ----------------------------------------------------------

    def on_status(self, status: cri.ContainerStatus) -> bool:
        """Take the runtime's status of the current instance; whether anything changed."""
        if status.id != self.container_id:
            return False
        before = self.cri_state
        self.cri_state = status.state
        if status.state == cri.CONTAINER_RUNNING:
            if before == cri.CONTAINER_RUNNING:
                return False
            self.state = {"running": {"startedAt": _ns_time(status.started_at)}}
            self.started = True
            self.worker.changed()
            return True
        if status.state == cri.CONTAINER_EXITED:
            if before == cri.CONTAINER_EXITED:
                return False
            terminated: Obj = {
                "exitCode": status.exit_code,
                "reason": status.reason or ("Completed" if status.exit_code == 0 else "Error"),
                "startedAt": _ns_time(status.started_at or status.finished_at),
                "finishedAt": _ns_time(status.finished_at),
                "containerID": f"containerd://{status.id}",
            }
            if status.message:
                terminated["message"] = status.message
            self.state = {"terminated": terminated}
            self.started = False
            self.probe_ready = False
            # The sync loop acts on the exit only once this relist has published it.
            self.worker.changed()
            self._exited.set()
            return True
        return False

    def _restarting(self) -> None:
        self.attempt += 1

    def set_waiting(self, reason: str, message: str) -> None:
        self.state = {"waiting": {"reason": reason, "message": message}}
        self.started = False

    # -- readiness ------------------------------------------------------------------

    def on_observed(self, view: ContainerView) -> None:
        probe = self.readiness_probe
        if probe is None or not view.running:
            return
        if self._prober is not None and self._probed_instance == self.instances:
            return
        self.stop_prober()
        self._probed_instance = self.instances
        self._prober = asyncio.get_running_loop().create_task(
            self._probe_loop(probe),
            name=f"readiness {self.worker.namespace}/{self.worker.name}/{self.name}",
        )

    async def _probe_loop(self, probe: Obj) -> None:
        started = (self.state.get("running") or {}).get("startedAt")
        since = time.time() - (_age(started) if started else 0.0)
        await readiness_loop(
            probe, self.spec, lambda: self.worker.ip, since, lambda: self.probe_ready,
            self._set_ready,
        )  # fmt: skip

    def _set_ready(self, ready: bool) -> None:
        self.probe_ready = ready
        self.worker.publish_now()

    def stop_prober(self) -> None:
        self.probe_ready = False
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None


def _age(stamp: str) -> float:
    """Seconds since an RFC 3339 time the kubelet wrote (whole seconds, UTC)."""
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, time.time() - then)


class CriPodWorker(PodWorkerBase[CriContainer]):
    """Everything the kubelet does for one real pod, from first sight to removal."""

    def __init__(self, kubelet: Kubelet, pod: Obj, runtime: RealRuntime, cri_: Cri) -> None:
        super().__init__(kubelet, pod)
        self.runtime = runtime
        self.cri = cri_
        self.handler = kubelet.handler_for(pod)
        self.sandbox_id = ""
        self.sandbox_config = cri.PodSandboxConfig()
        self._cgroup = False
        self._containers_set([CriContainer(self, c) for c in pod["spec"]["containers"]])

    # -- services for the containers and the relist ----------------------------------------

    def _fail_all(self, reason: str, message: str) -> None:
        """Every container waits for the same reason (the sandbox's), published at once."""
        log.info("%s/%s: %s", self.namespace, self.name, message)
        for container in self.containers:
            container.set_waiting(reason, message)
            container.first_attempt.set()
        self.observed = [c.view() for c in self.containers]
        self.kubelet.publish(self)

    def memory_bytes(self) -> int:
        if not self._cgroup:
            return 0
        return self.runtime.pod_memory_bytes(self.uid) or 0

    # -- lifecycle ------------------------------------------------------------------

    def _sandbox_config(self, cgroup_parent: str) -> cri.PodSandboxConfig:
        labels = {
            str(k): str(v)
            for k, v in ((self.pod["metadata"].get("labels") or {}) or {}).items()
            if isinstance(k, str)
        }
        labels.update(
            {
                "io.kubernetes.pod.name": self.name,
                "io.kubernetes.pod.namespace": self.namespace,
                "io.kubernetes.pod.uid": self.uid,
                NODE_LABEL: self.kubelet.name,
            }
        )
        namespaces = cri.NamespaceOption(network=cri.NODE if self.host_network else cri.POD)
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=self.name, uid=self.uid, namespace=self.namespace),
            log_directory=str(self.log_dir),
            labels=labels,
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=cgroup_parent,
                security_context=cri.LinuxSandboxSecurityContext(namespace_options=namespaces),
            ),
        )
        if not self.host_network:
            # A host-network sandbox shares the node's UTS namespace: no hostname of its own.
            config.hostname = self.name
        return config

    async def _run(self) -> None:
        k = self.kubelet
        k.publish(self)
        k.starting += 1
        tasks: list[asyncio.Task[None]] = []
        try:
            limits = [c.limit for c in self.containers]
            total = sum(x for x in limits if x is not None) if all(limits) else None
            try:
                cgroup_parent = await asyncio.to_thread(
                    self.runtime.create_pod_cgroup, self.uid, total
                )
            except OSError as exc:
                self._fail_all("CreatePodSandboxError", f"cannot create the pod's cgroup: {exc}")
                return
            self._cgroup = True
            self.sandbox_config = self._sandbox_config(cgroup_parent)
            await asyncio.to_thread(self.log_dir.mkdir, parents=True, exist_ok=True)
            await self._run_sandbox()
            for container in self.containers:
                tasks.append(
                    asyncio.get_running_loop().create_task(
                        container.run(),
                        name=f"container {self.namespace}/{self.name}/{container.name}",
                    )
                )
                await container.first_attempt.wait()
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            k.starting -= 1
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _run_sandbox(self) -> None:
        """RunPodSandbox until it works, showing each failure as the containers' reason."""
        backoff = 0.0
        settings = self.kubelet.settings
        while True:
            try:
                reply = await self.cri.runtime.RunPodSandbox(
                    cri.RunPodSandboxRequest(
                        config=self.sandbox_config, runtime_handler=self.handler
                    ),
                    timeout=CALL_TIMEOUT,
                )
                break
            except grpc.aio.AioRpcError as exc:
                self._fail_all(
                    "CreatePodSandboxError", f"failed to create pod sandbox: {_message(exc)}"
                )
                backoff = (
                    settings.crashloop_backoff
                    if backoff == 0
                    else min(backoff * 2, settings.crashloop_backoff_max)
                )
                await asyncio.sleep(backoff)
        self.sandbox_id = reply.pod_sandbox_id
        self.sandbox_created = True
        for container in self.containers:
            container.first_attempt.clear()
            if container.state.get("waiting", {}).get("reason") == "CreatePodSandboxError":
                container.state = {"waiting": {"reason": "ContainerCreating"}}
        if self.host_network:
            self.ip = self.kubelet.node_ip
        else:
            status = await self.cri.runtime.PodSandboxStatus(
                cri.PodSandboxStatusRequest(pod_sandbox_id=self.sandbox_id), timeout=CALL_TIMEOUT
            )
            self.ip = status.status.network.ip or None
        self.changed()

    async def _stop_container(self, container: CriContainer) -> None:
        if container.container_id is None:
            return
        cid = container.container_id
        while True:
            remaining = max(0, math.ceil(self._deadline - time.monotonic()))
            self._hurry.clear()
            stop = asyncio.ensure_future(
                self.cri.runtime.StopContainer(
                    cri.StopContainerRequest(container_id=cid, timeout=remaining),
                    timeout=remaining + CALL_TIMEOUT,
                )
            )
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait([stop, hurry], return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurry.cancel()
            if stop.done():
                try:
                    stop.result()
                except grpc.aio.AioRpcError as exc:
                    log.info("stopping container %s: %s", cid, _message(exc))
                return
            # A shorter grace period arrived (a delete with --grace-period=0): stop again
            # with it; the first call ends when the container does.
            stop.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    async def _stop_everything(self) -> None:
        await self._cancel_main()
        for container in self.containers:
            container.stop_prober()
        await asyncio.gather(*(self._stop_container(c) for c in self.containers))
        for container in self.containers:
            if container.container_id is None:
                continue
            try:
                reply = await self.cri.runtime.ContainerStatus(
                    cri.ContainerStatusRequest(container_id=container.container_id),
                    timeout=CALL_TIMEOUT,
                )
                container.on_status(reply.status)
            except grpc.aio.AioRpcError as exc:
                log.debug("status of %s: %s", container.container_id, _message(exc))
        self.observed = [c.view() for c in self.containers]
        if self.sandbox_created:
            for call, request in (
                (self.cri.runtime.StopPodSandbox, cri.StopPodSandboxRequest),
                (self.cri.runtime.RemovePodSandbox, cri.RemovePodSandboxRequest),
            ):
                try:
                    await call(request(pod_sandbox_id=self.sandbox_id), timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "%s of %s/%s: %s",
                        request.__name__.removesuffix("Request"),
                        self.namespace,
                        self.name,
                        _message(exc),
                    )
        if self._cgroup:
            self._cgroup = False
            await asyncio.to_thread(self.runtime.remove_pod_cgroup, self.uid)


class CriRelister:
    """The PLEG of a real-pod node: what the runtime says, once per period."""

    def __init__(self, node: str, cri_: Cri) -> None:
        self.node = node
        self.cri = cri_
        self._seen: dict[str, int] = {}

    async def relist(self, workers: Mapping[str, Any]) -> list[Any]:
        """Update each worker's containers from the runtime; the workers that changed."""
        try:
            listed = await self.cri.runtime.ListContainers(
                cri.ListContainersRequest(
                    filter=cri.ContainerFilter(label_selector={NODE_LABEL: self.node})
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("relist of %s: %s", self.node, _message(exc))
            return []
        states = {c.id: c.state for c in listed.containers}
        changed: list[Any] = []
        for worker in list(workers.values()):
            if not isinstance(worker, CriPodWorker) or worker.terminating:
                continue
            moved = False
            for container in worker.containers:
                cid = container.container_id
                if cid is None or cid not in states or states[cid] == container.cri_state:
                    continue
                try:
                    reply = await self.cri.runtime.ContainerStatus(
                        cri.ContainerStatusRequest(container_id=cid), timeout=CALL_TIMEOUT
                    )
                except grpc.aio.AioRpcError as exc:
                    log.debug("status of %s: %s", cid, _message(exc))
                    continue
                moved = container.on_status(reply.status) or moved
            if moved:
                changed.append(worker)
        return changed

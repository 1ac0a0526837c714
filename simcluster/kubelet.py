"""A simulated node's kubelet: runs the pods bound to its node as real processes.

For each pod bound to the node a ``PodWorker`` walks the CRI steps with delays
drawn from the pod's runtime profile (runtimeClassName → profile, none → runc),
slowed by how many pods are starting on the node at once: sandbox created,
sandbox started (the pod gets its loopback IP; a hostNetwork pod uses the node's),
then each container created and started (a real workload process). Every step is
recorded with its ns wall-clock time (and the sandbox's IP) in the cluster's
runtime event log.

What the API sees lags the way it does on a real node: container-state changes
are published at the next PLEG relist (every ``pleg_period`` seconds, 0 = at
once), readiness as soon as the prober decides. Deletion is graceful: SIGTERM,
SIGKILL after the grace period, the address released into quarantine, a final
status, then the object is removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .addresses import AddressPool
from .containers import ContainerRun
from .cripod import Cri, CriContainer, CriPodWorker, CriRelister, RealRuntime
from .objects import Obj
from .podstatus import ContainerView, build_status
from .podworker import PodWorkerBase
from .profiles import DEFAULT_RUNTIME, RuntimeProfile
from .registry import Registry
from .runtime_events import RuntimeEventKind, RuntimeEventLog
from .settings import SimSettings
from .store import EventType, Store

log = logging.getLogger(__name__)


class _Readiness(Protocol):
    """What publishing needs of a container, simulated or real."""

    name: str

    def ready(self, view: ContainerView) -> bool: ...


REAL_MIN_RELIST = 0.02
"""With ``pleg_period`` 0 a real-pod node still has to ask its runtime: this often."""


class PodWorker(PodWorkerBase[ContainerRun]):
    """Everything the kubelet does for one pod on a runtime profile."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        super().__init__(kubelet, pod)
        self.profile = kubelet.profile_for(pod)
        self.sandbox_id = secrets.token_hex(32)
        self._containers_set([ContainerRun(self, c) for c in pod["spec"]["containers"]])

    # -- services for ContainerRun -------------------------------------------------

    def draw(self, stage: str) -> float:
        return self.profile.draw(stage, self.kubelet.rng, max(1, self.kubelet.starting))

    def record(
        self,
        kind: RuntimeEventKind,
        container: ContainerRun | None = None,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        ip: str | None = None,
    ) -> None:
        self.kubelet.events.record(
            kind,
            node=self.kubelet.name,
            namespace=self.namespace,
            pod=self.name,
            pod_uid=self.uid,
            sandbox_id=self.sandbox_id,
            container=container.name if container else None,
            container_id=container.container_id if container else None,
            pid=pid,
            exit_code=exit_code,
            ip=ip,
            host_network=self.host_network if ip is not None else False,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def _run(self) -> None:
        k = self.kubelet
        k.publish(self)
        k.starting += 1
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.sleep(self.draw("sandbox_create"))
            self.sandbox_created = True
            self.record(RuntimeEventKind.SANDBOX_CREATED)
            await asyncio.sleep(self.draw("sandbox_start"))
            if self.host_network:
                self.ip = k.node_ip
            else:
                self.ip = k.ips.allocate(c.port for c in self.containers)
            self.record(RuntimeEventKind.SANDBOX_STARTED, ip=self.ip)
            self.changed()
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

    async def _stop_everything(self) -> None:
        await self._cancel_main()
        processes = {c: c.process for c in self.containers if c.process is not None}
        for process in processes.values():
            process.signal(signal.SIGTERM)
        exits = [asyncio.shield(p.exited) for p in processes.values()]
        while exits and not all(e.done() for e in exits):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                for process in processes.values():
                    process.signal(signal.SIGKILL)
                await asyncio.gather(*exits)
                break
            self._hurry.clear()
            hurry = asyncio.ensure_future(self._hurry.wait())
            waiters: list[asyncio.Future[Any]] = [*exits, hurry]
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            if all(e.done() for e in exits):
                break
        for container in self.containers:
            stopped = processes.get(container)
            container.finish(stopped.exited.result() if stopped is not None else None)
        self.observed = [c.view() for c in self.containers]
        if self.ip is not None and not self.host_network:
            self.kubelet.ips.release(self.ip)
        if self.sandbox_created:
            self.record(RuntimeEventKind.SANDBOX_STOPPED)


class Kubelet:
    def __init__(
        self,
        *,
        name: str,
        index: int,
        node_ip: str,
        registry: Registry,
        store: Store,
        profiles: dict[str, RuntimeProfile],
        settings: SimSettings,
        workload: Path,
        state_dir: Path,
        events: RuntimeEventLog,
        rng: random.Random,
        real: RealRuntime | None = None,
        cri: Cri | None = None,
    ) -> None:
        self.name = name
        self.node_ip = node_ip
        self.registry = registry
        self.store = store
        self.profiles = profiles
        self.settings = settings
        self.workload = workload
        self.state_dir = state_dir
        self.events = events
        self.rng = rng
        self.ips = AddressPool(index, settings.ip_quarantine)
        self.real = real
        """The node's real runtime (real-pod mode); None: pods run on runtime profiles."""
        self.cri = cri
        self._relister = CriRelister(name, cri) if cri is not None else None
        self.workers: dict[str, PodWorker | CriPodWorker] = {}
        self.starting = 0
        self._dirty: dict[str, PodWorkerBase[Any]] = {}
        self._watcher = store.subscribe(["Pod"])

    def handler_for(self, pod: Obj) -> str:
        """The runtime handler of the pod's RuntimeClass (none: the default runtime, runc)."""
        name = pod["spec"].get("runtimeClassName") or DEFAULT_RUNTIME
        rc = self.store.peek("RuntimeClass", "", name)
        return str(rc.get("handler", name)) if rc else name

    def profile_for(self, pod: Obj) -> RuntimeProfile:
        name = pod["spec"].get("runtimeClassName") or DEFAULT_RUNTIME
        handler = self.handler_for(pod)
        return (
            self.profiles.get(handler) or self.profiles.get(name) or self.profiles[DEFAULT_RUNTIME]
        )

    # -- the sync loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Follow pod events and start, update or stop pod workers."""
        for pod in self.store.items("Pod"):
            if (pod.get("spec") or {}).get("nodeName") == self.name:
                self._on_pod(EventType.ADDED, pod)
        while True:
            batch = await self._watcher.next_batch()
            if self._watcher.closed is not None:
                return
            for event in batch:
                self._on_pod(event.type, event.object)

    def _on_pod(self, etype: EventType, pod: Obj) -> None:
        md = pod["metadata"]
        worker = self.workers.get(md["uid"])
        if etype is EventType.DELETED:
            if worker is not None:
                worker.terminate(0, gone=True)
            return
        if (pod.get("spec") or {}).get("nodeName") != self.name:
            return
        if worker is None:
            if md.get("deletionTimestamp"):
                self.registry.remove("Pod", md["namespace"], md["name"], uid=md["uid"])
            elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                if self.real is not None and self.cri is not None:
                    worker = CriPodWorker(self, pod, self.real, self.cri)
                else:
                    worker = PodWorker(self, pod)
                self.workers[worker.uid] = worker
                worker.start()
            return
        worker.pod = pod
        if md.get("deletionTimestamp"):
            worker.terminate(float(md.get("deletionGracePeriodSeconds") or 0), gone=False)

    # -- PLEG -------------------------------------------------------------------------

    def mark_dirty(self, worker: PodWorkerBase[Any]) -> None:
        if worker.terminating:
            return  # the termination writes the final status itself
        if self.settings.pleg_period == 0 and self.real is None:
            worker.observe()
            self.publish(worker)
        else:
            self._dirty[worker.uid] = worker

    async def relist_loop(self) -> None:
        """Publish container-state changes once per PLEG period."""
        period = self.settings.pleg_period
        if self._relister is not None:
            # A real runtime is asked, not told: with period 0 ask as often as a
            # relist can sensibly run, so "at once" means within a few ms.
            period = period or REAL_MIN_RELIST
        assert period > 0, "with pleg_period 0 changes are published at once, no loop runs"
        while True:
            await asyncio.sleep(period - (time.monotonic() % period))
            if self._relister is not None:
                for worker in await self._relister.relist(self.workers):
                    self._dirty[worker.uid] = worker
            self.relist()

    def relist(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for worker in dirty.values():
            if self.workers.get(worker.uid) is worker and not worker.terminating:
                worker.observe()
                self.publish(worker)

    def publish(self, worker: PodWorkerBase[Any], *, final_phase: str | None = None) -> None:
        """Write the pod's status as the kubelet last observed it."""
        if worker.gone:
            return
        containers: Sequence[_Readiness] = worker.containers
        ready = {
            c.name: final_phase is None and c.ready(v)
            for c, v in zip(containers, worker.observed, strict=True)
        }

        def change(pod: Obj) -> None:
            pod["status"] = build_status(
                pod.get("status") or {},
                views=worker.observed,
                ready=ready,
                restart_policy=worker.restart_policy,
                host_ip=self.node_ip,
                pod_ip=worker.observed_ip,
                start_time=worker.start_time,
                sandbox_ready=worker.observed_ip is not None and final_phase is None,
                final_phase=final_phase,
            )

        self.registry.mutate("Pod", worker.namespace, worker.name, change, uid=worker.uid)

    # -- queries and faults --------------------------------------------------------------

    def processes(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for w in self.workers.values():
            for c in w.containers:
                if isinstance(c, CriContainer):
                    pid = c.pid if c.running else None
                else:
                    pid = c.process.pid if c.process is not None and c.process.running else None
                if pid is not None:
                    found.append(
                        {
                            "node": self.name,
                            "namespace": w.namespace,
                            "pod": w.name,
                            "container": c.name,
                            "pid": pid,
                            "ip": w.ip,
                            "port": c.port,
                        }
                    )
        return found

    def memory_used(self) -> int:
        """Bytes the pods cost the node: their cgroups (real pods), else the runtime
        profile's overhead plus the workloads' RSS."""
        total = 0
        for worker in self.workers.values():
            if isinstance(worker, CriPodWorker):
                total += worker.memory_bytes()
                continue
            if worker.sandbox_created:
                total += worker.profile.memory_overhead
            for container in worker.containers:
                if container.process is not None:
                    total += container.process.rss_bytes()
        return total

    def find(self, uid: str, container: str | None) -> ContainerRun | CriContainer | None:
        worker = self.workers.get(uid)
        if worker is None:
            return None
        for run in worker.containers:
            if container is None or run.name == container:
                return run
        return None

    async def shutdown(self) -> None:
        self.store.unwatch(self._watcher)
        await asyncio.gather(*(w.shutdown() for w in list(self.workers.values())))

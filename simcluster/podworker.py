"""What every pod worker of a kubelet does, whether its pod is simulated or real.

A pod worker (``kubelet.PodWorker`` on runtime profiles, ``cripod.CriPodWorker``
through CRI) owns one pod from first sight to removal. The parts that do not
depend on how containers run live here once: the relist hand-off (``changed``,
``observe``, ``wait_observed``), publishing the sync loop's own states at once,
the main task, graceful termination with a deadline that a later, shorter grace
period can bring forward, the final status and the removal of the object. A
subclass supplies ``_run`` (start the pod) and ``_stop_everything`` (stop it by
the deadline); readiness probing and container environments, also shared, are
the functions at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .objects import Obj, rfc3339
from .podstatus import ContainerView
from .probing import run_probe

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0
"""Seconds workloads get between SIGTERM and SIGKILL when the simulator stops."""


class WorkerContainer(Protocol):
    name: str
    instances: int

    def view(self) -> ContainerView: ...

    def on_observed(self, view: ContainerView) -> None: ...


C = TypeVar("C", bound=WorkerContainer)


class PodWorkerBase(Generic[C]):
    """One pod's lifecycle around ``_run`` and ``_stop_everything``."""

    containers: list[C]

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        md = pod["metadata"]
        self.kubelet = kubelet
        self.pod = pod
        self.uid: str = md["uid"]
        self.namespace: str = md["namespace"]
        self.name: str = md["name"]
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.host_network = pod["spec"].get("hostNetwork") is True
        """The pod's processes listen on the node's address, as hostNetwork pods do."""
        self.sandbox_created = False
        self.ip: str | None = None
        self.start_time = rfc3339()
        self.log_dir = kubelet.state_dir / f"{self.namespace}_{self.name}_{self.uid}"
        self.observed_ip: str | None = None
        self._observed = asyncio.Event()
        self._observed.set()
        self.gone = False
        self._main: asyncio.Task[None] | None = None
        self._termination: asyncio.Task[None] | None = None
        self._deadline = 0.0
        self._hurry = asyncio.Event()

    def _containers_set(self, containers: list[C]) -> None:
        self.containers = containers
        # What the last relist saw; the API is written from this.
        self.observed: list[ContainerView] = [c.view() for c in containers]

    # -- the relist hand-off --------------------------------------------------------

    def changed(self) -> None:
        """Runtime state changed; the API learns it at the next relist."""
        self._observed.clear()
        self.kubelet.mark_dirty(self)

    async def wait_observed(self) -> None:
        await self._observed.wait()

    def publish_now(self, container: C | None = None) -> None:
        """Write the status now; with ``container``, its state as the sync loop sets it."""
        if container is not None:
            index = self.containers.index(container)
            self.observed = [*self.observed[:index], container.view(), *self.observed[index + 1 :]]
        self.kubelet.publish(self)

    def observe(self) -> None:
        """The relist: take the runtime state as the state to publish."""
        self.observed = [c.view() for c in self.containers]
        self.observed_ip = self.ip
        for container, view in zip(self.containers, self.observed, strict=True):
            container.on_observed(view)
        self._observed.set()

    def field_refs(self) -> dict[str, str]:
        """The downward API's fieldRef values of this pod."""
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.kubelet.name,
            "spec.serviceAccountName": str(self.pod.get("spec", {}).get("serviceAccountName", "")),
            "status.podIP": self.ip or "",
            "status.hostIP": self.kubelet.node_ip,
        }

    # -- lifecycle ------------------------------------------------------------------

    @property
    def terminating(self) -> bool:
        return self._termination is not None

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(
            self._run(), name=f"pod {self.namespace}/{self.name}"
        )
        self._main.add_done_callback(self._main_done)

    def _main_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "pod worker %s/%s failed", self.namespace, self.name, exc_info=task.exception()
            )

    async def _run(self) -> None:
        raise NotImplementedError

    async def _stop_everything(self) -> None:
        raise NotImplementedError

    async def _cancel_main(self) -> None:
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)

    def terminate(self, grace: float, *, gone: bool) -> None:
        """Stop the pod within ``grace`` seconds; ``gone``: the object is already deleted."""
        self.gone = self.gone or gone
        deadline = time.monotonic() + max(0.0, grace)
        if self._termination is None:
            self._deadline = deadline
            self._termination = asyncio.get_running_loop().create_task(
                self._terminate(), name=f"terminate {self.namespace}/{self.name}"
            )
        elif deadline < self._deadline:
            self._deadline = deadline
            self._hurry.set()

    async def _terminate(self) -> None:
        try:
            await self._stop_everything()
        finally:
            self.kubelet.workers.pop(self.uid, None)
        if self.gone:
            return
        if any(c.instances for c in self.containers):
            codes = [int((v.terminated or {}).get("exitCode", 0)) for v in self.observed]
            self.kubelet.publish(self, final_phase="Succeeded" if not any(codes) else "Failed")
        self.kubelet.registry.remove("Pod", self.namespace, self.name, uid=self.uid)

    async def shutdown(self) -> None:
        """The simulator stops: end the containers, write nothing to the API."""
        self.gone = True
        self.terminate(SHUTDOWN_GRACE, gone=True)
        assert self._termination is not None
        await asyncio.gather(self._termination, return_exceptions=True)


class RestartBackoff:
    """The kubelet's restart back-off of one container: CrashLoopBackOff, doubling from
    ``crashloop_backoff`` to ``crashloop_backoff_max``."""

    name: str
    worker: PodWorkerBase[Any]
    state: Obj
    last_state: Obj
    restart_count: int
    _backoff: float

    def _next_backoff(self) -> float:
        settings = self.worker.kubelet.settings
        if self._backoff == 0:
            self._backoff = settings.crashloop_backoff
        else:
            self._backoff = min(self._backoff * 2, settings.crashloop_backoff_max)
        return self._backoff

    def _restarting(self) -> None:
        """Called as the restart is decided (a real container takes its next attempt)."""

    async def _crash_loop_backoff(self) -> None:
        w = self.worker
        # The kubelet's sync loop acts on the death only after PLEG reported it.
        await w.wait_observed()
        self.last_state = dict(self.state)
        self.restart_count += 1
        self._restarting()
        delay = self._next_backoff()
        self.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={self.name} "
                f"pod={w.name}_{w.namespace}({w.uid})",
            }
        }
        w.publish_now(self)
        await asyncio.sleep(delay)


def spec_env(spec: Obj, refs: Mapping[str, str]) -> dict[str, str]:
    """A container's ``env``: values, and fieldRefs resolved from ``refs``."""
    env: dict[str, str] = {}
    for item in spec.get("env") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if isinstance(path, str) and path in refs:
                env[item["name"]] = refs[path]
    return env


async def readiness_loop(
    probe: Obj,
    spec: Obj,
    address: Callable[[], str | None],
    started: float,
    ready: Callable[[], bool],
    set_ready: Callable[[bool], None],
) -> None:
    """The kubelet's readiness prober for one container instance started at ``started``
    (epoch seconds): every period, flip readiness after the thresholds."""
    initial = float(probe.get("initialDelaySeconds") or 0)
    period = max(1.0, float(probe.get("periodSeconds") or 10))
    success_needed = max(1, int(probe.get("successThreshold") or 1))
    failure_needed = max(1, int(probe.get("failureThreshold") or 3))
    wait = started + initial - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    successes = failures = 0
    while True:
        ip = address()
        assert ip is not None
        ok = await run_probe(probe, spec, ip)
        successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
        if ok and not ready() and successes >= success_needed:
            set_ready(True)
        elif not ok and ready() and failures >= failure_needed:
            set_ready(False)
        await asyncio.sleep(period)

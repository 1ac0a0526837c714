"""``SimCluster``: the simulated cluster as one object, for the CLI and for tests.

It ties the parts together (store, registry, scheduler, deployment controller,
garbage collector, one kubelet per node, the HTTP API) and owns their lifetime:
``start()`` seeds the cluster (namespaces ``default``/``kube-system``/
``kube-public``, nodes ``sim-node-1..N``, one RuntimeClass per runtime profile),
starts every loop as a named task under one TaskGroup and listens on loopback;
``stop()`` stops accepting requests, ends open watches, stops the loops and
kills every workload process. A loop that crashes is logged by name and turns
the health checks red (and the CLI exits 1) instead of vanishing.

With ``containerd_dir`` set, each node also serves containerd's gRPC API on
``containerd_dir/<node>.sock`` (``containerd_api``), fed from the runtime event
log by the ``containerd-feed`` task; ``containerd_socket(node)`` names it.

The fault methods (``drop_watches``, ``expire_history``, ``faults.inject_errors``,
``faults.slow_down``, ``kill_container``) are what the ``/_sim/`` endpoints call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web

from rtbench.cri import api_pb2 as cri_pb2

from . import admin, errors
from .apiserver import ApiServer, build_app
from .audit import RequestLog
from .containerd_api import ContainerdSockets
from .cripod import Cri, CriContainer
from .deployments import DeploymentController
from .errors import BadRequest, ConfigError, NotFound, SimError
from .faults import Faults
from .garbage import GarbageCollector
from .kubeconfig import write_kubeconfig
from .kubelet import Kubelet
from .nodes import Machine, build_node, node_ip, node_name
from .objects import Obj, format_mebibytes
from .podlogs import LogFile
from .profiles import DEFAULT_PROFILES, RuntimeProfile, load_profiles
from .registry import Registry
from .resources import NAMESPACES, RUNTIMECLASSES
from .runtime_events import RuntimeEvent, RuntimeEventLog
from .scheduling import Scheduler
from .settings import FIELD_NAMES, SimSettings
from .store import Store, WatchClosed
from .workload import ensure_workload

if TYPE_CHECKING:
    from .realnode.containerd import RealContainerd

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public")
_PATH_FIELDS = {f.name for f in fields(SimSettings) if "Path" in str(f.type)}


class SimCluster:
    """The simulated cluster: ``SimCluster(nodes=2, pleg_period=0.1)``, ``SimCluster(settings)``."""

    def __init__(
        self,
        settings: SimSettings | None = None,
        /,
        *,
        profiles: Mapping[str, RuntimeProfile] | None = None,
        **overrides: Any,
    ) -> None:
        unknown = sorted(set(overrides) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}")
        for name in _PATH_FIELDS & set(overrides):
            if overrides[name] is not None:
                overrides[name] = Path(overrides[name])
        self.settings = replace(settings or SimSettings(), **overrides)
        self.settings.check()
        self._profiles_given = dict(profiles) if profiles is not None else None
        self.rng = random.Random(self.settings.seed)
        self.store = Store(self.settings.history_size)
        self.registry = Registry(self.store, self.rng)
        self._faults = Faults()
        self.requests = RequestLog()
        """Who made which API request (audit.py): off until ``requests.enable()``."""
        self.events = RuntimeEventLog()
        self.kubelets: dict[str, Kubelet] = {}
        self.profiles: dict[str, RuntimeProfile] = {}
        self.workload: Path | None = None
        self.state_dir: Path | None = None
        self._own_state_dir = False
        self._machine = Machine.detect()
        self._runner: web.AppRunner | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._problem: str | None = None
        self._port = 0
        self.containerd: ContainerdSockets | None = None
        """The per-node containerd sockets, when ``containerd_dir`` is set."""
        self.kubeconfig: Path | None = None
        """Where ``write_kubeconfig`` last wrote."""
        self.real: RealContainerd | None = None
        """rtbench's own containerd, when pods are real (``node_mode`` real or auto)."""
        self._cri: Cri | None = None
        self.real_unavailable: str | None = None
        """Why ``node_mode`` auto fell back to simulated pods."""
        self._runtime_version: str | None = None

    @property
    def node_mode(self) -> str:
        """``real`` when pods are real containers, else ``simulated``."""
        return "real" if self.real is not None else "simulated"

    @property
    def real_socket(self) -> Path | None:
        """The real containerd's socket (events and CRI), for the agents."""
        return self.real.socket if self.real is not None else None

    # -- lifetime ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise SimError("the cluster is already started")
        s = self.settings
        if self._profiles_given is not None:
            self.profiles = dict(self._profiles_given)
        elif s.profiles_file is not None:
            self.profiles = load_profiles(s.profiles_file)
        else:
            self.profiles = dict(DEFAULT_PROFILES)
        if "runc" not in self.profiles:
            raise ConfigError(
                "the profiles must include 'runc', the runtime of pods without a RuntimeClass"
            )
        self.workload = await ensure_workload(s.workload)
        if s.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="rtbench-sim-"))
            self._own_state_dir = True
        else:
            self.state_dir = s.state_dir
            self.state_dir.mkdir(parents=True, exist_ok=True)
        if s.node_mode != "simulated":
            await self._start_real()
        self._seed()
        scheduler = Scheduler(self.registry, self.store)
        deployments = DeploymentController(self.registry, self.store, self.rng)
        garbage = GarbageCollector(self.registry, self.store)
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("scheduler", scheduler.run()),
            ("deployment-controller", deployments.run()),
            ("garbage-collector", garbage.run()),
        ]
        for index in range(1, s.nodes + 1):
            name = node_name(index)
            kubelet = Kubelet(
                name=name,
                index=index,
                node_ip=node_ip(index),
                registry=self.registry,
                store=self.store,
                profiles=self.profiles,
                settings=s,
                workload=self.workload,
                state_dir=self.state_dir / "pods",
                events=self.events,
                rng=self.rng,
                real=self.real,
                cri=self._cri,
            )
            self.kubelets[name] = kubelet
            loops.append((f"kubelet {name}", kubelet.run()))
            if s.pleg_period > 0 or self.real is not None:
                loops.append((f"pleg {name}", kubelet.relist_loop()))
        if s.containerd_dir is not None and self.real is not None:
            log.info(
                "real pods: the agents read %s, no simulated containerd sockets", self.real.socket
            )
        elif s.containerd_dir is not None:
            self.containerd = ContainerdSockets(s.containerd_dir, self.kubelets, self.events)
            loops.append(("containerd-feed", self.containerd.feed()))
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(loops), name="simcluster"
        )
        api = ApiServer(self.registry, s, self)
        app = build_app(api, self._faults, admin.routes(self), s, self.requests)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise SimError(f"cannot listen on {s.host}:{s.port}: {exc.strerror}") from exc
        self._port = int(self._runner.addresses[0][1])
        if self.containerd is not None:
            try:
                await self.containerd.start()
            except SimError:
                await self.stop()
                raise
        log.info("serving %s with %d nodes", self.url, s.nodes)

    async def _start_real(self) -> None:
        """Start rtbench's containerd; in auto mode fall back to profiles if it cannot run."""
        # Imported only here: a simulated-only cluster never loads the real node's parts.
        from .realnode.containerd import RealContainerd

        real = RealContainerd()
        try:
            await real.start()
        except errors.RealNodeUnavailable as exc:
            if self.settings.node_mode == "real":
                raise
            self.real_unavailable = str(exc)
            log.warning("real pods are not possible here, pods run on runtime profiles: %s", exc)
            return
        self.real = real
        self._cri = Cri(real.socket)
        try:
            version = await self._cri.runtime.Version(cri_pb2.VersionRequest(), timeout=10)
            self._runtime_version = f"{version.runtime_name}://{version.runtime_version}"
        except grpc.aio.AioRpcError:
            self._runtime_version = "containerd://unknown"
        usable = sorted(h for h, why in real.handlers.items() if why is None)
        log.info("real pods through %s, handlers %s", real.socket, ", ".join(usable))
        for handler, why in sorted(real.handlers.items()):
            if why is not None:
                log.info("handler %s is not available here: %s", handler, why)

    def _seed(self) -> None:
        for name in SYSTEM_NAMESPACES:
            self.registry.create(NAMESPACES, None, {"metadata": {"name": name}})
        for index in range(1, self.settings.nodes + 1):
            self.store.create(
                "Node",
                build_node(
                    index,
                    self._machine,
                    self.settings.max_pods,
                    real_runtime=self._runtime_version if self.real is not None else None,
                ),
            )
        if self.real is not None:
            # Only the handlers this machine can run; the others are named, with
            # their reasons, in the log and the state.
            for handler, why in sorted(self.real.handlers.items()):
                if why is None:
                    self.registry.create(
                        RUNTIMECLASSES,
                        None,
                        {
                            "metadata": {
                                "name": handler,
                                "labels": {"rtbench.dev/simulated": "false"},
                            },
                            "handler": handler,
                        },
                    )
            return
        for name, profile in sorted(self.profiles.items()):
            rc: Obj = {
                "metadata": {"name": name, "labels": {"rtbench.dev/simulated": "true"}},
                "handler": name,
            }
            if profile.vm_overhead:
                rc["overhead"] = {
                    "podFixed": {"memory": format_mebibytes(profile.memory_overhead), "cpu": "250m"}
                }
            self.registry.create(RUNTIMECLASSES, None, rc)

    async def _supervise(self, loops: list[tuple[str, Coroutine[Any, Any, None]]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for name, coro in loops:
                    group.create_task(self._guard(name, coro), name=name)
        except* Exception as failure:
            self._problem = "; ".join(str(e) for e in failure.exceptions)

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("cluster task %r crashed", name)
            raise SimError(f"task {name!r} crashed: {type(exc).__name__}: {exc}") from exc
        if not self._stopping:
            log.error("cluster task %r returned unexpectedly", name)
            raise SimError(f"task {name!r} returned unexpectedly")

    async def stop(self) -> None:
        """Stop accepting requests, end watches and loops, kill every workload."""
        if self._stopping:
            return
        self._stopping = True
        self.store.close_watchers(WatchClosed.SHUTDOWN)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.containerd is not None:
            await self.containerd.stop()
        self.store.close_watchers(WatchClosed.SHUTDOWN, clients_only=False)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await asyncio.gather(*(k.shutdown() for k in self.kubelets.values()))
        if self._cri is not None:
            await self._cri.close()
        if self.real is not None:
            await self.real.stop()
        self.events.close()
        if self._own_state_dir and self.state_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self.state_dir, True)
        log.info("stopped")

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_failed(self) -> str:
        """Wait until a cluster loop fails; the reason (for the CLI)."""
        assert self._supervisor is not None
        await asyncio.shield(self._supervisor)
        return self._problem or "the cluster loops ended"

    # -- access -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def problem(self) -> str | None:
        return self._problem

    def write_kubeconfig(self, path: Path | str) -> Path:
        """Write a kubeconfig for this cluster (context and user ``rtbench-sim``)."""
        self.kubeconfig = write_kubeconfig(Path(path), self.url)
        return self.kubeconfig

    def containerd_socket(self, node: str) -> Path:
        """The unix socket serving ``node``'s containerd API (needs ``containerd_dir``)."""
        if self.containerd is None:
            raise SimError("the containerd API is off: set containerd_dir")
        if node not in self.containerd.sockets:
            raise NotFound(f'nodes "{node}" not found', name=node, kind="nodes")
        return self.containerd.sockets[node]

    def runtime_events(
        self, *, since: int = 0, node: str | None = None, pod_uid: str | None = None
    ) -> list[RuntimeEvent]:
        """Sandbox/container events (ns wall-clock times) after sequence ``since``."""
        return self.events.events(since=since, node=node, pod_uid=pod_uid)

    def subscribe_runtime_events(self, *, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """Retained events after ``since``, then live ones until the cluster stops."""
        return self.events.subscribe(since=since)

    def runtime_events_json(self, since: int, node: str | None) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.runtime_events(since=since, node=node)]

    def processes(self) -> list[dict[str, object]]:
        """Every running workload process: node, namespace, pod, container, pid, ip, port."""
        return [p for k in self.kubelets.values() for p in k.processes()]

    def state(self) -> dict[str, Any]:
        pods = self.store.items("Pod")
        phases: dict[str, int] = {}
        for pod in pods:
            phase = str((pod.get("status") or {}).get("phase", "Unknown"))
            phases[phase] = phases.get(phase, 0) + 1
        nodes = []
        for name, kubelet in sorted(self.kubelets.items()):
            nodes.append(
                {
                    "name": name,
                    "ip": kubelet.node_ip,
                    "podCIDR": kubelet.ips.cidr,
                    "pods": sum(1 for p in pods if (p.get("spec") or {}).get("nodeName") == name),
                    "allocatablePods": self.settings.max_pods,
                    "podsStarting": kubelet.starting,
                    "memoryUsedBytes": kubelet.memory_used(),
                }
            )
        return {
            "url": self.url,
            "resourceVersion": str(self.store.resource_version),
            "compactedResourceVersion": str(self.store.compacted),
            "historyLength": self.store.history_length,
            "historySize": self.settings.history_size,
            "watchers": self.store.watcher_count,
            "nodes": nodes,
            "pods": {"total": len(pods), "phases": phases},
            "deployments": self.store.count("Deployment"),
            "processes": self.processes(),
            "runtimeEvents": len(self.events.events()),
            "faults": self._faults.summary(),
            "problem": self._problem,
            "profiles": sorted(self.profiles),
            "pleg_period": self.settings.pleg_period,
            "nodeMode": self.node_mode,
            "realUnavailable": self.real_unavailable,
            "realContainerd": str(self.real.socket) if self.real is not None else None,
            "handlers": (
                {h: why or "available" for h, why in sorted(self.real.handlers.items())}
                if self.real is not None
                else {}
            ),
            "containerdSockets": {
                name: str(path)
                for name, path in (self.containerd.sockets if self.containerd else {}).items()
            },
            "containerdSubscribers": {
                name: runtime.subscribers
                for name, runtime in (self.containerd.runtimes if self.containerd else {}).items()
            },
        }

    # -- faults -------------------------------------------------------------------------

    def drop_watches(self) -> int:
        """Cut every open client watch connection mid-stream; how many were cut."""
        return self.store.close_watchers(WatchClosed.DROPPED)

    def expire_history(self) -> int:
        """Compact the watch history: every older resourceVersion now gets 410."""
        return self.store.compact()

    def kill_container(
        self, namespace: str, pod: str, container: str | None = None, sig: int = signal.SIGKILL
    ) -> int:
        """Send ``sig`` to a container's process (a crash, as the kubelet will see it); its pid."""
        obj = self.store.peek("Pod", namespace, pod)
        if obj is None:
            raise NotFound(f'pods "{pod}" not found', name=pod, kind="pods")
        kubelet = self.kubelets.get((obj.get("spec") or {}).get("nodeName") or "")
        run = kubelet.find(obj["metadata"]["uid"], container) if kubelet else None
        no_container = BadRequest(
            f'pod "{pod}" has no running container {container or ""}'.rstrip()
        )
        if isinstance(run, CriContainer):
            if run.pid is None or not run.running:
                raise no_container
            try:
                os.kill(run.pid, sig)
            except ProcessLookupError:
                raise no_container from None
            return run.pid
        if run is None or run.process is None or not run.process.running:
            raise no_container
        pid = run.process.pid
        run.process.signal(sig)
        return pid

    def node_meminfo(self, node: str) -> str:
        """The node's /proc/meminfo as its pods would make it look (kB, like the kernel)."""
        kubelet = self.kubelets.get(node)
        if kubelet is None:
            raise NotFound(f'nodes "{node}" not found', name=node, kind="nodes")
        total = self._machine.memory_bytes
        available = max(0, total - total // 5 - kubelet.memory_used())
        lines = [("MemTotal", total), ("MemFree", available), ("MemAvailable", available)]
        return "".join(f"{key + ':':<16}{value // 1024:>8} kB\n" for key, value in lines)

    # -- logs (podlogs.LogSource) ----------------------------------------------------------

    def log_file(self, pod: Obj, container: str, previous: bool) -> LogFile | None:
        kubelet = self.kubelets.get((pod.get("spec") or {}).get("nodeName") or "")
        run = kubelet.find(pod["metadata"]["uid"], container) if kubelet else None
        if run is None:
            return None
        index = run.instances - (2 if previous else 1)
        if index < 0:
            return None
        current = run.instances - 1
        if isinstance(run, CriContainer):
            real = run

            def real_running() -> bool:
                return real.running and real.instances - 1 == current

            return LogFile(
                run.log_path(index), real_running if not previous else lambda: False, cri=True
            )

        def running() -> bool:
            return run.process is not None and run.process.running and run.instances - 1 == current

        return LogFile(run.log_path(index), running if not previous else lambda: False)

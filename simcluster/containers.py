"""One container of a simulated pod: create, start, run, exit, restart, probe.

The runtime steps take the delays of the pod's runtime profile; the start spawns
the real workload bound to the pod's address. Failures are the real ones, with
the real reasons: a memory limit below the profile's minimum gets the process
started and then SIGKILLed as the kernel's OOM killer would (terminated
OOMKilled, exit code 137); a missing workload binary leaves the container waiting
with CreateContainerError; a process that exits on its own is restarted as the
restartPolicy says, after a CrashLoopBackOff that doubles from 10 s up to 5 min
and resets after 10 min of good running.

Container-state changes reach the API through the pod worker's ``changed()``,
which the kubelet publishes at its next PLEG relist; readiness results and the
backoff state are published at once, as the kubelet's prober and sync loop do.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .objects import Obj, parse_bytes, rfc3339
from .podstatus import ContainerView
from .podworker import RestartBackoff, readiness_loop, spec_env
from .processes import WorkloadProcess, spawn
from .runtime_events import RuntimeEventKind

if TYPE_CHECKING:
    from .kubelet import PodWorker

DEFAULT_PORT = 8080
STABLE_RUN = 600.0
"""Seconds of running after which the kubelet forgets a container's backoff."""
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_port(spec: Obj) -> int:
    """The container's first declared port, else the workload's default 8080."""
    for port in spec.get("ports") or []:
        number = port.get("containerPort") if isinstance(port, dict) else None
        if isinstance(number, int) and port.get("protocol", "TCP") == "TCP":
            return number
    return DEFAULT_PORT


def memory_limit(spec: Obj) -> int | None:
    limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        return None
    try:
        return parse_bytes(limit)
    except ValueError:
        return None


class ContainerRun(RestartBackoff):
    worker: PodWorker

    def __init__(self, worker: PodWorker, spec: Obj) -> None:
        self.worker = worker
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.port = container_port(spec)
        self.limit = memory_limit(spec)
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.restart_count = 0
        self.container_id: str | None = None
        self.started = False
        self.process: WorkloadProcess | None = None
        self.instances = 0
        self.probe_ready = False
        self.first_attempt = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._probed_instance = 0
        self._backoff = 0.0
        self._oom: asyncio.TimerHandle | None = None
        self._oom_killed = False

    # -- what the kubelet publishes -------------------------------------------------

    def view(self) -> ContainerView:
        return ContainerView(
            name=self.name,
            image=self.image,
            state=dict(self.state),
            last_state=dict(self.last_state),
            restart_count=self.restart_count,
            container_id=self.container_id,
            started=self.started,
        )

    @property
    def readiness_probe(self) -> Obj | None:
        probe = self.spec.get("readinessProbe")
        return probe if isinstance(probe, dict) else None

    def ready(self, view: ContainerView) -> bool:
        """Ready as the kubelet reports it, given the relisted view."""
        if not view.running:
            return False
        return self.readiness_probe is None or self.probe_ready

    def log_path(self, instance: int) -> Path:
        return self.worker.log_dir / self.name / f"{instance}.log"

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Create, start and supervise until the restart policy says stop."""
        try:
            while True:
                exit_code = await self._run_once()
                if exit_code is None:
                    continue  # failed before a process existed; backoff already waited
                policy = self.worker.restart_policy
                if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                    return
                await self._crash_loop_backoff()
        finally:
            self.first_attempt.set()

    async def _run_once(self) -> int | None:
        w = self.worker
        await asyncio.sleep(w.draw("container_create"))
        binary = w.kubelet.workload
        if not binary.is_file():
            self._set_waiting(
                "CreateContainerError",
                f"failed to create containerd container: workload binary {binary} not found",
            )
            self.first_attempt.set()
            await self._sleep_backoff()
            return None
        self.container_id = f"containerd://{secrets.token_hex(32)}"
        w.record(RuntimeEventKind.CONTAINER_CREATED, self)
        await asyncio.sleep(w.draw("container_start"))
        assert w.ip is not None
        try:
            self.process = spawn(
                binary, w.ip, self.port, self._env(), self.log_path(self.instances)
            )
        except OSError as exc:
            self._set_terminated(128, "StartError", f"failed to start: {exc.strerror}", None)
            self.first_attempt.set()
            return 128
        self.instances += 1
        process = self.process
        started = process.started_ns / 1e9
        self.state = {"running": {"startedAt": rfc3339(started)}}
        self.started = True
        w.record(RuntimeEventKind.CONTAINER_STARTED, self, pid=process.pid)
        self.first_attempt.set()
        w.changed()
        if self.limit is not None and self.limit < w.profile.min_memory:
            self._oom = asyncio.get_running_loop().call_later(
                w.profile.oom_kill.draw(w.kubelet.rng), self._oom_kill
            )
        code = await asyncio.shield(process.exited)
        self._on_exit(code)
        if time.time() - started >= STABLE_RUN:
            self._backoff = 0.0
        return code

    def _oom_kill(self) -> None:
        self._oom = None
        if self.process is not None and self.process.running:
            self._oom_killed = True
            self.process.signal(signal.SIGKILL)

    def _on_exit(self, code: int) -> None:
        """Record a process exit (own exit, OOM kill or termination)."""
        process = self.process
        if process is None:
            return
        self.process = None
        if self._oom is not None:
            self._oom.cancel()
            self._oom = None
        reason = "OOMKilled" if self._oom_killed else ("Completed" if code == 0 else "Error")
        self._oom_killed = False
        self.worker.record(RuntimeEventKind.CONTAINER_EXITED, self, pid=process.pid, exit_code=code)
        finished = (process.finished_ns or time.time_ns()) / 1e9
        self._set_terminated(code, reason, None, process.started_ns / 1e9, finished)
        self.stop_prober()

    def _set_terminated(
        self,
        code: int,
        reason: str,
        message: str | None,
        started: float | None,
        finished: float | None = None,
    ) -> None:
        terminated: Obj = {"exitCode": code, "reason": reason}
        if message:
            terminated["message"] = message
        end = rfc3339(finished)
        terminated["startedAt"] = rfc3339(started) if started is not None else end
        terminated["finishedAt"] = end
        if self.container_id:
            terminated["containerID"] = self.container_id
        self.state = {"terminated": terminated}
        self.started = False
        self.probe_ready = False
        self.worker.changed()

    def _set_waiting(self, reason: str, message: str) -> None:
        self.state = {"waiting": {"reason": reason, "message": message}}
        self.started = False
        self.worker.changed()

    async def _sleep_backoff(self) -> None:
        await asyncio.sleep(self._next_backoff())

    def _env(self) -> dict[str, str]:
        w = self.worker
        env = {"PATH": _PATH, "HOSTNAME": w.name, **spec_env(self.spec, w.field_refs())}
        env["LISTEN_ADDR"] = w.ip or ""
        env["PORT"] = str(self.port)
        return env

    # -- readiness ----------------------------------------------------------------

    def on_observed(self, view: ContainerView) -> None:
        """The kubelet saw this container running: start probing its readiness."""
        probe = self.readiness_probe
        if probe is None or not view.running or self.process is None:
            return
        if self._prober is not None and self._probed_instance == self.instances:
            return
        self.stop_prober()
        self._probed_instance = self.instances
        self._prober = asyncio.get_running_loop().create_task(
            self._probe_loop(probe, self.process.started_ns),
            name=f"readiness {self.worker.namespace}/{self.worker.name}/{self.name}",
        )

    async def _probe_loop(self, probe: Obj, started_ns: int) -> None:
        await readiness_loop(
            probe, self.spec, lambda: self.worker.ip, started_ns / 1e9,
            lambda: self.probe_ready, self._set_ready,
        )  # fmt: skip

    def _set_ready(self, ready: bool) -> None:
        self.probe_ready = ready
        self.worker.publish_now()

    def stop_prober(self) -> None:
        self.probe_ready = False
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None

    # -- termination ----------------------------------------------------------------

    def finish(self, code: int | None) -> None:
        """The pod is going away: record the exit of a process the kubelet stopped."""
        self.stop_prober()
        if self._oom is not None:
            self._oom.cancel()
            self._oom = None
        if code is not None:
            self._on_exit(code)

"""One benchmark run, start to finish: what ``rtctl start-run`` does and ``run-plan`` repeats.

``execute_run`` takes a preflighted ``RunRequest`` and open collector and
cluster connections, and returns a ``RunOutcome`` (the final state and the
collector's summary with per-pod times). In order:

1. register the run with the collector, measure rtctl's clock offset to it;
2. create the workload Deployment, stamping the wall clock just before the
   request and after the answer, and record both (RecordCreate: the created
   phase in the collector timebase);
3. follow the collector's progress (counts per phase, shown live) until every
   replica answered, then up to ``READY_GRACE_S`` more for Ready to be observed
   on all of them; or until every pod answered or failed; or the timeout;
4. finish the run: SUCCEEDED, FAILED (some pod failed) or TIMED_OUT;
5. unless ``keep``: delete the Deployment and wait, event-driven, until every
   pod of the run is gone, then the settle time;
6. read the summary (after teardown, so late events such as the last node
   memory samples are in), under the request's uncertainty bounds.

Cancellation (SIGINT/SIGTERM in the CLI) at any point deletes the Deployment,
finishes the run ABORTED and waits for the pods to go; a second cancellation
stops that wait (or skips it, when it arrives while the Deployment is being deleted or
the run is being finished). Then ``Interrupted`` is raised. Any other error after the run
was registered finishes it FAILED and deletes the Deployment (best effort)
before it propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from rtbench.v1 import control_pb2, events_pb2

from .bounds import NO_CHANGES, UncertaintyBounds
from .control import Collector
from .display import RunDisplay
from .errors import ClusterError, CollectorError, Interrupted, RtctlError, UsageError
from .kube import Cluster
from .summarytable import format_ns
from .workload import (
    RESERVED_LABELS,
    label_key_problem,
    label_value_problem,
    memory_problem,
    name_problem,
    namespace_problem,
    new_run_id,
    pod_labels,
    run_id_problem,
    run_selector,
    workload_deployment,
)

__all__ = ["READY_GRACE_S", "RunOutcome", "RunRequest", "execute_run", "new_run_id"]

T = TypeVar("T")

_EMPTY: Mapping[str, str] = MappingProxyType({})

READY_GRACE_S = 10.0
"""After the last first response, how long to keep following for Ready (readiness probes
run every 1 s at best), so the summary's ready row covers every pod."""
TICK_S = 1.0
"""How often the display is handed the latest counts even when nothing changed."""


@dataclass(frozen=True)
class RunRequest:
    """What to run; validated without I/O when built (raises UsageError)."""

    runtime_class: str
    """A RuntimeClass name, or ``default`` (DEFAULT_RUNTIME_CLASS): no runtimeClassName,
    the nodes' default handler."""
    variant: str
    replicas: int
    image: str
    memory: str
    """Memory limit and request of the workload container, Kubernetes quantity (16Mi)."""
    test_id: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Extra pod labels, on top of app, test_id, runtime_class, variant and the run id."""
    timeout_s: float = 300.0
    """From the create until every replica answered; beyond it the run is TIMED_OUT."""
    settle_s: float = 5.0
    """Quiet time after the pods are gone, so the next run starts on a calm node."""
    keep: bool = False
    run_id: str | None = None
    """None: ``new_run_id(runtime_class)``. Checked here like every label value, so a bad
    id is a usage error (exit 2) before anything is registered."""
    plan_id: str = ""
    repetition: int = 0
    environment: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Cluster type, versions, settings (RunSpec.environment); preflight fills it."""
    bounds: UncertaintyBounds = NO_CHANGES
    """Changes to the collector's uncertainty bounds for the summary read at the end
    (``--max-uncertainty``, rtctl/bounds.py)."""

    def __post_init__(self) -> None:
        class_problem = name_problem(self.runtime_class) or label_value_problem(self.runtime_class)
        problems = [
            f"runtime class: {class_problem}" if class_problem else None,
            namespace_problem(self.namespace),
            memory_problem(self.memory),
        ]
        for what, value in (("variant", self.variant), ("test id", self.test_id)):
            problem = label_value_problem(value)
            problems.append(f"{what}: {problem}" if problem else None)
        if self.run_id is not None:
            problem = run_id_problem(self.run_id)
            problems.append(f"run id: {problem}" if problem else None)
        for key, value in self.labels.items():
            problems.append(label_key_problem(key))
            value_problem = label_value_problem(value)
            problems.append(f"label {key}: {value_problem}" if value_problem else None)
            if key in RESERVED_LABELS:
                problems.append(f"label {key} is set by rtctl itself")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            problems.append(f"replicas must be an integer, got {self.replicas!r}")
        elif self.replicas < 1:
            problems.append(f"replicas must be at least 1, got {self.replicas}")
        if not self.image:
            problems.append("image must not be empty")
        if not self.timeout_s > 0:
            problems.append(f"timeout must be positive, got {self.timeout_s}")
        if not self.settle_s >= 0:
            problems.append(f"settle must not be negative, got {self.settle_s}")
        found = [p for p in problems if p]
        if found:
            raise UsageError("; ".join(found))

    def spec(self, run_id: str) -> control_pb2.RunSpec:
        """The RunSpec registered with the collector."""
        return control_pb2.RunSpec(
            run_id=run_id,
            test_id=self.test_id,
            runtime_class=self.runtime_class,
            variant=self.variant,
            replicas=self.replicas,
            image=self.image,
            memory_limit=self.memory,
            repetition=self.repetition,
            namespace=self.namespace,
            plan_id=self.plan_id,
            environment=dict(self.environment),
        )


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended; ``summary`` is the collector's, with per-pod times."""

    run_id: str
    state: control_pb2.RunState
    """SUCCEEDED, FAILED or TIMED_OUT (an aborted run raises Interrupted instead)."""
    summary: control_pb2.RunSummary
    message: str = ""
    create_latency_ns: int = 0
    """API latency of the Deployment create (response received - request sent)."""
    delete_latency_ns: int = 0
    """API latency of the Deployment delete; 0 when kept."""

    @property
    def succeeded(self) -> bool:
        return self.state == control_pb2.RUN_STATE_SUCCEEDED


async def _finish_anyway(step: Awaitable[T], interrupted: list[int]) -> T:
    """Await a short cleanup step to its end even if cancelled meanwhile: a second Ctrl-C
    must not leave a Deployment behind (each step has its own request deadline). Every
    cancellation absorbed is appended to ``interrupted``, so the caller can skip the
    waiting that the user asked to skip."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted.append(1)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if task.done():
                return task.result()


class _Run:
    """The state of one execute_run call, so that cleanup knows what was done."""

    def __init__(
        self, request: RunRequest, collector: Collector, cluster: Cluster, display: RunDisplay
    ) -> None:
        self.request = request
        self.collector = collector
        self.cluster = cluster
        self.display = display
        self.run_id = request.run_id or new_run_id(request.runtime_class)
        self.labels = pod_labels(
            run_id=self.run_id,
            test_id=request.test_id,
            runtime_class=request.runtime_class,
            variant=request.variant,
            extra=request.labels,
        )
        self.deployment = workload_deployment(
            run_id=self.run_id,
            namespace=request.namespace,
            replicas=request.replicas,
            image=request.image,
            memory=request.memory,
            runtime_class=request.runtime_class,
            labels=self.labels,
        )
        self.name = str(self.deployment["metadata"]["name"])
        self.registered = False
        self.finished = False
        self.create_sent = False
        self.cancels_absorbed: list[int] = []
        """Cancellations that arrived during cleanup steps that must finish anyway."""
        self.latest: control_pb2.Progress | None = None

    # -- following progress ---------------------------------------------------------------

    async def follow(self) -> tuple[control_pb2.RunState, str]:
        """Until done, failed or timed out (see the module docstring): state and message."""
        replicas = self.request.replicas
        loop = asyncio.get_running_loop()
        responded = False
        failed = 0
        try:
            async with asyncio.timeout(self.request.timeout_s) as deadline:
                stream = self.collector.watch_progress(self.run_id)
                async with contextlib.aclosing(stream):
                    async for message in stream:
                        self.latest = message
                        self.display.progress(message)
                        counts = {int(c.phase): c.count for c in message.counts}
                        answered = counts.get(events_pb2.PHASE_FIRST_RESPONSE, 0)
                        failed = counts.get(events_pb2.PHASE_FAILED, 0)
                        ready = counts.get(events_pb2.PHASE_READY, 0)
                        if failed and answered + failed >= replicas:
                            return control_pb2.RUN_STATE_FAILED, f"{failed} pod(s) failed"
                        if answered >= replicas and not responded:
                            responded = True
                            when = deadline.when()
                            grace_end = loop.time() + READY_GRACE_S
                            deadline.reschedule(grace_end if when is None else min(when, grace_end))
                        if responded and ready >= replicas:
                            break
            if not responded:
                raise CollectorError(
                    f"collector {self.collector.target} ended the progress stream of "
                    f"run {self.run_id} before it was done"
                )
        except TimeoutError:
            if not responded:
                late = f"not every replica answered within {self.request.timeout_s:g} s"
                if failed:  # the failures are the likelier cause: say so first
                    return control_pb2.RUN_STATE_FAILED, f"{failed} pod(s) failed; {late}"
                return control_pb2.RUN_STATE_TIMED_OUT, late
        if failed:
            return control_pb2.RUN_STATE_FAILED, f"{failed} pod(s) failed"
        return control_pb2.RUN_STATE_SUCCEEDED, ""

    async def tick(self) -> None:
        """Hand the display the latest counts every second, so plain output keeps going."""
        while True:
            await asyncio.sleep(TICK_S)
            if self.latest is not None:
                self.display.progress(self.latest)

    async def follow_and_show(self) -> tuple[control_pb2.RunState, str]:
        try:
            async with asyncio.TaskGroup() as group:
                ticker = group.create_task(self.tick(), name="rtctl-progress-ticker")
                follower = group.create_task(self.follow(), name="rtctl-progress")
                follower.add_done_callback(lambda _: ticker.cancel())
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        return follower.result()

    # -- teardown -------------------------------------------------------------------------

    async def delete(self) -> int:
        """Delete the Deployment; its API latency in ns (0 when it was already gone)."""
        timed = await self.cluster.delete_deployment(self.request.namespace, self.name)
        if timed is None:
            return 0
        self.display.note(
            f"Deployment {self.name} deleted (API latency {format_ns(timed.latency_ns)})"
        )
        return timed.latency_ns

    async def wait_gone(self) -> None:
        total = self.request.replicas
        self.display.stage(f"waiting until the pods of run {self.run_id} are gone")

        def remaining(left: int) -> None:
            self.display.countdown("pods gone", max(total - left, 0), max(total, left))

        try:
            async with asyncio.timeout(self.request.timeout_s):
                await self.cluster.wait_pods_gone(
                    self.request.namespace, run_selector(self.run_id), remaining
                )
        except TimeoutError:
            raise ClusterError(
                f"pods of run {self.run_id} still present {self.request.timeout_s:g} s after "
                f"the Deployment was deleted (kubectl -n {self.request.namespace} get pods "
                f"-l {run_selector(self.run_id)})"
            ) from None

    async def settle(self) -> None:
        total = float(self.request.settle_s)
        if total <= 0:
            return
        self.display.stage(f"settling for {total:g} s")
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < total:
            self.display.countdown("settle", elapsed, total)
            await asyncio.sleep(min(0.25, total - elapsed))
        self.display.countdown("settle", total, total)

    async def abort(self) -> None:
        """After a cancellation: delete, finish ABORTED, wait for the pods (cancellable).

        A further cancellation while deleting or finishing lets that step end (no
        Deployment left behind) and then skips the wait for the pods."""
        self.display.stage(f"interrupted: cleaning up run {self.run_id}")
        absorbed = self.cancels_absorbed
        with contextlib.suppress(RtctlError):
            if self.create_sent:
                await _finish_anyway(self.delete(), absorbed)
        with contextlib.suppress(RtctlError):
            if self.registered and not self.finished:
                await _finish_anyway(
                    self.collector.finish_run(
                        self.run_id, control_pb2.RUN_STATE_ABORTED, "interrupted"
                    ),
                    absorbed,
                )
        if absorbed:
            self.display.note(f"not waiting for the pods of run {self.run_id} to go")
        elif self.create_sent:
            with contextlib.suppress(RtctlError, asyncio.CancelledError):
                await self.wait_gone()

    async def fail(self, error: Exception) -> None:
        """After an error: finish FAILED and delete the Deployment, best effort."""
        with contextlib.suppress(RtctlError):
            if self.registered and not self.finished:
                await self.collector.finish_run(
                    self.run_id, control_pb2.RUN_STATE_FAILED, str(error)[:500]
                )
        with contextlib.suppress(RtctlError):
            if self.create_sent and not self.request.keep:
                await self.delete()


async def execute_run(
    request: RunRequest, collector: Collector, cluster: Cluster, display: RunDisplay
) -> RunOutcome:
    """Run ``request`` once (see the module docstring); raises CollectorError/ClusterError,
    Interrupted when cancelled (after cleaning up). A FAILED or TIMED_OUT run is returned,
    not raised: the caller decides (start-run exits 1, run-plan records it and goes on)."""
    run = _Run(request, collector, cluster, display)
    try:
        display.stage(f"registering run {run.run_id}")
        await collector.register_run(request.spec(run.run_id))
        run.registered = True
        clock = await collector.sync_clock()
        display.stage(f"creating Deployment {request.namespace}/{run.name}")
        run.create_sent = True
        timed = await cluster.create_deployment(run.deployment)
        await collector.record_create(run.run_id, timed.sent_ns, timed.received_ns, clock)
        display.note(
            f"Deployment {run.name} created: {request.replicas} x {request.runtime_class} "
            f"(API latency {format_ns(timed.latency_ns)}; clock offset to the collector "
            f"{clock.offset_ns / 1e6:+.3f} ms ± {clock.uncertainty_ns / 1e6:.3f} ms)"
        )
        display.stage(f"waiting for {request.replicas} replicas to answer")
        state, message = await run.follow_and_show()
        await collector.finish_run(run.run_id, state, message)
        run.finished = True
        delete_latency = 0
        if not request.keep:
            display.stage(f"deleting Deployment {run.name}")
            delete_latency = await run.delete()
            await run.wait_gone()
            await run.settle()
        summary = await collector.summary(run.run_id, include_pods=True, bounds=request.bounds)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        await run.abort()
        raise Interrupted(
            f"run {run.run_id} interrupted: Deployment deleted, run marked aborted"
        ) from None
    except Exception as exc:
        await run.fail(exc)
        raise
    finally:
        display.close()
    return RunOutcome(
        run_id=run.run_id,
        state=state,
        summary=summary,
        message=message,
        create_latency_ns=timed.latency_ns,
        delete_latency_ns=delete_latency,
    )

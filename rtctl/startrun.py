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

A collector that goes away (restarted, say) is ridden out at every step for up
to ``--collector-outage`` (rtctl/control.py): a note names the outage when it
starts and ends, the progress stream is opened again, and the run goes on,
with the agents resending what the collector missed. Past the limit the run
fails like any operational error (below). While following, the agents of the
run's nodes are checked every ``AGENT_CHECK_S``: a note names a node whose
agent went silent (``stale``: connected, not heard from within 3 x its
clock-sync interval), and again when it is heard from.

The run's last line is taken from the summary read after teardown, never from
the progress counts at the moment the run stopped: a pod that fails after that
moment (an OOM kill after its first answer) is counted in the summary, so the
last line counts it too, and the message stored with the run names no count.

Cancellation (SIGINT/SIGTERM in the CLI) at any point deletes the Deployment,
finishes the run ABORTED and waits for the pods to go; a second cancellation
stops that wait (or skips it, when it arrives while the Deployment is being deleted or
the run is being finished). Then ``Interrupted`` is raised, carrying the state the
collector keeps for the run: ABORTED, or the run's own result when it was already
finished (a Ctrl-C during teardown or the settle time), so run-plan counts it as
a rerun will. Any other error after the run
was registered finishes it FAILED and deletes the Deployment (best effort)
before it propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from rtbench.v1 import control_pb2, events_pb2

from .bounds import NO_CHANGES, UncertaintyBounds
from .control import Collector, describe_silence, silent_nodes
from .display import RunDisplay
from .errors import (
    ClusterError,
    CollectorError,
    CollectorUnreachable,
    Interrupted,
    RtctlError,
    UsageError,
)
from .kube import Cluster
from .runtimemode import NOT_READ, RuntimeMode
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

__all__ = [
    "READY_GRACE_S",
    "RunOutcome",
    "RunRequest",
    "execute_run",
    "new_run_id",
    "outcome_message",
]

T = TypeVar("T")

_EMPTY: Mapping[str, str] = MappingProxyType({})

_FAILED = "pods failed"
"""The run's stored message for a failure: no count, which only the summary can give."""
_TERMINAL = frozenset(
    (
        control_pb2.RUN_STATE_SUCCEEDED,
        control_pb2.RUN_STATE_FAILED,
        control_pb2.RUN_STATE_TIMED_OUT,
        control_pb2.RUN_STATE_ABORTED,
    )
)

READY_GRACE_S = 10.0
"""After the last first response, how long to keep following for Ready (readiness probes
run every 1 s at best), so the summary's ready row covers every pod."""
TICK_S = 1.0
"""How often the display is handed the latest counts even when nothing changed."""
AGENT_CHECK_S = 5.0
"""How often the run's agents are checked for silence while following: the same period as
the plain display's progress line."""
_RETRY_PAUSE_S = (0.2, 2.0)
"""First and longest pause before the progress stream is opened again in an outage."""


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
    runtime_mode: RuntimeMode = NOT_READ
    """Real or simulated runtime (RunSpec.runtime_mode); preflight fills it."""
    nodes: tuple[str, ...] = ()
    """The nodes the pods can use (preflight fills it), whose agents are watched for
    silence during the run; empty: every node with a connected agent."""
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
            runtime_mode=self.runtime_mode.value,
            runtime_mode_basis=self.runtime_mode.basis,
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
        self.state: control_pb2.RunState | None = None
        """The state the run was finished in (None until then)."""
        self.cancels_absorbed: list[int] = []
        """Cancellations that arrived during cleanup steps that must finish anyway."""
        self.latest: control_pb2.Progress | None = None

    # -- following progress ---------------------------------------------------------------

    async def follow(self) -> tuple[control_pb2.RunState, str]:
        """Until done, failed or timed out (see the module docstring): state and message.

        The message names no count: the summary read after teardown gives the final one."""
        replicas = self.request.replicas
        loop = asyncio.get_running_loop()
        responded = False
        failed = 0
        pause = _RETRY_PAUSE_S[0]
        try:
            async with asyncio.timeout(self.request.timeout_s) as deadline:
                while True:
                    try:
                        progress = contextlib.aclosing(self._progress())
                        async with progress as messages:
                            async for message in messages:
                                self.latest = message
                                self.display.progress(message)
                                counts = {int(c.phase): c.count for c in message.counts}
                                answered = counts.get(events_pb2.PHASE_FIRST_RESPONSE, 0)
                                failed = counts.get(events_pb2.PHASE_FAILED, 0)
                                ready = counts.get(events_pb2.PHASE_READY, 0)
                                if failed and answered + failed >= replicas:
                                    return control_pb2.RUN_STATE_FAILED, _FAILED
                                if answered >= replicas and not responded:
                                    responded = True
                                    when = deadline.when()
                                    grace_end = loop.time() + READY_GRACE_S
                                    deadline.reschedule(
                                        grace_end if when is None else min(when, grace_end)
                                    )
                                if responded and ready >= replicas:
                                    break
                        break
                    except CollectorUnreachable as exc:
                        self.collector.unreachable("WatchProgress", exc)  # raises past the limit
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, _RETRY_PAUSE_S[1])
            if not responded:
                raise CollectorError(
                    f"collector {self.collector.target} ended the progress stream of "
                    f"run {self.run_id} before it was done"
                )
        except TimeoutError:
            if not responded:
                late = f"not every replica answered within {self.request.timeout_s:g} s"
                if failed:  # the failures are the likelier cause: say so first
                    return control_pb2.RUN_STATE_FAILED, f"{_FAILED}; {late}"
                return control_pb2.RUN_STATE_TIMED_OUT, late
        if failed:
            return control_pb2.RUN_STATE_FAILED, _FAILED
        return control_pb2.RUN_STATE_SUCCEEDED, ""

    async def _progress(self) -> AsyncGenerator[control_pb2.Progress, None]:
        """One subscription to the run's progress. A stream that ends while the run is
        still going (a collector stopping on SIGTERM closes it cleanly) is an outage too:
        CollectorUnreachable, so that ``follow`` subscribes again."""
        stream = self.collector.watch_progress(self.run_id)
        state = control_pb2.RUN_STATE_UNSPECIFIED
        async with contextlib.aclosing(stream):
            async for message in stream:
                self.collector.reachable()
                state = message.state
                yield message
        if state not in _TERMINAL:
            raise CollectorUnreachable(
                f"collector {self.collector.target} closed the progress stream of run {self.run_id}"
            )

    async def tick(self) -> None:
        """Hand the display the latest counts every second, so plain output keeps going;
        every AGENT_CHECK_S, name the run's nodes whose agents went silent (and came back)."""
        silent: set[str] = set()
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            if self.latest is not None:
                self.display.progress(self.latest)
            if loop.time() - checked >= AGENT_CHECK_S and self.collector.down_for is None:
                checked = loop.time()
                silent = await self._check_agents(silent)

    async def _check_agents(self, silent: set[str]) -> set[str]:
        """Notes for nodes whose agents went silent or came back; the silent ones now."""
        try:
            agents = await self.collector.agents()
        except CollectorError:
            return silent  # an outage: follow() says so; the check waits for the next tick
        nodes = self.request.nodes or sorted({a.node for a in agents if a.connected})
        now = set(silent_nodes(agents, nodes))
        for node in sorted(now - silent):
            self.display.note(
                f"agent on {describe_silence(node, agents)} went silent: events of the "
                f"pods on {node} are not arriving (is the agent stopped or hung?)"
            )
        for node in sorted(silent - now):
            self.display.note(f"agent on {node} heard from again")
        return now

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
    collector.on_outage = display.note
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
        state, stored = await run.follow_and_show()
        await collector.finish_run(run.run_id, state, stored)
        run.finished = True
        run.state = state
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
        if run.state is not None:
            state_text = control_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
            raise Interrupted(
                f"run {run.run_id} interrupted after it finished {state_text}: Deployment deleted",
                state=run.state,
            ) from None
        raise Interrupted(
            f"run {run.run_id} interrupted: Deployment deleted, run marked aborted",
            state=control_pb2.RUN_STATE_ABORTED if run.registered else None,
        ) from None
    except Exception as exc:
        await run.fail(exc)
        raise
    finally:
        collector.on_outage = lambda text: None
        display.close()
    return RunOutcome(
        run_id=run.run_id,
        state=state,
        summary=summary,
        message=outcome_message(state, stored, summary),
        create_latency_ns=timed.latency_ns,
        delete_latency_ns=delete_latency,
    )


def outcome_message(
    state: control_pb2.RunState, stored: str, summary: control_pb2.RunSummary
) -> str:
    """The run's last line: for a failure, the summary's count of failed pods (the one
    its table shows), whatever the progress counts were when the run stopped."""
    if state != control_pb2.RUN_STATE_FAILED or not stored.startswith(_FAILED):
        return stored
    return f"{summary.failed_pods} pod(s) failed{stored.removeprefix(_FAILED)}"

"""Running a whole plan: the matrix, its seeded order, resumption, and the runs one by one.

The plan (``rtctl.plan``) is expanded into runs, each with a stable ``RunKey``
(runtime class, variant, replica count, repetition) and a run id derived from
the plan id and the key alone, so a rerun of the same plan names the same runs.

Order: slow drift in the machine under test (temperature, page cache, the
snapshotter's disk, a neighbour's cron job) must not line up with one runtime.
The runs are therefore shuffled with a seeded random generator, in blocks: every
configuration runs once (in a random order) before any runs a second time, so
each repetition samples the whole period evenly (a randomized complete block
design). The same seed gives the same order; the seed is printed.

Resumption: before starting, the collector is asked for the plan's runs
(``ListRuns(plan_id)``). A key is done when it has a SUCCEEDED run, and also
when it has a FAILED or TIMED_OUT one unless ``retry_failed`` (a failure is a
result too: it is reported, not hidden by a retry). ABORTED runs, and runs left
REGISTERED or RUNNING by an rtctl that died, are redone under the next attempt
id (``…-a2``), because the collector keeps one record per run id. A finished run
whose image, memory, test id or namespace differ from what the plan says now is
refused: resuming would mix two experiments under one plan id. ``standing_run``
is that rule, and ``rtctl report --plan-id`` uses it too, so a report pools the
same run per key as the plan's final comparison.

Errors: a run that fails operationally (a Kubernetes or collector call fails,
e.g. a 5xx) is a failed result, not the end of the plan: execute_run has
already finished it FAILED with the message where the collector answers, the
plan records it and goes on with the next run. A preflight refusal before a
later run (a node went away, leftover pods) is waited out once
(``PREFLIGHT_RETRY_S``) and then stops the plan; so does Ctrl-C. Whatever stops
the plan early, a rerun of the same command resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from rtbench.clock import mono_ns
from rtbench.v1 import control_pb2

from .bounds import NO_CHANGES, UncertaintyBounds
from .control import Collector
from .display import RunDisplay
from .errors import (
    ClusterError,
    CollectorError,
    Interrupted,
    PreflightError,
    RtctlError,
    UsageError,
)
from .kube import Cluster
from .plan import Plan, Variant
from .preflight import PreflightReport, preflight
from .startrun import RunOutcome, RunRequest, execute_run

__all__ = [
    "PlanDisplay",
    "PlanOutcome",
    "PlannedRun",
    "Resumption",
    "RunKey",
    "execute_plan",
    "matrix",
    "ordered",
    "request_for",
    "resume",
    "run_id",
    "standing_run",
]

_ID_MAX = 63 - len("rtbench-")
"""Run ids are label values (at most 63) and name the Deployment ``rtbench-<run id>``
(rtctl.workload.deployment_name), which must not be cut short: attempts would collide."""

FINISHED_FAILED = (control_pb2.RUN_STATE_FAILED, control_pb2.RUN_STATE_TIMED_OUT)

PREFLIGHT_RETRY_S = 10.0
"""How long a preflight refusal between runs is waited out before one retry: long enough
for the previous run's last pods to go or a node to report ready again, short enough that
a real problem stops the plan promptly (a rerun resumes it)."""


@dataclass(frozen=True, order=True)
class RunKey:
    """What makes a run of a plan that run: stable across reruns of the plan."""

    runtime_class: str
    variant: str
    replicas: int
    repetition: int
    """1-based, as the collector records it (start-run's single runs have 0)."""

    def __str__(self) -> str:
        what = self.runtime_class
        if self.variant != self.runtime_class:
            what += f"/{self.variant}"
        return f"{what} x{self.replicas} #{self.repetition}"

    @classmethod
    def of(cls, spec: control_pb2.RunSpec) -> RunKey:
        return cls(spec.runtime_class, spec.variant, spec.replicas, spec.repetition)


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the matrix: its key and the variant (image, memory) it runs."""

    key: RunKey
    variant: Variant


def run_id(plan_id: str, key: RunKey, attempt: int = 1) -> str:
    """``<plan>-<class>[-<variant>]-n<replicas>-r<rep>-<hash>[-a<attempt>]``, at most 55.

    The hash of the exact key keeps ids distinct when names with dashes would
    otherwise read alike, and when the readable part has to be shortened.
    """
    exact = "\0".join((plan_id, key.runtime_class, key.variant, str(key.replicas)))
    digest = hashlib.sha256(f"{exact}\0{key.repetition}".encode()).hexdigest()[:6]
    parts = [plan_id, key.runtime_class]
    if key.variant != key.runtime_class:
        parts.append(key.variant)
    parts += [f"n{key.replicas}", f"r{key.repetition}"]
    readable = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower())
    suffix = f"-{digest}" + (f"-a{attempt}" if attempt > 1 else "")
    return readable[: _ID_MAX - len(suffix)].strip("-") + suffix


def matrix(plan: Plan) -> list[PlannedRun]:
    """Every run of the plan, in the plan's own order (variants, replicas, repetitions)."""
    return [
        PlannedRun(RunKey(variant.runtime_class, variant.name, replicas, repetition), variant)
        for repetition in range(1, plan.repetitions + 1)
        for variant in plan.variants
        for replicas in plan.replicas
    ]


def ordered(plan: Plan, seed: int) -> list[PlannedRun]:
    """The plan's runs in seeded random order, one block per repetition (see module doc)."""
    rng = random.Random(seed)
    runs: list[PlannedRun] = []
    cells = matrix(plan)
    per_block = len(plan.variants) * len(plan.replicas)
    for start in range(0, len(cells), per_block):
        block = cells[start : start + per_block]
        rng.shuffle(block)
        runs.extend(block)
    return runs


@dataclass
class Resumption:
    """What the collector already holds for the plan, and what is left to do."""

    done: dict[RunKey, control_pb2.RunInfo] = field(default_factory=dict)
    """Keys that count as finished: their SUCCEEDED (or FAILED/TIMED_OUT) run."""
    attempts: dict[RunKey, int] = field(default_factory=dict)
    """The attempt number the next run of a key gets (1 when it never ran)."""
    redone: dict[RunKey, list[control_pb2.RunInfo]] = field(default_factory=dict)
    """Keys that ran before without a result that counts (aborted, left running, retried)."""
    foreign: int = 0
    """Runs under the plan id whose key is not in the plan (it shrank): left alone."""
    retry_failed: bool = False
    """Whether FAILED and TIMED_OUT keys are run again rather than counted as done."""

    def todo(self, runs: Sequence[PlannedRun]) -> list[PlannedRun]:
        return [run for run in runs if run.key not in self.done]


def resume(
    plan: Plan, runs: Sequence[PlannedRun], known: Iterable[control_pb2.RunInfo], retry_failed: bool
) -> Resumption:
    """Sorts the collector's runs of the plan into done and to-do (see the module doc)."""
    keys = {run.key: run for run in runs}
    history: dict[RunKey, list[control_pb2.RunInfo]] = defaultdict(list)
    ids: set[str] = set()
    result = Resumption(retry_failed=retry_failed)
    for info in known:
        ids.add(info.spec.run_id)
        key = RunKey.of(info.spec)
        if key in keys:
            history[key].append(info)
        else:
            result.foreign += 1
    mismatches: list[str] = []
    for key, planned in keys.items():
        infos = history.get(key, [])
        final = standing_run(infos, retry_failed)
        if final is not None:
            result.done[key] = final
            mismatches += _differences(plan, planned, final)
        elif infos:
            result.redone[key] = infos
        attempt = 1
        while run_id(plan.plan_id, key, attempt) in ids:
            attempt += 1
        result.attempts[key] = attempt
    if mismatches:
        shown = "\n".join(f"  - {line}" for line in mismatches[:10])
        more = f"\n  (and {len(mismatches) - 10} more)" if len(mismatches) > 10 else ""
        raise UsageError(
            f"plan {plan.plan_id!r} has finished runs in the collector that differ from "
            f"{plan.source}:\n{shown}{more}\nresuming would mix two experiments under one plan "
            "id: give the plan a new id (the 'plan:' key) or restore the file"
        )
    return result


def standing_run(
    infos: Sequence[control_pb2.RunInfo], retry_failed: bool
) -> control_pb2.RunInfo | None:
    """The run that stands for one key among its attempts (in registration order): the
    SUCCEEDED one, else (unless ``retry_failed``) the last FAILED or TIMED_OUT; None when
    no attempt counts."""
    for info in infos:
        if info.state == control_pb2.RUN_STATE_SUCCEEDED:
            return info
    if not retry_failed:
        for info in reversed(infos):
            if info.state in FINISHED_FAILED:
                return info
    return None


def _counts_as_done(state: int, retry_failed: bool) -> bool:
    """Whether a run finished in ``state`` stands for its key (``standing_run``'s rule)."""
    if state == control_pb2.RUN_STATE_SUCCEEDED:
        return True
    return not retry_failed and state in FINISHED_FAILED


def _differences(plan: Plan, planned: PlannedRun, info: control_pb2.RunInfo) -> list[str]:
    spec = info.spec
    wanted = (
        ("image", spec.image, planned.variant.image),
        ("memory", spec.memory_limit, planned.variant.memory),
        ("test_id", spec.test_id, plan.test_id),
        ("namespace", spec.namespace, plan.namespace),
    )
    return [
        f"run {spec.run_id} ({planned.key}) used {name} {had!r}, the plan now says {now!r}"
        for name, had, now in wanted
        if had != now
    ]


# -- running it ----------------------------------------------------------------------------


class PlanDisplay(Protocol):
    """What a plan shows while it goes; ``run_starting`` hands back the run's own display."""

    def planned(
        self, plan: Plan, seed: int, order: Sequence[PlannedRun], state: Resumption
    ) -> None:
        """Once, before the first run: the order's seed and what resumption found."""

    def note(self, text: str) -> None:
        """A fact worth its own line (a preflight warning)."""

    def run_starting(
        self, position: int, total: int, run: PlannedRun, run_id: str, eta_s: float | None
    ) -> RunDisplay:
        """Run ``position`` of ``total`` (counting the skipped ones) begins."""

    def run_finished(self, run: PlannedRun, outcome: RunOutcome, seconds: float) -> None:
        """The run is over (any final state) and torn down."""

    def run_errored(
        self,
        run: PlannedRun,
        run_id: str,
        error: RtctlError,
        seconds: float,
        state: control_pb2.RunState | None,
    ) -> None:
        """The run ended on an operational error and the plan goes on. ``state``: what the
        collector now holds for it (FAILED, or SUCCEEDED when only the teardown failed);
        None when the run was never registered (a rerun runs it)."""


@dataclass(frozen=True)
class PlanOutcome:
    """Every key of the plan with the run that stands for it, in the order they ran."""

    plan: Plan
    seed: int
    results: tuple[tuple[PlannedRun, str, control_pb2.RunState], ...]
    """(run, run id, final state) for all keys: the skipped ones first, then those run now."""
    skipped: int

    @property
    def failed(self) -> list[tuple[PlannedRun, str, control_pb2.RunState]]:
        return [r for r in self.results if r[2] != control_pb2.RUN_STATE_SUCCEEDED]

    @property
    def succeeded(self) -> bool:
        return not self.failed

    @property
    def run_ids(self) -> list[str]:
        return [result[1] for result in self.results]


def request_for(plan: Plan, run: PlannedRun, attempt: int) -> RunRequest:
    """The start-run request of one cell, registered under the plan id and repetition."""
    return RunRequest(
        runtime_class=run.key.runtime_class,
        variant=run.key.variant,
        replicas=run.key.replicas,
        image=run.variant.image,
        memory=run.variant.memory,
        test_id=plan.test_id,
        namespace=plan.namespace,
        labels=plan.labels,
        timeout_s=plan.timeout_s,
        settle_s=plan.settle_s,
        run_id=run_id(plan.plan_id, run.key, attempt),
        plan_id=plan.plan_id,
        repetition=run.key.repetition,
    )


async def execute_plan(
    plan: Plan,
    collector: Collector,
    cluster: Cluster,
    display: PlanDisplay,
    *,
    seed: int | None = None,
    retry_failed: bool = False,
    preflight_retry_s: float = PREFLIGHT_RETRY_S,
    bounds: UncertaintyBounds = NO_CHANGES,
) -> PlanOutcome:
    """Runs what is left of ``plan`` one run after another (see the module docstring).

    Raises PreflightError (exit 2) before the first run when any runtime class or the
    largest replica count cannot run, or when a later run's preflight still refuses
    after one wait of ``preflight_retry_s``; Interrupted (exit 130) after the current
    run was aborted and cleaned up. A rerun then resumes. Failed runs, operational
    errors of one run included, are recorded, not raised. Each run's summary is read
    under ``bounds`` (rtctl/bounds.py).
    """
    seed = plan.seed if seed is None else seed
    order = ordered(plan, seed)
    state = resume(plan, order, await collector.runs(plan_id=plan.plan_id), retry_failed)
    display.planned(plan, seed, order, state)
    results = [
        (run, state.done[run.key].spec.run_id, state.done[run.key].state)
        for run in order
        if run.key in state.done
    ]
    todo = state.todo(order)
    if todo:
        await _preflight_plan(plan, todo, collector, cluster)
    durations: list[float] = []
    shown: set[str] = set()
    for index, run in enumerate(todo):
        request = request_for(plan, run, state.attempts[run.key])
        assert request.run_id is not None
        position = len(results) + 1
        eta = statistics.fmean(durations) * (len(todo) - index) if durations else None
        run_display: RunDisplay | None = None
        started = mono_ns()
        try:
            report = await _preflight_run(request, collector, cluster, display, preflight_retry_s)
            for warning in report.warnings:
                if warning not in shown:
                    shown.add(warning)
                    display.note(warning)
            run_display = display.run_starting(position, len(order), run, request.run_id, eta)
            outcome = await execute_run(
                replace(
                    request,
                    environment=report.environment,
                    runtime_mode=report.runtime_mode,
                    nodes=report.nodes,
                    bounds=bounds,
                ),
                collector,
                cluster,
                run_display,
            )
        except (Interrupted, asyncio.CancelledError) as exc:
            # A run interrupted after it was finished (its teardown or settle time) keeps
            # its result, and a rerun counts it done by standing_run's rule: so here.
            kept = exc.state if isinstance(exc, Interrupted) else None
            done = len(results) + (kept is not None and _counts_as_done(kept, retry_failed))
            raise Interrupted(
                f"plan {plan.plan_id} interrupted at run {position} of {len(order)} ({run.key}):"
                f" {done} runs are done; run the same command again to resume"
            ) from exc
        except (ClusterError, CollectorError) as exc:
            if run_display is not None:
                run_display.close()
                run_display = None
            recorded = await _record_failure(collector, request.run_id, exc)
            durations.append((mono_ns() - started) / 1e9)
            results.append((run, request.run_id, recorded or control_pb2.RUN_STATE_FAILED))
            display.run_errored(run, request.run_id, exc, durations[-1], recorded)
            continue
        finally:
            if run_display is not None:
                run_display.close()
        durations.append((mono_ns() - started) / 1e9)
        results.append((run, outcome.run_id, outcome.state))
        display.run_finished(run, outcome, durations[-1])
    return PlanOutcome(plan, seed, tuple(results), len(state.done))


async def _preflight_run(
    request: RunRequest,
    collector: Collector,
    cluster: Cluster,
    display: PlanDisplay,
    retry_s: float,
) -> PreflightReport:
    """One run's preflight; a refusal is waited out once, then raised."""
    try:
        return await preflight(request, collector, cluster)
    except PreflightError as exc:
        display.note(
            f"preflight refused run {request.run_id} ({'; '.join(exc.problems)}):"
            f" trying once more in {retry_s:g} s"
        )
    await asyncio.sleep(retry_s)
    return await preflight(request, collector, cluster)


async def _record_failure(
    collector: Collector, run_id: str, error: RtctlError
) -> control_pb2.RunState | None:
    """The state the collector holds for a run that raised ``error``; a run left
    unfinished is finished FAILED with the message. None when the collector does not know
    the run (never registered, or the collector is down)."""
    try:
        summary = await collector.summary(run_id)
    except CollectorError:
        return None
    if summary.state in (control_pb2.RUN_STATE_REGISTERED, control_pb2.RUN_STATE_RUNNING):
        with contextlib.suppress(CollectorError):
            await collector.finish_run(run_id, control_pb2.RUN_STATE_FAILED, str(error)[:500])
        return control_pb2.RUN_STATE_FAILED
    return summary.state


async def _preflight_plan(
    plan: Plan, todo: Sequence[PlannedRun], collector: Collector, cluster: Cluster
) -> None:
    """Every runtime class left, at the largest replica count left, before the first run:
    a missing RuntimeClass should stop the plan now, not after hours of runs."""
    largest: dict[str, PlannedRun] = {}
    for run in todo:
        kept = largest.get(run.key.runtime_class)
        if kept is None or run.key.replicas > kept.key.replicas:
            largest[run.key.runtime_class] = run
    problems: list[str] = []
    warnings: list[str] = []
    for run in largest.values():
        try:
            await preflight(request_for(plan, run, 1), collector, cluster)
        except PreflightError as exc:
            problems += [p for p in exc.problems if p not in problems]
            warnings += [w for w in exc.warnings if w not in warnings]
    if problems:
        raise PreflightError(problems, warnings)

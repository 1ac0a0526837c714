"""What ``rtctl report`` says about a set of runs, as a plain dataclass tree.

The collector summarises one run at a time; a study needs more: the runs of one
runtime pooled (a runtime, a variant and a replica count, repeated), each
runtime set against a baseline runtime with an interval that says how sure the
ratio is, the spread between repetitions, and the environments the runs were
taken in, because comparing across environments without saying so is how
benchmark folklore is made. ``build_report`` computes all of it from the runs'
summaries (``GetRunSummary(include_pods=True)``) and nothing else, so the
console tables (rtctl/reporttables.py), the JSON, the plots and the HTML page
all show the same numbers.

- Per run: the collector's own phase statistics, failures, memory per pod,
  clocks, and every pod's phase times (ns, with source and uncertainty).
- Per group (runtime class + variant + replicas): nearest-rank p50/p90/p99/max
  per phase over all pods of all the group's runs, the uncertainties of those
  pods' events, failures summed, memory per pod as the mean of the runs that
  measured one (a negative mean is shown "below resolution", as for a run),
  and per-run p50 first_response and all-responded across the repetitions.
- Per group, pods measured / pods expected: pods whose first_response counts
  (see below) against the replicas the runs asked for, so a group whose
  slowest pods never answered, or answered with a bracket too wide to be a
  measurement, does not pass for a fast one unnoticed.
- Against the baseline (the group of the baseline runtime with the same replica
  count): pN(group) / pN(baseline) per phase with its bootstrap interval
  (rtctl/stats.py; two-stage, runs then pods, for a group of several runs),
  flagged when the two groups' runs were not all taken in one environment.
- Which pod phases count: the collector flags each pod phase whose
  uncertainty exceeds the phase's bound (``--max-uncertainty``,
  rtctl/bounds.py) or that is out of order with the pod's other phases
  (collector/screening.py), and leaves it out of its statistics. The pooled
  percentiles, the ratios, the CDF and pods measured skip exactly the pod
  phases the collector skipped (each ``PodPhase`` carries the flags); every
  phase row says how many pods reached it, how many count, and why the rest
  do not, with the bound beside it, and each run names its out-of-order pods.
  A summary from a collector older than the bounds (``bounds_applied``
  false) has no flags: rtctl then applies the bounds it asked for to that
  run's pod phases itself (and recomputes the run's phase rows and
  all-responded time from its pods), notes that the collector's own per-run
  console table counts every event and that its phases were not checked for
  order, and never shows it as checked. A run whose collector applied other
  bounds than asked is noted.

- Real or simulated: every run carries the runtime mode preflight read from the
  cluster (rtctl/runtimemode.py; ``unknown`` for a run from an older rtctl), every
  runtime group the mode of its runs (``mixed`` when they differ, noted), and a
  ratio between a real and a simulated group (or an unknown one) is flagged, so a
  simulated figure never passes for a measurement of a real runtime.

Phases are shown in lifecycle order (the Phase enum's order), and only those
that some pod reached: sandbox and container phases appear when the runs have
containerd events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from rtbench.protocol import DEFAULT_MAX_UNCERTAINTY_NS
from rtbench.v1 import control_pb2, events_pb2

from . import display
from .bounds import bounds_text
from .display import phase_name
from .errors import UsageError
from .runtimemode import UNKNOWN, mode_of
from .stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Distribution,
    RatioInterval,
    Spread,
    bootstrap_ratio_runs,
)
from .summarytable import source_name, state_name

__all__ = [
    "LIFECYCLE",
    "Comparison",
    "Environment",
    "GroupKey",
    "GroupReport",
    "OutOfOrder",
    "PhaseRow",
    "PodPhase",
    "PodTimes",
    "Report",
    "RunReport",
    "build_report",
    "phase_name",
    "source_name",
    "state_name",
]

LIFECYCLE = tuple(p for p in display.LIFECYCLE if p != events_pb2.PHASE_CREATED)
"""The start-up phases a latency is reported for, in lifecycle order (created is the
reference point itself; teardown and failure phases are not start-up latencies)."""


@dataclass(frozen=True, order=True)
class GroupKey:
    """What makes runs comparable repetitions of each other."""

    runtime_class: str
    variant: str
    replicas: int

    @property
    def runtime(self) -> str:
        """``runc``, or ``urunc/unikraft-qemu`` when the variant is not the runtime's name."""
        if self.variant in ("", self.runtime_class):
            return self.runtime_class
        return f"{self.runtime_class}/{self.variant}"

    @property
    def label(self) -> str:
        return f"{self.runtime} x{self.replicas}"


@dataclass(frozen=True)
class PhaseRow:
    """Latency (from the run's created time) of one phase over the pods it counts, how
    uncertain their events are, and how many pods reached it but are left out."""

    phase: str
    latency: Distribution
    """Over the counted pods (``latency.count`` of them); all 0 when none counts."""
    p50_uncertainty_ns: int
    max_uncertainty_ns: int
    reached: int
    """Pods that reached the phase: counted + out_of_order + over_bound."""
    out_of_order: int = 0
    over_bound: int = 0
    """Left out (and in order) because their uncertainty exceeds ``bound_ns``."""
    bound_ns: int | None = None
    """The phase's uncertainty bound; None: no bound, or none applied (an old collector)."""

    @property
    def count(self) -> int:
        return self.latency.count


@dataclass(frozen=True)
class PodPhase:
    phase: str
    source: str
    time_ns: int
    """Collector timebase."""
    latency_ns: int
    uncertainty_ns: int
    over_bound: bool = False
    out_of_order: bool = False

    @property
    def counted(self) -> bool:
        """Whether the phase's statistics count this pod (within its bound, in order)."""
        return not (self.over_bound or self.out_of_order)


@dataclass(frozen=True)
class OutOfOrder:
    """A pod's phase seen ``early_by_ns`` before a phase it must follow (left out)."""

    ordinal: int
    pod: str
    phase: str
    must_follow: str
    early_by_ns: int
    beyond_ns: int
    """How much of early_by_ns is beyond both events' uncertainties."""


@dataclass(frozen=True)
class PodTimes:
    ordinal: int
    name: str
    uid: str
    node: str
    phases: tuple[PodPhase, ...]

    def latency(self, phase: str) -> int | None:
        return next((p.latency_ns for p in self.phases if p.phase == phase), None)

    def counts(self, phase: str) -> bool:
        """Whether the pod reached ``phase`` and that phase's statistics count it."""
        return any(p.phase == phase and p.counted for p in self.phases)


@dataclass(frozen=True)
class RunReport:
    run_id: str
    key: GroupKey
    test_id: str
    plan_id: str
    repetition: int
    image: str
    memory_limit: str
    state: str
    message: str
    created_ns: int
    finished_ns: int
    all_responded_ns: int
    failed_pods: int
    failures: tuple[tuple[str, int], ...]
    memory_per_pod_bytes: float
    phases: tuple[PhaseRow, ...]
    """The collector's numbers for this run, every phase it reported."""
    clocks: tuple[tuple[str, str, int, int], ...]
    """(agent id, node, offset ns, uncertainty ns; -1 unknown) per agent of the run."""
    rtctl_clock: tuple[int, int]
    environment: Mapping[str, str]
    pods: tuple[PodTimes, ...]
    bounds_applied: bool
    """The collector applied the bounds and the order check (False: an older collector)."""
    bounds: Mapping[str, int]
    """The bounds the collector applied (phase -> ns); empty when it applied none."""
    out_of_order: tuple[OutOfOrder, ...]
    mode: str
    """``real``, ``simulated`` or ``unknown`` (rtctl/runtimemode.py)."""
    mode_basis: str
    """What the mode was read from."""
    summary: control_pb2.RunSummary = field(repr=False, compare=False)
    """The summary itself, for CORE's per-run console table."""

    def phase(self, name: str) -> PhaseRow | None:
        return next((row for row in self.phases if row.phase == name), None)


@dataclass(frozen=True)
class GroupReport:
    key: GroupKey
    run_ids: tuple[str, ...]
    pods: int
    measured: int
    """Pods with a counted first_response (in runs with a created time): what the
    latencies rest on."""
    expected: int
    """Replicas the group's runs asked for; ``measured < expected`` means pods never answered."""
    phases: tuple[PhaseRow, ...]
    """Over all pods of all the group's runs that have a created time."""
    failed_pods: int
    failures: tuple[tuple[str, int], ...]
    memory_per_pod_bytes: float
    """Mean over the runs that measured it; 0 when none did."""
    first_response_p50: Spread
    """The runs' own p50 first_response, across repetitions."""
    all_responded: Spread
    """The runs' time until every replica answered, across repetitions (runs where all did)."""
    environments: int
    mode: str
    """The runs' runtime mode: ``real``, ``simulated``, ``unknown``, or ``mixed``."""

    def phase(self, name: str) -> PhaseRow | None:
        return next((row for row in self.phases if row.phase == name), None)


@dataclass(frozen=True)
class Comparison:
    group: GroupKey
    baseline: GroupKey
    phase: str
    interval: RatioInterval | None
    """None when either group lacks the phase or the baseline's latency is 0."""
    across_environments: bool
    across_modes: bool = False
    """The group and its baseline are not both real or both simulated (or a mode is
    unknown or mixed): the ratio sets a simulation against a measurement."""


@dataclass(frozen=True)
class Environment:
    """One distinct RunSpec.environment and the runs taken in it."""

    values: Mapping[str, str]
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    runs: tuple[RunReport, ...]
    groups: tuple[GroupReport, ...]
    baseline: str
    """The baseline runtime (``runc`` or ``runtime/variant``)."""
    comparisons: tuple[Comparison, ...]
    environments: tuple[Environment, ...]
    differing_keys: tuple[str, ...]
    """Environment keys whose values are not the same in every run."""
    resamples: int
    seed: int
    confidence: float
    percent: int
    notes: tuple[str, ...]
    bounds: Mapping[str, int]
    """The uncertainty bounds asked for (phase -> ns), the pooled statistics' own."""

    @property
    def bounds_text(self) -> str:
        """``first_response ≤ 10 ms; other phases unbounded``."""
        return bounds_text(self.bounds)

    @property
    def out_of_order(self) -> tuple[tuple[RunReport, OutOfOrder], ...]:
        """Every out-of-order pod phase of the report, run by run."""
        return tuple((run, v) for run in self.runs for v in run.out_of_order)

    @property
    def modes(self) -> dict[str, str]:
        """Runtime label (``runc x20``) -> mode, in the report's order."""
        return {g.key.label: g.mode for g in self.groups}

    @property
    def mode(self) -> str:
        """The whole report's mode: ``real`` or ``simulated`` when every runtime is,
        ``unknown`` when every one is unknown, else ``mixed``."""
        found = {g.mode for g in self.groups}
        return found.pop() if len(found) == 1 else "mixed"

    def comparison(self, group: GroupKey, phase: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.group == group and c.phase == phase), None)


def build_report(
    summaries: Sequence[control_pb2.RunSummary],
    *,
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    percent: int = 50,
    notes: Sequence[str] = (),
    bounds: Mapping[int, int] | None = None,
) -> Report:
    """The report on these runs; ``baseline`` defaults to runc when present.

    ``notes`` are the caller's remarks to keep with the report (e.g. runs left out).
    ``bounds`` (phase -> ns, ``UncertaintyBounds.effective``) are the bounds the
    summaries were asked for; None: the defaults. rtctl applies them itself to a run
    whose collector applied none.

    Raises UsageError when there are no runs or the baseline ran in none of them.
    """
    if not summaries:
        raise UsageError("no runs to report on")
    asked = dict(DEFAULT_MAX_UNCERTAINTY_NS) if bounds is None else dict(bounds)
    named = {phase_name(p): ns for p, ns in sorted(asked.items())}
    made = [_run(s, named) for s in summaries]
    made = [r if r.bounds_applied or not r.pods else _bounded_by_rtctl(r, named) for r in made]
    runs = tuple(sorted(made, key=lambda r: (r.key, r.repetition, r.run_id)))
    notes = list(notes)
    _bound_notes(runs, named, notes)
    by_key: dict[GroupKey, list[RunReport]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
        if run.created_ns == 0:
            notes.append(
                f"run {run.run_id} has no recorded create time: its latencies are left out"
            )
    groups = tuple(_group(key, members, named) for key, members in sorted(by_key.items()))
    chosen = _baseline(groups, baseline, notes)
    # The baseline first, then the others by name: every table and figure follows this order.
    groups = tuple(sorted(groups, key=lambda g: (g.key.runtime != chosen, g.key)))
    runs = tuple(
        sorted(runs, key=lambda r: (r.key.runtime != chosen, r.key, r.repetition, r.run_id))
    )
    env_of = {run.run_id: dict(run.environment) for run in runs}
    comparisons: list[Comparison] = []
    for group in groups:
        base = _baseline_group(groups, chosen, group.key.replicas)
        if base is group:
            continue
        if base is None:
            notes.append(f"{group.key.label}: no {chosen} run with {group.key.replicas} replicas")
            continue
        envs = {_frozen(env_of[r]) for r in (*group.run_ids, *base.run_ids)}
        across_modes = group.mode != base.mode or group.mode in (UNKNOWN, "mixed")
        for row in group.phases:
            base_row = base.phase(row.phase)
            interval = None
            if base_row is not None:
                interval = bootstrap_ratio_runs(
                    _latencies(by_key[group.key], row.phase),
                    _latencies(by_key[base.key], row.phase),
                    percent=percent,
                    resamples=resamples,
                    confidence=confidence,
                    seed=f"{seed}:{group.key.label}:{row.phase}",
                )
            comparisons.append(
                Comparison(group.key, base.key, row.phase, interval, len(envs) > 1, across_modes)
            )
    _mode_notes(runs, groups, notes)
    environments, differing = _environments(runs)
    if differing:
        notes.append(
            f"the runs were taken in {len(environments)} different environments"
            f" (differing: {', '.join(differing)}): ratios across them are flagged"
        )
    return Report(
        runs=runs,
        groups=groups,
        baseline=chosen,
        comparisons=tuple(comparisons),
        environments=environments,
        differing_keys=differing,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        percent=percent,
        notes=tuple(notes),
        bounds=named,
    )


def _mode_notes(runs: Sequence[RunReport], groups: Sequence[GroupReport], notes: list[str]) -> None:
    simulated = [g.key.label for g in groups if g.mode == "simulated"]
    if simulated:
        notes.append(
            f"SIMULATED runtime(s): {', '.join(simulated)}: their figures are the simulated"
            " cluster's profile delays, not measurements of the runtime"
        )
    unknown = [r.run_id for r in runs if r.mode == UNKNOWN]
    if unknown:
        notes.append(
            f"runtime mode unknown (real or simulated not recorded: an older rtctl) for"
            f" run(s) {', '.join(unknown)}"
        )
    for group in groups:
        if group.mode == "mixed":
            modes = ", ".join(sorted({f"{r.run_id} {r.mode}" for r in runs if r.key == group.key}))
            notes.append(f"{group.key.label} pools real and simulated (or unknown) runs: {modes}")
    if len({g.mode for g in groups}) > 1:
        notes.append(
            "the runtimes are not all real or all simulated: ratios between a real and a"
            " simulated (or unknown) runtime are flagged ≠mode"
        )


def _bound_notes(runs: Sequence[RunReport], asked: Mapping[str, int], notes: list[str]) -> None:
    unchecked = [run.run_id for run in runs if not run.bounds_applied]
    if unchecked:
        notes.append(
            f"the collector applied no uncertainty bound and no order check to run(s)"
            f" {', '.join(unchecked)} (it is older than this rtctl): rtctl applied the bounds"
            " to their pods itself, except in the collector's own per-run tables on the"
            " terminal, which count every event; their phases were not checked for order"
        )
    for run in runs:
        if run.bounds_applied and dict(run.bounds) != dict(asked):
            notes.append(
                f"run {run.run_id}: the collector applied other uncertainty bounds than asked"
                f" ({bounds_text(run.bounds)}): its own table uses them"
            )


def _run(summary: control_pb2.RunSummary, asked: Mapping[str, int]) -> RunReport:
    spec = summary.spec
    mode = mode_of(spec)
    applied = summary.bounds_applied
    bounds = {phase_name(b.phase): b.max_uncertainty_ns for b in summary.max_uncertainty}

    def over(name: str, uncertainty_ns: int, flagged: bool) -> bool:
        if applied:
            return flagged
        bound = asked.get(name)
        return bound is not None and uncertainty_ns > bound

    return RunReport(
        run_id=spec.run_id,
        key=GroupKey(spec.runtime_class, spec.variant or spec.runtime_class, spec.replicas),
        test_id=spec.test_id,
        plan_id=spec.plan_id,
        repetition=spec.repetition,
        image=spec.image,
        memory_limit=spec.memory_limit,
        state=state_name(summary.state),
        message=summary.message,
        created_ns=summary.created_ns,
        finished_ns=summary.finished_ns,
        all_responded_ns=summary.all_responded_ns,
        failed_pods=summary.failed_pods,
        failures=tuple((f.reason, f.count) for f in summary.failures),
        memory_per_pod_bytes=summary.memory_per_pod_bytes,
        phases=tuple(
            PhaseRow(
                phase_name(s.phase),
                Distribution(s.count, s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.max_ns),
                s.p50_uncertainty_ns,
                s.max_uncertainty_ns,
                reached=s.reached if applied else s.count,
                out_of_order=s.out_of_order,
                over_bound=s.over_bound,
                bound_ns=bounds.get(phase_name(s.phase)),
            )
            for s in sorted(summary.phases, key=lambda s: s.phase)
        ),
        clocks=tuple(
            (
                c.agent_id,
                c.node,
                c.clock.offset_ns,
                c.clock.uncertainty_ns if c.HasField("clock") else -1,
            )
            for c in summary.clocks
        ),
        rtctl_clock=(summary.rtctl_clock.offset_ns, summary.rtctl_clock.uncertainty_ns),
        environment=dict(spec.environment),
        pods=tuple(
            PodTimes(
                ordinal=pod.ordinal,
                name=pod.pod.name,
                uid=pod.pod.uid,
                node=pod.pod.node,
                phases=tuple(
                    PodPhase(
                        phase_name(t.phase),
                        source_name(t.source),
                        t.time_ns,
                        t.latency_ns,
                        t.uncertainty_ns,
                        over_bound=over(phase_name(t.phase), t.uncertainty_ns, t.over_bound),
                        out_of_order=t.out_of_order,
                    )
                    for t in sorted(pod.phases, key=lambda t: (t.phase, t.time_ns))
                ),
            )
            for pod in sorted(summary.pods, key=lambda p: p.ordinal)
        ),
        bounds_applied=applied,
        bounds=bounds,
        out_of_order=tuple(
            OutOfOrder(
                v.ordinal,
                v.pod_name,
                phase_name(v.phase),
                phase_name(v.must_follow),
                v.early_by_ns,
                v.beyond_uncertainty_ns,
            )
            for v in summary.out_of_order
        ),
        mode=mode.mode,
        mode_basis=mode.basis,
        summary=summary,
    )


def _phase_row(name: str, events: Sequence[PodPhase], bound_ns: int | None) -> PhaseRow:
    """The row of phase ``name`` over these pods' events: numbers over the counted ones."""
    counted = [t for t in events if t.counted]
    uncertainties = Distribution.of([t.uncertainty_ns for t in counted])
    return PhaseRow(
        name,
        Distribution.of([t.latency_ns for t in counted]),
        uncertainties.p50_ns,
        uncertainties.max_ns,
        reached=len(events),
        out_of_order=sum(t.out_of_order for t in events),
        over_bound=sum(t.over_bound and not t.out_of_order for t in events),
        bound_ns=bound_ns,
    )


def _bounded_by_rtctl(run: RunReport, asked: Mapping[str, int]) -> RunReport:
    """A run whose collector applied no bound, its phase rows and all-responded time
    recomputed from its pods under the bounds asked for (order unchecked)."""
    by_phase: dict[str, list[PodPhase]] = defaultdict(list)
    for pod in run.pods:
        for t in pod.phases:
            by_phase[t.phase].append(t)
    order = {phase_name(p): p for p in events_pb2.Phase.values()}
    rows = tuple(
        _phase_row(name, events, asked.get(name))
        for name, events in sorted(by_phase.items(), key=lambda item: order.get(item[0], 0))
    )
    answered = sorted(t.latency_ns for t in by_phase.get("first_response", []) if t.counted)
    replicas = run.key.replicas
    all_responded = answered[replicas - 1] if run.created_ns and len(answered) >= replicas else 0
    return replace(run, phases=rows, all_responded_ns=all_responded)


def _latencies(runs: Sequence[RunReport], phase: str) -> list[list[int]]:
    """Every counted pod's latency of ``phase``, run by run (runs without a created
    time left out)."""
    return [
        [t.latency_ns for pod in run.pods for t in pod.phases if t.phase == phase and t.counted]
        for run in runs
        if run.created_ns
    ]


def _group(key: GroupKey, runs: Sequence[RunReport], bounds: Mapping[str, int]) -> GroupReport:
    rows = []
    for phase in LIFECYCLE:
        name = phase_name(phase)
        events = [
            t
            for run in runs
            if run.created_ns
            for pod in run.pods
            for t in pod.phases
            if t.phase == name
        ]
        if events:
            rows.append(_phase_row(name, events, bounds.get(name)))
    failures: dict[str, int] = defaultdict(int)
    for run in runs:
        for reason, count in run.failures:
            failures[reason] += count
    # Every run that measured one (0: not measured), negative ones too: leaving out the
    # runs below resolution would report the noise of the others as a footprint.
    memory = [run.memory_per_pod_bytes for run in runs if run.memory_per_pod_bytes]
    first = [
        row.latency.p50_ns
        for run in runs
        if run.created_ns and (row := run.phase("first_response")) is not None and row.count
    ]
    return GroupReport(
        key=key,
        run_ids=tuple(run.run_id for run in runs),
        pods=sum(len(run.pods) for run in runs),
        measured=sum(
            1 for run in runs if run.created_ns for pod in run.pods if pod.counts("first_response")
        ),
        expected=sum(run.key.replicas for run in runs),
        phases=tuple(rows),
        failed_pods=sum(run.failed_pods for run in runs),
        failures=tuple(sorted(failures.items(), key=lambda item: (-item[1], item[0]))),
        memory_per_pod_bytes=sum(memory) / len(memory) if memory else 0.0,
        first_response_p50=Spread.of(first),
        all_responded=Spread.of([run.all_responded_ns for run in runs if run.all_responded_ns > 0]),
        environments=len({_frozen(run.environment) for run in runs}),
        mode=modes.pop() if len(modes := {run.mode for run in runs}) == 1 else "mixed",
    )


def _baseline(groups: Sequence[GroupReport], wanted: str | None, notes: list[str]) -> str:
    runtimes = sorted({g.key.runtime for g in groups})
    classes = sorted({g.key.runtime_class for g in groups})
    if wanted is None:
        return "runc" if "runc" in runtimes else runtimes[0]
    if wanted in runtimes:
        return wanted
    if wanted in classes:
        variants = sorted(g.key.runtime for g in groups if g.key.runtime_class == wanted)
        notes.append(f"baseline {wanted} has variants {', '.join(variants)}: using {variants[0]}")
        return variants[0]
    raise UsageError(f"baseline {wanted!r} is in none of the runs; runtimes: {', '.join(runtimes)}")


def _baseline_group(
    groups: Sequence[GroupReport], runtime: str, replicas: int
) -> GroupReport | None:
    return next(
        (g for g in groups if g.key.runtime == runtime and g.key.replicas == replicas), None
    )


def _frozen(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(env.items()))


def _environments(runs: Sequence[RunReport]) -> tuple[tuple[Environment, ...], tuple[str, ...]]:
    by_env: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
    for run in runs:
        by_env[_frozen(run.environment)].append(run.run_id)
    environments = tuple(Environment(dict(env), tuple(ids)) for env, ids in by_env.items())
    keys = sorted({k for e in environments for k in e.values})
    differing = tuple(k for k in keys if len({e.values.get(k) for e in environments}) > 1)
    return environments, differing

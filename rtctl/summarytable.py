"""A run's summary as people read it (a rich table) and as scripts read it (a JSON dict).

The numbers are the collector's (collector/summaries.py says how each is
computed); this module only lays them out. The table has one row per phase in
lifecycle order, with the pods that reached it (of the replicas), the pods the
statistics count of those ("8/10 within 10 ms": the rest were over the phase's
uncertainty bound or out of order, collector/screening.py), p50/p90/p99/max
latency from created and the uncertainty that bounds them (median and largest:
the probe bracket plus the clock error), and a caption with what a reader
needs to trust or compare the run: the bounds applied, the pods whose phases
are out of order (named, with by how much), time until every replica
answered, failures, memory per pod, the clock offsets, and the environment it
ran in. The title says whether the runtime was REAL or SIMULATED (or its mode is
UNKNOWN: a run from an older rtctl), the caption what that was read from, and the
JSON has it as ``mode`` (rtctl/runtimemode.py). A summary from a collector older than the bounds
(``bounds_applied`` false) says so instead of passing for a bounded one.
``rtctl report`` reuses the table for its per-run tables.

The JSON keeps nanoseconds as integers (protobuf's own JSON mapping would make
every int64 a string) and names phases, sources and states in lower case; a
phase no pod counted has null latencies, not zeros.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from rtbench.v1 import control_pb2, events_pb2

from .bounds import bounds_text, format_bound
from .display import LIFECYCLE, phase_name
from .runtimemode import mode_of

__all__ = [
    "OUT_OF_ORDER_SHOWN",
    "counted_text",
    "format_failures",
    "format_memory",
    "format_ns",
    "out_of_order_text",
    "source_name",
    "state_name",
    "summary_dict",
    "summary_lines",
    "summary_table",
]

_ORDER = {phase: rank for rank, phase in enumerate((*LIFECYCLE, events_pb2.PHASE_FAILED))}
OUT_OF_ORDER_SHOWN = 5
"""Out-of-order pods named in a caption; the JSON (and the HTML report) has them all."""
NOT_APPLIED = (
    "the collector applied no uncertainty bound and no order check (it is older than this"
    " rtctl): these statistics count every event"
)


def format_ns(ns: int) -> str:
    """A duration for people: µs below 1 ms, ms below 10 s, seconds above."""
    if ns < 0:
        return "-" + format_ns(-ns)
    if ns < 1_000_000:
        return f"{ns / 1e3:.0f} µs"
    if ns < 10_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


BELOW_RESOLUTION = "below resolution"


def format_memory(per_pod_bytes: float) -> str:
    """Memory per pod as every view shows it: ``10.2 MiB``; ``-`` when not measured (0);
    ``below resolution`` when negative. MemAvailable moves by more than a small pod's
    footprint on its own (page cache, other processes), so a negative difference says
    the footprint was too small to see, not that pods gave memory back."""
    if per_pod_bytes < 0:
        return BELOW_RESOLUTION
    if not per_pod_bytes:
        return "-"
    return f"{per_pod_bytes / 2**20:.1f} MiB"


def format_failures(failed_pods: int, failures: Iterable[tuple[str, int]]) -> str:
    """``4 (4 with CrashLoopBackOff+OOMKilled)``: the failed pods and, per set of reasons a
    pod was reported with, how many pods had it (the counts add up to the pods)."""
    if not failed_pods:
        return "0"
    reasons = ", ".join(f"{count} with {reason or 'unknown'}" for reason, count in failures)
    return f"{failed_pods} ({reasons})" if reasons else str(failed_pods)


def state_name(state: int) -> str:
    """``succeeded`` for RUN_STATE_SUCCEEDED."""
    name = control_pb2.RunState.Name(state)
    return str(name).removeprefix("RUN_STATE_").lower()


def source_name(source: int) -> str:
    """``probe`` for SOURCE_PROBE."""
    return str(events_pb2.Source.Name(source)).removeprefix("SOURCE_").lower()


def _phases(summary: control_pb2.RunSummary) -> list[Any]:
    return sorted(summary.phases, key=lambda s: _ORDER.get(s.phase, 100 + s.phase))


def counted_text(count: int, reached: int, bound_ns: int | None, out_of_order: int) -> str:
    """``8/10 within 10 ms, 1 out of order``: the pods a phase's statistics count, of
    those that reached it, and why the others are left out."""
    text = f"{count}/{reached}"
    if bound_ns is not None:
        text += f" within {format_bound(bound_ns)}"
    if out_of_order:
        text += f", {out_of_order} out of order"
    return text


def out_of_order_text(
    pod: str, ordinal: int, phase: str, must_follow: str, early_by_ns: int, beyond_ns: int
) -> str:
    """``pod web-3 (#3): first_response 12.3 ms before container_started (11.8 ms beyond
    the uncertainties)``."""
    return (
        f"pod {pod or '?'} (#{ordinal}): {phase} {format_ns(early_by_ns)} before {must_follow}"
        f" ({format_ns(beyond_ns)} beyond the uncertainties)"
    )


def _bounds(summary: control_pb2.RunSummary) -> dict[int, int]:
    return {b.phase: b.max_uncertainty_ns for b in summary.max_uncertainty}


def _bound_names(summary: control_pb2.RunSummary) -> dict[str, int]:
    return {phase_name(b.phase): b.max_uncertainty_ns for b in summary.max_uncertainty}


def summary_lines(summary: control_pb2.RunSummary) -> list[str]:
    """The facts beside the phase table, one per line."""
    spec = summary.spec
    mode = mode_of(spec)
    lines = [f"runtime mode: {mode.mode} ({mode.basis})"]
    if summary.bounds_applied:
        lines.append(
            f"uncertainty bounds: {bounds_text(_bound_names(summary))}; pods over a bound or out of"
            " order are left out of the statistics"
        )
    else:
        lines.append(NOT_APPLIED)
    violations = list(summary.out_of_order)
    if violations:
        shown = [
            out_of_order_text(
                v.pod_name,
                v.ordinal,
                phase_name(v.phase),
                phase_name(v.must_follow),
                v.early_by_ns,
                v.beyond_uncertainty_ns,
            )
            for v in violations[:OUT_OF_ORDER_SHOWN]
        ]
        more = len(violations) - len(shown)
        lines.append(f"out of order: {len(violations)} pod phases, left out of the statistics:")
        lines.extend(f"  {line}" for line in shown)
        if more:
            lines.append(f"  and {more} more (--format json lists them all)")
    first = next((s for s in summary.phases if s.phase == events_pb2.PHASE_FIRST_RESPONSE), None)
    if summary.all_responded_ns:
        lines.append(
            f"all {spec.replicas} replicas responded after {format_ns(summary.all_responded_ns)}"
        )
    else:
        left = first.reached - first.count if first is not None else 0
        if (
            left
            and not summary.failed_pods
            and first is not None
            and first.reached >= spec.replicas
        ):
            lines.append(
                f"all {spec.replicas} replicas responded, but {left} of their first responses"
                f" {'is' if left == 1 else 'are'} left out (over the bound or out of order):"
                " no all-responded time"
            )
        else:
            why = ["failed pods do not count"] if summary.failed_pods else []
            if left:
                why.append(f"{left} first responses left out, over the bound or out of order")
            because = f" ({'; '.join(why)})" if why else ""
            lines.append(f"not all {spec.replicas} replicas responded{because}")
    failures = [(f.reason, f.count) for f in summary.failures]
    lines.append(f"failed pods: {format_failures(summary.failed_pods, failures)}")
    if summary.memory_per_pod_bytes:
        lines.append(f"memory per pod: {format_memory(summary.memory_per_pod_bytes)}")
    if summary.HasField("rtctl_clock"):
        c = summary.rtctl_clock
        lines.append(f"rtctl clock: {c.offset_ns / 1e6:+.3f} ms ± {c.uncertainty_ns / 1e6:.3f} ms")
    for agent in sorted(summary.clocks, key=lambda a: a.node):
        if not agent.HasField("clock"):
            lines.append(f"agent {agent.node}: no clock estimate (raw times)")
            continue
        c = agent.clock
        bound = "unknown" if c.uncertainty_ns < 0 else f"{c.uncertainty_ns / 1e6:.3f} ms"
        lines.append(f"agent {agent.node} clock: {c.offset_ns / 1e6:+.3f} ms ± {bound}")
    environment = spec.environment
    if environment:
        shown = [
            f"{key}={environment[key]}"
            for key in ("cluster_type", "kubernetes_version", "rtctl_version")
            if key in environment
        ]
        if shown:
            lines.append("environment: " + ", ".join(shown))
    if summary.message:
        lines.append(f"message: {summary.message}")
    return lines


def summary_table(summary: control_pb2.RunSummary) -> Table:
    """Start-up phases (and failed) x count/p50/p90/p99/max/uncertainty, with the run's
    facts as the caption."""
    spec = summary.spec
    title = (
        f"run {spec.run_id}: {spec.runtime_class}"
        + (f"/{spec.variant}" if spec.variant and spec.variant != spec.runtime_class else "")
        + f", {spec.replicas} replicas, {state_name(summary.state)}"
        + f", {mode_of(spec).mode.upper()} runtime"
    )
    table = Table(title=title, caption="\n".join(summary_lines(summary)), caption_justify="left")
    table.add_column("phase")
    for column in ("pods", "counted", "p50", "p90", "p99", "max", "± p50", "± max"):
        table.add_column(column, justify="right")
    bounds = _bounds(summary)
    for stats in _phases(summary):
        if stats.phase not in _ORDER:
            continue  # teardown and availability phases: in the JSON, not in this table
        if summary.bounds_applied:
            reached = stats.reached
            counted = counted_text(
                stats.count, reached, bounds.get(stats.phase), stats.out_of_order
            )
        else:
            reached, counted = stats.count, "unchecked"
        numbers = (
            stats.p50_ns,
            stats.p90_ns,
            stats.p99_ns,
            stats.max_ns,
            stats.p50_uncertainty_ns,
            stats.max_uncertainty_ns,
        )
        table.add_row(
            phase_name(stats.phase),
            f"{reached}/{spec.replicas}",
            counted,
            *(format_ns(ns) if stats.count else "-" for ns in numbers),
        )
    return table


def _clock(clock: Any) -> dict[str, int]:
    return {
        "offset_ns": clock.offset_ns,
        "uncertainty_ns": clock.uncertainty_ns,
        "measured_at_ns": clock.measured_at_ns,
        "samples": clock.samples,
    }


def _latencies(stats: Any) -> dict[str, int | None]:
    """A phase's latency numbers, None (JSON null) when no pod counted."""
    measured = stats.count > 0
    return {
        name: getattr(stats, name) if measured else None
        for name in (
            "min_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "p50_uncertainty_ns",
            "max_uncertainty_ns",
        )
    }


def summary_dict(summary: control_pb2.RunSummary) -> dict[str, Any]:
    """The summary as plain JSON-able values (ints stay ints), per-pod times included."""
    spec = summary.spec
    bounds = _bounds(summary)
    mode = mode_of(spec)
    return {
        "run_id": spec.run_id,
        "mode": mode.mode,
        "mode_basis": mode.basis,
        "state": state_name(summary.state),
        "message": summary.message,
        "spec": {
            "test_id": spec.test_id,
            "runtime_class": spec.runtime_class,
            "variant": spec.variant,
            "replicas": spec.replicas,
            "image": spec.image,
            "memory_limit": spec.memory_limit,
            "namespace": spec.namespace,
            "plan_id": spec.plan_id,
            "repetition": spec.repetition,
            "environment": dict(spec.environment),
        },
        "created_ns": summary.created_ns,
        "finished_ns": summary.finished_ns,
        "all_responded_ns": summary.all_responded_ns,
        "bounds_applied": summary.bounds_applied,
        "max_uncertainty_ns": _bound_names(summary),
        "phases": {
            phase_name(s.phase): {
                "count": s.count,
                "reached": s.reached if summary.bounds_applied else None,
                "out_of_order": s.out_of_order if summary.bounds_applied else None,
                "over_bound": s.over_bound if summary.bounds_applied else None,
                "bound_ns": bounds.get(s.phase),
                **_latencies(s),
            }
            for s in _phases(summary)
        },
        "out_of_order": [
            {
                "ordinal": v.ordinal,
                "name": v.pod_name,
                "uid": v.pod_uid,
                "phase": phase_name(v.phase),
                "must_follow": phase_name(v.must_follow),
                "early_by_ns": v.early_by_ns,
                "beyond_uncertainty_ns": v.beyond_uncertainty_ns,
            }
            for v in summary.out_of_order
        ],
        "failed_pods": summary.failed_pods,
        "failures": {f.reason: f.count for f in summary.failures},
        "memory_per_pod_bytes": summary.memory_per_pod_bytes,
        "memory_per_pod": format_memory(summary.memory_per_pod_bytes),
        "rtctl_clock": _clock(summary.rtctl_clock) if summary.HasField("rtctl_clock") else None,
        "clocks": [
            {
                "agent_id": c.agent_id,
                "node": c.node,
                "clock": _clock(c.clock) if c.HasField("clock") else None,
            }
            for c in summary.clocks
        ],
        "pods": [
            {
                "ordinal": pod.ordinal,
                "name": pod.pod.name,
                "uid": pod.pod.uid,
                "node": pod.pod.node,
                "phases": {
                    phase_name(t.phase): {
                        "source": source_name(t.source),
                        "time_ns": t.time_ns,
                        "latency_ns": t.latency_ns,
                        "uncertainty_ns": t.uncertainty_ns,
                        "over_bound": t.over_bound,
                        "out_of_order": t.out_of_order,
                    }
                    for t in pod.phases
                },
            }
            for pod in sorted(summary.pods, key=lambda p: p.ordinal)
        ],
    }

"""Run summaries and per-pod timelines, computed from the journal.

This is where the numbers a user puts in a paper come from, so every choice is
written down here and nothing is estimated that the journal does not hold:

- Latency of phase P for a pod = its time of P - the run's created time
  (``runs.created_ns``, rtctl's request time in the collector timebase). When
  several sources report the same phase of a pod, the most precise source wins
  (containerd > simulator kubelet > node-local probe > watch > rtctl > other),
  and within that source the earliest event. Without a recorded create time the
  counts and uncertainties are still given, latencies are 0.
- Events marked ``seen_late`` (the agent first saw the pod in a list, after the
  transition: it was restarted, say) are not latencies: a pod with only such an
  event for a phase is left out of that phase (a gap, its reason in the event's
  attributes in the journal), never counted at the time its agent caught up.
- Events marked ``caught_up`` (a relist after a watch gap showed a transition
  of a pod the agent was already watching) are latencies: stamped when the
  relist arrived, their ``uncertainty_ns`` reaches back over the gap, so they
  count like any other event with that bracket in the phase's uncertainties
  (the true time is at most that much earlier). Their bound is as short as the
  outage; a seen_late event's reaches back to the pod's creation, which is why
  that one is a gap instead.
- Only events that can be placed count. An unknown phase or source number
  (enums are open: a newer agent may send one) has no place in a summary; an
  event of the run earlier than its created time by more than its own
  uncertainty plus ``PLACEMENT_TOLERANCE_NS`` comes from a clock that went
  wrong (the pod cannot have been seen before its Deployment was asked for).
  Both stay in the journal as received; they are left out here rather than
  turned into an unknown row or a negative latency.
- Uncertainty of an event = its own bracket (``uncertainty_ns``, e.g. the probe
  interval) + the clock uncertainty of the agent's offset at the time (the two
  error bounds add up). An unknown clock uncertainty (-1) counts as 0; the
  agent's clock entry in the summary shows it.
- A pod's phase counts in the latency statistics (the percentiles,
  all_responded, and so rtctl's pooled percentiles and ratios) only if its
  chosen event is within the phase's uncertainty bound and in order with the
  pod's other phases (collector/screening.py has the rules, the defaults and
  the table of lifecycle constraints). A phase left out is still shown: the
  phase's ``reached`` counts it and ``out_of_order`` / ``over_bound`` say why
  it is not counted, its timeline carries its time and uncertainty with the
  flag, ``out_of_order`` names the pod, the two phases and by how much, and
  the summary echoes the bounds it applied (``max_uncertainty``,
  ``bounds_applied``), so a reader never takes unbounded numbers for bounded
  ones.
- Percentiles are nearest-rank over the pods counted: pN is the smallest
  latency with at least N % of those pods at or below it (so p50 of 10 pods is
  the 5th, p99 the 10th). No interpolation: every number reported is one pod's
  real latency. A phase that pods reached but none counted has count 0 and
  all latencies 0; its reached and left-out counts say why.
- all_responded = the latency at which the ``replicas``-th counted first
  response came (the time until as many pods as the run asked for had
  answered); 0 when fewer counted (some never answered, or their answers are
  left out as above) or the create time is unknown. A pod that failed is never
  counted as responded, even when it answered before it failed (an OOM kill
  after the first answer): "all replicas responded" must not sit beside
  "every pod failed".
- failures: per pod, the set of reasons of its ``failed`` events, joined with
  ``+`` in alphabetical order (``CrashLoopBackOff+OOMKilled``); each entry
  counts the pods with exactly that set, so the counts add up to failed_pods
  (one entry per reason would count a pod reported OOMKilled and then
  CrashLoopBackOff twice, reading like twice the failures). failed_pods: the
  number of distinct pods with any ``failed`` event.
- memory per pod (DESIGN.md): per node, (MemAvailable "before" - MemAvailable
  "after") / the node's pods that got there. Only node-level samples count.
  "before" must see none of this run's memory and none of the previous run's,
  so it is the agent's sample at first sight of the node's first pod of the run:
  the first sample at or after the node's earliest ``scheduled`` that is still
  at or before the pods started consuming memory (the earliest of their
  sandbox_created, sandbox_started, container_created, container_started,
  running and first_response times). Not the last sample before that start: a
  Kata VM boots before containerd reports its sandbox created, so a periodic
  sample in between may hold part of it. Without a first-sight sample, the last
  sample at or before that start. When the node's pods have none of those phases, the last sample
  at or before the create, else the first one after it that precedes the
  node's first scheduled pod. The create time is not the rule, because with
  the agent's 5 s idle interval the last sample before it can predate the
  previous run's teardown. "after" is the first sample at or after the node's
  last ``ready`` (its last ``first_response`` when the node saw no ready
  events), but not after the run's deletion started there (the node's first
  ``deletion_requested`` of the run's pods): rtctl deletes as soon as all
  replicas are ready, and a later sample may see the memory freed. The agent
  samples right after each ready or first response for this. A node without
  both samples is left out, pods and all, rather than reported wrong. Pods that
  never got there (failed) are neither waited for nor counted. Nodes are
  averaged weighted by their pods; 0 when no node has both samples. The
  chosen events serve here whether the latency statistics count them or not
  (over a bound, out of order): memory needs roughly when a node's pods got
  somewhere, not a latency.
- clocks: per agent that reported events of the run, the clock estimate that
  corrected them, taken from the run's batches (not the agent's current one):
  the batch with the largest uncertainty, with its offset. Uncertainty -1 when
  some of the agent's batches of the run carried no estimate (their events kept
  their raw times); no clock at all when none did.

A pure function of the SQLite connection: no I/O beyond reading the journal, and
one pass over the run's events (the order check then looks at each pod's chosen
events once), fast enough for 10 000 pods.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from collector.errors import UnknownRun
from collector.screening import KNOWN_PHASES, Violation, screen, uncertainty_bounds
from rtbench.percentiles import nearest_rank
from rtbench.v1 import control_pb2, events_pb2

__all__ = ["PLACEMENT_TOLERANCE_NS", "SOURCE_PREFERENCE", "compute_summary", "nearest_rank"]

SOURCE_PREFERENCE = (
    events_pb2.SOURCE_CONTAINERD,
    events_pb2.SOURCE_SIMULATOR,
    events_pb2.SOURCE_PROBE,
    events_pb2.SOURCE_WATCH,
    events_pb2.SOURCE_RTCTL,
)
_RANK = {source: rank for rank, source in enumerate(SOURCE_PREFERENCE)}
_OTHER_RANK = len(SOURCE_PREFERENCE)
_SEEN_LATE = '"seen_late":'
"""How the agents' ``seen_late`` attribute appears in the stored JSON attributes."""

_KNOWN_SOURCES = frozenset(events_pb2.Source.values())
PLACEMENT_TOLERANCE_NS = 10**9
"""How far before the run's created time an event may lie beyond its uncertainty and
still count: a second covers an agent whose clock offset is not known yet (its
uncertainty counts as 0) on a host kept in step by NTP."""

_READY = events_pb2.PHASE_READY
_FIRST_RESPONSE = events_pb2.PHASE_FIRST_RESPONSE
_SCHEDULED = events_pb2.PHASE_SCHEDULED
_FAILED = events_pb2.PHASE_FAILED
_DELETION = events_pb2.PHASE_DELETION_REQUESTED
_CONSUMING = (
    events_pb2.PHASE_SANDBOX_CREATED,
    events_pb2.PHASE_SANDBOX_STARTED,
    events_pb2.PHASE_CONTAINER_CREATED,
    events_pb2.PHASE_CONTAINER_STARTED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
)
"""Phases by which a pod's memory is surely being spent on the node."""


@dataclass
class _Seen:
    """The chosen event of one pod's phase, and whether it is left out of the statistics
    (a ``screening.Screened``)."""

    rank: int
    source: int
    time_ns: int
    uncertainty_ns: int
    node: str | None
    over_bound: bool = False
    out_of_order: bool = False

    @property
    def counted(self) -> bool:
        return not (self.over_bound or self.out_of_order)


def compute_summary(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    include_pods: bool,
    bounds: Mapping[int, int] | None = None,
) -> control_pb2.RunSummary:
    """The summary of one run as the journal has it now; raises UnknownRun.

    ``bounds``: phase -> largest total uncertainty counted, ns
    (``screening.uncertainty_bounds``); None: the defaults."""
    bounds = uncertainty_bounds() if bounds is None else dict(sorted(bounds.items()))
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    run = cur.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if run is None:
        raise UnknownRun(run_id)
    created: int | None = run["created_ns"]
    earliest = None if created is None else created - PLACEMENT_TOLERANCE_NS

    chosen: dict[str, dict[int, _Seen]] = defaultdict(dict)
    failed_by_reason: dict[str, set[str]] = defaultdict(set)
    batches: dict[str, set[int]] = defaultdict(set)
    for uid, phase, source, at, unc, clock_unc, reason, agent_id, seq, node, attrs in conn.execute(
        "SELECT pod_uid, phase, source, corrected_ns, uncertainty_ns, clock_uncertainty_ns,"
        " reason, agent_id, sequence, node, attributes FROM events WHERE run_id = ?",
        (run_id,),
    ):
        total_unc = max(unc or 0, 0) + max(clock_unc or 0, 0)
        if phase not in KNOWN_PHASES or source not in _KNOWN_SOURCES:
            continue
        if earliest is not None and at + total_unc < earliest:
            continue
        batches[agent_id].add(seq)
        if phase == _FAILED:
            failed_by_reason[reason or "unknown"].add(uid)
        if attrs and _SEEN_LATE in attrs:
            continue  # happened before its agent saw the pod: a gap, not a latency
        rank = _RANK.get(source, _OTHER_RANK)
        best = chosen[uid].get(phase)
        if best is None or rank < best.rank or (rank == best.rank and at < best.time_ns):
            chosen[uid][phase] = _Seen(rank, source, at, total_unc, node)

    violations = screen(chosen, bounds)
    summary = control_pb2.RunSummary(
        spec=control_pb2.RunSpec.FromString(run["spec"]),
        state=run["state"],
        created_ns=created or 0,
        finished_ns=run["finished_ns"] or 0,
        message=run["message"] or "",
        bounds_applied=True,
    )
    for phase, bound in bounds.items():
        summary.max_uncertainty.add(phase=phase, max_uncertainty_ns=bound)
    _phase_stats(summary, chosen, created)
    failed_pods: set[str] = set().union(*failed_by_reason.values())
    summary.all_responded_ns = _all_responded(chosen, created, run["replicas"] or 0, failed_pods)
    reasons_of: dict[str, list[str]] = defaultdict(list)
    for reason in sorted(failed_by_reason):
        for uid in failed_by_reason[reason]:
            reasons_of[uid].append(reason)
    combined: dict[str, int] = defaultdict(int)
    for reasons in reasons_of.values():
        combined["+".join(reasons)] += 1
    for reason in sorted(combined, key=lambda r: (-combined[r], r)):
        summary.failures.add(reason=reason, count=combined[reason])
    summary.failed_pods = len(failed_pods)
    pods = cur.execute(
        "SELECT uid, ordinal, namespace, name, node, labels FROM pods"
        " WHERE run_id = ? ORDER BY ordinal",
        (run_id,),
    ).fetchall()
    if created is not None:
        summary.memory_per_pod_bytes = _memory_per_pod(conn, pods, chosen, created)
    _clocks(summary, cur, batches, run)
    _violations(summary, pods, violations)
    if include_pods:
        _timelines(summary, run_id, pods, chosen, created)
    return summary


def _phase_stats(
    summary: control_pb2.RunSummary, chosen: dict[str, dict[int, _Seen]], created: int | None
) -> None:
    by_phase: dict[int, list[_Seen]] = defaultdict(list)
    for phases in chosen.values():
        for phase, seen in phases.items():
            by_phase[phase].append(seen)
    for phase in sorted(by_phase):
        reached = by_phase[phase]
        counted = [s for s in reached if s.counted]
        stats = summary.phases.add(
            phase=phase,
            count=len(counted),
            reached=len(reached),
            out_of_order=sum(s.out_of_order for s in reached),
            over_bound=sum(s.over_bound and not s.out_of_order for s in reached),
        )
        if not counted:
            continue
        latencies = sorted(s.time_ns - created for s in counted) if created is not None else [0]
        uncertainties = sorted(s.uncertainty_ns for s in counted)
        stats.min_ns = latencies[0]
        stats.p50_ns = nearest_rank(latencies, 50)
        stats.p90_ns = nearest_rank(latencies, 90)
        stats.p99_ns = nearest_rank(latencies, 99)
        stats.max_ns = latencies[-1]
        stats.max_uncertainty_ns = uncertainties[-1]
        stats.p50_uncertainty_ns = nearest_rank(uncertainties, 50)


def _all_responded(
    chosen: dict[str, dict[int, _Seen]], created: int | None, replicas: int, failed: set[str]
) -> int:
    if created is None or replicas <= 0:
        return 0
    times = sorted(
        p[_FIRST_RESPONSE].time_ns
        for uid, p in chosen.items()
        if _FIRST_RESPONSE in p and p[_FIRST_RESPONSE].counted and uid not in failed
    )
    if len(times) < replicas:
        return 0
    return times[replicas - 1] - created


def _memory_per_pod(
    conn: sqlite3.Connection,
    pods: list[sqlite3.Row],
    chosen: dict[str, dict[int, _Seen]],
    created: int,
) -> float:
    by_node: dict[str, list[dict[int, _Seen]]] = defaultdict(list)
    for pod in pods:
        phases = chosen.get(pod["uid"], {})
        node = pod["node"] or next((s.node for s in phases.values() if s.node), None)
        if node:
            by_node[node].append(phases)
    freed = 0
    counted = 0
    for node, node_pods in sorted(by_node.items()):
        target = _READY if any(_READY in p for p in node_pods) else _FIRST_RESPONSE
        done = [p[target].time_ns for p in node_pods if target in p]
        if not done:
            continue
        before = _before(conn, node, node_pods, created)
        deletions = [p[_DELETION].time_ns for p in node_pods if _DELETION in p]
        window = "corrected_ns >= ? AND corrected_ns <= ?"
        after = _node_sample(conn, node, window, (max(done), min(deletions, default=_NO_END)))
        if before is None or after is None:
            continue
        freed += before - after
        counted += len(done)
    return freed / counted if counted else 0.0


_NO_END = 2**63 - 1
"""The largest SQLite integer: no deletion, no upper bound for "after"."""


def _before(
    conn: sqlite3.Connection, node: str, node_pods: list[dict[int, _Seen]], created: int
) -> int | None:
    """MemAvailable of the node's "before" sample (the module docstring gives the rule)."""
    scheduled = [p[_SCHEDULED].time_ns for p in node_pods if _SCHEDULED in p]
    consuming = [p[phase].time_ns for p in node_pods for phase in _CONSUMING if phase in p]
    if consuming:
        start = min(consuming)
        if scheduled and min(scheduled) <= start:
            first_sight = _node_sample(
                conn, node, "corrected_ns >= ? AND corrected_ns <= ?", (min(scheduled), start)
            )
            if first_sight is not None:
                return first_sight
        return _node_sample(conn, node, "corrected_ns <= ?", (start,), descending=True)
    first_pod = min(scheduled or [s.time_ns for p in node_pods for s in p.values()])
    before = _node_sample(conn, node, "corrected_ns <= ?", (created,), descending=True)
    if before is None:
        before = _node_sample(
            conn, node, "corrected_ns > ? AND corrected_ns < ?", (created, first_pod)
        )
    return before


def _node_sample(
    conn: sqlite3.Connection,
    node: str,
    condition: str,
    args: tuple[int, ...],
    *,
    descending: bool = False,
) -> int | None:
    """MemAvailable of the first (or last) node-level sample of ``node`` matching."""
    order = "DESC" if descending else "ASC"
    row = conn.execute(
        "SELECT mem_available_bytes FROM samples WHERE node = ? AND pod_uid IS NULL"
        f" AND mem_available_bytes > 0 AND {condition} ORDER BY corrected_ns {order} LIMIT 1",
        (node, *args),
    ).fetchone()
    return None if row is None else int(row[0])


def _clocks(
    summary: control_pb2.RunSummary,
    cur: sqlite3.Cursor,
    batches: dict[str, set[int]],
    run: sqlite3.Row,
) -> None:
    for agent_id in sorted(batches):
        clock = summary.clocks.add(agent_id=agent_id)
        row = cur.execute("SELECT node FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is not None:
            clock.node = row["node"] or ""
        offset = _run_clock(cur, agent_id, batches[agent_id])
        if offset is not None:
            clock.clock.CopyFrom(offset)
    if run["rtctl_offset_ns"] is not None:
        summary.rtctl_clock.CopyFrom(
            events_pb2.ClockOffset(
                offset_ns=run["rtctl_offset_ns"],
                uncertainty_ns=run["rtctl_uncertainty_ns"] or 0,
            )
        )


def _run_clock(
    cur: sqlite3.Cursor, agent_id: str, sequences: set[int]
) -> events_pb2.ClockOffset | None:
    """The worst clock estimate among these batches of the agent (see the module docstring)."""
    worst: sqlite3.Row | None = None
    unknown = False
    for row in cur.execute(
        "SELECT sequence, offset_ns, offset_uncertainty_ns, offset_measured_at_ns, offset_samples"
        " FROM batches WHERE agent_id = ? AND sequence BETWEEN ? AND ? ORDER BY sequence",
        (agent_id, min(sequences), max(sequences)),
    ):
        if row["sequence"] not in sequences:
            continue
        uncertainty = row["offset_uncertainty_ns"]
        if uncertainty is None or uncertainty < 0:
            unknown = True
        elif worst is None or uncertainty >= worst["offset_uncertainty_ns"]:
            worst = row
    if worst is None:
        return None
    return events_pb2.ClockOffset(
        offset_ns=worst["offset_ns"] or 0,
        uncertainty_ns=-1 if unknown else worst["offset_uncertainty_ns"],
        measured_at_ns=worst["offset_measured_at_ns"] or 0,
        samples=worst["offset_samples"] or 0,
    )


def _timelines(
    summary: control_pb2.RunSummary,
    run_id: str,
    pods: list[sqlite3.Row],
    chosen: dict[str, dict[int, _Seen]],
    created: int | None,
) -> None:
    for pod in pods:
        timeline = summary.pods.add(ordinal=pod["ordinal"])
        timeline.pod.CopyFrom(
            events_pb2.PodRef(
                uid=pod["uid"],
                namespace=pod["namespace"] or "",
                name=pod["name"] or "",
                node=pod["node"] or "",
                run_id=run_id,
                labels=json.loads(pod["labels"] or "{}"),
            )
        )
        phases = chosen.get(pod["uid"], {})
        for phase, seen in sorted(phases.items(), key=lambda item: (item[1].time_ns, item[0])):
            timeline.phases.add(
                phase=phase,
                source=seen.source,
                time_ns=seen.time_ns,
                latency_ns=seen.time_ns - created if created is not None else 0,
                uncertainty_ns=seen.uncertainty_ns,
                over_bound=seen.over_bound,
                out_of_order=seen.out_of_order,
            )


def _violations(
    summary: control_pb2.RunSummary, pods: list[sqlite3.Row], violations: list[Violation]
) -> None:
    known = {pod["uid"]: pod for pod in pods}
    for v in sorted(violations, key=lambda v: (_ordinal(known.get(v.uid)), v.uid, v.phase)):
        pod = known.get(v.uid)
        summary.out_of_order.add(
            ordinal=_ordinal(pod) if pod is not None else 0,
            pod_name=(pod["name"] or "") if pod is not None else "",
            pod_uid=v.uid,
            phase=v.phase,
            must_follow=v.must_follow,
            early_by_ns=v.early_by_ns,
            beyond_uncertainty_ns=v.beyond_ns,
        )


def _ordinal(pod: sqlite3.Row | None) -> int:
    """The pod's ordinal; a pod the pods table lacks sorts last."""
    return int(pod["ordinal"]) if pod is not None else 2**32

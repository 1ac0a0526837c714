"""Which pod phases a summary counts: uncertainty bounds and the order of phases.

Journals are filled through the real ``Journal`` and summarised by
``compute_summary``, so each test shows what a reader of the summary sees: the
counts of pods reached, counted and left out, the percentiles over the counted
ones, the flags on each pod's timeline and the named out-of-order phases.
Agent clock uncertainties are set per test, so every total uncertainty (and
so every margin) can be written down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.errors import InvalidRequest
from collector.journal import Journal
from collector.screening import uncertainty_bounds
from collector.summaries import compute_summary
from rtbench.v1 import control_pb2, events_pb2
from tests.collector.export_fixtures import MS, T0, batch, event, hello, open_journal, pod, register

P = events_pb2


def stats(summary: control_pb2.RunSummary, phase: int) -> control_pb2.PhaseStats:
    (found,) = [s for s in summary.phases if s.phase == phase]
    return found


def bounded_run(tmp_path: Path) -> Journal:
    """Five pods whose first responses have brackets of ±2, ±5, ±10 (the default bound
    itself), ±12 and ±300 ms, at 100..500 ms; ready 50 ms later, no bracket. Agent
    offset 0 with a clock uncertainty of 0, so the totals are the brackets."""
    j = open_journal(tmp_path / "bounded.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "b1", replicas=5)
    evs = []
    for i, bracket_ms in enumerate((2, 5, 10, 12, 300)):
        ref = pod(f"b{i}", "b1", "node-a")
        at = T0 + (i + 1) * 100 * MS
        evs.append(
            event(
                ref,
                P.PHASE_FIRST_RESPONSE,
                at,
                source=P.SOURCE_PROBE,
                uncertainty_ns=bracket_ms * MS,
            )
        )
        evs.append(event(ref, P.PHASE_READY, at + 50 * MS))
    zero = events_pb2.ClockOffset(offset_ns=0, uncertainty_ns=0, measured_at_ns=T0, samples=8)
    j.commit_batches([("agent-a", batch(1, evs, clock=zero))], T0)
    return j


def test_first_responses_over_the_default_bound_are_left_out_and_counted(
    tmp_path: Path,
) -> None:
    s = compute_summary(bounded_run(tmp_path).connection(), "b1", include_pods=True)
    assert s.bounds_applied
    assert [(b.phase, b.max_uncertainty_ns) for b in s.max_uncertainty] == [
        (P.PHASE_FIRST_RESPONSE, 10 * MS)
    ]
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    # 10 ms is within a 10 ms bound; the ±12 ms and ±300 ms pods are not measured.
    assert (fr.reached, fr.count, fr.over_bound, fr.out_of_order) == (5, 3, 2, 0)
    assert (fr.min_ns, fr.p50_ns, fr.p90_ns, fr.max_ns) == (100 * MS, 200 * MS, 300 * MS, 300 * MS)
    assert (fr.p50_uncertainty_ns, fr.max_uncertainty_ns) == (5 * MS, 10 * MS)
    # Ready has no default bound: every pod counts.
    ready = stats(s, P.PHASE_READY)
    assert (ready.reached, ready.count, ready.over_bound) == (5, 5, 0)
    # Every replica answered, but two answers are not measurements: no all-responded time.
    assert s.all_responded_ns == 0
    flagged = {
        t.pod.uid: [(x.phase, x.over_bound, x.out_of_order) for x in t.phases] for t in s.pods
    }
    assert flagged["b3"] == [
        (P.PHASE_FIRST_RESPONSE, True, False),
        (P.PHASE_READY, False, False),
    ]
    assert flagged["b2"][0] == (P.PHASE_FIRST_RESPONSE, False, False)
    assert [x.uncertainty_ns for x in s.pods[4].phases] == [300 * MS, 0]  # still shown


def test_a_bound_set_or_lifted_by_the_request_changes_the_numbers(tmp_path: Path) -> None:
    conn = bounded_run(tmp_path).connection()

    def bound(phase: events_pb2.Phase, ms: float) -> control_pb2.UncertaintyBound:
        return control_pb2.UncertaintyBound(phase=phase, max_uncertainty_ns=int(ms * MS))

    wider = uncertainty_bounds([bound(P.PHASE_FIRST_RESPONSE, 12)])
    s = compute_summary(conn, "b1", include_pods=False, bounds=wider)
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert (fr.count, fr.over_bound, fr.max_ns, fr.max_uncertainty_ns) == (4, 1, 400 * MS, 12 * MS)
    lifted = uncertainty_bounds([bound(P.PHASE_FIRST_RESPONSE, -1)])
    assert lifted == {}
    s = compute_summary(conn, "b1", include_pods=False, bounds=lifted)
    assert s.bounds_applied and not s.max_uncertainty
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert (fr.count, fr.over_bound, fr.max_ns) == (5, 0, 500 * MS)
    assert s.all_responded_ns == 500 * MS
    # A bound on another phase: ready's events have no bracket, 0 ns is within 0 ns.
    tight = uncertainty_bounds([bound(P.PHASE_FIRST_RESPONSE, 4), bound(P.PHASE_READY, 0)])
    assert tight == {P.PHASE_FIRST_RESPONSE: 4 * MS, P.PHASE_READY: 0}
    s = compute_summary(conn, "b1", include_pods=False, bounds=tight)
    assert (stats(s, P.PHASE_FIRST_RESPONSE).count, stats(s, P.PHASE_READY).count) == (1, 5)
    with pytest.raises(InvalidRequest, match="unknown phase 99"):
        uncertainty_bounds([control_pb2.UncertaintyBound(phase=99, max_uncertainty_ns=1)])  # type: ignore[arg-type]


def test_a_phase_with_no_event_within_its_bound_has_no_latencies(tmp_path: Path) -> None:
    conn = bounded_run(tmp_path).connection()
    s = compute_summary(conn, "b1", include_pods=False, bounds={P.PHASE_FIRST_RESPONSE: MS})
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert (fr.reached, fr.count, fr.over_bound) == (5, 0, 5)
    assert (fr.min_ns, fr.p50_ns, fr.max_ns, fr.max_uncertainty_ns) == (0, 0, 0, 0)


def ordered_run(tmp_path: Path) -> Journal:
    """One pod per case of the order check (collector/summaries.py's table), times in ms
    after created; the agent's clock uncertainty is 0.5 ms, added to every event."""
    j = open_journal(tmp_path / "order.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "o1", replicas=8)
    C, W, PR = P.SOURCE_CONTAINERD, P.SOURCE_WATCH, P.SOURCE_PROBE
    cases: dict[str, list[tuple[int, int, float, float]]] = {
        # The case: a probe answer 120 ms before containerd's container start.
        "early-probe": [
            (P.PHASE_SCHEDULED, W, 10, 0),
            (P.PHASE_SANDBOX_STARTED, C, 50, 0),
            (P.PHASE_CONTAINER_STARTED, C, 200, 0),
            (P.PHASE_FIRST_RESPONSE, PR, 80, 2),
            (P.PHASE_READY, W, 260, 0),
        ],
        # 30 ms before: within a runtime's report lag (50 ms) plus the uncertainties.
        "report-lag": [
            (P.PHASE_CONTAINER_STARTED, C, 200, 0),
            (P.PHASE_FIRST_RESPONSE, PR, 170, 2),
        ],
        # Ready before scheduled, both from the watch: one ordered stream.
        "ready-first": [(P.PHASE_SCHEDULED, W, 300, 0), (P.PHASE_READY, W, 250, 0)],
        # A probe answer before the watch's scheduled proves nothing: the watch is late.
        "late-watch": [(P.PHASE_SCHEDULED, W, 300, 0), (P.PHASE_FIRST_RESPONSE, PR, 100, 1)],
        # containerd's own events out of order by 3 ms: no lag allowance within a source.
        "runtime-swap": [
            (P.PHASE_SANDBOX_STARTED, C, 103, 0),
            (P.PHASE_CONTAINER_STARTED, C, 100, 0),
        ],
        # Running seen by the watch 100 ms before containerd started the container.
        "early-running": [(P.PHASE_CONTAINER_STARTED, C, 200, 0), (P.PHASE_RUNNING, W, 100, 0)],
        # Ready 2 ms before running, but ready's bracket (a relist's catch-up) covers it.
        "within-bracket": [(P.PHASE_RUNNING, W, 100, 0), (P.PHASE_READY, W, 98, 5)],
        # Out of order and over the bound (±40 ms): it counts as out of order.
        "both": [(P.PHASE_SANDBOX_STARTED, C, 400, 0), (P.PHASE_FIRST_RESPONSE, PR, 200, 40)],
    }
    evs = [
        event(pod(uid, "o1", "node-a"), phase, T0 + int(ms * MS), source=source,
              uncertainty_ns=int(unc * MS))
        for uid, phases in cases.items()
        for phase, source, ms, unc in phases
    ]  # fmt: skip
    clock = events_pb2.ClockOffset(offset_ns=0, uncertainty_ns=MS // 2, measured_at_ns=T0)
    j.commit_batches([("agent-a", batch(1, evs, clock=clock))], T0)
    return j


def test_phases_out_of_order_beyond_their_uncertainties_are_named_and_left_out(
    tmp_path: Path,
) -> None:
    s = compute_summary(ordered_run(tmp_path).connection(), "o1", include_pods=True)
    found = [
        (v.pod_uid, v.pod_name, v.phase, v.must_follow, v.early_by_ns, v.beyond_uncertainty_ns)
        for v in s.out_of_order
    ]
    half = MS // 2
    assert found == [
        # early-probe: the container start is the phase missed by most (sandbox_started,
        # 50 ms, is within the lag); 120 ms early, minus 2 + 0.5 + 0.5 ms and the 50 ms lag.
        ("early-probe", "web-early-probe", P.PHASE_FIRST_RESPONSE, P.PHASE_CONTAINER_STARTED,
         120 * MS, 120 * MS - 3 * MS - 50 * MS),
        ("ready-first", "web-ready-first", P.PHASE_READY, P.PHASE_SCHEDULED,
         50 * MS, 50 * MS - 2 * half),
        ("runtime-swap", "web-runtime-swap", P.PHASE_CONTAINER_STARTED, P.PHASE_SANDBOX_STARTED,
         3 * MS, 3 * MS - 2 * half),
        ("early-running", "web-early-running", P.PHASE_RUNNING, P.PHASE_CONTAINER_STARTED,
         100 * MS, 100 * MS - 2 * half - 50 * MS),
        ("both", "web-both", P.PHASE_FIRST_RESPONSE, P.PHASE_SANDBOX_STARTED,
         200 * MS, 200 * MS - 41 * MS - 50 * MS),
    ]  # fmt: skip
    assert [v.ordinal for v in s.out_of_order] == sorted(v.ordinal for v in s.out_of_order)
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    # Four pods answered: early-probe and both out of order (both also over its bound, but
    # counted once, as out of order); report-lag and late-watch are measured.
    assert (fr.reached, fr.count, fr.out_of_order, fr.over_bound) == (4, 2, 2, 0)
    assert (fr.min_ns, fr.max_ns) == (100 * MS, 170 * MS)
    ready = stats(s, P.PHASE_READY)
    assert (ready.reached, ready.count, ready.out_of_order) == (3, 2, 1)
    assert (ready.min_ns, ready.max_ns) == (98 * MS, 260 * MS)
    cs = stats(s, P.PHASE_CONTAINER_STARTED)
    assert (cs.reached, cs.count, cs.out_of_order) == (4, 3, 1)
    assert stats(s, P.PHASE_RUNNING).count == 1 and stats(s, P.PHASE_SCHEDULED).count == 3
    # The phase each pod must follow still counts; the timelines carry the flags.
    flags = {(t.pod.uid, x.phase): (x.out_of_order, x.over_bound) for t in s.pods for x in t.phases}
    assert flags[("early-probe", P.PHASE_FIRST_RESPONSE)] == (True, False)
    assert flags[("early-probe", P.PHASE_CONTAINER_STARTED)] == (False, False)
    assert flags[("both", P.PHASE_FIRST_RESPONSE)] == (True, True)
    assert flags[("late-watch", P.PHASE_FIRST_RESPONSE)] == (False, False)
    assert flags[("within-bracket", P.PHASE_READY)] == (False, False)
    assert sum(o for o, _ in flags.values()) == len(found)


def test_the_order_check_is_one_pass_for_ten_thousand_pods(tmp_path: Path) -> None:
    """Not a timing: every pod of a large run is judged, each once (a quadratic slip over
    pods would show here as minutes, not as a wrong number)."""
    j = open_journal(tmp_path / "large.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "big", replicas=10_000)
    evs = []
    for i in range(10_000):
        ref = pod(f"p{i}", "big", "node-a")
        evs.append(event(ref, P.PHASE_CONTAINER_STARTED, T0 + 300 * MS, source=P.SOURCE_CONTAINERD))
        answer = 100 if i % 10 == 0 else 301
        evs.append(event(ref, P.PHASE_FIRST_RESPONSE, T0 + answer * MS, source=P.SOURCE_PROBE))
    j.commit_batches([("agent-a", batch(1, evs))], T0)
    s = compute_summary(j.connection(), "big", include_pods=False)
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert (fr.reached, fr.count, fr.out_of_order) == (10_000, 9_000, 1_000)
    assert len(s.out_of_order) == 1_000 and not s.pods

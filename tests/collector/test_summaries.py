"""Run summaries from a journal whose every time is known, so each number is exact.

The run: created at T0 (rtctl offset 2 ms), 10 replicas on two nodes whose agents
have clock offsets of +1 ms and -2 ms; pod i answers its first probe at
T0 + 10·(i+1) ms and is ready 5 ms later; an eleventh pod is OOMKilled. Raw
agent times are written as "collector time - offset", so the expectations can
be stated in the collector timebase.

The memory tests at the end build small runs of their own, one per rule of
"before" and "after" (collector/summaries.py): a stale sample before the create,
a VM booting before its sandbox_created event, samples after the delete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from collector.errors import UnknownRun
from collector.journal import Journal
from collector.summaries import compute_summary, nearest_rank
from rtbench.v1 import control_pb2, events_pb2
from tests.collector.export_fixtures import (
    MS,
    T0,
    batch,
    event,
    hello,
    node_sample,
    open_journal,
    pod,
    pod_sample,
    register,
)

MIB = 1 << 20
OFFSET = {"agent-a": 1 * MS, "agent-b": -2 * MS}
CLOCK_UNC = 50_000
P = events_pb2


def clock(agent: str) -> events_pb2.ClockOffset:
    return events_pb2.ClockOffset(
        offset_ns=OFFSET[agent], uncertainty_ns=CLOCK_UNC, measured_at_ns=T0, samples=8
    )


def build(journal: Journal) -> None:
    hello(journal, "agent-a", "node-a")
    hello(journal, "agent-b", "node-b")
    hello(journal, "agent-c", "node-c")
    register(journal, "r1", replicas=10, offset_ns=2 * MS, uncertainty_ns=100_000)
    per_agent: dict[str, list[events_pb2.Event]] = {"agent-a": [], "agent-b": []}
    samples: dict[str, list[events_pb2.ResourceSample]] = {"agent-a": [], "agent-b": []}

    def at(agent: str, ms: float) -> int:
        """Raw agent time of a collector-timebase instant T0 + ms."""
        return T0 + int(ms * MS) - OFFSET[agent]

    order = ["p0", "p1", "p2", "p3", "p4", "p10", "p5", "p6", "p7", "p8", "p9"]
    for uid in order:
        i = int(uid[1:])
        agent, node = ("agent-a", "node-a") if i < 5 or i == 10 else ("agent-b", "node-b")
        ref = pod(uid, "r1", node)
        evs = per_agent[agent]
        evs.append(event(ref, P.PHASE_SCHEDULED, at(agent, 2)))
        if i == 10:
            evs.append(event(ref, P.PHASE_FAILED, at(agent, 50), reason="OOMKilled"))
            evs.append(event(ref, P.PHASE_FAILED, at(agent, 60), reason="OOMKilled"))
            continue
        lat = 10 * (i + 1)
        if i == 0:
            evs.append(event(ref, P.PHASE_CONTAINER_STARTED, at(agent, 3)))
            evs.append(
                event(ref, P.PHASE_CONTAINER_STARTED, at(agent, 5), source=P.SOURCE_CONTAINERD)
            )
        else:
            evs.append(event(ref, P.PHASE_CONTAINER_STARTED, at(agent, lat - 4)))
        evs.append(
            event(
                ref,
                P.PHASE_FIRST_RESPONSE,
                at(agent, lat),
                source=P.SOURCE_PROBE,
                uncertainty_ns=(i + 1) * 100_000,
            )
        )
        evs.append(event(ref, P.PHASE_READY, at(agent, lat + 5)))
        if i == 1:
            evs.append(event(ref, P.PHASE_READY, at(agent, lat + 7)))
        samples[agent].append(pod_sample(ref, at(agent, 120), 5 * MIB))
    # node-a: last sample at or before created is 990 MiB; after its pods were
    # all ready (p4 at 55 ms), the first sample is 940 MiB: 50 MiB for 5 pods.
    samples["agent-a"] += [
        node_sample(at("agent-a", -100), 1000 * MIB),
        node_sample(at("agent-a", -50), 990 * MIB),
        node_sample(at("agent-a", 30), 960 * MIB),
        node_sample(at("agent-a", 200), 940 * MIB),
        node_sample(at("agent-a", 400), 930 * MIB),
    ]
    # node-b: nothing before created, so the first sample before its first pod
    # was scheduled (2 ms) counts: 2000 MiB; after all ready (105 ms): 1930 MiB.
    samples["agent-b"] += [
        node_sample(at("agent-b", 1), 2000 * MIB),
        node_sample(at("agent-b", 90), 1950 * MIB),
        node_sample(at("agent-b", 110), 1930 * MIB),
        node_sample(at("agent-b", 1500), 1900 * MIB),
    ]
    journal.commit_batches(
        [
            (agent, batch(1, per_agent[agent], samples[agent], clock=clock(agent)))
            for agent in ("agent-a", "agent-b")
        ],
        T0,
    )
    # agent-c reports another run only: it must not appear among r1's clocks.
    register(journal, "r2", replicas=2, created_ns=None)
    other = [
        event(pod("q0", "r2", "node-c"), P.PHASE_FIRST_RESPONSE, T0 + 30 * MS, uncertainty_ns=7),
        event(pod("q1", "r2", "node-c"), P.PHASE_FIRST_RESPONSE, T0 + 40 * MS, uncertainty_ns=9),
    ]
    journal.commit_batches([("agent-c", batch(1, other))], T0)
    journal.finish_run("r1", control_pb2.RUN_STATE_SUCCEEDED, "done", T0 + 2_000 * MS)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = open_journal(tmp_path / "journal.sqlite")
    build(j)
    return j


def stats(summary: control_pb2.RunSummary, phase: int) -> control_pb2.PhaseStats:
    (found,) = [s for s in summary.phases if s.phase == phase]
    return found


def test_nearest_rank() -> None:
    values = list(range(1, 11))
    assert [nearest_rank(values, p) for p in (1, 50, 90, 99, 100)] == [1, 5, 9, 10, 10]
    assert nearest_rank([7], 50) == 7
    assert nearest_rank([], 50) == 0


def test_run_facts(journal: Journal) -> None:
    s = compute_summary(journal.connection(), "r1", include_pods=False)
    assert s.spec.run_id == "r1" and s.spec.replicas == 10 and s.spec.runtime_class == "kata-fc"
    assert dict(s.spec.environment) == {"cluster": "sim"}
    assert s.state == control_pb2.RUN_STATE_SUCCEEDED and s.message == "done"
    assert s.created_ns == T0 and s.finished_ns == T0 + 2_000 * MS
    assert len(s.pods) == 0
    assert (s.rtctl_clock.offset_ns, s.rtctl_clock.uncertainty_ns) == (2 * MS, 100_000)
    assert [(c.agent_id, c.node, c.clock.offset_ns) for c in s.clocks] == [
        ("agent-a", "node-a", 1 * MS),
        ("agent-b", "node-b", -2 * MS),
    ]
    assert all(c.clock.uncertainty_ns == CLOCK_UNC and c.clock.samples == 8 for c in s.clocks)


def test_phase_percentiles(journal: Journal) -> None:
    s = compute_summary(journal.connection(), "r1", include_pods=False)
    assert [x.phase for x in s.phases] == [
        P.PHASE_SCHEDULED,
        P.PHASE_CONTAINER_STARTED,
        P.PHASE_FIRST_RESPONSE,
        P.PHASE_READY,
        P.PHASE_FAILED,
    ]
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert (fr.count, fr.min_ns, fr.p50_ns, fr.p90_ns, fr.p99_ns, fr.max_ns) == (
        10,
        10 * MS,
        50 * MS,
        90 * MS,
        100 * MS,
        100 * MS,
    )
    # Probe bracket (i+1)·100 µs plus the agent's 50 µs clock uncertainty.
    assert fr.max_uncertainty_ns == 1_000_000 + CLOCK_UNC
    assert fr.p50_uncertainty_ns == 500_000 + CLOCK_UNC
    # containerd's 5 ms wins over the watch's earlier 3 ms for p0.
    cs = stats(s, P.PHASE_CONTAINER_STARTED)
    assert (cs.count, cs.min_ns, cs.p50_ns, cs.p90_ns, cs.max_ns) == (
        10,
        5 * MS,
        46 * MS,
        86 * MS,
        96 * MS,
    )
    ready = stats(s, P.PHASE_READY)
    assert (ready.count, ready.min_ns, ready.p50_ns, ready.max_ns) == (
        10,
        15 * MS,
        55 * MS,
        105 * MS,
    )
    sched = stats(s, P.PHASE_SCHEDULED)
    assert (sched.count, sched.min_ns, sched.max_ns) == (11, 2 * MS, 2 * MS)
    failed = stats(s, P.PHASE_FAILED)
    assert (failed.count, failed.min_ns) == (1, 50 * MS)


def test_all_responded_failures_and_memory(journal: Journal) -> None:
    s = compute_summary(journal.connection(), "r1", include_pods=False)
    assert s.all_responded_ns == 100 * MS
    assert [(f.reason, f.count) for f in s.failures] == [("OOMKilled", 1)]
    assert s.failed_pods == 1
    # (50 MiB + 70 MiB) / 10 pods.
    assert s.memory_per_pod_bytes == 12 * MIB


def test_pod_timelines(journal: Journal) -> None:
    s = compute_summary(journal.connection(), "r1", include_pods=True)
    assert [t.ordinal for t in s.pods] == list(range(11))
    uids = [t.pod.uid for t in s.pods]
    assert uids == ["p0", "p1", "p2", "p3", "p4", "p10", "p5", "p6", "p7", "p8", "p9"]
    p0 = s.pods[0]
    assert (p0.pod.node, p0.pod.name, p0.pod.run_id) == ("node-a", "web-p0", "r1")
    assert dict(p0.pod.labels) == {"app": "c-http-server"}
    assert [(x.phase, x.source, x.latency_ns) for x in p0.phases] == [
        (P.PHASE_SCHEDULED, P.SOURCE_WATCH, 2 * MS),
        (P.PHASE_CONTAINER_STARTED, P.SOURCE_CONTAINERD, 5 * MS),
        (P.PHASE_FIRST_RESPONSE, P.SOURCE_PROBE, 10 * MS),
        (P.PHASE_READY, P.SOURCE_WATCH, 15 * MS),
    ]
    assert all(x.time_ns == T0 + x.latency_ns for x in p0.phases)
    assert p0.phases[2].uncertainty_ns == 100_000 + CLOCK_UNC
    # p1 was reported ready twice by the watch: the earliest counts.
    p1_ready = [x for x in s.pods[1].phases if x.phase == P.PHASE_READY]
    assert [x.latency_ns for x in p1_ready] == [25 * MS]
    failed = s.pods[5]
    assert [(x.phase, x.latency_ns) for x in failed.phases] == [
        (P.PHASE_SCHEDULED, 2 * MS),
        (P.PHASE_FAILED, 50 * MS),
    ]


def test_run_without_create_time(journal: Journal) -> None:
    s = compute_summary(journal.connection(), "r2", include_pods=True)
    fr = stats(s, P.PHASE_FIRST_RESPONSE)
    assert fr.count == 2 and fr.p50_ns == 0 and fr.max_ns == 0
    # No clock estimate in the batch: clock uncertainty unknown (-1) adds nothing.
    assert (fr.max_uncertainty_ns, fr.p50_uncertainty_ns) == (9, 7)
    assert s.all_responded_ns == 0 and s.memory_per_pod_bytes == 0.0 and s.created_ns == 0
    assert [c.agent_id for c in s.clocks] == ["agent-c"] and not s.clocks[0].HasField("clock")
    assert [x.latency_ns for t in s.pods for x in t.phases] == [0, 0]


def test_not_all_replicas_responded(tmp_path: Path) -> None:
    j = open_journal(tmp_path / "j.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "r3", replicas=3)
    evs = [
        event(pod(f"x{i}", "r3", "node-a"), P.PHASE_FIRST_RESPONSE, T0 + (i + 1) * MS)
        for i in range(2)
    ]
    j.commit_batches([("agent-a", batch(1, evs))], T0)
    s = compute_summary(j.connection(), "r3", include_pods=False)
    assert stats(s, P.PHASE_FIRST_RESPONSE).count == 2
    assert s.all_responded_ns == 0
    assert s.memory_per_pod_bytes == 0.0  # no node samples at all


def test_unknown_run(journal: Journal) -> None:
    with pytest.raises(UnknownRun) as info:
        compute_summary(journal.connection(), "nope", include_pods=False)
    assert info.value.run_id == "nope"


def test_reader_connection_is_left_as_it_was(journal: Journal) -> None:
    conn = journal.connection()
    factory = conn.row_factory
    compute_summary(conn, "r1", include_pods=True)
    assert conn.row_factory is factory


def test_a_pod_failing_for_two_reasons_is_one_failed_pod(tmp_path: Path) -> None:
    j = open_journal(tmp_path / "j.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "r4", replicas=3)
    crashing, oom = pod("c0", "r4", "node-a"), pod("c1", "r4", "node-a")
    evs = [
        event(crashing, P.PHASE_FAILED, T0 + 5 * MS, reason="Error"),
        event(crashing, P.PHASE_FAILED, T0 + 8 * MS, reason="CrashLoopBackOff"),
        event(crashing, P.PHASE_FAILED, T0 + 30 * MS, reason="Error"),
        event(oom, P.PHASE_FAILED, T0 + 6 * MS, reason="OOMKilled"),
        event(pod("c2", "r4", "node-a"), P.PHASE_READY, T0 + 4 * MS),
    ]
    j.commit_batches([("agent-a", batch(1, evs))], T0)
    s = compute_summary(j.connection(), "r4", include_pods=False)
    # Per pod, its set of reasons: the counts add up to the failed pods.
    assert [(f.reason, f.count) for f in s.failures] == [
        ("CrashLoopBackOff+Error", 1),
        ("OOMKilled", 1),
    ]
    assert s.failed_pods == 2 == sum(f.count for f in s.failures)
    assert stats(s, P.PHASE_FAILED).count == 2


def test_relist_catch_ups_are_latencies_with_their_bound_and_late_sightings_gaps(
    tmp_path: Path,
) -> None:
    j = open_journal(tmp_path / "j.sqlite")
    hello(j, "agent-a", "node-a")
    register(j, "r6", replicas=3)
    live, caught_up, late = (pod(f"g{i}", "r6", "node-a") for i in range(3))
    # A relist 900 ms into the run shows a ready the watch missed; the watch was last
    # in sync 700 ms earlier (agent/transitions.py marks it caught_up, gap 700 ms).
    relisted = event(caught_up, P.PHASE_READY, T0 + 900 * MS, uncertainty_ns=700 * MS)
    relisted.attributes.update(caught_up="relist", gap_ns=str(700 * MS), via="list")
    first_seen = event(late, P.PHASE_READY, T0 + 50 * MS, uncertainty_ns=60 * MS)
    first_seen.attributes.update(seen_late="first seen in a list", via="list")
    evs = [event(live, P.PHASE_READY, T0 + 10 * MS), relisted, first_seen]
    j.commit_batches([("agent-a", batch(1, evs))], T0)
    s = compute_summary(j.connection(), "r6", include_pods=True)
    ready = stats(s, P.PHASE_READY)
    assert ready.count == 2  # the caught-up pod counts, the late one is a gap
    assert (ready.min_ns, ready.max_ns) == (10 * MS, 900 * MS)
    assert ready.max_uncertainty_ns == 700 * MS  # the bracket travels with the number
    timelines = {t.pod.uid: [(x.latency_ns, x.uncertainty_ns) for x in t.phases] for t in s.pods}
    assert timelines == {"g0": [(10 * MS, 0)], "g1": [(900 * MS, 700 * MS)], "g2": []}


def test_clocks_are_those_that_corrected_the_run(tmp_path: Path) -> None:
    """Not the agent's clock now: the worst estimate among the run's batches."""
    j = open_journal(tmp_path / "j.sqlite")
    hello(j, "agent-a", "node-a")
    hello(j, "agent-b", "node-b")
    register(j, "r5", replicas=4)

    def estimate(offset_ms: int, uncertainty: int, samples: int) -> events_pb2.ClockOffset:
        return events_pb2.ClockOffset(
            offset_ns=offset_ms * MS,
            uncertainty_ns=uncertainty,
            measured_at_ns=T0 + samples,
            samples=samples,
        )

    def ready(uid: str, run_id: str = "r5") -> list[events_pb2.Event]:
        return [event(pod(uid, run_id, "node-a"), P.PHASE_READY, T0 + 10 * MS)]

    j.commit_batches(
        [
            ("agent-a", batch(1, ready("a0"), clock=estimate(3, 300_000, 5))),
            ("agent-a", batch(2, ready("a1"), clock=estimate(4, 900_000, 6))),
            ("agent-a", batch(3, ready("a2"), clock=estimate(5, 200_000, 7))),
            # agent-b: one batch of the run had no estimate at all.
            ("agent-b", batch(1, ready("b0"), clock=estimate(-2, 40_000, 8))),
            ("agent-b", batch(2, ready("b1"))),
        ],
        T0,
    )
    # Later batches outside the run change the agents' current clocks.
    j.commit_batches(
        [
            ("agent-a", batch(4, ready("x0", ""), clock=estimate(9, 10, 30))),
            ("agent-b", batch(3, ready("x1", ""), clock=estimate(8, 10, 31))),
        ],
        T0,
    )
    s = compute_summary(j.connection(), "r5", include_pods=False)
    clocks = {c.agent_id: (c.node, c.clock) for c in s.clocks}
    assert set(clocks) == {"agent-a", "agent-b"}
    node, worst = clocks["agent-a"]
    assert node == "node-a"
    assert (worst.offset_ns, worst.uncertainty_ns, worst.samples, worst.measured_at_ns) == (
        4 * MS,
        900_000,
        6,
        T0 + 6,
    )
    node, unknown = clocks["agent-b"]
    assert node == "node-b"
    assert (unknown.offset_ns, unknown.uncertainty_ns, unknown.samples) == (-2 * MS, -1, 8)


# -- memory per pod: which node samples are "before" and "after" ---------------------------


def memory_of(
    tmp_path: Path,
    events: Mapping[str, Sequence[tuple[str, int, float]]],
    samples: Mapping[str, Sequence[tuple[float, int]]],
) -> float:
    """Memory per pod of a run from ``(pod, phase, ms after created)`` events and
    ``(ms after created, MemAvailable MiB)`` node samples, per node (agent offsets 0)."""
    j = open_journal(tmp_path / "memory.sqlite")
    register(j, "m1", replicas=sum(len({uid for uid, _, _ in e}) for e in events.values()))
    batches = []
    for node in sorted(events.keys() | samples.keys()):
        hello(j, f"agent-{node}", node)
        evs = [
            event(pod(uid, "m1", node), phase, T0 + int(ms * MS))
            for uid, phase, ms in events.get(node, [])
        ]
        node_samples = [node_sample(T0 + int(ms * MS), mib * MIB) for ms, mib in samples[node]]
        batches.append((f"agent-{node}", batch(1, evs, node_samples)))
    j.commit_batches(batches, T0)
    return compute_summary(j.connection(), "m1", include_pods=False).memory_per_pod_bytes


def started(
    uid: str, scheduled: float, sandbox: float, ready: float
) -> list[tuple[str, int, float]]:
    return [
        (uid, P.PHASE_SCHEDULED, scheduled),
        (uid, P.PHASE_SANDBOX_CREATED, sandbox),
        (uid, P.PHASE_CONTAINER_STARTED, sandbox + 100),
        (uid, P.PHASE_FIRST_RESPONSE, ready - 5),
        (uid, P.PHASE_READY, ready),
    ]


def test_memory_before_is_the_sample_at_first_sight_not_one_before_the_create(
    tmp_path: Path,
) -> None:
    # The previous run's pods still held 200 MiB at the last idle sample before the
    # create (-3 s); the agent's sample at first sight (2.5 ms) shows them gone. The
    # periodic one at 200 ms already sees 30 MiB of a VM that boots before its
    # sandbox_created event (300 ms): the first sight is the "before".
    pods = started("a", 2, 300, 1000) + started("b", 4, 320, 1010)
    samples = [(-3000, 800), (2.5, 1000), (200, 970), (600, 950), (1010, 900), (1200, 900)]
    assert memory_of(tmp_path, {"n": pods}, {"n": samples}) == 50 * MIB


def test_memory_before_without_a_first_sight_sample_is_the_last_before_memory_was_spent(
    tmp_path: Path,
) -> None:
    # No scheduled events (the agent came up with the pods already bound): the last
    # sample at or before the first sandbox_created (300 ms), not the stale one
    # before the create.
    pods = [e for e in started("a", 2, 300, 1000) if e[1] != P.PHASE_SCHEDULED]
    samples = [(-3000, 800), (150, 1000), (300, 1000), (400, 960), (1000, 900)]
    assert memory_of(tmp_path, {"n": pods}, {"n": samples}) == 100 * MIB


def test_memory_before_falls_back_to_the_create_when_no_pod_spent_memory_visibly(
    tmp_path: Path,
) -> None:
    # Only scheduled and ready were seen: the last sample at or before the create.
    pods = [("a", P.PHASE_SCHEDULED, 2.0), ("a", P.PHASE_READY, 900.0)]
    samples = [(-3000, 800), (-50, 990), (1, 995), (500, 960), (901, 950)]
    assert memory_of(tmp_path, {"n": pods}, {"n": samples}) == 40 * MIB


def test_memory_after_is_never_a_sample_after_the_deletion_started(tmp_path: Path) -> None:
    # node-a: its pods' last ready at 1010 ms, rtctl's delete seen at 1060 ms; the only
    # later sample (1150 ms) sees the memory freed: node-a is left out, pods and all.
    # node-b: a sample at exactly its last ready counts (the agent samples right after
    # the ready event, and a clock tick can make both one instant); a sample taken at
    # its deletion still counts, later ones never.
    node_a = started("a0", 2, 300, 1000) + started("a1", 3, 310, 1010)
    node_a += [("a0", P.PHASE_DELETION_REQUESTED, 1060), ("a1", P.PHASE_DELETION_REQUESTED, 1061)]
    node_b = started("b0", 2, 300, 1000) + started("b1", 3, 310, 1020) + started("b2", 4, 330, 1030)
    node_b += [(uid, P.PHASE_DELETION_REQUESTED, 1050) for uid in ("b0", "b1", "b2")]
    samples = {
        "node-a": [(2.5, 1000), (800, 900), (1150, 1000)],
        "node-b": [(2.5, 2000), (800, 1900), (1030, 1850), (1050, 1800), (1100, 2000)],
    }
    memory = memory_of(tmp_path, {"node-a": node_a, "node-b": node_b}, samples)
    assert memory == 50 * MIB  # (2000 - 1850) / 3, node-b's alone


def test_memory_after_the_deletion_boundary_itself_counts(tmp_path: Path) -> None:
    node = [*started("a0", 2, 300, 1000), ("a0", P.PHASE_DELETION_REQUESTED, 1040)]
    samples = [(2.5, 1000), (1040, 880), (1041, 1000)]
    assert memory_of(tmp_path, {"n": node}, {"n": samples}) == 120 * MIB


def test_memory_of_a_node_whose_pods_were_deleted_before_seen_ready_is_left_out(
    tmp_path: Path,
) -> None:
    # The ready events arrived after the delete (a slow watch): no sample can be both.
    node = [*started("a0", 2, 300, 1000), ("a0", P.PHASE_DELETION_REQUESTED, 990)]
    samples = [(-10, 1000), (2.5, 1000), (995, 880), (1001, 900)]
    assert memory_of(tmp_path, {"n": node}, {"n": samples}) == 0.0

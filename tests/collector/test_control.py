"""The control API over real gRPC: clock sync, the run registry, live progress, summaries."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from collector import control as control_api
from collector import summaries
from collector.app import Collector
from collector.journal import TERMINAL_STATES, open_reader
from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, control_pb2, control_pb2_grpc, events_pb2
from tests.collector.agent_client import TestAgent
from tests.collector.conftest import until

MS = 1_000_000


@pytest.fixture
async def control(collector: Collector) -> AsyncIterator[control_pb2_grpc.ControlServiceStub]:
    async with grpc.aio.insecure_channel(collector.address) as channel:
        yield control_pb2_grpc.ControlServiceStub(channel)


def spec(
    run_id: str, replicas: int = 3, test_id: str = "t1", plan_id: str = ""
) -> control_pb2.RunSpec:
    return control_pb2.RunSpec(
        run_id=run_id,
        test_id=test_id,
        runtime_class="kata-fc",
        variant="16Mi",
        replicas=replicas,
        image="rtbench/workload:1",
        memory_limit="16Mi",
        repetition=2,
        namespace="bench",
        plan_id=plan_id,
        environment={"cluster": "sim", "k8s": "v1.32"},
    )


def pod_events(
    sequence: int, run_id: str, phases: Sequence[tuple[int, int]], created: int
) -> agent_pb2.Batch:
    """A batch with one event per (pod index, phase), 10 ms per phase step after created."""
    batch = agent_pb2.Batch(sequence=sequence)
    batch.clock.offset_ns = 0
    batch.clock.uncertainty_ns = 100
    for pod, phase in phases:
        ev = batch.events.add()
        ev.pod.uid = f"{run_id}-{pod}"
        ev.pod.name = f"web-{pod}"
        ev.pod.run_id = run_id
        ev.phase = phase  # type: ignore[assignment]
        ev.source = events_pb2.SOURCE_WATCH
        ev.time_ns = created + phase * 10 * MS + pod * MS
    return batch


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    raise AssertionError("call succeeded")


async def test_sync_clock(control: control_pb2_grpc.ControlServiceStub) -> None:
    t1 = wall_ns()
    reply = await control.SyncClock(events_pb2.ClockSyncRequest(id=42, t1_ns=t1))
    t4 = wall_ns()
    assert reply.id == 42 and reply.t1_ns == t1
    assert t1 <= reply.t2_ns <= reply.t3_ns <= t4


async def test_run_lifecycle_with_summary(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    s = spec("run-a")
    assert (await control.RegisterRun(control_pb2.RegisterRunRequest(spec=s))).run_id == "run-a"
    sent = wall_ns() - 5 * MS
    rtctl_clock = events_pb2.ClockOffset(offset_ns=-3 * MS, uncertainty_ns=200_000, samples=5)
    created = await control.RecordCreate(
        control_pb2.RecordCreateRequest(
            run_id="run-a",
            request_sent_ns=sent,
            response_received_ns=sent + 2 * MS,
            rtctl_clock=rtctl_clock,
        )
    )
    assert created.created_ns == sent - 3 * MS
    phases = [
        (p, ph) for p in range(3) for ph in (events_pb2.PHASE_SCHEDULED, events_pb2.PHASE_READY)
    ]
    async with TestAgent(collector.address, "agent-1", "node-1") as agent:
        await agent.send_all([pod_events(1, "run-a", phases, created.created_ns)])
    await control.FinishRun(
        control_pb2.FinishRunRequest(
            run_id="run-a", state=control_pb2.RUN_STATE_SUCCEEDED, message="all ready"
        )
    )
    summary = await control.GetRunSummary(
        control_pb2.GetRunSummaryRequest(run_id="run-a", include_pods=True)
    )
    assert summary.spec == s
    assert summary.state == control_pb2.RUN_STATE_SUCCEEDED
    assert summary.created_ns == created.created_ns
    assert summary.finished_ns > 0
    assert summary.message == "all ready"
    by_phase = {p.phase: p for p in summary.phases}
    assert by_phase[events_pb2.PHASE_READY].count == 3
    assert by_phase[events_pb2.PHASE_READY].min_ns == 90 * MS
    assert by_phase[events_pb2.PHASE_READY].max_ns == 92 * MS
    assert [p.ordinal for p in summary.pods] == [0, 1, 2]
    assert summary.rtctl_clock.offset_ns == -3 * MS
    # The finish stored a summary for the exporter.
    conn = open_reader(collector.writer.journal.path)
    try:
        rows = conn.execute("SELECT summary FROM summaries WHERE run_id = 'run-a'").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    stored = control_pb2.RunSummary.FromString(rows[0][0])
    assert stored.state == control_pb2.RUN_STATE_SUCCEEDED and not stored.pods


async def test_summary_bounds_travel_in_the_request_and_come_back_in_the_answer(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec("run-u", replicas=2)))
    sent = wall_ns() - 5 * MS
    created = await control.RecordCreate(
        control_pb2.RecordCreateRequest(
            run_id="run-u", request_sent_ns=sent, rtctl_clock=events_pb2.ClockOffset()
        )
    )
    batch = agent_pb2.Batch(sequence=1)
    batch.clock.uncertainty_ns = 100
    for pod, bracket in enumerate((2 * MS, 20 * MS)):
        ev = batch.events.add(
            phase=events_pb2.PHASE_FIRST_RESPONSE,
            source=events_pb2.SOURCE_PROBE,
            time_ns=created.created_ns + (pod + 1) * 100 * MS,
            uncertainty_ns=bracket,
        )
        ev.pod.uid, ev.pod.name, ev.pod.run_id = f"u{pod}", f"web-{pod}", "run-u"
    async with TestAgent(collector.address, "agent-u", "node-u") as agent:
        await agent.send_all([batch])

    async def first_response(*bounds: tuple[int, int]) -> tuple[control_pb2.RunSummary, list[int]]:
        request = control_pb2.GetRunSummaryRequest(run_id="run-u", include_pods=True)
        for phase, ns in bounds:
            request.max_uncertainty.add(phase=phase, max_uncertainty_ns=ns)
        summary = await control.GetRunSummary(request)
        (stats,) = [p for p in summary.phases if p.phase == events_pb2.PHASE_FIRST_RESPONSE]
        return summary, [stats.reached, stats.count, stats.over_bound, stats.max_ns // MS]

    fr = events_pb2.PHASE_FIRST_RESPONSE
    default, numbers = await first_response()
    assert default.bounds_applied and numbers == [2, 1, 1, 100]
    assert [(b.phase, b.max_uncertainty_ns) for b in default.max_uncertainty] == [(fr, 10 * MS)]
    assert [t.over_bound for p in default.pods for t in p.phases] == [False, True]
    wider, numbers = await first_response((fr, 25 * MS))
    assert numbers == [2, 2, 0, 200] and wider.max_uncertainty[0].max_uncertainty_ns == 25 * MS
    lifted, numbers = await first_response((fr, -1))
    assert numbers == [2, 2, 0, 200] and lifted.bounds_applied and not lifted.max_uncertainty
    unknown = control_pb2.GetRunSummaryRequest(run_id="run-u")
    unknown.max_uncertainty.add(phase=99, max_uncertainty_ns=1)
    assert await code_of(control.GetRunSummary(unknown)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_refusals(control: control_pb2_grpc.ControlServiceStub) -> None:
    register = control_pb2.RegisterRunRequest(spec=spec("run-b"))
    await control.RegisterRun(register)
    assert await code_of(control.RegisterRun(register)) == grpc.StatusCode.ALREADY_EXISTS
    empty = control_pb2.RegisterRunRequest(spec=control_pb2.RunSpec())
    assert await code_of(control.RegisterRun(empty)) == grpc.StatusCode.INVALID_ARGUMENT
    create = control_pb2.RecordCreateRequest(run_id="nope", request_sent_ns=wall_ns())
    assert await code_of(control.RecordCreate(create)) == grpc.StatusCode.NOT_FOUND
    unset = control_pb2.RecordCreateRequest(run_id="run-b")
    assert await code_of(control.RecordCreate(unset)) == grpc.StatusCode.INVALID_ARGUMENT
    finish = control_pb2.FinishRunRequest(run_id="nope", state=control_pb2.RUN_STATE_FAILED)
    assert await code_of(control.FinishRun(finish)) == grpc.StatusCode.NOT_FOUND
    running = control_pb2.FinishRunRequest(run_id="run-b", state=control_pb2.RUN_STATE_RUNNING)
    assert await code_of(control.FinishRun(running)) == grpc.StatusCode.INVALID_ARGUMENT
    summary = control_pb2.GetRunSummaryRequest(run_id="nope")
    assert await code_of(control.GetRunSummary(summary)) == grpc.StatusCode.NOT_FOUND
    watch = control.WatchProgress(control_pb2.WatchProgressRequest(run_id="nope"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in watch:
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_runs_filters(control: control_pb2_grpc.ControlServiceStub) -> None:
    for run_id, test_id, plan_id in [("r1", "ta", "p1"), ("r2", "tb", "p1"), ("r3", "ta", "")]:
        await control.RegisterRun(
            control_pb2.RegisterRunRequest(spec=spec(run_id, 1, test_id, plan_id))
        )
    await control.FinishRun(
        control_pb2.FinishRunRequest(run_id="r3", state=control_pb2.RUN_STATE_ABORTED)
    )
    everything = await control.ListRuns(control_pb2.ListRunsRequest())
    assert [r.spec.run_id for r in everything.runs] == ["r1", "r2", "r3"]
    assert [r.state for r in everything.runs] == [
        control_pb2.RUN_STATE_REGISTERED,
        control_pb2.RUN_STATE_REGISTERED,
        control_pb2.RUN_STATE_ABORTED,
    ]
    assert everything.runs[2].finished_ns > 0
    by_test = await control.ListRuns(control_pb2.ListRunsRequest(test_id="ta"))
    assert [r.spec.run_id for r in by_test.runs] == ["r1", "r3"]
    both = await control.ListRuns(control_pb2.ListRunsRequest(test_id="ta", plan_id="p1"))
    assert [r.spec.run_id for r in both.runs] == ["r1"]
    assert both.runs[0].spec.environment["k8s"] == "v1.32"


async def test_list_agents_with_clock_and_connection(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    agent = TestAgent(collector.address, "agent-z", "node-z")
    await agent.connect()
    try:
        batch = pod_events(1, "", [(0, events_pb2.PHASE_SCHEDULED)], wall_ns())
        batch.clock.offset_ns = 1234
        batch.clock.measured_at_ns = 99
        batch.clock.samples = 8
        await agent.send_all([batch])
        listed = await control.ListAgents(control_pb2.ListAgentsRequest())
        (info,) = listed.agents
        assert (info.agent_id, info.node, info.agent_version) == ("agent-z", "node-z", "test")
        assert info.connected and info.committed_sequence == 1
        assert info.node_facts.cpu_count == 2
        assert (info.clock.offset_ns, info.clock.uncertainty_ns, info.clock.samples) == (
            1234,
            100,
            8,
        )
    finally:
        await agent.close()

    async def disconnected() -> bool:
        listed = await control.ListAgents(control_pb2.ListAgentsRequest())
        return not listed.agents[0].connected

    await until(disconnected, what="agent shown disconnected")


async def test_watch_progress_until_finished(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec("run-w", replicas=4)))
    created = wall_ns()
    seen: list[control_pb2.Progress] = []
    watch = control.WatchProgress(control_pb2.WatchProgressRequest(run_id="run-w"))

    async def follow() -> None:
        async for progress in watch:
            seen.append(progress)

    follower = asyncio.create_task(follow())

    def counts() -> dict[int, int]:
        return {c.phase: c.count for c in seen[-1].counts} if seen else {}

    async with TestAgent(collector.address, "agent-p", "node-p") as agent:
        await until(lambda: seen, what="first progress message")
        assert seen[0].replicas == 4 and seen[0].state == control_pb2.RUN_STATE_REGISTERED
        sched = [(p, events_pb2.PHASE_SCHEDULED) for p in range(4)]
        # Scheduled seen twice for pod 0 (e.g. two sources): still one pod.
        await agent.send_all([pod_events(1, "run-w", [*sched, sched[0]], created)])
        await until(lambda: counts() == {events_pb2.PHASE_SCHEDULED: 4}, what="4 scheduled")
        ready = [(p, events_pb2.PHASE_READY) for p in range(3)]
        await agent.send_all([pod_events(2, "run-w", ready, created)])
        await until(
            lambda: counts() == {events_pb2.PHASE_SCHEDULED: 4, events_pb2.PHASE_READY: 3},
            what="3 ready",
        )
    await control.FinishRun(
        control_pb2.FinishRunRequest(run_id="run-w", state=control_pb2.RUN_STATE_FAILED)
    )
    await asyncio.wait_for(follower, 60)  # the stream ends after the final message
    assert seen[-1].state == control_pb2.RUN_STATE_FAILED
    assert counts() == {events_pb2.PHASE_SCHEDULED: 4, events_pb2.PHASE_READY: 3}
    assert all(p.run_id == "run-w" and p.time_ns > 0 for p in seen)

    # A watch of a finished run: what the journal holds, once, then the end.
    late = [
        p async for p in control.WatchProgress(control_pb2.WatchProgressRequest(run_id="run-w"))
    ]
    assert len(late) == 1
    assert late[0].state == control_pb2.RUN_STATE_FAILED
    assert {c.phase: c.count for c in late[0].counts} == counts()


def stored_summaries(collector: Collector, run_id: str) -> int:
    conn = open_reader(collector.writer.journal.path)
    try:
        query = "SELECT count(*) FROM summaries WHERE run_id = ?"
        return int(conn.execute(query, (run_id,)).fetchone()[0])
    finally:
        conn.close()


async def test_a_slow_summary_does_not_hold_up_acks(
    collector: Collector,
    control: control_pb2_grpc.ControlServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FinishRun's summary (large for a big run) is computed off the journal thread."""
    entered, release = threading.Event(), threading.Event()
    summarise = summaries.compute_summary

    def slow_summary(
        conn: sqlite3.Connection,
        run_id: str,
        *,
        include_pods: bool,
        bounds: dict[int, int] | None = None,
    ) -> control_pb2.RunSummary:
        entered.set()
        release.wait(120)
        return summarise(conn, run_id, include_pods=include_pods, bounds=bounds)

    monkeypatch.setattr(control_api, "compute_summary", slow_summary)
    await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec("run-slow")))
    finish = asyncio.ensure_future(
        control.FinishRun(
            control_pb2.FinishRunRequest(run_id="run-slow", state=control_pb2.RUN_STATE_SUCCEEDED)
        )
    )
    agent = TestAgent(collector.address, "agent-busy", "node-busy")
    try:
        await until(entered.is_set, what="summary started")
        async with asyncio.timeout(60):
            await agent.connect()
            batch = pod_events(1, "run-other", [(0, events_pb2.PHASE_SCHEDULED)], wall_ns())
            await agent.send_all([batch])
        assert agent.acks == {1: False}
        assert not finish.done() and stored_summaries(collector, "run-slow") == 0
    finally:
        release.set()
        await agent.close()
    await asyncio.wait_for(finish, 60)
    assert stored_summaries(collector, "run-slow") == 1


async def test_summary_and_agents_show_the_right_clocks(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec("run-clk", replicas=3)))
    now = wall_ns()

    def clocked(
        sequence: int, run_id: str, offset_ms: int, uncertainty: int, samples: int, pod: int = 0
    ) -> agent_pb2.Batch:
        batch = pod_events(sequence, run_id, [(pod, events_pb2.PHASE_SCHEDULED)], now)
        batch.clock.CopyFrom(
            events_pb2.ClockOffset(
                offset_ns=offset_ms * MS,
                uncertainty_ns=uncertainty,
                measured_at_ns=now - sequence,
                samples=samples,
            )
        )
        return batch

    async with TestAgent(collector.address, "agent-c1", "node-c1") as agent:
        await agent.send_all(
            [
                clocked(1, "run-clk", 5, 400_000, 3, pod=0),
                clocked(2, "run-clk", 6, 100_000, 9, pod=1),
                clocked(3, "", 9, 10, 20),  # the agent's clock now, outside the run
            ]
        )
        # Sequence 5 before 4, as after a gap the agent fills later.
        await agent.send_all([clocked(5, "", 11, 20, 21)])
        await agent.send_all([clocked(4, "", 7, 30, 22)])
    async with TestAgent(collector.address, "agent-c2", "node-c2") as agent:
        unclocked = pod_events(2, "run-clk", [(2, events_pb2.PHASE_SCHEDULED)], now)
        unclocked.ClearField("clock")
        await agent.send_all([clocked(1, "run-clk", -1, 70_000, 4, pod=2), unclocked])

    listed = await control.ListAgents(control_pb2.ListAgentsRequest())
    current = {a.agent_id: (a.clock.offset_ns, a.committed_sequence) for a in listed.agents}
    assert current == {"agent-c1": (11 * MS, 5), "agent-c2": (-1 * MS, 2)}

    summary = await control.GetRunSummary(control_pb2.GetRunSummaryRequest(run_id="run-clk"))
    clocks = {c.agent_id: (c.node, c.clock) for c in summary.clocks}
    node, worst = clocks["agent-c1"]
    assert node == "node-c1"
    assert (worst.offset_ns, worst.uncertainty_ns, worst.samples, worst.measured_at_ns) == (
        5 * MS,
        400_000,
        3,
        now - 1,
    )
    node, unknown = clocks["agent-c2"]
    assert (node, unknown.offset_ns, unknown.uncertainty_ns) == ("node-c2", -1 * MS, -1)


async def test_a_finished_run_never_shows_running_again(
    collector: Collector, control: control_pb2_grpc.ControlServiceStub
) -> None:
    # Watchers coalesce changes: while one waits out its interval, the run is
    # finished and then a late RecordCreate arrives.
    collector.progress.min_interval = 5.0
    await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec("run-late", replicas=1)))
    seen: list[control_pb2.Progress] = []

    async def follow() -> None:
        watch = control.WatchProgress(control_pb2.WatchProgressRequest(run_id="run-late"))
        async for progress in watch:
            seen.append(progress)

    follower = asyncio.create_task(follow())
    try:
        await until(lambda: seen, what="first progress message")
        sent = wall_ns()
        create = control_pb2.RecordCreateRequest(
            run_id="run-late", request_sent_ns=sent, response_received_ns=sent + MS
        )
        await control.RecordCreate(create)
        await control.FinishRun(
            control_pb2.FinishRunRequest(run_id="run-late", state=control_pb2.RUN_STATE_ABORTED)
        )
        await control.RecordCreate(create)  # late: rtctl retried it
        await asyncio.wait_for(follower, 60)  # the stream ends with the final state
    finally:
        follower.cancel()
    states = [p.state for p in seen]
    final = next(i for i, state in enumerate(states) if state in TERMINAL_STATES)
    assert states[final:] == [control_pb2.RUN_STATE_ABORTED]
    late = [
        p async for p in control.WatchProgress(control_pb2.WatchProgressRequest(run_id="run-late"))
    ]
    assert [p.state for p in late] == [control_pb2.RUN_STATE_ABORTED]

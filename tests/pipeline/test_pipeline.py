"""The measuring pipeline as users run it: rtbench-sim, two ``agent run``, ``collector serve``.

Every part is its own process (started by rtctl's local stack, as ``rtctl demo``
does), talking real HTTP (Kubernetes API), real gRPC (agents to collector, the
control API) and real InfluxDB line protocol. The test plays rtctl's part
through the control API: register a run, sync clocks, record the create time,
create the Deployment, follow progress, finish, and read the summary back; then
counts the points that reached InfluxDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rtbench.clock import OffsetEstimator, SyncSample, offset_message, wall_ns
from rtbench.influxd import LocalInfluxd
from rtbench.v1 import control_pb2, control_pb2_grpc, events_pb2
from rtctl.localstack import LocalStack, StackSettings
from tests.agent.conftest import as_body, workload_deployment

REPLICAS = 10
NODES = ("sim-node-1", "sim-node-2")
RUN_ID = "pipeline-1"
RESPONDED = (
    events_pb2.PHASE_SCHEDULED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
    events_pb2.PHASE_READY,
)


@pytest.fixture
def stack(tmp_path: Path, influxd: LocalInfluxd, workload_binary: Path) -> Iterator[LocalStack]:
    """rtbench-sim, ``collector serve`` exporting to InfluxDB and one ``agent run`` per node,
    as processes (rtctl's local stack); stopped after the test, exit codes checked."""
    influxd.create_database("pipeline")
    settings = StackSettings(
        root=tmp_path, workload=workload_binary, pleg_period=0.1,
        influx_url=influxd.url, influx_db="pipeline",
    )  # fmt: skip
    with LocalStack(settings) as started:
        assert started.nodes == NODES
        yield started


@pytest.fixture
async def api(stack: LocalStack) -> AsyncIterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(stack.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as client:
        yield client


async def rtctl_clock(control: control_pb2_grpc.ControlServiceStub) -> events_pb2.ClockOffset:
    """What rtctl does before a run: measure its offset to the collector."""
    estimator = OffsetEstimator(8)
    for n in range(8):
        t1 = wall_ns()
        reply = await control.SyncClock(events_pb2.ClockSyncRequest(id=n + 1, t1_ns=t1))
        estimator.add(SyncSample(t1=t1, t2=reply.t2_ns, t3=reply.t3_ns, t4=wall_ns()))
    estimate = estimator.estimate()
    assert estimate is not None
    return offset_message(estimate)


async def test_a_run_flows_from_the_cluster_to_the_summary_and_influxdb(
    stack: LocalStack, api: k8s.ApiClient, influxd: LocalInfluxd
) -> None:
    async with grpc.aio.insecure_channel(stack.collector_address) as channel:
        control = control_pb2_grpc.ControlServiceStub(channel)
        # Both agents connected before the run starts.
        async with asyncio.timeout(60):
            while True:
                listed = await control.ListAgents(control_pb2.ListAgentsRequest())
                if sum(a.connected for a in listed.agents) == len(NODES):
                    break
                await asyncio.sleep(0.2)
        spec = control_pb2.RunSpec(
            run_id=RUN_ID, test_id="pipeline", runtime_class="runc", variant="runc",
            replicas=REPLICAS, image="rtbench/workload:1", namespace="default",
        )  # fmt: skip
        await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec))
        clock = await rtctl_clock(control)
        deployment = workload_deployment("pipeline", REPLICAS, run_id=RUN_ID)
        sent = wall_ns()
        await k8s.AppsV1Api(api).create_namespaced_deployment("default", as_body(deployment))
        received = wall_ns()
        created = await control.RecordCreate(
            control_pb2.RecordCreateRequest(
                run_id=RUN_ID, request_sent_ns=sent, response_received_ns=received,
                rtctl_clock=clock,
            )
        )  # fmt: skip
        assert created.created_ns == sent + clock.offset_ns

        progress: list[control_pb2.Progress] = []

        async def follow() -> None:
            stream = control.WatchProgress(control_pb2.WatchProgressRequest(run_id=RUN_ID))
            async for message in stream:
                progress.append(message)
                counts = {c.phase: c.count for c in message.counts}
                if all(counts.get(p, 0) >= REPLICAS for p in RESPONDED):
                    return

        await asyncio.wait_for(follow(), 120)
        await control.FinishRun(
            control_pb2.FinishRunRequest(run_id=RUN_ID, state=control_pb2.RUN_STATE_SUCCEEDED)
        )
        # No bound on first_response: this test follows every pod's events through the
        # pipeline, and a loaded machine can widen a probe's bracket past the default.
        request = control_pb2.GetRunSummaryRequest(run_id=RUN_ID, include_pods=True)
        request.max_uncertainty.add(phase=events_pb2.PHASE_FIRST_RESPONSE, max_uncertainty_ns=-1)
        summary = await control.GetRunSummary(request)

    assert len(progress) >= 2, "progress is streamed as it changes, not once at the end"
    stats = {s.phase: s for s in summary.phases}
    assert summary.bounds_applied and not summary.max_uncertainty
    for phase in RESPONDED:
        assert stats[phase].count == REPLICAS, events_pb2.Phase.Name(phase)
        assert 0 < stats[phase].p50_ns <= stats[phase].max_ns
    first = stats[events_pb2.PHASE_FIRST_RESPONSE]
    # The probe sees the app before the kubelet's readiness probe flips Ready.
    assert first.p50_ns < stats[events_pb2.PHASE_READY].p50_ns
    assert 0 < first.max_uncertainty_ns < 1_000_000_000
    assert summary.all_responded_ns == first.max_ns
    assert summary.state == control_pb2.RUN_STATE_SUCCEEDED
    assert {c.node for c in summary.clocks} == set(NODES)
    assert all(c.clock.uncertainty_ns > 0 for c in summary.clocks)
    assert summary.rtctl_clock.offset_ns == clock.offset_ns
    assert summary.rtctl_clock.uncertainty_ns == clock.uncertainty_ns
    assert sorted(p.ordinal for p in summary.pods) == list(range(REPLICAS))
    for pod in summary.pods:
        phases = {t.phase: t for t in pod.phases}
        probe = phases[events_pb2.PHASE_FIRST_RESPONSE]
        assert probe.source == events_pb2.SOURCE_PROBE
        assert probe.latency_ns == probe.time_ns - summary.created_ns > 0

    # The same run in InfluxDB: one first_response point per pod, ordinals as tags.
    query = (
        f"SELECT count(latency_ms) FROM pod_phase WHERE run_id = '{RUN_ID}' "
        "AND phase = 'first_response' GROUP BY pod"
    )
    async with asyncio.timeout(60):
        while True:
            series = influxd.query(query, db="pipeline")[0].get("series", [])
            if len(series) == REPLICAS:
                break
            await asyncio.sleep(0.25)
    assert sorted(int(s["tags"]["pod"]) for s in series) == list(range(REPLICAS))
    assert all(s["values"][0][1] == 1 for s in series)

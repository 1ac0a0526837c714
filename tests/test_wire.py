"""The wire contract: generated code matches the .proto files and works over real gRPC."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rtbench.containerd import containers_pb2 as ctd_containers
from rtbench.containerd import events_pb2 as ctd_events
from rtbench.containerd import events_service_pb2 as ctd_events_service
from rtbench.containerd import task_types_pb2 as ctd_task_types
from rtbench.containerd import tasks_pb2 as ctd_tasks
from rtbench.v1 import agent_pb2, agent_pb2_grpc, control_pb2, events_pb2

from .conftest import REPO


@pytest.mark.parametrize("package", ["v1", "containerd", "cri"])
def test_generated_code_has_not_drifted(tmp_path: Path, package: str) -> None:
    subprocess.run(
        [str(REPO / "scripts" / "gen-proto"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    fresh_dir = tmp_path / "rtbench" / package
    committed_dir = REPO / "rtbench" / package
    fresh = sorted(p.name for p in fresh_dir.iterdir())
    committed = sorted(p.name for p in committed_dir.glob("*_pb2*"))
    assert fresh == committed
    for name in fresh:
        assert (fresh_dir / name).read_bytes() == (committed_dir / name).read_bytes(), (
            f"rtbench/{package}/{name} is stale: run scripts/gen-proto"
        )


def test_field_numbers_are_stable() -> None:
    """Numbers are the contract: changing one silently breaks mixed-version fleets."""
    batch = agent_pb2.Batch.DESCRIPTOR.fields_by_name
    assert {n: f.number for n, f in batch.items()} == {
        "sequence": 1,
        "events": 2,
        "samples": 3,
        "probes": 4,
        "clock": 5,
        "sealed_ns": 6,
    }
    event = events_pb2.Event.DESCRIPTOR.fields_by_name
    assert event["pod"].number == 1 and event["time_ns"].number == 4
    assert event["uncertainty_ns"].number == 6
    assert events_pb2.PHASE_FIRST_RESPONSE == 8
    msg = agent_pb2.AgentMessage.DESCRIPTOR.fields_by_name
    assert (msg["hello"].number, msg["batch"].number, msg["clock_sync"].number) == (1, 2, 3)


def test_containerd_numbers_are_containerds() -> None:
    """proto/rtbench/containerd restates containerd's public API: its names and numbers
    must stay containerd's (api/events/task.proto, api/services/.../*.proto)."""

    def numbers(message: Any) -> dict[str, int]:
        return {n: f.number for n, f in message.DESCRIPTOR.fields_by_name.items()}

    assert numbers(ctd_events.TaskExit) == {
        "container_id": 1,
        "id": 2,
        "pid": 3,
        "exit_status": 4,
        "exited_at": 5,
    }
    assert numbers(ctd_events.TaskCreate) == {"container_id": 1, "bundle": 2, "pid": 6}
    assert numbers(ctd_events.TaskStart) == {"container_id": 1, "pid": 2}
    assert numbers(ctd_events.TaskDelete)["id"] == 5
    assert numbers(ctd_events.ContainerCreate) == {"id": 1, "image": 2, "runtime": 3}
    assert numbers(ctd_events_service.Envelope) == {
        "timestamp": 1,
        "namespace": 2,
        "topic": 3,
        "event": 4,
    }
    assert numbers(ctd_containers.Container) == {
        "id": 1,
        "labels": 2,
        "image": 3,
        "runtime": 4,
        "created_at": 8,
        "updated_at": 9,
    }
    assert numbers(ctd_task_types.Process) == {
        "container_id": 1,
        "id": 2,
        "pid": 3,
        "status": 4,
        "exit_status": 9,
        "exited_at": 10,
    }
    assert ctd_task_types.STOPPED == 3
    assert ctd_events.TaskStart.DESCRIPTOR.full_name == "containerd.events.TaskStart"
    methods = {
        f"/{s.full_name}/{m.name}"
        for module in (ctd_events_service, ctd_containers, ctd_tasks)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert methods == {
        "/containerd.services.events.v1.Events/Subscribe",
        "/containerd.services.containers.v1.Containers/Get",
        "/containerd.services.containers.v1.Containers/List",
        "/containerd.services.tasks.v1.Tasks/Get",
        "/containerd.services.tasks.v1.Tasks/List",
    }


def test_messages_round_trip_and_reject_garbage() -> None:
    event = events_pb2.Event(
        pod=events_pb2.PodRef(
            uid="u1", name="p", namespace="default", run_id="r1", labels={"app": "c-http-server"}
        ),
        phase=events_pb2.PHASE_FIRST_RESPONSE,
        source=events_pb2.SOURCE_PROBE,
        time_ns=1_700_000_000_123_456_789,
        uncertainty_ns=900_000,
    )
    batch = agent_pb2.Batch(sequence=7, events=[event])
    assert agent_pb2.Batch.FromString(batch.SerializeToString()) == batch
    with pytest.raises(Exception, match="Error parsing message"):
        agent_pb2.Batch.FromString(b"\xff\xff\xff\xff")
    spec = control_pb2.RunSpec(run_id="r1", runtime_class="kata-fc", replicas=100)
    assert control_pb2.RunSpec.FromString(spec.SerializeToString()).replicas == 100


class EchoCollector(agent_pb2_grpc.AgentServiceServicer):
    """Acks every batch and answers clock syncs: enough to exercise the stream shape."""

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: object
    ) -> AsyncIterator[agent_pb2.CollectorMessage]:
        async for msg in request_iterator:
            kind = msg.WhichOneof("body")
            if kind == "hello":
                yield agent_pb2.CollectorMessage(
                    welcome=agent_pb2.Welcome(collector_id="c", committed_sequence=0)
                )
            elif kind == "batch":
                yield agent_pb2.CollectorMessage(ack=agent_pb2.Ack(sequence=msg.batch.sequence))
            elif kind == "clock_sync":
                req = msg.clock_sync
                yield agent_pb2.CollectorMessage(
                    clock_sync=events_pb2.ClockSyncReply(
                        id=req.id, t1_ns=req.t1_ns, t2_ns=5, t3_ns=6
                    )
                )


async def test_agent_stream_and_health_over_real_grpc() -> None:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(EchoCollector(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("rtbench.v1.AgentService", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="rtbench.v1.AgentService")
            )
            assert check.status == health_pb2.HealthCheckResponse.SERVING

            async def outgoing() -> AsyncIterator[agent_pb2.AgentMessage]:
                yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="a", node="n"))
                for seq in (1, 2, 3):
                    yield agent_pb2.AgentMessage(batch=agent_pb2.Batch(sequence=seq))
                yield agent_pb2.AgentMessage(clock_sync=events_pb2.ClockSyncRequest(id=9, t1_ns=1))

            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(outgoing())
            replies = [r async for r in call]
        assert [r.WhichOneof("body") for r in replies] == [
            "welcome",
            "ack",
            "ack",
            "ack",
            "clock_sync",
        ]
        assert [r.ack.sequence for r in replies[1:4]] == [1, 2, 3]
        assert replies[4].clock_sync.id == 9
    finally:
        await server.stop(None)

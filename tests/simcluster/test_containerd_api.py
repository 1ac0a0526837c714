"""The simulated nodes' containerd sockets, read by a real gRPC client over unix sockets.

Pods start on a running simulated cluster; the tests read what an agent would
read from each node's socket: the event stream (create/start with exactly the
runtime log's ns times, exits on deletion), the CRI labels that map containers
back to pods, tasks, per-node isolation, reconnects, containerd's namespace and
filter rules, and the ``--containerd-dir`` flag of ``rtbench-sim``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rtbench.clock import wall_ns
from rtbench.containerd import (
    containers_pb2,
    containers_pb2_grpc,
    events_pb2,
    events_service_pb2,
    events_service_pb2_grpc,
    task_types_pb2,
    tasks_pb2,
    tasks_pb2_grpc,
)
from rtbench.v1 import control_pb2, control_pb2_grpc
from rtbench.v1 import events_pb2 as rtbench_events
from simcluster.cluster import SimCluster
from simcluster.containerd_api import SUBSCRIBED_HEADER
from simcluster.containerd_state import REMOVAL_DELAY
from simcluster.errors import ConfigError, SimError
from simcluster.runtime_events import RuntimeEvent, RuntimeEventKind
from tests.agent.conftest import workload_deployment
from tests.collector.conftest import CollectorProcess, start_collector
from tests.conftest import wait_until
from tests.pipeline.test_pipeline import rtctl_clock

from .conftest import (
    BIN,
    SimProcess,
    WaitFor,
    as_body,
    running_sim,
    start_sim_process,
    stop_sim_process,
)
from .test_watch import pod

NS = (("containerd-namespace", "k8s.io"),)
NODES = ("sim-node-1", "sim-node-2")
AGENT_FILTERS = ['namespace==k8s.io,topic~="^/tasks/"', 'namespace==k8s.io,topic~="^/containers/"']
EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.TaskCreate,
        events_pb2.TaskStart,
        events_pb2.TaskExit,
        events_pb2.TaskDelete,
        events_pb2.ContainerCreate,
        events_pb2.ContainerDelete,
    )
}


def decode(envelope: events_service_pb2.Envelope) -> Any:
    """The payload, by the bare type name real containerd puts in type_url."""
    return EVENT_TYPES[envelope.event.type_url].FromString(envelope.event.value)


def subject(envelope: events_service_pb2.Envelope) -> str:
    """The container an envelope is about."""
    event = decode(envelope)
    return str(getattr(event, "container_id", "") or getattr(event, "id", ""))


def bare(container_id: str | None) -> str:
    return (container_id or "").removeprefix("containerd://")


@pytest.fixture
async def sim(workload_binary: Path, tmp_path: Path, socket_dir: Path) -> AsyncIterator[SimCluster]:
    """The simcluster ``sim`` fixture with containerd sockets."""
    async with running_sim(workload_binary, tmp_path, containerd_dir=socket_dir) as cluster:
        yield cluster


class Stream:
    """One Events/Subscribe call, read into ``envelopes`` in the background."""

    def __init__(self, channel: grpc.aio.Channel, filters: list[str]) -> None:
        stub = events_service_pb2_grpc.EventsStub(channel)
        self.call = stub.Subscribe(events_service_pb2.SubscribeRequest(filters=filters))
        self.envelopes: list[events_service_pb2.Envelope] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for envelope in self.call:
                self.envelopes.append(envelope)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    async def ready(self) -> None:
        """The simulator sends headers once the subscription is registered."""
        headers = await asyncio.wait_for(self.call.initial_metadata(), 30)
        assert (SUBSCRIBED_HEADER, "1") in tuple(headers), self.error

    async def finished(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), 30)

    def about(self, cid: str) -> list[str]:
        return [e.topic for e in self.envelopes if subject(e) == cid]

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def open_stream(channel: grpc.aio.Channel, filters: list[str]) -> Stream:
    stream = Stream(channel, filters)
    await stream.ready()
    return stream


def channel_to(path: Path) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{path}")


async def start_pod(v1: k8s.CoreV1Api, name: str, node: str) -> str:
    created = await v1.create_namespaced_pod(
        "default", as_body(pod(name, {"app": name, "tier": "bench"}, nodeName=node))
    )
    return str(created.metadata.uid)


def pod_events(sim: SimCluster, uid: str, *kinds: RuntimeEventKind) -> list[RuntimeEvent]:
    return [e for e in sim.runtime_events(pod_uid=uid) if not kinds or e.kind in kinds]


def first_event(sim: SimCluster, uid: str, kind: RuntimeEventKind) -> RuntimeEvent | None:
    """The pod's first runtime event of ``kind``, None before there is one."""
    found = pod_events(sim, uid, kind)
    return found[0] if found else None


def started(sim: SimCluster, uid: str) -> RuntimeEvent | None:
    return first_event(sim, uid, RuntimeEventKind.CONTAINER_STARTED)


async def test_subscribe_streams_sandbox_and_container_phases_at_the_runtime_times(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    async with channel_to(sim.containerd_socket("sim-node-1")) as channel:
        stream = await open_stream(channel, AGENT_FILTERS)
        uid = await start_pod(v1, "timed", "sim-node-1")
        app = await wait_for(lambda: started(sim, uid), what="the app container's start")
        await wait_for(lambda: "/tasks/start" in stream.about(bare(app.container_id)))
        await stream.close()

    runtime = pod_events(sim, uid)
    sandbox, cid = runtime[0].sandbox_id, bare(app.container_id)
    assert [(subject(e), e.topic) for e in stream.envelopes] == [
        (sandbox, "/containers/create"),
        (sandbox, "/tasks/create"),
        (sandbox, "/tasks/start"),
        (cid, "/containers/create"),
        (cid, "/tasks/create"),
        (cid, "/tasks/start"),
    ]
    by_topic = {(subject(e), e.topic): e for e in stream.envelopes}
    expected = {
        RuntimeEventKind.SANDBOX_CREATED: (sandbox, "/tasks/create"),
        RuntimeEventKind.SANDBOX_STARTED: (sandbox, "/tasks/start"),
        RuntimeEventKind.CONTAINER_CREATED: (cid, "/tasks/create"),
        RuntimeEventKind.CONTAINER_STARTED: (cid, "/tasks/start"),
    }
    assert [e.kind for e in runtime] == list(expected)
    for event in runtime:
        envelope = by_topic[expected[event.kind]]
        assert envelope.timestamp.ToNanoseconds() == event.time_ns, event.kind
    for envelope in stream.envelopes:
        assert envelope.namespace == "k8s.io"
        assert envelope.event.type_url.startswith("containerd.events.")
    app_start = decode(by_topic[(cid, "/tasks/start")])
    assert app_start.pid == app.pid and app.pid in {p["pid"] for p in sim.processes()}
    create = decode(by_topic[(cid, "/containers/create")])
    assert (create.image, create.runtime.name) == ("rtbench/workload:1", "io.containerd.runc.v2")


async def test_containers_and_tasks_map_back_to_the_pod(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uid = await start_pod(v1, "labelled", "sim-node-1")
    app = await wait_for(lambda: started(sim, uid), what="the app container's start")
    sandbox_created = pod_events(sim, uid, RuntimeEventKind.SANDBOX_CREATED)[0]
    sandbox, cid = sandbox_created.sandbox_id, bare(app.container_id)
    async with channel_to(sim.containerd_socket("sim-node-1")) as channel:
        containers = containers_pb2_grpc.ContainersStub(channel)
        tasks = tasks_pb2_grpc.TasksStub(channel)

        async def get(cid: str) -> containers_pb2.Container:
            request = containers_pb2.GetContainerRequest(id=cid)
            reply: containers_pb2.GetContainerResponse = await containers.Get(request, metadata=NS)
            return reply.container

        app_record, sandbox_record = await get(cid), await get(sandbox)
        assert dict(app_record.labels) == {
            "io.kubernetes.pod.uid": uid,
            "io.kubernetes.pod.name": "labelled",
            "io.kubernetes.pod.namespace": "default",
            "io.kubernetes.container.name": "web",
            "io.cri-containerd.kind": "container",
        }
        assert sandbox_record.labels["io.cri-containerd.kind"] == "sandbox"
        assert sandbox_record.labels["io.kubernetes.pod.uid"] == uid
        assert sandbox_record.labels["app"] == "labelled"  # the pod's own labels
        assert sandbox_record.created_at.ToNanoseconds() == sandbox_created.time_ns
        created = pod_events(sim, uid, RuntimeEventKind.CONTAINER_CREATED)[0]
        assert app_record.created_at.ToNanoseconds() == created.time_ns
        assert app_record.image == "rtbench/workload:1"

        sandboxes = await containers.List(
            containers_pb2.ListContainersRequest(
                filters=['labels."io.cri-containerd.kind"==sandbox']
            ),
            metadata=NS,
        )
        assert [c.id for c in sandboxes.containers] == [sandbox]
        by_uid = await containers.List(
            containers_pb2.ListContainersRequest(filters=[f"labels.io.kubernetes.pod.uid=={uid}"]),
            metadata=NS,
        )
        assert {c.id for c in by_uid.containers} == {sandbox, cid}

        listed = (await tasks.List(tasks_pb2.ListTasksRequest(), metadata=NS)).tasks
        states = {t.id: (t.status, t.pid, t.container_id) for t in listed}
        assert states == {
            sandbox: (task_types_pb2.RUNNING, 0, ""),
            cid: (task_types_pb2.RUNNING, app.pid, ""),
        }
        one = await tasks.Get(tasks_pb2.GetRequest(container_id=cid), metadata=NS)
        assert (one.process.id, one.process.pid) == (cid, app.pid)

        # containerd's refusals: unknown ids, no namespace, another namespace.
        for call in (
            containers.Get(containers_pb2.GetContainerRequest(id="nope"), metadata=NS),
            tasks.Get(tasks_pb2.GetRequest(container_id="nope"), metadata=NS),
            tasks.Get(tasks_pb2.GetRequest(container_id=cid, exec_id="x"), metadata=NS),
            containers.Get(
                containers_pb2.GetContainerRequest(id=cid),
                metadata=(("containerd-namespace", "default"),),
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await containers.Get(containers_pb2.GetContainerRequest(id=cid))
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await containers.List(
                containers_pb2.ListContainersRequest(filters=["labels.=="]), metadata=NS
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        other = (("containerd-namespace", "moby"),)
        listed = await containers.List(containers_pb2.ListContainersRequest(), metadata=other)
        assert not listed.containers
        assert not (await tasks.List(tasks_pb2.ListTasksRequest(), metadata=other)).tasks


async def test_each_node_socket_serves_only_its_own_pods(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    nodes = ("sim-node-1", "sim-node-2")
    async with (
        channel_to(sim.containerd_socket(nodes[0])) as one,
        channel_to(sim.containerd_socket(nodes[1])) as two,
    ):
        streams = {nodes[0]: await open_stream(one, []), nodes[1]: await open_stream(two, [])}
        uids = {node: await start_pod(v1, f"on-{node}", node) for node in nodes}
        apps = {
            node: await wait_for(lambda n=node: started(sim, uids[n]), what=f"a start on {node}")
            for node in nodes
        }
        for node in nodes:
            cid = bare(apps[node].container_id)
            await wait_for(lambda n=node, c=cid: "/tasks/start" in streams[n].about(c))
        for node, channel in ((nodes[0], one), (nodes[1], two)):
            await streams[node].close()
            own = {e.sandbox_id for e in sim.runtime_events(node=node)}
            own |= {bare(e.container_id) for e in sim.runtime_events(node=node) if e.container_id}
            assert {subject(e) for e in streams[node].envelopes} == own
            listed = await containers_pb2_grpc.ContainersStub(channel).List(
                containers_pb2.ListContainersRequest(), metadata=NS
            )
            assert {c.labels["io.kubernetes.pod.uid"] for c in listed.containers} == {uids[node]}
    assert sim.state()["containerdSockets"] == {
        node: str(sim.containerd_socket(node)) for node in nodes
    }


async def test_a_reconnecting_subscriber_gets_the_events_after_it_returns(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    path = sim.containerd_socket("sim-node-2")
    async with channel_to(path) as channel:
        first = await open_stream(channel, AGENT_FILTERS)
        before = await start_pod(v1, "before", "sim-node-2")
        app = await wait_for(lambda: started(sim, before), what="the first pod's start")
        await wait_for(lambda: "/tasks/start" in first.about(bare(app.container_id)))
        await first.close()
    # A new connection, as an agent makes after containerd or itself restarted.
    async with channel_to(path) as channel:
        second = await open_stream(channel, AGENT_FILTERS)
        after = await start_pod(v1, "after", "sim-node-2")
        app = await wait_for(lambda: started(sim, after), what="the second pod's start")
        await wait_for(lambda: "/tasks/start" in second.about(bare(app.container_id)))
        await second.close()
    own = {e.sandbox_id for e in pod_events(sim, after)}
    own.add(bare(app.container_id))
    assert {subject(e) for e in second.envelopes} == own  # new events only, no replay
    assert len(second.envelopes) == 6


async def test_pod_deletion_gives_task_exits_then_container_removal(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uid = await start_pod(v1, "doomed", "sim-node-1")
    app = await wait_for(lambda: started(sim, uid), what="the app container's start")
    sandbox, cid = app.sandbox_id, bare(app.container_id)
    async with channel_to(sim.containerd_socket("sim-node-1")) as channel:
        stream = await open_stream(channel, AGENT_FILTERS)
        await v1.delete_namespaced_pod("doomed", "default", grace_period_seconds=5)
        await wait_for(
            lambda: "/containers/delete" in stream.about(sandbox),
            within=30 + REMOVAL_DELAY,
            what="the pod's containers to be removed",
        )
        tasks = tasks_pb2_grpc.TasksStub(channel)
        assert not (await tasks.List(tasks_pb2.ListTasksRequest(), metadata=NS)).tasks
        await stream.close()

    assert stream.about(cid) == ["/tasks/exit", "/tasks/delete", "/containers/delete"]
    assert stream.about(sandbox) == ["/tasks/exit", "/tasks/delete", "/containers/delete"]
    (exited,) = pod_events(sim, uid, RuntimeEventKind.CONTAINER_EXITED)
    (stopped,) = pod_events(sim, uid, RuntimeEventKind.SANDBOX_STOPPED)
    envelope = next(e for e in stream.envelopes if e.topic == "/tasks/exit" and subject(e) == cid)
    event = decode(envelope)
    assert (event.id, event.pid, event.exit_status) == (cid, app.pid, exited.exit_code)
    assert event.exited_at.ToNanoseconds() == envelope.timestamp.ToNanoseconds() == exited.time_ns
    sandbox_exit = next(
        e for e in stream.envelopes if e.topic == "/tasks/exit" and subject(e) == sandbox
    )
    assert sandbox_exit.timestamp.ToNanoseconds() == stopped.time_ns
    assert stream.envelopes.index(envelope) < stream.envelopes.index(sandbox_exit)


async def test_filters_follow_containerd(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    async with channel_to(sim.containerd_socket("sim-node-1")) as channel:
        for bad in ("topic==/tasks/start", "namespace=k8s.io", "topic~=", "a,,b", '"open'):
            refused = Stream(channel, [bad])
            await refused.finished()
            assert refused.error is not None, bad
            assert refused.error.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        # Any-of: the first matches nothing here, so only task starts arrive.
        starts = await open_stream(channel, ["namespace==other", 'topic=="/tasks/start"'])
        # The container_id field of the event itself, and a regex with alternative quotes.
        creates = await open_stream(channel, ["topic~=/create$/,event.id"])
        everything = await open_stream(channel, [])
        uid = await start_pod(v1, "filtered", "sim-node-1")
        app = await wait_for(lambda: started(sim, uid), what="the app container's start")
        await wait_for(lambda: "/tasks/start" in everything.about(bare(app.container_id)))
        await wait_for(lambda: len(starts.envelopes) == 2 and len(creates.envelopes) == 2)
        for stream in (starts, creates, everything):
            await stream.close()
    assert [e.topic for e in starts.envelopes] == ["/tasks/start", "/tasks/start"]
    assert [e.topic for e in creates.envelopes] == ["/containers/create", "/containers/create"]
    assert len(everything.envelopes) == 6


async def test_sockets_are_exclusive_and_stale_ones_replaced(
    sim: SimCluster, workload_binary: Path, tmp_path: Path, socket_dir: Path
) -> None:
    second = SimCluster(
        nodes=1, workload=workload_binary, state_dir=tmp_path / "2", containerd_dir=socket_dir
    )
    with pytest.raises(SimError, match="another process serves it"):
        await second.start()
    assert sim.containerd_socket("sim-node-1").exists()  # the refusal left it alone

    stale_dir = socket_dir / "stale"
    stale_dir.mkdir()
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale_dir / "sim-node-1.sock"))
    leftover.close()  # the file stays, nobody listens: a simulator that died
    async with SimCluster(
        nodes=1, workload=workload_binary, state_dir=tmp_path / "3", containerd_dir=stale_dir
    ) as third:
        async with channel_to(third.containerd_socket("sim-node-1")) as channel:
            reply = await tasks_pb2_grpc.TasksStub(channel).List(
                tasks_pb2.ListTasksRequest(), metadata=NS
            )
            assert not reply.tasks
    assert not (stale_dir / "sim-node-1.sock").exists()

    with pytest.raises(ConfigError, match="too long for unix sockets"):
        SimCluster(containerd_dir="/tmp/" + "d" * 100)
    with pytest.raises(SimError, match="containerd API is off"):
        SimCluster().containerd_socket("sim-node-1")


def test_rtbench_sim_serves_the_sockets_with_containerd_dir(
    workload_binary: Path, tmp_path: Path, socket_dir: Path
) -> None:
    sim = start_sim_process(
        tmp_path, "--workload", str(workload_binary), "--containerd-dir", str(socket_dir)
    )
    try:
        paths = [socket_dir / f"sim-node-{i}.sock" for i in (1, 2)]

        async def list_tasks() -> list[int]:
            counts = []
            for path in paths:
                async with channel_to(path) as channel:
                    stub = tasks_pb2_grpc.TasksStub(channel)
                    reply = await stub.List(tasks_pb2.ListTasksRequest(), metadata=NS)
                    counts.append(len(reply.tasks))
            return counts

        assert asyncio.run(list_tasks()) == [0, 0]
    finally:
        assert stop_sim_process(sim.process) == 0, sim.stderr()
    assert not any(p.exists() for p in paths)


def test_containerd_dir_flag_is_documented_and_checked(socket_dir: Path) -> None:
    sim = str(BIN / "rtbench-sim")
    shown = subprocess.run([sim, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--containerd-dir" in shown.stdout
    too_long = subprocess.run(
        [sim, "--containerd-dir", str(socket_dir / ("d" * 100))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert too_long.returncode == 2
    (line,) = too_long.stderr.splitlines()
    assert line.startswith("rtbench-sim: error: ") and "too long for unix sockets" in line


@pytest.fixture
def stack(
    workload_binary: Path, tmp_path: Path, socket_dir: Path
) -> Iterator[tuple[SimProcess, CollectorProcess, list[subprocess.Popen[bytes]]]]:
    """rtbench-sim with containerd sockets, a collector, one ``agent run`` per node on them."""
    sim = start_sim_process(
        tmp_path, "--workload", str(workload_binary), "--containerd-dir", str(socket_dir)
    )
    collector: CollectorProcess | None = None
    agents: list[subprocess.Popen[bytes]] = []
    try:
        collector = start_collector(
            ["--listen", "127.0.0.1:0", "--journal", str(tmp_path / "journal.sqlite")],
            {},
            tmp_path / "collector.stderr",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_AGENT_")}
        for node in NODES:
            argv = [str(BIN / "agent"), "run", "--node", node, "--collector", collector.listen]
            argv += ["--kubeconfig", str(sim.kubeconfig), "--state-dir", str(tmp_path / node)]
            argv += ["--containerd-socket", str(socket_dir / f"{node}.sock")]
            with open(tmp_path / f"{node}.err", "wb") as err:
                agents.append(subprocess.Popen(argv, stderr=err, stdout=err, env=env))
        yield sim, collector, agents
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
        codes = []
        for agent in agents:
            try:
                codes.append(agent.wait(30))
            except subprocess.TimeoutExpired:
                agent.kill()
                codes.append(agent.wait())
        if collector is not None:
            if collector.process.poll() is None:
                codes.append(collector.terminate())
            if collector.process.stdout is not None:
                collector.process.stdout.close()
        codes.append(stop_sim_process(sim.process))
        logs = "\n".join((tmp_path / f"{n}.err").read_text() for n in NODES[: len(agents)])
        assert codes == [0] * len(codes), logs


async def test_agents_read_sandbox_and_container_starts_from_the_simulated_sockets(
    stack: tuple[SimProcess, CollectorProcess, list[subprocess.Popen[bytes]]],
) -> None:
    sim, collector, _ = stack
    replicas, run_id = 6, "ctd-e2e"
    wanted = (rtbench_events.PHASE_SANDBOX_STARTED, rtbench_events.PHASE_CONTAINER_STARTED)
    async with grpc.aio.insecure_channel(collector.listen) as channel:
        control = control_pb2_grpc.ControlServiceStub(channel)
        async with asyncio.timeout(60):
            while True:
                listed = await control.ListAgents(control_pb2.ListAgentsRequest())
                if sum(a.connected for a in listed.agents) == len(NODES):
                    break
                await asyncio.sleep(0.2)
        # ... and subscribed to their node's containerd events, so every phase is live.
        async with aiohttp.ClientSession() as http:

            async def subscribed() -> bool:
                async with http.get(f"{sim.url}/_sim/state") as reply:
                    counts = (await reply.json())["containerdSubscribers"]
                return all(counts[node] >= 1 for node in NODES)

            await wait_until(subscribed, within=60, every=0.1, what="agents on the sockets")
        spec = control_pb2.RunSpec(
            run_id=run_id, test_id="ctd", runtime_class="runc", variant="runc",
            replicas=replicas, image="rtbench/workload:1", namespace="default",
        )  # fmt: skip
        await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec))
        clock = await rtctl_clock(control)
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(sim.kubeconfig), client_configuration=configuration
        )
        async with k8s.ApiClient(configuration) as kube:
            sent = wall_ns()
            await k8s.AppsV1Api(kube).create_namespaced_deployment(
                "default", as_body(workload_deployment("ctd", replicas, run_id=run_id))
            )
            received = wall_ns()
        await control.RecordCreate(
            control_pb2.RecordCreateRequest(
                run_id=run_id, request_sent_ns=sent, response_received_ns=received,
                rtctl_clock=clock,
            )
        )  # fmt: skip

        async def follow() -> None:
            stream = control.WatchProgress(control_pb2.WatchProgressRequest(run_id=run_id))
            async for message in stream:
                counts = {c.phase: c.count for c in message.counts}
                if all(counts.get(p, 0) >= replicas for p in wanted):
                    return

        await asyncio.wait_for(follow(), 120)
        await control.FinishRun(
            control_pb2.FinishRunRequest(run_id=run_id, state=control_pb2.RUN_STATE_SUCCEEDED)
        )
        summary = await control.GetRunSummary(
            control_pb2.GetRunSummaryRequest(run_id=run_id, include_pods=True)
        )

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/runtime-events", params={"since": "0"}) as reply,
    ):
        runtime = (await reply.json())["events"]
    kinds = {
        rtbench_events.PHASE_SANDBOX_STARTED: "sandbox_started",
        rtbench_events.PHASE_CONTAINER_STARTED: "container_started",
    }
    offsets = {c.node: c.clock for c in summary.clocks}
    assert len(summary.pods) == replicas
    for timeline in summary.pods:
        phases = {(p.phase, p.source): p for p in timeline.phases}
        for phase, kind in kinds.items():
            reported = phases.get((phase, rtbench_events.SOURCE_CONTAINERD))
            assert reported is not None, (timeline.pod.name, rtbench_events.Phase.Name(phase))
            (raw,) = [e for e in runtime if e["pod_uid"] == timeline.pod.uid and e["kind"] == kind]
            # The collector moved the agent's time into its timebase by the offset of
            # the batch that carried it: the kubelet's own ns time, shifted by that
            # offset (0 ns apart when the agent's estimate held still during the run).
            clock = offsets[timeline.pod.node]
            shift = reported.time_ns - raw["time_ns"] - clock.offset_ns
            assert abs(shift) <= clock.uncertainty_ns + 1_000_000, (timeline.pod.name, kind)

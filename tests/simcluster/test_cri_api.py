"""The CRI calls on the simulated nodes' containerd sockets, read by a real gRPC client.

What the agent asks a real node's containerd for a pod's address, asked of the
simulator: a sandbox's IP the moment it started (long before a 1 s relist
publishes it), its labels and state, NOT_FOUND before the start and after the
removal, NOTREADY with no IP once stopped, the node's namespace and no IP for a
hostNetwork pod, list filters, and UNIMPLEMENTED for the rest of CRI.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from kubernetes_asyncio import client as k8s

from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc
from simcluster.cluster import SimCluster
from simcluster.containerd_state import REMOVAL_DELAY, NodeRuntime
from simcluster.errors import NotFound
from simcluster.runtime_events import RuntimeEvent, RuntimeEventKind

from .conftest import WaitFor, as_body, running_sim
from .test_containerd_api import channel_to, first_event, pod_events
from .test_watch import pod

NODE = "sim-node-1"


@pytest.fixture
async def sim(workload_binary: Path, tmp_path: Path, socket_dir: Path) -> AsyncIterator[SimCluster]:
    """Containerd sockets, and a relist so long that the API publishes no pod IP meanwhile."""
    overrides = {"containerd_dir": socket_dir, "pleg_period": 3600, "seed": 9}
    async with running_sim(workload_binary, tmp_path, **overrides) as cluster:
        yield cluster


async def create(v1: k8s.CoreV1Api, name: str, **spec: Any) -> str:
    body = pod(name, {"app": name, "tier": "bench"}, nodeName=NODE, **spec)
    created = await v1.create_namespaced_pod("default", as_body(body))
    return str(created.metadata.uid)


def sandbox_started(sim: SimCluster, uid: str) -> RuntimeEvent | None:
    return first_event(sim, uid, RuntimeEventKind.SANDBOX_STARTED)


async def test_a_sandboxs_ip_is_known_to_cri_as_it_starts(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uid = await create(v1, "early")
    started = await wait_for(lambda: sandbox_started(sim, uid), what="the sandbox start")
    async with channel_to(sim.containerd_socket(NODE)) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        reply = await runtime.PodSandboxStatus(
            cri.PodSandboxStatusRequest(pod_sandbox_id=started.sandbox_id)
        )
        version = await runtime.Version(cri.VersionRequest(version="v1"))
    status = reply.status
    assert status.id == started.sandbox_id and status.state == cri.SANDBOX_READY
    assert (status.metadata.name, status.metadata.uid, status.metadata.namespace) == (
        "early",
        uid,
        "default",
    )
    assert status.network.ip == started.ip and started.ip.startswith("127.")
    assert status.linux.namespaces.options.network == cri.POD
    assert status.labels["io.kubernetes.pod.uid"] == uid and status.labels["tier"] == "bench"
    assert status.runtime_handler == "runc"
    assert 0 < status.created_at <= started.time_ns
    assert (version.runtime_name, version.runtime_api_version) == ("rtbench-sim", "v1")
    # The API has no IP yet (its relist is an hour away); the app answers at CRI's.
    assert not (await v1.read_namespaced_pod("early", "default")).status.pod_ip
    async with aiohttp.ClientSession() as http:

        async def answers() -> bool:
            try:
                async with http.get(f"http://{status.network.ip}:8080/") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(answers, within=30, what="the app at the sandbox's IP")


async def test_a_host_network_sandbox_has_no_ip_of_its_own(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uid = await create(v1, "hostnet", hostNetwork=True)
    started = await wait_for(lambda: sandbox_started(sim, uid), what="the sandbox start")
    async with channel_to(sim.containerd_socket(NODE)) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        reply = await runtime.PodSandboxStatus(
            cri.PodSandboxStatusRequest(pod_sandbox_id=started.sandbox_id)
        )
    assert reply.status.network.ip == ""
    assert reply.status.linux.namespaces.options.network == cri.NODE
    node = await v1.read_node(NODE)
    internal = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert started.ip == internal  # the workload listens on the node's address


async def test_a_stopped_sandbox_is_notready_then_gone(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uid = await create(v1, "stopping")
    started = await wait_for(lambda: sandbox_started(sim, uid), what="the sandbox start")
    request = cri.PodSandboxStatusRequest(pod_sandbox_id=started.sandbox_id)
    await v1.delete_namespaced_pod("stopping", "default", grace_period_seconds=0)
    await wait_for(
        lambda: pod_events(sim, uid, RuntimeEventKind.SANDBOX_STOPPED), what="the sandbox stop"
    )
    async with channel_to(sim.containerd_socket(NODE)) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)

        async def stopped_status() -> Any:
            reply = await runtime.PodSandboxStatus(request)
            return reply if reply.status.state == cri.SANDBOX_NOTREADY else None

        stopped = await wait_for(stopped_status, what="NOTREADY")
        assert stopped.status.network.ip == ""
        await asyncio.sleep(REMOVAL_DELAY + 0.5)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await runtime.PodSandboxStatus(request)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_and_errors(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    uids = [await create(v1, name) for name in ("alpha", "beta")]
    starts = [await wait_for(lambda u=u: sandbox_started(sim, u)) for u in uids]
    async with channel_to(sim.containerd_socket(NODE)) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)

        async def listed(**filters: Any) -> set[str]:
            request = cri.ListPodSandboxRequest()
            for key, value in filters.items():
                if key == "state":
                    request.filter.state.state = value
                elif key == "labels":
                    request.filter.label_selector.update(value)
                else:
                    setattr(request.filter, key, value)
            reply = await runtime.ListPodSandbox(request)
            return {item.metadata.name for item in reply.items}

        assert await listed() == {"alpha", "beta"}
        assert await listed(state=cri.SANDBOX_READY) == {"alpha", "beta"}
        assert await listed(state=cri.SANDBOX_NOTREADY) == set()
        assert await listed(labels={"app": "beta"}) == {"beta"}
        assert await listed(labels={"app": "beta", "tier": "other"}) == set()
        assert await listed(id=starts[0].sandbox_id[:12]) == {"alpha"}
        # The other node's socket knows none of them.
        async with channel_to(sim.containerd_socket("sim-node-2")) as other:
            reply = await cri_grpc.RuntimeServiceStub(other).ListPodSandbox(
                cri.ListPodSandboxRequest()
            )
            assert list(reply.items) == []
        for sandbox_id, code in (("", grpc.StatusCode.INVALID_ARGUMENT), ("0" * 64, None)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await runtime.PodSandboxStatus(
                    cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
                )
            assert failed.value.code() == (code or grpc.StatusCode.NOT_FOUND)
        # The rest of CRI is not served: a kubelet's calls are UNIMPLEMENTED, not misread.
        run_sandbox = channel.unary_unary("/runtime.v1.RuntimeService/RunPodSandbox")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await run_sandbox(b"")
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        garbage = channel.unary_unary("/runtime.v1.RuntimeService/PodSandboxStatus")
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await garbage(b"\xff\xff\xff")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cri_knows_a_sandbox_only_once_it_started() -> None:
    """containerd adds a sandbox to its CRI store when RunPodSandbox returns."""
    runtime = NodeRuntime("n", lambda uid: None)

    def event(kind: RuntimeEventKind, **extra: Any) -> RuntimeEvent:
        return RuntimeEvent(1, 1_000, kind, "n", "default", "p", "u1", "sb1", **extra)

    runtime.apply(event(RuntimeEventKind.SANDBOX_CREATED))
    with pytest.raises(NotFound):
        runtime.sandbox("sb1")
    assert runtime.list_sandboxes(cri.PodSandboxFilter()) == []
    runtime.apply(event(RuntimeEventKind.SANDBOX_STARTED, ip="127.9.0.1"))
    assert runtime.sandbox("sb1").status().network.ip == "127.9.0.1"
    assert [s.id for s in runtime.list_sandboxes(cri.PodSandboxFilter())] == ["sb1"]

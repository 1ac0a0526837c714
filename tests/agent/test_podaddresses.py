"""Pod addresses from the runtime (CRI), the fallback to the API, and what the prober makes of them.

- against a containerd stand-in whose CRI answers as the test sets it
  (tests/agent/fake_containerd.py): a lookup retried while CRI does not know the
  sandbox yet, a sandbox with no IP, a hostNetwork sandbox, the ready sandboxes
  listed after a connect, and a socket without CRI;
- against a real containerd with its CRI plugin disabled: one warning, no
  addresses, and the observer probes at the API's podIP, marked as such;
- against the simulated cluster's containerd sockets, which serve CRI: the
  observer probes a pod at its sandbox's IP while the API, on a long relist,
  has published none, and a hostNetwork pod at the node's address.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from agent.observing import NodeObserver, ObserveSettings
from agent.outbox import RecordingOutbox
from agent.podaddresses import AddressCounters, PodAddress
from agent.runtimeevents import RuntimeEvents
from rtbench.clock import wall_ns
from rtbench.containerd import events_pb2 as containerd_events_pb2
from rtbench.v1 import events_pb2
from simcluster.cluster import SimCluster
from simcluster.runtime_events import RuntimeEventKind
from tests.agent.conftest import Observe, WaitFor, as_body, workload_deployment
from tests.agent.containerd import LocalContainerd, containerd, rootfs
from tests.agent.fake_containerd import FakeContainerd, cri_container, envelope, sandbox_status
from tests.agent.test_containerd import Pods, reading
from tests.simcluster.conftest import running_sim, socket_dir

__all__ = ["containerd", "rootfs", "socket_dir"]

P = events_pb2
SANDBOX_STARTED = RuntimeEventKind.SANDBOX_STARTED


def new_reader(
    outbox: RecordingOutbox, pods: Pods, socket: Path
) -> tuple[RuntimeEvents, list[PodAddress], AddressCounters]:
    """A reader whose addresses go to the returned list, with its lookups' counters."""
    found: list[PodAddress] = []
    reader = RuntimeEvents(
        outbox,
        pods.lookup,
        socket=str(socket),
        namespace="k8s.io",
        on_address=found.append,
        rng=random.Random(3),
    )
    assert reader.addresses is not None
    return reader, found, reader.addresses.counters


def start_sandbox(fake: FakeContainerd, sid: str, uid: str, started_ns: int) -> None:
    """What containerd publishes as a sandbox starts."""
    fake.containers[sid] = cri_container(sid, uid, "sandbox", started_ns - 1000)
    fake.publish(envelope("/containers/create", containerd_events_pb2.ContainerCreate(id=sid)))
    start = containerd_events_pb2.TaskStart(container_id=sid, pid=42)
    fake.publish(envelope("/tasks/start", start, started_ns))


async def test_a_started_sandbox_is_looked_up_until_cri_knows_it(wait_for: WaitFor) -> None:
    outbox, pods = RecordingOutbox(), Pods()
    async with FakeContainerd(cri=True) as fake:
        reader, found, counters = new_reader(outbox, pods, fake.socket)
        async with reading(reader):
            await wait_for(lambda: fake.streams == 1 and counters.cri)
            fake.cri.sandboxes["sb1"] = sandbox_status("sb1", "u1", "198.18.0.7")
            fake.cri.not_found["sb1"] = 3  # RunPodSandbox has not returned yet
            started_ns = wall_ns()
            start_sandbox(fake, "sb1", "u1", started_ns)
            (address,) = await wait_for(lambda: found, what="the sandbox's address")
    assert fake.cri.lookups["sb1"] == 4
    assert (address.pod_uid, address.sandbox_id, address.ip) == ("u1", "sb1", "198.18.0.7")
    assert not address.host_network
    assert address.sandbox_started_ns == started_ns
    assert address.known_ns >= started_ns


async def test_sandboxes_without_an_ip_and_on_the_host_network(wait_for: WaitFor) -> None:
    outbox, pods = RecordingOutbox(), Pods()
    async with FakeContainerd(cri=True) as fake:
        reader, found, counters = new_reader(outbox, pods, fake.socket)
        async with reading(reader):
            await wait_for(lambda: fake.streams == 1 and counters.cri)
            fake.cri.sandboxes["sb1"] = sandbox_status("sb1", "u1", "")
            fake.cri.sandboxes["sb2"] = sandbox_status("sb2", "u2", "", host_network=True)
            start_sandbox(fake, "sb1", "u1", wall_ns())
            start_sandbox(fake, "sb2", "u2", wall_ns())
            (address,) = await wait_for(lambda: found, what="the host network sandbox")
            await wait_for(lambda: counters.no_ip == 1, what="the sandbox without an IP")
    assert (address.pod_uid, address.ip, address.host_network) == ("u2", "", True)
    assert counters.resolved == 1 and counters.host_network == 1


async def test_ready_sandboxes_are_looked_up_after_a_connect(wait_for: WaitFor) -> None:
    """A sandbox that started while the reader was away gets its address from the list."""
    outbox, pods = RecordingOutbox(), Pods()
    async with FakeContainerd(cri=True) as fake:
        fake.cri.sandboxes["sb1"] = sandbox_status("sb1", "u1", "198.18.0.9")
        reader, found, _ = new_reader(outbox, pods, fake.socket)
        async with reading(reader):
            (address,) = await wait_for(lambda: found, what="the listed sandbox")
    assert (address.pod_uid, address.ip, address.sandbox_started_ns) == ("u1", "198.18.0.9", 0)


async def test_a_socket_without_cri_warns_once_and_gives_no_address(
    wait_for: WaitFor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.runtimeevents")
    outbox, pods = RecordingOutbox(), Pods()
    pods.see("u1", "p1")
    async with FakeContainerd(cri=False) as fake:
        reader, found, counters = new_reader(outbox, pods, fake.socket)
        async with reading(reader):
            await wait_for(lambda: counters.cri is False, what="no CRI")
            start_sandbox(fake, "sb1", "u1", wall_ns())
            # The sandbox phase still comes from the event stream, only the address does not.
            await wait_for(lambda: any(e.phase == P.PHASE_SANDBOX_STARTED for e in outbox.events))
    assert found == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "serves no CRI" in warnings[0] and "podIP" in warnings[0]


# -- the whole observer --------------------------------------------------------------------


@pytest.fixture
async def sim(workload_binary: Path, tmp_path: Path, socket_dir: Path) -> AsyncIterator[SimCluster]:
    """The simulated cluster with containerd sockets, on a relist so long that the API shows
    no pod IP while a test runs: what the prober learns, it learns from CRI."""
    overrides = {"containerd_dir": socket_dir, "pleg_period": 3600, "seed": 5}
    async with running_sim(workload_binary, tmp_path, **overrides) as cluster:
        yield cluster


def first_responses(outbox: RecordingOutbox) -> dict[str, events_pb2.Event]:
    return {e.pod.name: e for e in outbox.events if e.phase == P.PHASE_FIRST_RESPONSE}


async def test_the_observer_probes_at_the_sandboxs_ip_before_the_api_has_one(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    node = "sim-node-1"
    running = observe(node, containerd_socket=str(sim.containerd_socket(node)))
    await wait_for(lambda: running.observer.watcher.watches > 0, what="the watch")
    deployment = workload_deployment("cri", 4)
    deployment["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    await k8s.AppsV1Api(api).create_namespaced_deployment("default", as_body(deployment))
    found = await wait_for(lambda: len(first_responses(running.outbox)) == 4 and first_responses(
        running.outbox), within=30, what="4 first responses")  # fmt: skip
    pods = await k8s.CoreV1Api(api).list_namespaced_pod("default")
    assert all(not pod.status.pod_ip for pod in pods.items), "the API published IPs"
    for event in found.values():
        assert event.attributes["address_source"] == "cri"
        # The address the simulated runtime gave the sandbox, from its own record.
        (sandbox,) = [
            e for e in sim.runtime_events(pod_uid=event.pod.uid) if e.kind is SANDBOX_STARTED
        ]
        assert event.attributes["pod_ip"] == sandbox.ip
        # Probing began before the app listened: refused connects bound the bracket.
        assert event.attributes["bracket_start_source"] in ("connect_failure", "container_created")
        assert int(event.attributes["refused"]) > 0
        assert event.uncertainty_ns < 10_000_000


async def test_a_host_network_pod_is_probed_at_the_nodes_address(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    node = "sim-node-2"
    running = observe(node, containerd_socket=str(sim.containerd_socket(node)))
    await wait_for(lambda: running.observer.watcher.watches > 0, what="the watch")
    deployment = workload_deployment("hostnet", 1)
    spec = deployment["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    spec["hostNetwork"] = True
    await k8s.AppsV1Api(api).create_namespaced_deployment("default", as_body(deployment))
    found = await wait_for(lambda: first_responses(running.outbox), within=30, what="a response")
    (event,) = found.values()
    node_object = await k8s.CoreV1Api(api).read_node(node)
    internal = next(a.address for a in node_object.status.addresses if a.type == "InternalIP")
    assert event.attributes["address_source"] == "cri_host_network"
    assert event.attributes["pod_ip"] == internal


async def test_without_cri_the_observer_probes_at_the_apis_pod_ip(
    containerd: LocalContainerd,
    workload_binary: Path,
    tmp_path: Path,
    wait_for: WaitFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real containerd without its CRI plugin: the agent says so once and probes at the
    pod's IP from the API, and every first_response names that source."""
    caplog.set_level(logging.WARNING, logger="agent.runtimeevents")
    async with SimCluster(
        nodes=1, pleg_period=0.05, seed=3, workload=workload_binary, state_dir=tmp_path / "s"
    ) as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        async with k8s.ApiClient(configuration) as client:
            outbox = RecordingOutbox()
            settings = ObserveSettings(node="sim-node-1", containerd_socket=str(containerd.socket))
            observer = NodeObserver(client, outbox, settings)
            task = asyncio.create_task(observer.run())
            try:
                runtime = observer.runtime
                assert runtime is not None and runtime.addresses is not None
                counters = runtime.addresses.counters
                await wait_for(lambda: counters.cri is False, within=30, what="no CRI")
                await k8s.AppsV1Api(client).create_namespaced_deployment(
                    "default", as_body(workload_deployment("api-ip", 2))
                )
                found = await wait_for(
                    lambda: len(first_responses(outbox)) == 2 and first_responses(outbox),
                    within=30,
                )
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert {e.attributes["address_source"] for e in found.values()} == {"api_pod_ip"}
    warnings = [r.getMessage() for r in caplog.records if "serves no CRI" in r.getMessage()]
    assert len(warnings) == 1

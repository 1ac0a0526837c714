"""The scheduler: allocatable pods per node, nodeSelector, cordoned nodes, retries."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from simcluster.cluster import SimCluster

from .conftest import WaitFor, as_body
from .test_watch import pod


def node_of(sim: SimCluster, name: str) -> str | None:
    obj = sim.store.peek("Pod", "default", name)
    return obj["spec"].get("nodeName") if obj else None


def scheduled_condition(sim: SimCluster, name: str) -> dict[str, str] | None:
    obj = sim.store.peek("Pod", "default", name)
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == "PodScheduled":
            return dict(cond)
    return None


@pytest.fixture
async def small_sim(workload_binary: Path, tmp_path: Path) -> AsyncIterator[SimCluster]:
    async with SimCluster(
        nodes=2, max_pods=2, pleg_period=0.05, workload=workload_binary, state_dir=tmp_path
    ) as cluster:
        cluster.write_kubeconfig(tmp_path / "kubeconfig")
        yield cluster


async def test_max_pods_per_node_makes_the_rest_unschedulable(
    small_sim: SimCluster, wait_for: WaitFor
) -> None:
    sim = small_sim
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(sim.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        v1 = k8s.CoreV1Api(api)
        node = await v1.read_node("sim-node-1")
        assert node.status.allocatable["pods"] == "2"
        for i in range(5):
            await v1.create_namespaced_pod("default", as_body(pod(f"p{i}")))
        await wait_for(lambda: all(node_of(sim, f"p{i}") for i in range(4)))
        cond = await wait_for(lambda: scheduled_condition(sim, "p4"))
        assert node_of(sim, "p4") is None
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
        assert cond["message"].startswith("0/2 nodes are available: 2 Too many pods.")
        assert (
            sorted(node_of(sim, f"p{i}") or "" for i in range(4))
            == ["sim-node-1"] * 2 + ["sim-node-2"] * 2
        )

        # A terminating pod still counts until it is gone; then p4 gets its slot.
        await wait_for(
            lambda: (
                (sim.store.peek("Pod", "default", "p0") or {})["status"].get("phase") == "Running"
            )
        )
        sim.kill_container("default", "p0", sig=signal.SIGSTOP)
        freed = node_of(sim, "p0")
        await v1.delete_namespaced_pod("p0", "default", grace_period_seconds=1)
        await asyncio.sleep(0.5)
        assert sim.store.peek("Pod", "default", "p0") is not None and node_of(sim, "p4") is None
        await wait_for(lambda: node_of(sim, "p4") == freed, within=10)
        assert (scheduled_condition(sim, "p4") or {}).get("status") == "True"


async def test_node_selector_and_cordon(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.patch_node("sim-node-2", {"metadata": {"labels": {"disk": "ssd"}}})
    await v1.create_namespaced_pod("default", as_body(pod("on-ssd", nodeSelector={"disk": "ssd"})))
    await v1.create_namespaced_pod(
        "default", as_body(pod("on-nvme", nodeSelector={"disk": "nvme"}))
    )
    await v1.create_namespaced_pod(
        "default", as_body(pod("pinned", nodeSelector={"kubernetes.io/hostname": "sim-node-1"}))
    )
    await wait_for(
        lambda: node_of(sim, "on-ssd") == "sim-node-2" and node_of(sim, "pinned") == "sim-node-1"
    )
    cond = await wait_for(lambda: scheduled_condition(sim, "on-nvme"))
    assert cond["message"].startswith(
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )
    # A node change retries the pending pod.
    await v1.patch_node("sim-node-1", {"metadata": {"labels": {"disk": "nvme"}}})
    await wait_for(lambda: node_of(sim, "on-nvme") == "sim-node-1")

    await v1.patch_node("sim-node-1", {"spec": {"unschedulable": True}})
    for i in range(3):
        await v1.create_namespaced_pod("default", as_body(pod(f"spill-{i}")))
    await wait_for(lambda: all(node_of(sim, f"spill-{i}") for i in range(3)))
    assert {node_of(sim, f"spill-{i}") for i in range(3)} == {"sim-node-2"}
    nodes = await v1.list_node(field_selector="spec.unschedulable=true")
    assert [n.metadata.name for n in nodes.items] == ["sim-node-1"]

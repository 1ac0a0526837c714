"""Deployments become real processes on distinct loopback addresses, and go away again.

The deployment controller, scheduler and kubelets together: 20 replicas over 2
nodes are 20 workload processes answering HTTP 200, all pods Ready; deleting the
Deployment stops every process and every pod disappears with a DELETED event.
Scaling, rolling updates, the status and the pods' names, labels and owners.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from simcluster.cluster import SimCluster

from .conftest import WaitFor, as_body
from .test_watch import deployment


def ready_pods(sim: SimCluster, app: str) -> list[dict[str, Any]]:
    return [
        p
        for p in sim.store.items("Pod", "default")
        if p["metadata"]["labels"].get("app") == app
        and not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def refuses(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except OSError:
        return True
    writer.close()
    return False


async def test_twenty_replicas_are_twenty_processes_then_none(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    deleted: set[str] = set()
    start_rv = (await v1.list_namespaced_pod("default")).metadata.resource_version

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                v1.list_namespaced_pod, "default", resource_version=start_rv, timeout_seconds=60
            ):
                if event["type"] == "DELETED":
                    deleted.add(event["raw_object"]["metadata"]["name"])

    watcher = asyncio.create_task(follow())
    web = deployment("web", 20)
    # A readiness probe, as the benchmark chart has: Ready then means answering.
    web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8080},
        "periodSeconds": 1,
    }
    await apps.create_namespaced_deployment("default", as_body(web))
    pods = await wait_for(
        lambda: len(ready_pods(sim, "web")) == 20 and ready_pods(sim, "web"), within=30
    )

    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 20
    for ip in ips:
        assert re.fullmatch(r"127\.\d+\.\d+\.\d+", ip) and not ip.startswith("127.0.0.")
    by_node: dict[str, int] = {}
    for p in pods:
        by_node[p["spec"]["nodeName"]] = by_node.get(p["spec"]["nodeName"], 0) + 1
        assert p["status"]["podIP"].startswith(
            "127.1." if p["spec"]["nodeName"] == "sim-node-1" else "127.2."
        )
    assert by_node == {"sim-node-1": 10, "sim-node-2": 10}

    async def answer(ip: str) -> tuple[int, str]:
        async with http.get(f"http://{ip}:8080/") as response:
            return response.status, await response.text()

    assert await asyncio.gather(*(answer(ip) for ip in ips)) == [(200, "ok\n")] * 20
    processes = sim.processes()
    assert sorted(str(p["ip"]) for p in processes) == sorted(ips)
    pids = [int(str(p["pid"])) for p in processes]
    assert len(set(pids)) == 20 and all(pid_alive(pid) for pid in pids)

    dep = await apps.read_namespaced_deployment_status("web", "default")
    assert (dep.status.replicas, dep.status.ready_replicas, dep.status.available_replicas) == (
        20,
        20,
        20,
    )
    assert dep.status.updated_replicas == 20 and dep.status.observed_generation == 1
    assert {c.type: c.status for c in dep.status.conditions} == {
        "Available": "True",
        "Progressing": "True",
    }

    await apps.delete_namespaced_deployment("web", "default")
    await wait_for(lambda: not sim.store.items("Pod", "default"), within=30, what="pods gone")
    await wait_for(lambda: len(deleted) == 20, what="20 DELETED events")
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    assert deleted == {p["metadata"]["name"] for p in pods}
    assert not any(pid_alive(pid) for pid in pids)
    assert all(await asyncio.gather(*(refuses(ip, 8080) for ip in ips)))
    assert sim.processes() == []


async def test_pods_are_named_labelled_and_owned_like_real_ones(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    apps = k8s.AppsV1Api(api)
    dep = await apps.create_namespaced_deployment("default", as_body(deployment("owned", 2)))
    pods = await wait_for(
        lambda: len(sim.store.items("Pod", "default")) == 2 and sim.store.items("Pod", "default")
    )
    hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in pods}
    assert len(hashes) == 1
    (pod_hash,) = hashes
    assert len(pod_hash) == 10
    for p in pods:
        assert re.fullmatch(
            rf"owned-{pod_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", p["metadata"]["name"]
        )
        assert p["metadata"]["labels"]["app"] == "owned"
        assert p["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "owned",
                "uid": dep.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert p["spec"]["restartPolicy"] == "Always"
        assert p["spec"]["terminationGracePeriodSeconds"] == 30


async def test_scale_up_down_and_generation(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", as_body(deployment("scaled", 1)))
    await wait_for(lambda: len(ready_pods(sim, "scaled")) == 1)
    scale = await apps.patch_namespaced_deployment_scale(
        "scaled", "default", {"spec": {"replicas": 4}}
    )
    assert scale.spec.replicas == 4
    await wait_for(lambda: len(ready_pods(sim, "scaled")) == 4)
    url = sim.url + "/apis/apps/v1/namespaces/default/deployments/scaled/scale"
    async with http.get(url) as response:
        body = await response.json()
    assert body["kind"] == "Scale" and body["apiVersion"] == "autoscaling/v1"
    assert body["spec"] == {"replicas": 4} and body["status"]["selector"] == "app=scaled"
    body["spec"]["replicas"] = 2
    async with http.put(url, json=body) as response:
        assert response.status == 200
    await wait_for(
        lambda: len([p for p in sim.store.items("Pod", "default")]) == 2, what="scale down"
    )
    dep = await wait_for(
        lambda: (
            (d := sim.store.peek("Deployment", "default", "scaled"))
            and d["status"].get("readyReplicas") == 2
            and d
        )
    )
    assert dep["metadata"]["generation"] == 3 and dep["status"]["observedGeneration"] == 3


async def test_rolling_update_replaces_every_pod(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", as_body(deployment("rolling", 4)))
    old = {
        p["metadata"]["name"]
        for p in await wait_for(
            lambda: len(ready_pods(sim, "rolling")) == 4 and ready_pods(sim, "rolling")
        )
    }
    patch = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    await apps.patch_namespaced_deployment("rolling", "default", patch)
    new = await wait_for(
        lambda: (
            (pods := ready_pods(sim, "rolling"))
            and len(sim.store.items("Pod", "default")) == 4
            and all(p["metadata"].get("annotations") == {"rev": "2"} for p in pods)
            and len(pods) == 4
            and pods
        ),
        within=30,
    )
    assert not old & {p["metadata"]["name"] for p in new}
    dep = sim.store.peek("Deployment", "default", "rolling")
    assert dep is not None and dep["status"]["updatedReplicas"] == 4


async def test_foreground_delete_waits_for_the_pods(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    url = sim.url + "/apis/apps/v1/namespaces/default/deployments"
    async with http.post(url, json=deployment("fg", 2)) as response:
        assert response.status == 201
    await wait_for(lambda: len(ready_pods(sim, "fg")) == 2)
    async with http.delete(url + "/fg", json={"propagationPolicy": "Foreground"}) as response:
        assert response.status == 200
        body = await response.json()
    assert (
        body["metadata"]["deletionTimestamp"]
        and "foregroundDeletion" in body["metadata"]["finalizers"]
    )
    await wait_for(lambda: sim.store.peek("Deployment", "default", "fg") is None)
    assert sim.store.items("Pod", "default") == []
    assert not any(pid_alive(int(str(p["pid"]))) for p in sim.processes())


async def test_unknown_runtime_class_is_a_replica_failure(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment(
        "default", as_body(deployment("ghost", 2, runtimeClassName="gvisor-x"))
    )
    cond = await wait_for(
        lambda: next(
            (
                c
                for c in (sim.store.peek("Deployment", "default", "ghost") or {})
                .get("status", {})
                .get("conditions", [])
                if c["type"] == "ReplicaFailure"
            ),
            None,
        )
    )
    assert cond["status"] == "True" and cond["reason"] == "FailedCreate"
    assert 'pod rejected: RuntimeClass "gvisor-x" not found' in cond["message"]
    assert sim.store.items("Pod", "default") == []
    # Once the class exists the controller's retry creates the pods.
    node_api = k8s.NodeV1Api(api)
    runtime_class = {"metadata": {"name": "gvisor-x"}, "handler": "runsc"}
    await node_api.create_runtime_class(as_body(runtime_class))
    await wait_for(lambda: len(ready_pods(sim, "ghost")) == 2, within=20)
    dep = sim.store.peek("Deployment", "default", "ghost")
    assert dep is not None and "ReplicaFailure" not in {
        c["type"] for c in dep["status"]["conditions"]
    }


def test_pid_alive_helper_sees_this_process() -> None:
    assert pid_alive(os.getpid())

"""Watch semantics over real HTTP, with kubernetes-asyncio as rtbench's agent uses it.

List then watch from the list's resourceVersion, survive a dropped connection by
resuming from the last seen resourceVersion (no event lost or duplicated), get
410 Expired after the history is compacted and recover by listing again;
selectors that turn MODIFIED into ADDED/DELETED; bookmarks; timeoutSeconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from simcluster.cluster import SimCluster

from .conftest import WaitFor, as_body


def deployment(name: str, replicas: int, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "rtbench/workload:1",
                            "ports": [{"containerPort": 8080}],
                        }
                    ],
                    **pod_spec,
                },
            },
        },
    }


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "web", "image": "rtbench/workload:1"}], **spec},
    }


async def raw_watch(http: aiohttp.ClientSession, url: str, **params: str) -> list[dict[str, Any]]:
    """Every event of one watch request, read until the server ends the stream."""
    async with http.get(url, params={"watch": "true", **params}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        return [json.loads(line) async for line in response.content if line.strip()]


async def test_list_then_watch_survives_a_dropped_connection(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    listing = await v1.list_namespaced_pod("default")
    start_rv = int(listing.metadata.resource_version)
    await apps.create_namespaced_deployment("default", as_body(deployment("web", 3)))

    def all_ready() -> bool:
        pods = sim.store.items("Pod", "default")
        return (
            len(pods) == 3
            and all(
                c["status"] == "True"
                for p in pods
                for c in p["status"].get("conditions", [])
                if c["type"] == "Ready"
            )
            and all(p["status"].get("conditions") for p in pods)
        )

    def last_pod_rv() -> int:
        return max(e.rv for e in sim.store.history("Pod", after=start_rv))

    seen: list[tuple[str, int, str]] = []
    last_rv = str(start_rv)
    drops = 0
    connections = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connections += 1
        stream = watch.Watch()
        try:
            async with stream:
                async for event in stream.stream(
                    v1.list_namespaced_pod, "default", resource_version=last_rv, timeout_seconds=10
                ):
                    obj = event["raw_object"]
                    last_rv = obj["metadata"]["resourceVersion"]
                    seen.append((event["type"], int(last_rv), obj["metadata"]["name"]))
                    if len(seen) == 3 and drops == 0:
                        async with http.post(sim.url + "/_sim/faults/drop-watches") as response:
                            assert response.status == 200
                            assert (await response.json())["dropped"] >= 1
                        drops += 1
                    if all_ready() and int(last_rv) >= last_pod_rv():
                        break
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            continue  # the drop: resume from last_rv
        if all_ready() and int(last_rv) >= last_pod_rv():
            break
    assert drops == 1 and connections >= 2
    expected = [
        (e.type.value, e.rv, e.object["metadata"]["name"])
        for e in sim.store.history("Pod", after=start_rv)
    ]
    assert seen == expected  # every event once, in order, across the reconnect
    assert [t for t, _, _ in seen].count("ADDED") == 3


async def test_expired_history_gives_410_then_relist_recovers(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    old_rv = (await v1.list_namespaced_pod("default")).metadata.resource_version
    await v1.create_namespaced_pod("default", as_body(pod("before")))
    async with http.post(sim.url + "/_sim/faults/expire") as response:
        compacted = (await response.json())["compactedResourceVersion"]
    assert int(compacted) == sim.store.resource_version > int(old_rv)

    # On the wire: one ERROR event with a 410 Status, then the stream ends.
    events = await raw_watch(
        http, sim.url + "/api/v1/namespaces/default/pods", resourceVersion=old_rv
    )
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"] == f"too old resource version: {old_rv} ({compacted})"

    # kubernetes-asyncio turns it into ApiException(410), with or without a server timeout
    # (watching forever, it retries the same resourceVersion once first).
    for kwargs in ({"timeout_seconds": 5}, {}):
        with pytest.raises(ApiException) as caught:
            async with watch.Watch() as stream:
                async for _ in stream.stream(
                    v1.list_namespaced_pod, "default", resource_version=old_rv, **kwargs
                ):
                    pass
        assert caught.value.status == 410

    # Relist, then watch from the new resourceVersion: works and sees new writes.
    fresh = await v1.list_namespaced_pod("default")
    assert [p.metadata.name for p in fresh.items] == ["before"]
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                v1.list_namespaced_pod,
                "default",
                resource_version=fresh.metadata.resource_version,
                timeout_seconds=10,
            ):
                seen.append((event["type"], event["object"].metadata.name))
                if seen[-1] == ("ADDED", "after"):
                    return

    task = asyncio.create_task(follow())
    await wait_for(lambda: sim.store.watcher_count == 1, what="the watch to open")
    await v1.create_namespaced_pod("default", as_body(pod("after")))
    await asyncio.wait_for(task, 10)
    assert ("ADDED", "after") in seen and ("ADDED", "before") not in seen


async def test_watch_from_zero_starts_with_the_current_state(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    events = await raw_watch(http, sim.url + "/api/v1/nodes", timeoutSeconds="0")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "sim-node-1"),
        ("ADDED", "sim-node-2"),
    ]
    assert all(e["object"]["kind"] == "Node" for e in events)
    events = await raw_watch(
        http,
        sim.url + "/apis/node.k8s.io/v1/runtimeclasses",
        resourceVersion="0",
        timeoutSeconds="0",
    )
    assert {e["object"]["metadata"]["name"] for e in events} >= {"runc", "kata-fc", "wasmtime"}


async def test_node_field_selector_sees_only_its_pods_first_as_added(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                v1.list_pod_for_all_namespaces,
                field_selector="spec.nodeName=sim-node-1",
                timeout_seconds=20,
            ):
                seen.append(event)

    task = asyncio.create_task(follow())
    await wait_for(lambda: sim.store.watcher_count == 1, what="the watch to open")
    await apps.create_namespaced_deployment("default", as_body(deployment("spread", 4)))
    on_node_1 = await wait_for(
        lambda: (
            [p for p in sim.store.items("Pod") if p["spec"].get("nodeName") == "sim-node-1"]
            if len([p for p in sim.store.items("Pod") if p["spec"].get("nodeName")]) == 4
            else None
        )
    )
    names = {p["metadata"]["name"] for p in on_node_1}
    await wait_for(lambda: {e["raw_object"]["metadata"]["name"] for e in seen} == names)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(names) == 2  # spread evenly over the two nodes
    first: dict[str, str] = {}
    for event in seen:
        first.setdefault(event["raw_object"]["metadata"]["name"], event["type"])
        assert event["raw_object"]["spec"]["nodeName"] == "sim-node-1"
    assert set(first.values()) == {"ADDED"}  # unbound → bound arrives as ADDED


async def test_label_selector_turns_leaving_into_deleted_and_joining_into_added(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.create_namespaced_pod("default", as_body(pod("mover", {"tier": "a"})))
    seen: list[tuple[str, str, str]] = []

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                v1.list_namespaced_pod,
                "default",
                label_selector="tier in (a),!never",
                timeout_seconds=20,
            ):
                raw = event["raw_object"]["metadata"]
                seen.append((event["type"], raw["labels"].get("tier", ""), raw["resourceVersion"]))

    task = asyncio.create_task(follow())
    await wait_for(lambda: seen, what="the initial ADDED")
    moved = await v1.patch_namespaced_pod(
        "mover", "default", {"metadata": {"labels": {"tier": "b"}}}
    )
    await wait_for(lambda: any(t == "DELETED" for t, _, _ in seen))
    back = await v1.patch_namespaced_pod(
        "mover", "default", {"metadata": {"labels": {"tier": "a"}}}
    )
    await wait_for(lambda: [t for t, _, _ in seen].count("ADDED") == 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    deleted = next(s for s in seen if s[0] == "DELETED")
    # The previous content (still tier=a) with the resourceVersion of the change.
    assert deleted[1:] == ("a", moved.metadata.resource_version)
    readded = [s for s in seen if s[0] == "ADDED"][1]
    assert readded[1:] == ("a", back.metadata.resource_version)
    between = seen[seen.index(deleted) + 1 : seen.index(readded)]
    assert between == []  # status changes while tier=b were not sent


async def test_bookmarks_and_timeout(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/api/v1/namespaces/default/pods"
    rv = str(sim.store.resource_version)
    started = time.monotonic()
    events = await raw_watch(
        http, url, resourceVersion=rv, allowWatchBookmarks="true", timeoutSeconds="1"
    )
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0
    assert len(events) >= 3 and all(e["type"] == "BOOKMARK" for e in events)  # every 0.3 s + final
    for event in events:
        assert event["object"] == {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(sim.store.resource_version)},
        }

    started = time.monotonic()
    events = await raw_watch(http, url, resourceVersion=rv, timeoutSeconds="1")
    assert events == [] and 1.0 <= time.monotonic() - started < 3.0


async def test_initial_events_end_with_an_annotated_bookmark(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    events = await raw_watch(
        http,
        sim.url + "/api/v1/nodes",
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
        timeoutSeconds="0",
    )
    assert [e["type"] for e in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    annotations = events[2]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}

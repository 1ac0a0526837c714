"""Fault injection and the admin endpoints, over HTTP as other test suites use them."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from simcluster.cluster import SimCluster

from .conftest import WaitFor, as_body
from .test_watch import deployment, pod, raw_watch


async def test_injected_errors_hit_only_their_prefix_and_methods(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession
) -> None:
    apps, v1 = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    fault = {
        "status": 503,
        "seconds": 30,
        "path_prefix": "/apis/apps",
        "methods": ["POST"],
        "count": 2,
    }
    async with http.post(sim.url + "/_sim/faults/errors", json=fault) as response:
        assert response.status == 200
        assert (await response.json())["errors"][0]["remaining"] == 2
    for _ in range(2):
        try:
            await apps.create_namespaced_deployment("default", as_body(deployment("flaky", 1)))
        except ApiException as exc:
            assert exc.status == 503
            assert exc.headers is not None and exc.headers["Retry-After"] == "1"
            assert json.loads(exc.body or b"{}")["reason"] == "ServiceUnavailable"
        else:
            raise AssertionError("the fault did not fire")
    assert (await apps.list_namespaced_deployment("default")).items == []  # GET unaffected
    assert (await v1.list_namespaced_pod("default")).items == []  # other prefix unaffected
    # The count is used up.
    await apps.create_namespaced_deployment("default", as_body(deployment("flaky", 1)))
    async with http.get(sim.url + "/_sim/faults") as response:
        assert (await response.json())["errors"] == []


async def test_errors_expire_and_clear(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    sim.faults.inject_errors(500, 0.3, path_prefix="/api/v1/nodes")
    async with http.get(sim.url + "/api/v1/nodes") as response:
        assert response.status == 500 and (await response.json())["reason"] == "InternalError"
    async with http.get(sim.url + "/healthz") as response:
        assert response.status == 200  # admin and health paths are never faulted

    async def nodes_ok() -> bool:
        async with http.get(sim.url + "/api/v1/nodes") as response:
            return response.status == 200

    await wait_for(nodes_ok, within=3)
    sim.faults.inject_errors(429, 60)
    async with http.delete(sim.url + "/_sim/faults") as response:
        assert (await response.json()) == {"errors": [], "slow": []}
    assert await nodes_ok()


async def test_slow_down(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    async with http.post(
        sim.url + "/_sim/faults/slow", json={"delay_ms": 300, "seconds": 5}
    ) as response:
        assert response.status == 200
    started = time.monotonic()
    async with http.get(sim.url + "/api/v1/namespaces") as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.3
    sim.faults.clear()


async def test_admin_rejects_bad_fault_requests(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    for path, body in [
        ("/_sim/faults/errors", {"status": 200, "seconds": 1}),
        ("/_sim/faults/errors", {"status": "x"}),
        ("/_sim/faults/slow", {"seconds": 1}),
        ("/_sim/faults/kill-container", {"pod": "ghost"}),
    ]:
        async with http.post(sim.url + path, json=body) as response:
            payload = await response.json()
            assert response.status in (400, 404) and payload["kind"] == "Status", (path, payload)
    async with http.post(sim.url + "/_sim/faults/errors", data=b"{") as response:
        assert response.status == 400


async def test_drop_watches_cuts_open_streams(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    task = asyncio.create_task(raw_watch(http, sim.url + "/api/v1/pods", timeoutSeconds="30"))
    await wait_for(lambda: sim.store.watcher_count == 1)
    assert sim.drop_watches() == 1
    try:
        await asyncio.wait_for(task, 5)
    except aiohttp.ClientPayloadError:
        pass  # the cut shows as an incomplete chunked body
    else:
        raise AssertionError("a dropped watch must not end cleanly")
    assert sim.store.watcher_count == 0


async def test_state_meminfo_runtime_events_and_kill(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    async with http.get(sim.url + "/_sim/nodes/sim-node-1/meminfo") as response:
        before = await response.text()
    total_kb = int(before.split()[1])
    await v1.create_namespaced_pod(
        "default", as_body(pod("vm", runtimeClassName="kata-qemu", nodeName="sim-node-1"))
    )
    await wait_for(lambda: len(sim.processes()) == 1, within=15)
    async with http.get(sim.url + "/_sim/nodes/sim-node-1/meminfo") as response:
        after = await response.text()
    assert after.startswith(f"MemTotal:       {total_kb:>8} kB\n")
    available = {line.split(":")[0]: int(line.split()[1]) for line in after.splitlines()}[
        "MemAvailable"
    ]
    available_before = {line.split(":")[0]: int(line.split()[1]) for line in before.splitlines()}[
        "MemAvailable"
    ]
    assert available_before - available >= 152 * 1024  # kata-qemu's overhead plus the process

    async with http.get(sim.url + "/_sim/state") as response:
        state = await response.json()
    assert state["url"] == sim.url and int(state["resourceVersion"]) == sim.store.resource_version
    assert [n["name"] for n in state["nodes"]] == ["sim-node-1", "sim-node-2"]
    (proc,) = state["processes"]
    assert proc["pod"] == "vm" and proc["node"] == "sim-node-1" and proc["port"] == 8080

    async with http.get(
        sim.url + "/_sim/runtime-events", params={"node": "sim-node-1"}
    ) as response:
        events = (await response.json())["events"]
    assert [e["kind"] for e in events] == [
        "sandbox_created",
        "sandbox_started",
        "container_created",
        "container_started",
    ]
    assert events[3]["pid"] == proc["pid"] and isinstance(events[3]["time_ns"], int)

    async with http.post(
        sim.url + "/_sim/faults/kill-container", json={"namespace": "default", "pod": "vm"}
    ) as response:
        assert (await response.json()) == {"pid": proc["pid"], "signal": 9}
    await wait_for(
        lambda: (
            (sim.store.peek("Pod", "default", "vm") or {})["status"]["containerStatuses"][0][
                "restartCount"
            ]
            == 1
        )
    )

"""The simulated kubelet: real processes, real probes, real failure modes.

Graceful deletion (deletionTimestamp first, SIGTERM, SIGKILL after the grace
period), OOMKilled under a too-small memory limit and the CrashLoopBackOff that
follows, restarts per restartPolicy, readiness earned by real HTTP probes, the
runtime event record, logs, the missing-binary failure, and the PLEG lag with
the default 1 s relist period.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from simcluster.cluster import SimCluster
from simcluster.resources import DEPLOYMENTS, PODS
from simcluster.runtime_events import RuntimeEventKind

from .conftest import WaitFor, as_body
from .test_deployments import pid_alive, refuses
from .test_watch import deployment, pod


def status_of(sim: SimCluster, name: str) -> dict[str, Any]:
    obj = sim.store.peek("Pod", "default", name)
    return obj["status"] if obj else {}


def container(sim: SimCluster, name: str) -> dict[str, Any]:
    statuses = status_of(sim, name).get("containerStatuses") or [{}]
    return dict(statuses[0])


def is_ready(sim: SimCluster, name: str) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in status_of(sim, name).get("conditions", [])
    )


async def record_pod_events(
    v1: k8s.CoreV1Api, name: str, into: list[tuple[float, str, dict[str, Any]]]
) -> None:
    async with watch.Watch() as stream:
        async for event in stream.stream(
            v1.list_namespaced_pod,
            "default",
            field_selector=f"metadata.name={name}",
            timeout_seconds=60,
        ):
            into.append((time.monotonic(), event["type"], event["raw_object"]))


async def test_graceful_delete_sets_deletion_timestamp_then_sigterm(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.create_namespaced_pod("default", as_body(pod("graceful")))
    await wait_for(lambda: is_ready(sim, "graceful"))
    (proc,) = sim.processes()
    events: list[tuple[float, str, dict[str, Any]]] = []
    task = asyncio.create_task(record_pod_events(v1, "graceful", events))
    await wait_for(lambda: events, what="the initial ADDED")
    deleted = await v1.delete_namespaced_pod("graceful", "default")
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    await wait_for(lambda: any(t == "DELETED" for _, t, _ in events))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    kinds = [t for _, t, _ in events]
    first_marked = next(
        i for i, (_, t, o) in enumerate(events) if o["metadata"].get("deletionTimestamp")
    )
    assert kinds[first_marked] == "MODIFIED" and kinds[-1] == "DELETED"
    assert first_marked < len(kinds) - 1
    final = events[-2][2]["status"]
    assert final["phase"] == "Succeeded"  # the workload exits 0 on SIGTERM
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    exited = [e for e in sim.runtime_events() if e.kind is RuntimeEventKind.CONTAINER_EXITED]
    assert [(e.pod, e.exit_code, e.pid) for e in exited] == [("graceful", 0, proc["pid"])]
    assert not pid_alive(int(str(proc["pid"])))


async def test_sigkill_after_the_grace_period(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.create_namespaced_pod("default", as_body(pod("stubborn")))
    await wait_for(lambda: is_ready(sim, "stubborn"))
    # A stopped process cannot act on SIGTERM: only the SIGKILL after the grace ends it.
    pid = sim.kill_container("default", "stubborn", sig=signal.SIGSTOP)
    started = time.monotonic()
    await v1.delete_namespaced_pod("stubborn", "default", grace_period_seconds=1)
    assert sim.store.peek("Pod", "default", "stubborn") is not None
    await wait_for(lambda: sim.store.peek("Pod", "default", "stubborn") is None, within=10)
    assert time.monotonic() - started >= 0.9
    (exited,) = [e for e in sim.runtime_events() if e.kind is RuntimeEventKind.CONTAINER_EXITED]
    assert (exited.pid, exited.exit_code) == (pid, 137)


async def test_zero_grace_and_unscheduled_pods_go_at_once(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.create_namespaced_pod("default", as_body(pod("forced")))
    await wait_for(lambda: is_ready(sim, "forced"))
    (proc,) = sim.processes()
    async with http.delete(
        sim.url + "/api/v1/namespaces/default/pods/forced", json={"gracePeriodSeconds": 0}
    ) as response:
        assert response.status == 200
    assert sim.store.peek("Pod", "default", "forced") is None  # no graceful phase
    await wait_for(lambda: not pid_alive(int(str(proc["pid"]))), what="the process killed")
    await wait_for(lambda: refuses(str(proc["ip"]), 8080))

    await v1.create_namespaced_pod(
        "default", as_body(pod("nowhere", nodeSelector={"disk": "none"}))
    )
    await wait_for(lambda: status_of(sim, "nowhere").get("conditions"))
    await v1.delete_namespaced_pod("nowhere", "default")
    assert sim.store.peek("Pod", "default", "nowhere") is None


async def test_oom_killed_then_crash_loop_backoff(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    small = pod("hungry")
    small["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Mi"}}
    events: list[tuple[float, str, dict[str, Any]]] = []
    task = asyncio.create_task(record_pod_events(v1, "hungry", events))
    await wait_for(lambda: sim.store.watcher_count == 1)
    await v1.create_namespaced_pod("default", as_body(small))
    await wait_for(lambda: container(sim, "hungry").get("restartCount", 0) >= 2, within=20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    states = [o["status"].get("containerStatuses", [{}])[0] for _, _, o in events]
    terminated = [s for s in states if "terminated" in s.get("state", {})]
    assert terminated, "the OOM kill itself is published"
    assert terminated[0]["state"]["terminated"]["reason"] == "OOMKilled"
    assert terminated[0]["state"]["terminated"]["exitCode"] == 137
    backoff = next(
        s
        for s in states
        if s.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
    )
    assert backoff["restartCount"] == 1
    assert backoff["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert backoff["lastState"]["terminated"]["exitCode"] == 137
    assert "back-off" in backoff["state"]["waiting"]["message"]
    exits = [e for e in sim.runtime_events() if e.kind is RuntimeEventKind.CONTAINER_EXITED]
    assert len(exits) >= 2 and {e.exit_code for e in exits} == {137}

    # The typical benchmark limit (16Mi) is enough for every default runtime.
    roomy = pod("roomy", runtimeClassName="kata-fc")
    roomy["spec"]["containers"][0]["resources"] = {"limits": {"memory": "16Mi"}}
    await v1.create_namespaced_pod("default", as_body(roomy))
    await wait_for(lambda: is_ready(sim, "roomy"), within=20)
    assert container(sim, "roomy")["restartCount"] == 0


async def test_exits_restart_per_restart_policy(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    await v1.create_namespaced_pod("default", as_body(pod("always")))
    await v1.create_namespaced_pod("default", as_body(pod("never", restartPolicy="Never")))
    await wait_for(lambda: is_ready(sim, "always") and is_ready(sim, "never"))
    sim.kill_container("default", "always", sig=signal.SIGKILL)
    sim.kill_container("default", "never", sig=signal.SIGTERM)
    await wait_for(lambda: status_of(sim, "never").get("phase") == "Succeeded")
    done = container(sim, "never")["state"]["terminated"]
    assert (done["exitCode"], done["reason"]) == (0, "Completed")
    await wait_for(
        lambda: container(sim, "always").get("restartCount") == 1 and is_ready(sim, "always"),
        within=10,
    )
    last = container(sim, "always")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "Error")
    assert status_of(sim, "always")["phase"] == "Running"


async def test_readiness_is_earned_by_real_probes(
    sim: SimCluster, api: k8s.ApiClient, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    good = pod("probed")
    good["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8080},
        "initialDelaySeconds": 1,
        "periodSeconds": 1,
    }
    bad = pod("misprobed")
    bad["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/nope", "port": 8080},
        "periodSeconds": 1,
    }
    await v1.create_namespaced_pod("default", as_body(good))
    await v1.create_namespaced_pod("default", as_body(bad))
    await wait_for(lambda: is_ready(sim, "probed"), within=10)
    started = next(
        e.time_ns
        for e in sim.runtime_events()
        if e.kind is RuntimeEventKind.CONTAINER_STARTED and e.pod == "probed"
    )
    assert time.time_ns() - started >= 1_000_000_000  # not before initialDelaySeconds
    assert container(sim, "misprobed")["started"] is True
    assert not is_ready(sim, "misprobed")  # 404 from the workload: running, never ready
    ready = next(c for c in status_of(sim, "misprobed")["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady"


async def test_runtime_events_logs_and_env(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    v1 = k8s.CoreV1Api(api)
    chatty = pod("chatty")
    chatty["spec"]["containers"][0]["env"] = [{"name": "BODY", "value": "hello from env"}]
    created = await v1.create_namespaced_pod("default", as_body(chatty))
    await wait_for(lambda: is_ready(sim, "chatty"))
    ip = status_of(sim, "chatty")["podIP"]

    async def answer() -> str | None:
        # Without a readiness probe, Ready means started, not yet listening.
        try:
            async with http.get(f"http://{ip}:8080/") as response:
                return await response.text()
        except aiohttp.ClientConnectorError:
            return None

    assert await wait_for(answer, what="the workload to listen") == "hello from env\n"

    events = sim.runtime_events(pod_uid=created.metadata.uid)
    assert [e.kind for e in events] == [
        RuntimeEventKind.SANDBOX_CREATED,
        RuntimeEventKind.SANDBOX_STARTED,
        RuntimeEventKind.CONTAINER_CREATED,
        RuntimeEventKind.CONTAINER_STARTED,
    ]
    times = [e.time_ns for e in events]
    assert times == sorted(times) and len(set(times)) == 4
    assert events[3].container_id == container(sim, "chatty")["containerID"]

    url = sim.url + "/api/v1/namespaces/default/pods/chatty/log"
    async with http.get(url) as response:
        assert response.status == 200 and response.content_type == "text/plain"
        text = await response.text()
    assert text.startswith(f"rtbench-workload listening addr={ip} port=8080 epoch_ms=")
    listening_ms = float(text.split("epoch_ms=")[1].split()[0])
    assert listening_ms * 1e6 >= events[3].time_ns - 50_000_000  # the app listens after its start
    async with http.get(url, params={"container": "nope"}) as response:
        assert response.status == 400
        assert (await response.json())["message"] == "container nope is not valid for pod chatty"

    async def follow() -> str:
        async with http.get(url, params={"follow": "true", "tailLines": "1"}) as response:
            return await response.text()

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    assert not follower.done()  # following while the process runs
    await v1.delete_namespaced_pod("chatty", "default")
    followed = await asyncio.wait_for(follower, 10)
    assert followed.startswith("rtbench-workload listening") and followed.endswith(
        "rtbench-workload stopped\n"
    )


async def test_missing_workload_binary_is_create_container_error(
    tmp_path: Path, wait_for: WaitFor
) -> None:
    async with SimCluster(
        nodes=1, pleg_period=0, workload=tmp_path / "absent", state_dir=tmp_path
    ) as sim:
        sim.registry.create(PODS, "default", pod("broken"))

        def waiting() -> dict[str, Any] | None:
            status = container(sim, "broken")
            reason = status.get("state", {}).get("waiting", {}).get("reason")
            return status if reason == "CreateContainerError" else None

        status = await wait_for(waiting)
        assert "workload binary" in status["state"]["waiting"]["message"]
        assert status_of(sim, "broken")["phase"] == "Pending"
        assert sim.processes() == []


async def test_default_pleg_period_publishes_on_relist_ticks(
    workload_binary: Path, tmp_path: Path, wait_for: WaitFor
) -> None:
    async with SimCluster(nodes=1, workload=workload_binary, state_dir=tmp_path, seed=3) as sim:
        assert sim.settings.pleg_period == 1.0
        for i in range(3):
            sim.registry.create(PODS, "default", pod(f"lag-{i}"))
        published: dict[str, float] = {}

        def running() -> bool:
            for i in range(3):
                name = f"lag-{i}"
                if name not in published and container(sim, name).get("started"):
                    published[name] = time.monotonic()
            return len(published) == 3

        await wait_for(running, within=10, every=0.005)
        for name, seen in published.items():
            (start,) = [
                e
                for e in sim.runtime_events()
                if e.pod == name and e.kind is RuntimeEventKind.CONTAINER_STARTED
            ]
            lag = seen - time.monotonic() + (time.time_ns() - start.time_ns) / 1e9
            assert 0.0 <= lag <= 1.15, (name, lag)
            # Published on a relist tick (multiples of 1 s of the monotonic clock).
            assert min(seen % 1.0, 1.0 - seen % 1.0) < 0.1, (name, seen % 1.0)


async def test_stopping_the_cluster_kills_every_workload(
    workload_binary: Path, tmp_path: Path, wait_for: WaitFor
) -> None:
    sim = SimCluster(nodes=2, pleg_period=0, workload=workload_binary, state_dir=tmp_path)
    await sim.start()
    try:
        sim.registry.create(DEPLOYMENTS, "default", deployment("doomed", 4))
        await wait_for(lambda: len(sim.processes()) == 4)
        pids = [int(str(p["pid"])) for p in sim.processes()]
    finally:
        await sim.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert sim.processes() == []

"""The observers against the simulated cluster over real HTTP, real workloads.

A 50-pod run with one NodeObserver per node: every transition arrives exactly
once, from the pod's own node, and every probe bracket contains the listen time
the workload logged. Dropped watches and an expired history (410) in the middle
of a run, 503s from the API and a hung watch lose and repeat nothing; pods that
become ready while the watch is down and its history expires are caught up by the
relist with an uncertainty covering the gap, while live events stay exact; a
refused watch ends ``run()`` with ``WatchRefused``. Node facts come from /proc and the
Node object. Settings are checked without I/O.
"""

from __future__ import annotations

import asyncio
import platform
import re
from collections import Counter
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from agent.errors import ConfigError
from agent.observing import NodeObserver, ObserveConfigError, ObserveSettings
from agent.outbox import RecordingOutbox
from agent.transitions import CAUGHT_UP, parse_time_ns
from agent.watching import WatchRefused
from rtbench.clock import wall_ns
from rtbench.v1 import events_pb2
from simcluster.cluster import SimCluster

from .conftest import (
    Observe,
    RunningObserver,
    WaitFor,
    as_body,
    assert_midpoint,
    listen_in_bracket,
    workload_deployment,
)

NODES = ("sim-node-1", "sim-node-2")
P = events_pb2
STARTUP = (
    P.PHASE_SCHEDULED,
    P.PHASE_CONTAINER_STARTED,
    P.PHASE_RUNNING,
    P.PHASE_FIRST_RESPONSE,
    P.PHASE_READY,
)
TEARDOWN = (P.PHASE_DELETION_REQUESTED, P.PHASE_GONE)
LISTENING = re.compile(r"epoch_ms=(\d+)\.(\d{3})")
S = 1_000_000_000
READY_DELAY_S = 6
"""The readiness probe's initial delay in the gap test: long enough that no pod is ready
before the test has cut the watch, even on a loaded machine."""
SYNC_SLACK_NS = 2 * S
"""How long before the cut the watch may have been last in sync: the simulated cluster
bookmarks every 0.3 s, the rest covers a loaded event loop."""


def phase_counts(observers: list[RunningObserver]) -> dict[str, Counter[int]]:
    """uid -> how often each phase arrived, over all observers."""
    counts: dict[str, Counter[int]] = {}
    for one in observers:
        for event in one.outbox.events:
            counts.setdefault(event.pod.uid, Counter())[event.phase] += 1
    return counts


def all_reached(observers: list[RunningObserver], phases: tuple[int, ...], pods: int) -> bool:
    counts = phase_counts(observers)
    done = [uid for uid, c in counts.items() if all(c[p] for p in phases)]
    return len(done) >= pods


def assert_exactly_once(
    observers: list[RunningObserver], uids: set[str], phases: tuple[int, ...]
) -> None:
    counts = phase_counts(observers)
    assert set(counts) == uids
    for uid in uids:
        wrong = {P.Phase.Name(p): counts[uid][p] for p in phases if counts[uid][p] != 1}
        assert not wrong, f"pod {uid}: {wrong}"
        assert counts[uid][P.PHASE_FAILED] == 0
        assert counts[uid][P.PHASE_CONTAINER_EXITED] <= 1


def first_responses(observers: list[RunningObserver]) -> dict[str, events_pb2.Event]:
    return {
        e.pod.uid: e
        for one in observers
        for e in one.outbox.events
        if e.phase == P.PHASE_FIRST_RESPONSE
    }


async def listen_times(api: k8s.ApiClient, pods: list[Any]) -> dict[str, int]:
    """uid -> the workload's own logged listen time in ns (its log line, exact digits)."""
    core = k8s.CoreV1Api(api)
    times: dict[str, int] = {}
    for pod in pods:
        text = await core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace)
        match = LISTENING.search(text)
        assert match, text
        times[pod.metadata.uid] = int(match[1]) * 1_000_000 + int(match[2]) * 1000
    return times


def assert_brackets_hold(responses: dict[str, events_pb2.Event], listened: dict[str, int]) -> None:
    for uid, listen_ns in listened.items():
        event = responses[uid]
        start = int(event.attributes["bracket_start_ns"])
        end = int(event.attributes["bracket_end_ns"])
        assert_midpoint(event)
        assert listen_in_bracket(listen_ns, start, end), (
            f"{event.pod.name}: listen {listen_ns} outside [{start}, {end}] "
            f"({event.attributes['bracket_start_source']})"
        )


async def start_run(api: k8s.ApiClient, name: str, replicas: int) -> k8s.AppsV1Api:
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", as_body(workload_deployment(name, replicas)))
    return apps


async def current_pods(api: k8s.ApiClient, run_id: str) -> list[Any]:
    listed = await k8s.CoreV1Api(api).list_namespaced_pod(
        "default", label_selector=f"rtbench.io/run-id={run_id}"
    )
    return list(listed.items)


async def test_fifty_pods_every_transition_exactly_once(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    observers = [observe(node) for node in NODES]
    await wait_for(lambda: all(o.observer.watcher.watches for o in observers), what="watches")
    apps = await start_run(api, "fifty", 50)
    await wait_for(
        lambda: all_reached(observers, STARTUP, 50), within=120, what="50 pods answering"
    )
    pods = await current_pods(api, "fifty")
    uids = {p.metadata.uid for p in pods}
    assert len(uids) == 50
    assert_exactly_once(observers, uids, STARTUP)
    for one in observers:
        for event in one.outbox.events:
            node = one.observer.tracker.node
            assert event.pod.node == node
            assert event.pod.run_id == "fifty" and event.pod.labels["app"] == "c-http-server"
    assert {p.spec.node_name for p in pods} == set(NODES)  # both observers had work
    assert_brackets_hold(first_responses(observers), await listen_times(api, pods))

    await apps.delete_namespaced_deployment("fifty", "default")
    await wait_for(lambda: all_reached(observers, TEARDOWN, 50), within=120, what="50 pods gone")
    await asyncio.sleep(0.5)  # anything late would show up now
    assert_exactly_once(observers, uids, STARTUP + TEARDOWN)
    assert sum(o.observer.tracked_pods for o in observers) == 0
    assert all(o.observer.prober.probing == 0 for o in observers)
    for one in observers:
        for event in one.outbox.events:  # a live watch saw every deletion; none inferred
            assert "inferred_from" not in event.attributes, event
        by_phase = {e.phase: e for e in one.outbox.events}
        assert by_phase[P.PHASE_SCHEDULED].api_time_ns > 0
        assert by_phase[P.PHASE_READY].api_time_ns > 0
        assert by_phase[P.PHASE_DELETION_REQUESTED].api_time_ns > 0
        assert by_phase[P.PHASE_CONTAINER_STARTED].container == "web"
        assert one.outbox.samples, "node samples while pods were tracked"


async def test_dropped_watches_and_expired_history_lose_nothing(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    observers = [observe(node) for node in NODES]
    await wait_for(lambda: all(o.observer.watcher.watches for o in observers), what="watches")

    async def faults(rounds: int) -> None:
        for index in range(rounds):
            await asyncio.sleep(0.15)
            if index % 2:
                sim.expire_history()
            sim.drop_watches()

    apps = await start_run(api, "faulty", 20)
    await faults(8)
    await wait_for(lambda: all_reached(observers, STARTUP, 20), within=120, what="20 answering")
    pods = await current_pods(api, "faulty")
    uids = {p.metadata.uid for p in pods}
    await apps.delete_namespaced_deployment("faulty", "default")
    await faults(4)
    await wait_for(lambda: all_reached(observers, TEARDOWN, 20), within=120, what="20 gone")
    await asyncio.sleep(0.5)
    assert_exactly_once(observers, uids, STARTUP + TEARDOWN)
    for one in observers:
        watcher = one.observer.watcher
        # A drop while an observer backs off finds no watch to cut, so not every fault counts.
        assert watcher.expired >= 1 and watcher.lists >= 2, vars(watcher)
        assert watcher.reconnects >= 3, vars(watcher)


def api_ready(sim: SimCluster, names: list[str]) -> dict[str, int] | None:
    """name -> the API's Ready lastTransitionTime (whole seconds) once all are ready."""
    ready: dict[str, int] = {}
    for name in names:
        pod = sim.store.peek("Pod", "default", name) or {}
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready[name] = parse_time_ns(condition.get("lastTransitionTime"))
    return ready if len(ready) == len(names) else None


async def test_a_relist_after_a_watch_gap_bounds_what_the_watch_missed(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    observers = [observe(node, reconnect_max_s=0.4) for node in NODES]
    await wait_for(lambda: all(o.observer.watcher.watches for o in observers), what="watches")
    deployment = workload_deployment("gap", 4)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8080},
        "initialDelaySeconds": READY_DELAY_S,
        "periodSeconds": 1,
    }
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", as_body(deployment))
    started = (P.PHASE_SCHEDULED, P.PHASE_CONTAINER_STARTED, P.PHASE_RUNNING)
    await wait_for(lambda: all_reached(observers, started, 4), within=120, what="4 pods running")
    pods = await current_pods(api, "gap")
    uids = {p.metadata.uid for p in pods}

    # Cut the watch and keep it down (503) until every pod is ready, then expire the
    # history so that the agents must relist to learn it.
    reconnects = [o.observer.watcher.reconnects for o in observers]
    before_cut = wall_ns()
    sim.faults.inject_errors(503, 300, path_prefix="/api/v1/pods")
    sim.drop_watches()
    await wait_for(
        lambda: all(
            o.observer.watcher.reconnects > n for o, n in zip(observers, reconnects, strict=True)
        ),
        what="both watches down",
    )
    down = wall_ns()  # every line the cut watches delivered has been read by now
    assert not any(e.phase == P.PHASE_READY for o in observers for e in o.outbox.events)
    names = [p.metadata.name for p in pods]
    api_times = await wait_for(lambda: api_ready(sim, names), within=120, what="4 pods ready")
    sim.expire_history()
    sim.faults.clear()
    await wait_for(
        lambda: all_reached(observers, (P.PHASE_READY,), 4), within=120, what="4 ready events"
    )
    assert all(o.observer.watcher.expired >= 1 for o in observers)

    by_name = {p.metadata.uid: p.metadata.name for p in pods}
    for one in observers:
        for event in (e for e in one.outbox.events if e.phase == P.PHASE_READY):
            unc = event.uncertainty_ns
            assert event.attributes[CAUGHT_UP] == "relist" and event.attributes["via"] == "list"
            assert event.attributes["gap_ns"] == str(unc)
            # The watch was surely down from `down` on, and in sync shortly before the cut.
            assert event.time_ns - down <= unc <= event.time_ns - before_cut + SYNC_SLACK_NS
            # The bracket holds the API's own ready time (whole seconds: up to 1 s early).
            api_ns = api_times[by_name[event.pod.uid]]
            assert api_ns == event.api_time_ns
            assert event.time_ns - unc < api_ns + S and api_ns <= event.time_ns

    await apps.delete_namespaced_deployment("gap", "default")
    await wait_for(lambda: all_reached(observers, TEARDOWN, 4), within=120, what="4 pods gone")
    assert_exactly_once(observers, uids, (*started, P.PHASE_READY, *TEARDOWN))
    for one in observers:
        for event in one.outbox.events:  # live watch events: exact, not caught up
            if event.source == P.SOURCE_WATCH and event.phase != P.PHASE_READY:
                assert event.uncertainty_ns == 0 and CAUGHT_UP not in event.attributes, event


async def test_api_errors_back_off_and_resume(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    observers = [observe(node, reconnect_max_s=0.4) for node in NODES]
    await wait_for(lambda: all(o.observer.watcher.watches for o in observers), what="watches")
    sim.faults.inject_errors(503, 1.5, path_prefix="/api/v1/pods")
    sim.drop_watches()
    apps = await start_run(api, "outage", 10)
    await wait_for(lambda: all_reached(observers, STARTUP, 10), within=120, what="10 answering")
    uids = {p.metadata.uid for p in await current_pods(api, "outage")}
    assert_exactly_once(observers, uids, STARTUP)
    assert all(o.observer.watcher.reconnects >= 2 for o in observers)
    await apps.delete_namespaced_deployment("outage", "default")
    await wait_for(lambda: all_reached(observers, TEARDOWN, 10), within=120, what="10 gone")


async def test_a_silent_watch_is_reconnected_without_loss(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor
) -> None:
    # The simulated cluster bookmarks every 0.3 s; with 0.1 s of allowed silence
    # every quiet stretch counts as a hung connection.
    one = observe("sim-node-1", inactivity_timeout_s=0.1)
    await wait_for(lambda: one.observer.watcher.reconnects >= 3, what="inactivity reconnects")
    assert one.observer.watcher.lists == 1  # resumed from the resourceVersion, not relisted
    core = k8s.CoreV1Api(api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "quiet", "labels": {"app": "c-http-server"}},
        "spec": {"nodeName": "sim-node-1", "containers": [{"name": "web", "image": "w:1"}]},
    }
    created = await core.create_namespaced_pod("default", as_body(pod))
    await wait_for(lambda: all_reached([one], STARTUP, 1), within=60, what="the pod answering")
    assert_exactly_once([one], {created.metadata.uid}, STARTUP)


async def test_a_refused_watch_ends_run(sim: SimCluster, api: k8s.ApiClient) -> None:
    sim.faults.inject_errors(403, 60, path_prefix="/api/v1/pods")
    observer = NodeObserver(api, RecordingOutbox(), ObserveSettings(node="sim-node-1"))
    with pytest.raises(WatchRefused, match="403") as caught:
        async with asyncio.timeout(60):
            await observer.run()
    assert caught.value.status == 403


async def test_node_facts_local_at_once_and_from_the_node_object(
    sim: SimCluster, observe: Observe, wait_for: WaitFor
) -> None:
    one = observe("sim-node-2")
    local = one.observer.node_facts()
    assert local.cpu_count > 0 and local.memory_total_bytes > 0
    assert local.kernel_version == platform.release()  # what /proc/sys/kernel/osrelease says
    assert local.architecture == platform.machine()
    facts = await wait_for(
        lambda: (f := one.observer.node_facts()).kubelet_version and f, what="Node facts"
    )
    assert facts.kubelet_version == "v1.32.0-rtbench-sim"
    assert facts.container_runtime_version.startswith("rtbench-sim://")
    assert facts.allocatable_pods == 110 and facts.os_image
    assert facts.cpu_count == local.cpu_count


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"node": ""}, "node must be"),
        ({"namespace": "Not_A_Namespace"}, "namespace must be"),
        ({"label_selector": "app in (a,b"}, "unbalanced"),
        ({"label_selector": "app==="}, "cannot parse"),
        ({"watch_timeout_s": 1.5}, "watch_timeout_s must be a whole number"),
        ({"inactivity_timeout_s": 0}, "inactivity_timeout_s must be a positive"),
        ({"probe_rate": float("nan")}, "probe_rate must be a positive"),
        ({"probe_first_interval_s": 0.1}, "must not exceed probe_max_interval_s"),
        ({"probe_growth": 0.5}, "probe_growth must be at least 1"),
        ({"probe_port": 70000}, "probe_port must be between"),
        ({"probe_path": "health"}, "probe_path must start with /"),
        ({"sample_interval_s": -1.0}, "sample_interval_s must be a positive"),
        ({"proc_root": "/proc"}, "proc_root must be a Path"),
    ],
)
def test_settings_are_checked_without_io(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"node": "n1", **overrides}
    with pytest.raises(ObserveConfigError, match=re.escape(message)) as caught:
        ObserveSettings(**values)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    "selector",
    [
        "",
        "app=c-http-server",
        "app==c-http-server,rtbench.io/run-id!=old",
        "app in (c-http-server, other),!legacy",
        "tier notin (db),example.com/team",
        "generation>3",
    ],
)
def test_valid_label_selectors_pass(selector: str) -> None:
    assert ObserveSettings(node="n1", label_selector=selector).label_selector == selector

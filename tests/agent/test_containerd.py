"""Runtime phases from a real containerd: exact times, restarts, absence, and the mapping.

Each test starts its own containerd (tests/agent/containerd.py) with runc and
CRI-labelled "pods" made by ``ctr run``. The reader (agent/runtimeevents.py)
runs in process with a RecordingOutbox and a dictionary standing in for the pod
watch's PodRefs, so a test decides when the watch "sees" a pod; the absence
tests run the whole observer against the simulated cluster, and the real
``agent run`` as root without the capability to bypass file permissions.
The recovery rules, staged one by one, are in test_containerd_recovery.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from agent import containerd as ctd
from agent.cli import parse_run
from agent.errors import ConfigError
from agent.observing import NodeObserver, ObserveSettings
from agent.outbox import RecordingOutbox
from agent.runtimeevents import RECOVERED_MAX_UNCERTAINTY_NS, RuntimeEvents
from rtbench.clock import wall_ns
from rtbench.containerd import events_pb2 as containerd_events_pb2
from rtbench.containerd import events_service_pb2
from rtbench.v1 import events_pb2
from tests.agent.conftest import Observe, as_body, workload_deployment
from tests.agent.containerd import CtrEvents, LocalContainerd, Pod, containerd, rootfs
from tests.agent.fake_collector import FakeCollector
from tests.agent.harness import REPO, wait_for
from tests.simcluster.conftest import SimProcess

__all__ = ["containerd", "rootfs"]

P = events_pb2
AGENT = Path(sys.executable).parent / "agent"
TOPICS: dict[int, tuple[str, str]] = {
    P.PHASE_SANDBOX_CREATED: ("sandbox", "/tasks/create"),
    P.PHASE_SANDBOX_STARTED: ("sandbox", "/tasks/start"),
    P.PHASE_CONTAINER_CREATED: ("app", "/tasks/create"),
    P.PHASE_CONTAINER_STARTED: ("app", "/tasks/start"),
    P.PHASE_CONTAINER_EXITED: ("app", "/tasks/exit"),
}
READ_TOPICS = ("/tasks/", "/containers/")
"""What the reader subscribes to (agent/containerd.py subscribe_filters)."""
STAMP_LAG_NS = 100_000_000
"""Reap-to-stamp allowance of the shim; far below DOWN_NS, so it cannot hide a wrong time."""
DOWN_NS = 1_000_000_000
"""How long the restart test keeps containerd down after the exit."""
STARTS = [
    P.PHASE_SANDBOX_CREATED,
    P.PHASE_SANDBOX_STARTED,
    P.PHASE_CONTAINER_CREATED,
    P.PHASE_CONTAINER_STARTED,
]


def ref(uid: str, name: str) -> events_pb2.PodRef:
    """The PodRef the watch would build: what the reader must copy into its events."""
    return events_pb2.PodRef(
        uid=uid,
        name=name,
        namespace="default",
        node="node-1",
        run_id="run-1",
        labels={"app": "c-http-server"},
    )


def phases_of(outbox: RecordingOutbox, pod: Pod) -> dict[int, events_pb2.Event]:
    return {e.phase: e for e in outbox.events if e.pod.uid == pod.uid}


@contextlib.asynccontextmanager
async def reading(reader: RuntimeEvents) -> AsyncIterator[RuntimeEvents]:
    """The reader as a task for the test's duration; a reader that failed fails the test."""
    task = asyncio.create_task(reader.run(), name="containerd reader")
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Pods:
    """Stands in for the pod watch: the PodRefs of the pods it has "seen"."""

    def __init__(self) -> None:
        self.known: dict[str, events_pb2.PodRef] = {}

    def lookup(self, uid: str) -> events_pb2.PodRef | None:
        return self.known.get(uid)

    def see(self, uid: str, name: str) -> None:
        self.known[uid] = ref(uid, name)


def new_reader(
    outbox: RecordingOutbox,
    pods: Pods,
    socket: Path,
    *,
    hold_s: float = 30.0,
    max_uncertainty_ns: int = RECOVERED_MAX_UNCERTAINTY_NS,
    rng: random.Random | None = None,
) -> RuntimeEvents:
    return RuntimeEvents(
        outbox,
        pods.lookup,
        socket=str(socket),
        namespace="k8s.io",
        hold_s=hold_s,
        max_uncertainty_ns=max_uncertainty_ns,
        rng=rng,
    )


async def run_pod(containerd: LocalContainerd, name: str, *, uid: str = "") -> Pod:
    """ctr takes ~0.1 s a call: off the event loop, so the reader keeps reading meanwhile."""
    return await asyncio.to_thread(containerd.run_pod, name, uid=uid)


def assert_matches_ctr(
    outbox: RecordingOutbox, pod: Pod, ctr: CtrEvents, phases: Sequence[int]
) -> None:
    got = phases_of(outbox, pod)
    assert sorted(got) == sorted(phases)
    for phase in phases:
        event = got[phase]
        which, topic = TOPICS[phase]
        cid = pod.sandbox if which == "sandbox" else pod.app
        assert event.time_ns == ctr.time_of(cid, topic), (P.Phase.Name(phase), cid)
        assert event.source == P.SOURCE_CONTAINERD and event.uncertainty_ns == 0
        assert event.attributes["container_id"] == cid
        assert event.attributes["runtime"] == "io.containerd.runc.v2"
        assert event.container == ("" if which == "sandbox" else pod.container)
        assert event.pod == ref(pod.uid, pod.name)


def assert_each_once(outbox: RecordingOutbox) -> None:
    counts = Counter((e.attributes["container_id"], e.phase) for e in outbox.events)
    assert set(counts.values()) <= {1}, counts


async def ctr_printed(ctr: CtrEvents, cid: str, topic: str) -> None:
    def printed() -> bool:
        return any(e.container_id == cid and e.topic == topic for e in ctr.parsed())

    await wait_for(printed, what=f"ctr events printing {topic} of {cid}")


async def test_create_start_exit_match_ctr_events(
    containerd: LocalContainerd, tmp_path: Path
) -> None:
    ctr = containerd.events(tmp_path / "ctr-events.txt")
    outbox, pods = RecordingOutbox(), Pods()
    async with reading(new_reader(outbox, pods, containerd.socket)) as reader:
        await wait_for(lambda: reader.counters.connected, what="connected")
        uid = str(uuid.uuid4())
        pods.see(uid, "seen-first")
        seen_first = await run_pod(containerd, "seen-first", uid=uid)
        # The watch may see a pod after containerd reports it: its phases wait for it.
        seen_late = await run_pod(containerd, "seen-late")
        await wait_for(lambda: len(phases_of(outbox, seen_first)) == 4, what="4 phases")
        await wait_for(lambda: reader.counters.held == 4, what="4 phases held")
        assert phases_of(outbox, seen_late) == {}
        pods.see(seen_late.uid, seen_late.name)
        reader.pod_seen(seen_late.uid)
        assert len(phases_of(outbox, seen_late)) == 4 and reader.counters.held == 0

        await asyncio.to_thread(containerd.stop_task, seen_first.app)
        await wait_for(lambda: len(phases_of(outbox, seen_first)) == 5, what="the exit")
        # The delete carries the exit too: it must not make a second one.
        await asyncio.to_thread(containerd.ctr, "task", "delete", seen_first.app)
        await ctr_printed(ctr, seen_first.app, "/tasks/delete")
        ctr.stop()
        printed = sum(
            1 for e in ctr.parsed() if e.namespace == "k8s.io" and e.topic.startswith(READ_TOPICS)
        )
        await wait_for(lambda: reader.counters.envelopes >= printed, what="all handled")
    assert_matches_ctr(outbox, seen_first, ctr, [*STARTS, P.PHASE_CONTAINER_EXITED])
    assert_matches_ctr(outbox, seen_late, ctr, STARTS)
    exited = phases_of(outbox, seen_first)[P.PHASE_CONTAINER_EXITED]
    assert exited.attributes["exit_code"] == "0"  # the workload exits cleanly on SIGTERM
    assert exited.attributes["via"] == "event"
    assert int(exited.attributes["published_ns"]) >= exited.time_ns
    assert_each_once(outbox)
    assert reader.counters.dropped == 0 and reader.counters.ignored == 0


async def test_unlabelled_other_namespace_and_unseen_pods_are_ignored(
    containerd: LocalContainerd,
) -> None:
    outbox, pods = RecordingOutbox(), Pods()
    async with reading(new_reader(outbox, pods, containerd.socket, hold_s=1.0)) as reader:
        await wait_for(lambda: reader.counters.connected, what="connected")
        await asyncio.to_thread(containerd.run, containerd.new_id("plain"), {})
        await asyncio.to_thread(
            containerd.run,
            containerd.new_id("elsewhere"),
            {"io.kubernetes.pod.uid": "u-other", "io.cri-containerd.kind": "container"},
            namespace="other",
        )
        never_seen = await run_pod(containerd, "never-seen")
        uid = str(uuid.uuid4())
        pods.see(uid, "control")
        control = await run_pod(containerd, "control", uid=uid)
        # The control pod came last: once its phases are out, the others were read.
        await wait_for(lambda: len(phases_of(outbox, control)) == 4, what="the control pod")
        await wait_for(lambda: reader.counters.dropped == 4, what="unseen pod dropped")
    assert {e.pod.uid for e in outbox.events} == {control.uid}
    assert never_seen.uid not in {e.pod.uid for e in outbox.events}
    assert reader.counters.ignored == 2  # the unlabelled container's create and start
    assert reader.counters.other_namespace == 0  # the Subscribe filter kept "other" out
    assert reader.counters.held == 0


async def test_containerd_restart_reconnects_and_recovers_an_exit(
    containerd: LocalContainerd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.runtimeevents")
    outbox, pods = RecordingOutbox(), Pods()
    uid = str(uuid.uuid4())
    pods.see(uid, "before")
    async with reading(new_reader(outbox, pods, containerd.socket)) as reader:
        await wait_for(lambda: reader.counters.connected, what="connected")
        before = await run_pod(containerd, "before", uid=uid)
        await wait_for(lambda: len(phases_of(outbox, before)) == 4, what="4 phases")
        pid = await asyncio.to_thread(containerd.pid, before.app)

        await asyncio.to_thread(containerd.kill)
        await wait_for(lambda: not reader.counters.connected, what="the loss noticed")
        killed_at = wall_ns()
        os.kill(pid, signal.SIGTERM)  # the app exits while containerd is down
        await wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the app gone")
        gone_at = wall_ns()
        failures = reader.counters.failures
        await wait_for(lambda: reader.counters.failures >= failures + 2, what="retries")
        # Down long enough that a time taken at reconnect could not pass for the exit's.
        await wait_for(lambda: wall_ns() - gone_at > DOWN_NS, what="containerd down a while")

        await asyncio.to_thread(containerd.start)
        ctr = containerd.events(tmp_path / "ctr-events.txt")
        await wait_for(lambda: reader.counters.connected, within=60, what="reconnected")
        await wait_for(
            lambda: P.PHASE_CONTAINER_EXITED in phases_of(outbox, before), what="the exit"
        )
        uid = str(uuid.uuid4())
        pods.see(uid, "after")
        after = await run_pod(containerd, "after", uid=uid)
        await wait_for(lambda: len(phases_of(outbox, after)) == 4, what="phases after")
        await ctr_printed(ctr, after.app, "/tasks/start")
        ctr.stop()
    exited = phases_of(outbox, before)[P.PHASE_CONTAINER_EXITED]
    # containerd kept the exact exit time. The test knows it from its kill to the
    # process's disappearance, plus the moment the shim takes between reaping the
    # process (which removes /proc/<pid>) and stamping exited_at (seen: ~1 ms).
    assert killed_at <= exited.time_ns <= gone_at + STAMP_LAG_NS
    assert exited.uncertainty_ns == 0 and exited.attributes["exit_code"] == "0"
    # The reconnect lists before it handles the stream, and the task is still there,
    # stopped: the list's exited_at wins; the shim's re-sent /tasks/exit that follows
    # is the same exit and is dropped (assert_each_once).
    assert exited.attributes["via"] == "recovery", exited.attributes
    assert_matches_ctr(outbox, after, ctr, STARTS)
    assert_each_once(outbox)
    records = [r for r in caplog.records if r.name == "agent.runtimeevents"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connection lost" in warnings[0], warnings
    connects = [r.getMessage() for r in records if "connected to" in r.getMessage()]
    assert len(connects) == 2 and reader.counters.connects == 2


async def until_retried(runtime: RuntimeEvents, times: int) -> None:
    await wait_for(lambda: runtime.counters.failures >= times, what=f"{times} connect attempts")


async def test_absent_socket_one_warning_and_the_watch_goes_on(
    observe: Observe,
    api: k8s.ApiClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.runtimeevents")
    missing = tmp_path / "no-such" / "containerd.sock"
    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("")
    observers = [
        observe("sim-node-1", containerd_socket=str(missing)),
        observe("sim-node-2", containerd_socket=str(not_a_socket)),
    ]
    apps = k8s.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", as_body(workload_deployment("noctd", 4)))

    def running_pods() -> int:
        return sum(
            1 for o in observers for e in o.outbox.events if e.phase == P.PHASE_FIRST_RESPONSE
        )

    await wait_for(lambda: running_pods() == 4, within=120, what="4 pods answering")
    for one in observers:
        runtime = one.observer.runtime
        assert runtime is not None
        await until_retried(runtime, 3)
        assert not runtime.counters.connected
        assert not any(e.source == P.SOURCE_CONTAINERD for e in one.outbox.events)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.runtimeevents" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2, warnings
    assert any(f"no containerd socket at {missing};" in w for w in warnings), warnings
    assert any(f"{not_a_socket} is not a socket;" in w for w in warnings), warnings


def spawn(argv: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_AGENT")}
    with open(stderr, "wb") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)


async def test_unreadable_socket_one_warning_and_agent_run_goes_on(
    containerd: LocalContainerd,
    sim_process: SimProcess,
    sim_process_api: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    """The real agent as root without the capabilities that bypass file permissions,
    so the socket's mode 000 refuses it as it would refuse a non-root agent."""
    containerd.socket.chmod(0)
    agents: list[subprocess.Popen[bytes]] = []
    try:
        async with FakeCollector() as fake:
            for node in ("sim-node-1", "sim-node-2"):
                argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
                argv += [str(AGENT), "run", "--node", node, "--collector", fake.address]
                argv += ["--kubeconfig", str(sim_process.kubeconfig)]
                argv += ["--state-dir", str(tmp_path / node), "--log-level", "debug"]
                argv += ["--containerd-socket", str(containerd.socket)]
                agents.append(spawn(argv, tmp_path / f"{node}.err"))
            apps = k8s.AppsV1Api(sim_process_api)
            await apps.create_namespaced_deployment(
                "default", as_body(workload_deployment("unreadable", 2))
            )

            def answered() -> int:
                return len({e.pod.uid for e in fake.events() if e.phase == P.PHASE_FIRST_RESPONSE})

            await wait_for(lambda: answered() == 2, within=120, what="both pods answering")

            def retried(node: str) -> bool:
                text = (tmp_path / f"{node}.err").read_text()
                return text.count("DEBUG agent.runtimeevents: containerd: permission denied") >= 2

            await wait_for(lambda: retried("sim-node-1") and retried("sim-node-2"), what="retries")
            for agent in agents:
                agent.send_signal(signal.SIGTERM)
            await wait_for(lambda: all(a.poll() is not None for a in agents), what="exits")
            assert [a.returncode for a in agents] == [0, 0]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    for node in ("sim-node-1", "sim-node-2"):
        log = (tmp_path / f"{node}.err").read_text()
        warnings = [line for line in log.splitlines() if " WARNING agent.runtimeevents" in line]
        assert len(warnings) == 1, log
        assert f"permission denied on the containerd socket {containerd.socket}" in warnings[0]


async def test_phases_missed_before_connecting_are_bracketed_honestly(
    containerd: LocalContainerd, tmp_path: Path
) -> None:
    """Creates and starts that happened while the reader was away have no exact time left
    in containerd: a bracket is emitted (and must contain the true time) when it is
    narrow enough, a wider one is left to the watch. The first half uses the default
    limit (1 s) on a pod older than that; the second a limit no loaded machine reaches
    between ``ctr run`` and the reader's list, so that it is about the bounds alone."""
    ctr = containerd.events(tmp_path / "ctr-events.txt")
    outbox, pods = RecordingOutbox(), Pods()
    old = await run_pod(containerd, "old")
    pods.see(old.uid, old.name)
    old_started = wall_ns()
    await wait_for(lambda: wall_ns() - old_started > 1_200_000_000, what="old > 1 s")
    async with reading(new_reader(outbox, pods, containerd.socket)) as reader:
        await wait_for(lambda: reader.counters.connects == 1, what="connected")
    assert reader.counters.unrecoverable == 4 and outbox.events == []  # too wide: the watch's

    outbox, pods = RecordingOutbox(), Pods()  # the old pod unseen: only the recent one shows
    recent_uid, recent_id = str(uuid.uuid4()), containerd.new_id("recent")
    pods.see(recent_uid, "recent")
    labels = {
        "io.kubernetes.pod.uid": recent_uid,
        "io.cri-containerd.kind": "container",
        "io.kubernetes.container.name": "web",
    }
    await asyncio.to_thread(containerd.run, recent_id, labels)
    limit = 60_000_000_000
    reader = new_reader(outbox, pods, containerd.socket, max_uncertainty_ns=limit)
    async with reading(reader):
        await wait_for(lambda: len(outbox.events) >= 2, what="the bracketed phases")
        await ctr_printed(ctr, recent_id, "/tasks/start")
        ctr.stop()
    assert {e.pod.uid for e in outbox.events} == {recent_uid}
    assert sorted(e.phase for e in outbox.events) == [
        P.PHASE_CONTAINER_CREATED,
        P.PHASE_CONTAINER_STARTED,
    ]
    for event in outbox.events:
        truth = ctr.time_of(recent_id, TOPICS[event.phase][1])
        assert event.attributes["via"] == "recovery"
        assert event.attributes["recovered"] == "bounds"
        assert 0 < event.uncertainty_ns <= limit
        assert event.time_ns - event.uncertainty_ns <= truth <= event.time_ns
        assert int(event.attributes["bracket_start_ns"]) == event.time_ns - event.uncertainty_ns


def test_payloads_decode_under_both_type_url_spellings() -> None:
    """containerd sends bare type names; Any.Pack writes type.googleapis.com/ ones."""
    start = containerd_events_pb2.TaskStart(container_id="c1", pid=42)
    bare = events_service_pb2.Envelope(topic="/tasks/start", namespace="k8s.io")
    bare.event.type_url = "containerd.events.TaskStart"
    bare.event.value = start.SerializeToString()
    packed = events_service_pb2.Envelope(topic="/tasks/start", namespace="k8s.io")
    packed.event.Pack(start)
    assert packed.event.type_url == "type.googleapis.com/containerd.events.TaskStart"
    for envelope in (bare, packed):
        decoded = ctd.decode(envelope)
        assert decoded.container_id == "c1" and decoded.payload == start
    garbage = events_service_pb2.Envelope(topic="/tasks/start")
    garbage.event.type_url = "containerd.events.TaskStart"
    garbage.event.value = b"\xff\xff\xff"
    with pytest.raises(ctd.ContainerdFailed, match=r"undecodable containerd\.events\.TaskStart"):
        ctd.decode(garbage)
    unknown = events_service_pb2.Envelope(topic="/snapshot/prepare")
    unknown.event.type_url = "containerd.events.SnapshotPrepare"
    assert ctd.decode(unknown).payload is None


@pytest.mark.parametrize(
    ("environ", "flags", "socket"),
    [
        ({}, [], "auto"),
        ({"RTBENCH_AGENT_CONTAINERD_SOCKET": "off"}, [], "off"),
        (
            {"RTBENCH_AGENT_CONTAINERD_SOCKET": "off"},
            ["--containerd-socket", "unix:///run/k3s/containerd/containerd.sock"],
            "unix:///run/k3s/containerd/containerd.sock",
        ),
    ],
)
def test_socket_setting_precedence(environ: dict[str, str], flags: list[str], socket: str) -> None:
    base = ["--node", "n1", "--collector", "127.0.0.1:7070"]
    settings = parse_run([*base, *flags], environ)
    assert settings.observe.containerd_socket == socket
    assert settings.observe.containerd_namespace == "k8s.io"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--containerd-socket", "run/containerd.sock", "auto, off or an absolute path"),
        ("--containerd-namespace", "k8s io", "containerd namespace name"),
    ],
)
def test_bad_containerd_settings_are_usage_errors(flag: str, value: str, message: str) -> None:
    base = ["--node", "n1", "--collector", "127.0.0.1:7070"]
    with pytest.raises(ConfigError, match=message):
        parse_run([*base, flag, value], {})


async def test_off_runs_no_reader(api: k8s.ApiClient) -> None:
    observer = NodeObserver(
        api, RecordingOutbox(), ObserveSettings(node="sim-node-1", containerd_socket="off")
    )
    assert observer.runtime is None


def test_containers_of_another_embedded_node_are_not_this_nodes() -> None:
    """rtbench's real-pod nodes share one containerd and label each container with its
    node; an agent keeps its own node's and unlabelled (real kubelet) containers."""
    from agent.runtimephases import NODE_LABEL, CriContainer
    from rtbench.containerd import containers_pb2

    labels = {"io.kubernetes.pod.uid": "u1", "io.cri-containerd.kind": "sandbox"}
    plain = containers_pb2.Container(id="a", labels=labels)
    mine = containers_pb2.Container(id="b", labels={**labels, NODE_LABEL: "sim-node-1"})
    theirs = containers_pb2.Container(id="c", labels={**labels, NODE_LABEL: "sim-node-2"})
    assert CriContainer.parse(plain, "sim-node-1") is not None
    assert CriContainer.parse(mine, "sim-node-1") is not None
    assert CriContainer.parse(theirs, "sim-node-1") is None
    assert CriContainer.parse(theirs) is not None, "without a node, every pod's container"

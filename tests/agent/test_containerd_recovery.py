"""The containerd reader's recovery and reconnect rules, each staged on purpose.

What real containerd can stage is staged with it (tests/agent/containerd.py): a
task created but not started, and a reader restarted after an exit. What it
cannot stage on demand (a stream that fails right after the lists, once or every
time; a ``/tasks/delete`` without its ``/tasks/exit``) runs against
tests/agent/fake_containerd.py, real gRPC on a unix socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from pathlib import Path

import grpc
import pytest

from agent.outbox import RecordingOutbox
from agent.runtimeevents import SETTLE_S
from rtbench.clock import wall_ns
from rtbench.containerd import events_pb2 as containerd_events_pb2
from rtbench.containerd import task_types_pb2
from rtbench.v1 import events_pb2
from tests.agent.containerd import LocalContainerd, containerd, rootfs
from tests.agent.fake_containerd import FakeContainerd, cri_container, envelope
from tests.agent.harness import wait_for
from tests.agent.test_containerd import Pods, ctr_printed, new_reader, phases_of, reading

__all__ = ["containerd", "rootfs"]

P = events_pb2
GENEROUS_NS = 60_000_000_000
"""A bracket limit no loaded machine reaches: these tests are about the bracket's bounds."""


def _field(number: int, text: str) -> bytes:
    """One protobuf string field (ids are short: one-byte length)."""
    data = text.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


async def _tasks_call(containerd: LocalContainerd, method: str, cid: str) -> None:
    """Tasks/Create or Tasks/Start with just the container id (no stdio: null IO). ``ctr``
    has no way to create a task without starting it, and our proto subset lacks both
    calls, so the request is encoded by hand: field 1 is container_id in both."""
    async with grpc.aio.insecure_channel(f"unix://{containerd.socket}") as channel:
        call = channel.unary_unary(f"/containerd.services.tasks.v1.Tasks/{method}")
        await call(_field(1, cid), metadata=(("containerd-namespace", "k8s.io"),), timeout=30)


async def test_a_created_task_gets_no_start_until_it_starts(
    containerd: LocalContainerd, tmp_path: Path
) -> None:
    ctr = containerd.events(tmp_path / "ctr-events.txt")
    outbox, pods = RecordingOutbox(), Pods()
    uid, cid = str(uuid.uuid4()), containerd.new_id("created")
    pods.see(uid, "created")
    containerd.namespaces.add("k8s.io")
    labels = ["--label=io.cri-containerd.kind=container", f"--label=io.kubernetes.pod.uid={uid}"]
    await asyncio.to_thread(
        containerd.ctr, "c", "create", "--rootfs", "--net-host", *labels,
        "--env=PORT=0", str(containerd.rootfs), cid, "/server",
    )  # fmt: skip
    await _tasks_call(containerd, "Create", cid)
    async with reading(new_reader(outbox, pods, containerd.socket, max_uncertainty_ns=GENEROUS_NS)):
        await wait_for(
            lambda: P.PHASE_CONTAINER_CREATED in phases_of_uid(outbox, uid), what="create"
        )
        await asyncio.sleep(SETTLE_S)  # any bracketed start would have come with it
        assert P.PHASE_CONTAINER_STARTED not in phases_of_uid(outbox, uid)
        await _tasks_call(containerd, "Start", cid)
        await wait_for(
            lambda: P.PHASE_CONTAINER_STARTED in phases_of_uid(outbox, uid), what="start"
        )
        await ctr_printed(ctr, cid, "/tasks/start")
        ctr.stop()
    created = phases_of_uid(outbox, uid)[P.PHASE_CONTAINER_CREATED]
    assert created.attributes["recovered"] == "bounds"
    assert created.time_ns - created.uncertainty_ns <= ctr.time_of(cid, "/tasks/create")
    started = phases_of_uid(outbox, uid)[P.PHASE_CONTAINER_STARTED]
    assert started.attributes["via"] == "event" and started.uncertainty_ns == 0
    assert started.time_ns == ctr.time_of(cid, "/tasks/start")


def phases_of_uid(outbox: RecordingOutbox, uid: str) -> dict[int, events_pb2.Event]:
    return {e.phase: e for e in outbox.events if e.pod.uid == uid}


async def test_a_restarted_reader_recovers_the_same_exit(
    containerd: LocalContainerd, tmp_path: Path
) -> None:
    """The exit a reader saw as an event, a new reader (an agent restart) finds again in
    the task list, with the same time: the duplicate changes no summary."""
    ctr = containerd.events(tmp_path / "ctr-events.txt")
    first, second, pods = RecordingOutbox(), RecordingOutbox(), Pods()
    uid = str(uuid.uuid4())
    pods.see(uid, "exits")
    async with reading(new_reader(first, pods, containerd.socket)) as reader:
        await wait_for(lambda: reader.counters.connected, what="connected")
        pod = await asyncio.to_thread(containerd.run_pod, "exits", uid=uid)
        await asyncio.to_thread(containerd.stop_task, pod.app)
        await wait_for(lambda: len(phases_of(first, pod)) == 5, what="5 phases")
    async with reading(new_reader(second, pods, containerd.socket)):
        await wait_for(lambda: P.PHASE_CONTAINER_EXITED in phases_of(second, pod), what="exit")
    await ctr_printed(ctr, pod.app, "/tasks/exit")
    ctr.stop()
    seen = phases_of(first, pod)[P.PHASE_CONTAINER_EXITED]
    recovered = phases_of(second, pod)[P.PHASE_CONTAINER_EXITED]
    assert seen.attributes["via"] == "event" and recovered.attributes["via"] == "recovery"
    assert seen.time_ns == recovered.time_ns == ctr.time_of(pod.app, "/tasks/exit")
    assert recovered.uncertainty_ns == 0 and recovered.attributes["exit_code"] == "0"


async def test_a_stream_failing_at_once_backs_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.runtimeevents")
    outbox, pods = RecordingOutbox(), Pods()
    async with FakeContainerd() as fake:
        fake.fail_subscribe = True
        reader = new_reader(outbox, pods, fake.socket, rng=random.Random(7))
        async with reading(reader):
            await wait_for(lambda: fake.subscribes >= 3, what="3 attempts")
            await asyncio.sleep(5.0)
    records = [r for r in caplog.records if r.name == "agent.runtimeevents"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "event stream failed at once" in warnings[0], warnings
    retries = [r for r in records if r.levelno == logging.DEBUG and "retrying" in r.getMessage()]
    assert len(retries) == fake.subscribes - 1
    # Resetting the backoff on each connect made ~50 attempts in 5 s; a growing one a few.
    assert 3 <= fake.subscribes <= 15, fake.subscribes
    assert reader.counters.connects == fake.subscribes


async def test_brackets_lost_with_a_short_session_keep_their_lower_bound() -> None:
    """The first stream fails before its brackets settled: the next connection's brackets
    still start at the container's creation, not at the first connection's list."""
    outbox, pods = RecordingOutbox(), Pods()
    created_ns = wall_ns() - 200_000_000
    async with FakeContainerd() as fake:
        fake.end_first_stream = True
        pods.see("u1", "pod")
        fake.containers["app1"] = cri_container("app1", "u1", "container", created_ns)
        fake.tasks = [task_types_pb2.Process(id="app1", pid=7, status=task_types_pb2.RUNNING)]
        reader = new_reader(outbox, pods, fake.socket, max_uncertainty_ns=GENEROUS_NS)
        async with reading(reader):
            await wait_for(lambda: len(outbox.events) == 2, what="the bracketed phases")
        assert reader.counters.connects == 2
    for event in outbox.events:
        assert event.attributes["recovered"] == "bounds"
        assert event.time_ns - event.uncertainty_ns == created_ns


async def test_a_phase_given_up_is_not_bracketed_by_a_later_connection() -> None:
    """Too wide at the first connect: a second one soon after must not bracket it from
    the first one's list (the start lies before that)."""
    outbox, pods = RecordingOutbox(), Pods()
    async with FakeContainerd() as fake:
        fake.end_first_stream = True
        pods.see("u1", "pod")
        fake.containers["old"] = cri_container("old", "u1", "container", wall_ns() - 5 * 10**9)
        fake.tasks = [task_types_pb2.Process(id="old", pid=7, status=task_types_pb2.RUNNING)]
        reader = new_reader(outbox, pods, fake.socket)
        async with reading(reader):
            await wait_for(lambda: reader.counters.connects == 2, what="a second connection")
            await asyncio.sleep(2 * SETTLE_S)  # a bracket would have settled by now
        assert reader.counters.unrecoverable == 2 and outbox.events == []


async def test_a_delete_stands_in_for_a_missed_exit() -> None:
    outbox, pods = RecordingOutbox(), Pods()
    exited_ns = wall_ns() - 300_000_000
    ev = containerd_events_pb2
    async with FakeContainerd() as fake:
        pods.see("u1", "pod")
        for cid in ("app1", "app2", "unstarted"):
            fake.containers[cid] = cri_container(cid, "u1", "container", wall_ns())
        async with reading(new_reader(outbox, pods, fake.socket)) as reader:
            await wait_for(lambda: fake.streams == 1, what="subscribed")
            for cid in ("app1", "app2"):
                fake.publish(envelope("/tasks/start", ev.TaskStart(container_id=cid, pid=5)))
            gone = ev.TaskDelete(container_id="app1", pid=5, exit_status=3, id="app1")
            gone.exited_at.FromNanoseconds(exited_ns)
            exec_gone = ev.TaskDelete(container_id="app2", pid=6, exit_status=1, id="exec-1")
            exec_gone.exited_at.FromNanoseconds(exited_ns)
            unstarted = ev.TaskDelete(container_id="unstarted", pid=8, exit_status=255)
            unstarted.exited_at.FromNanoseconds(exited_ns)
            exit2 = ev.TaskExit(container_id="app2", id="app2", pid=5, exit_status=0)
            exit2.exited_at.FromNanoseconds(exited_ns + 1)
            delete2 = ev.TaskDelete(container_id="app2", id="app2", pid=5, exit_status=0)
            delete2.exited_at.FromNanoseconds(exited_ns + 1)
            for topic, payload in [
                ("/tasks/delete", gone),
                ("/tasks/delete", exec_gone),
                ("/tasks/delete", unstarted),
                ("/tasks/exit", exit2),
                ("/tasks/delete", delete2),
            ]:
                fake.publish(envelope(topic, payload))
            await wait_for(lambda: reader.counters.envelopes == 7, what="7 envelopes handled")
    exits = {
        e.attributes["container_id"]: e
        for e in outbox.events
        if e.phase == P.PHASE_CONTAINER_EXITED
    }
    assert sorted(exits) == ["app1", "app2"]  # an exec's delete and an unstarted task's: none
    assert exits["app1"].time_ns == exited_ns and exits["app1"].attributes["via"] == "delete"
    assert exits["app1"].attributes["exit_code"] == "3"
    assert exits["app2"].time_ns == exited_ns + 1 and exits["app2"].attributes["via"] == "event"

"""Resource sampling from real files: a /proc the test writes, the real /proc, cgroup trees.

- node samples from meminfo/stat written by the test (CPU busy from the deltas);
- the real /proc gives sane values;
- pod cgroups found under the layouts kubelets make (systemd and cgroupfs
  drivers, cgroup v1 and v2, a nested kubelet slice), looked up again until
  they appear, unreadable ones skipped and counted;
- the sampler takes the "before" sample as soon as the first pod appears and
  samples pods while they are tracked, again for the next run's first pod;
- a pod of a run becoming ready or answering gets a node sample at once (the
  "after" of memory per pod), bursts coalesced to one per ``EXTRA_SAMPLE_GAP_S``
  without leaving the last milestone unsampled; the observer wires it so, for
  the tracker's ready events and the prober's first responses;
- local node facts from the written /proc; memory of the simulated node falls
  as its pods start (the simulator's meminfo, copied into the test's /proc).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from agent.observing import ObserveSettings
from agent.outbox import RecordingOutbox
from agent.resources import (
    EXTRA_SAMPLE_GAP_S,
    LOOKUP_RETRY_S,
    CgroupFinder,
    CpuTimes,
    ResourceSampler,
    SampleOnMilestones,
    local_facts,
)
from rtbench.clock import wall_ns
from rtbench.v1 import events_pb2
from simcluster.cluster import SimCluster

from .conftest import Observe, WaitFor, as_body, workload_deployment

UID = "0b7e5c2a-4f0e-4d8a-9a51-7c1d2e3f4a5b"
MEMINFO = "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"


def stat(user: int, idle: int, iowait: int = 0, system: int = 0) -> str:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    return (
        f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 50 0\n"
        f"cpu0 {user} 0 {system} {idle} {iowait} 0 0 0 50 0\nintr 1 2 3\n"
    )


def write_proc(root: Path, meminfo: str = MEMINFO, cpu: str = stat(100, 900)) -> Path:
    (root / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "meminfo").write_text(meminfo)
    (root / "stat").write_text(cpu)
    (root / "sys/kernel/osrelease").write_text("6.6.31-rpi-2712\n")
    (root / "cpuinfo").write_text("".join(f"processor\t: {i}\nmodel\t: x\n\n" for i in range(4)))
    return root


def pod_ref(uid: str = UID) -> events_pb2.PodRef:
    return events_pb2.PodRef(uid=uid, namespace="bench", name="web-1", node="n")


def test_node_sample_from_written_files(tmp_path: Path) -> None:
    proc = write_proc(tmp_path / "proc")
    outbox = RecordingOutbox()
    sampler = ResourceSampler(
        outbox, ObserveSettings(node="n", proc_root=proc, cgroup_root=tmp_path), list
    )
    sampler.sample([])
    (first,) = outbox.samples
    assert first.mem_total_bytes == 8000000 * 1024
    assert first.mem_available_bytes == 6000000 * 1024
    assert first.cpu_busy == 0.0 and not first.HasField("pod")
    # 300 jiffies more of user, 100 more of idle and 100 more of iowait: 60% busy.
    (proc / "stat").write_text(stat(400, 1000, iowait=100))
    sampler.sample([])
    assert outbox.samples[1].cpu_busy == pytest.approx(0.6)
    (proc / "stat").write_text(stat(400, 1000, iowait=100))
    sampler.sample([])
    assert outbox.samples[2].cpu_busy == 0.0  # no time passed


def test_the_real_proc(tmp_path: Path) -> None:
    outbox = RecordingOutbox()
    sampler = ResourceSampler(outbox, ObserveSettings(node="n", cgroup_root=tmp_path), list)
    sampler.sample([])
    sum(range(2_000_000))  # some CPU between the samples
    sampler.sample([])
    last = outbox.samples[-1]
    assert 0 < last.mem_available_bytes <= last.mem_total_bytes
    assert 0.0 <= last.cpu_busy <= 1.0
    times = CpuTimes.read(Path("/proc/stat"))
    assert 0 < times.busy < times.total


def test_cpu_times_refuse_garbage(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        CpuTimes.read(tmp_path / "stat")


@pytest.mark.parametrize(
    "relative",
    [
        # systemd driver, cgroup v2: Burstable, and Guaranteed right under kubepods.slice
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/memory.current",
        "kubepods.slice/kubepods-pod{u}.slice/memory.current",
        # cgroupfs driver (K3s), v2 and v1
        "kubepods/besteffort/pod{uid}/memory.current",
        "memory/kubepods/burstable/pod{uid}/memory.usage_in_bytes",
        # kubelet in its own slice (kind, K3s in Docker)
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        "kubelet-kubepods-besteffort-pod{u}.slice/memory.current",
    ],
)
def test_cgroup_layouts(tmp_path: Path, relative: str) -> None:
    path = tmp_path / relative.format(u=UID.replace("-", "_"), uid=UID)
    path.parent.mkdir(parents=True)
    path.write_text("12345678\n")
    (tmp_path / "system.slice/ssh.service").mkdir(parents=True)
    finder = CgroupFinder(tmp_path)
    assert finder.memory_file(UID, now=0.0) == path
    assert finder.memory_file("another-uid", now=0.0) is None


def test_a_cgroup_appears_later_and_is_looked_up_again(tmp_path: Path) -> None:
    (tmp_path / "kubepods/burstable").mkdir(parents=True)
    finder = CgroupFinder(tmp_path)
    assert finder.memory_file(UID, now=10.0) is None
    pod_dir = tmp_path / f"kubepods/burstable/pod{UID}"
    pod_dir.mkdir()
    (pod_dir / "memory.current").write_text("1\n")
    assert finder.memory_file(UID, now=10.0 + LOOKUP_RETRY_S / 2) is None  # not so soon
    assert finder.memory_file(UID, now=10.0 + LOOKUP_RETRY_S) == pod_dir / "memory.current"


def test_pod_samples_and_unreadable_cgroups(tmp_path: Path) -> None:
    proc = write_proc(tmp_path / "proc")
    cgroups = tmp_path / "cgroup"
    good = cgroups / f"kubepods/pod{UID}"
    good.mkdir(parents=True)
    (good / "memory.current").write_text("10485760\n")
    bad_uid = "11111111-2222-3333-4444-555555555555"
    bad = cgroups / f"kubepods/pod{bad_uid}"
    bad.mkdir(parents=True)
    (bad / "memory.current").write_text("not a number\n")
    outbox = RecordingOutbox()
    sampler = ResourceSampler(
        outbox, ObserveSettings(node="n", proc_root=proc, cgroup_root=cgroups), list
    )
    sampler.sample([pod_ref(), pod_ref(bad_uid), pod_ref("no-cgroup-at-all")])
    pods = [s for s in outbox.samples if s.HasField("pod")]
    assert [(s.pod.uid, s.pod_memory_bytes) for s in pods] == [(UID, 10485760)]
    assert sampler.unreadable == 1 and sampler.pods_skipped == 1
    assert pods[0].time_ns == outbox.samples[0].time_ns  # one instant for node and pods


def test_local_facts(tmp_path: Path) -> None:
    facts = local_facts(write_proc(tmp_path))
    assert facts.kernel_version == "6.6.31-rpi-2712"
    assert facts.cpu_count == 4 and facts.memory_total_bytes == 8000000 * 1024
    assert facts.architecture


@pytest.fixture
async def sampler_task(
    tmp_path: Path,
) -> AsyncIterator[tuple[ResourceSampler, RecordingOutbox, list[events_pb2.PodRef]]]:
    proc = write_proc(tmp_path / "proc")
    pods: list[events_pb2.PodRef] = []
    outbox = RecordingOutbox()
    settings = ObserveSettings(
        node="n",
        proc_root=proc,
        cgroup_root=tmp_path,
        sample_interval_s=0.05,
        idle_sample_interval_s=60.0,
    )
    sampler = ResourceSampler(outbox, settings, lambda: pods)
    task = asyncio.get_running_loop().create_task(sampler.run(), name="sampler")
    yield sampler, outbox, pods
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_the_first_pod_gets_its_before_sample_at_once(
    sampler_task: tuple[ResourceSampler, RecordingOutbox, list[events_pb2.PodRef]],
    wait_for: WaitFor,
    tmp_path: Path,
) -> None:
    sampler, outbox, pods = sampler_task
    await wait_for(lambda: sampler.node_samples == 1)  # the idle sample at start
    await asyncio.sleep(0.2)
    assert sampler.node_samples == 1  # idle: the next one would be a minute away
    cgroup = tmp_path / f"kubepods/pod{UID}"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.current").write_text("4096\n")
    pods.append(pod_ref())
    sampler.pods_changed()
    await wait_for(lambda: sampler.node_samples >= 2, within=30)  # at once, not in a minute
    await wait_for(lambda: sampler.pod_samples >= 3)  # then every 50 ms while tracked
    pods.clear()
    sampler.pods_changed()
    settled = sampler.node_samples
    await asyncio.sleep(0.3)
    assert sampler.node_samples <= settled + 1  # back to the idle interval
    assert all(s.pod_memory_bytes == 4096 for s in outbox.samples if s.HasField("pod"))


async def test_the_simulated_nodes_memory_falls_as_pods_start(
    sim: SimCluster, api: k8s.ApiClient, observe: Observe, wait_for: WaitFor, tmp_path: Path
) -> None:
    """The simulator's meminfo for the node, copied into the agent's /proc as it changes."""
    proc = write_proc(tmp_path / "proc", meminfo=sim.node_meminfo("sim-node-1"))
    one = observe("sim-node-1", proc_root=proc, cgroup_root=tmp_path, sample_interval_s=0.05)

    async def follow() -> None:
        while True:
            (proc / "meminfo").write_text(sim.node_meminfo("sim-node-1"))
            await asyncio.sleep(0.02)

    copier = asyncio.get_running_loop().create_task(follow())
    try:
        apps = k8s.AppsV1Api(api)
        deployment = workload_deployment("memory", 6)
        deployment["spec"]["template"]["spec"]["nodeSelector"] = {
            "kubernetes.io/hostname": "sim-node-1"
        }
        await apps.create_namespaced_deployment("default", as_body(deployment))
        await wait_for(lambda: one.observer.prober.first_responses == 6, within=60)
        await asyncio.sleep(0.2)
    finally:
        copier.cancel()
        await asyncio.gather(copier, return_exceptions=True)
    node = [s for s in one.outbox.samples if not s.HasField("pod")]
    before, after = node[0].mem_available_bytes, node[-1].mem_available_bytes
    # Each runc pod costs the simulated node 10 MiB plus its workload's RSS.
    assert before - after >= 6 * 10 * 2**20
    assert node[0].mem_total_bytes == node[-1].mem_total_bytes


async def test_the_next_runs_first_pod_gets_its_before_at_once_too(
    sampler_task: tuple[ResourceSampler, RecordingOutbox, list[events_pb2.PodRef]],
    wait_for: WaitFor,
) -> None:
    sampler, _, pods = sampler_task

    async def one_run() -> None:
        await asyncio.sleep(0.3)  # idle: the previous run's pods are gone
        idle = sampler.node_samples
        pods.append(pod_ref())
        sampler.pods_changed()
        await wait_for(lambda: sampler.node_samples > idle, within=30)  # not in a minute
        await wait_for(lambda: sampler.node_samples > idle + 2)  # every 50 ms while tracked
        pods.clear()
        sampler.pods_changed()

    await one_run()
    await one_run()


def node_samples_of(outbox: RecordingOutbox) -> list[events_pb2.ResourceSample]:
    return [s for s in outbox.samples if not s.HasField("pod")]


@pytest.fixture
async def quiet_sampler(
    tmp_path: Path,
) -> AsyncIterator[tuple[ResourceSampler, RecordingOutbox]]:
    """A running sampler with one pod tracked whose periodic samples are a minute apart,
    so every further node sample is an extra one."""
    outbox = RecordingOutbox()
    settings = ObserveSettings(
        node="n",
        proc_root=write_proc(tmp_path / "proc"),
        cgroup_root=tmp_path,
        sample_interval_s=60.0,
        idle_sample_interval_s=60.0,
    )
    sampler = ResourceSampler(outbox, settings, lambda: [pod_ref()])
    task = asyncio.get_running_loop().create_task(sampler.run(), name="sampler")
    await asyncio.sleep(0)
    yield sampler, outbox
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_a_milestone_gets_a_node_sample_at_once(
    quiet_sampler: tuple[ResourceSampler, RecordingOutbox],
) -> None:
    sampler, outbox = quiet_sampler
    assert sampler.node_samples == 1  # the periodic one at start
    await asyncio.sleep(2 * EXTRA_SAMPLE_GAP_S)
    seen = wall_ns()
    sampler.milestone()
    # Synchronously, before the caller even yields: nothing can come in between.
    assert sampler.node_samples == 2 and sampler.extra_samples == 1
    extra = node_samples_of(outbox)[-1]
    assert extra.time_ns >= seen and extra.mem_available_bytes == 6000000 * 1024
    assert not [s for s in outbox.samples if s.HasField("pod") and s.time_ns >= seen]


async def test_a_burst_of_milestones_is_coalesced_and_its_last_one_sampled(
    quiet_sampler: tuple[ResourceSampler, RecordingOutbox], wait_for: WaitFor
) -> None:
    sampler, outbox = quiet_sampler
    start = time.monotonic()
    for _ in range(500):
        sampler.milestone()
    last_seen = wall_ns()
    burst = time.monotonic() - start
    # The last milestone of the burst gets a sample after it, within the gap (here
    # generously: the periodic one is a minute away).
    await wait_for(lambda: node_samples_of(outbox)[-1].time_ns >= last_seen, within=30)
    await asyncio.sleep(5 * EXTRA_SAMPLE_GAP_S)
    # One at once, then at most one per gap while the burst lasted, and one after it.
    assert 2 <= sampler.extra_samples <= 2 + int(burst / EXTRA_SAMPLE_GAP_S)
    assert sampler.node_samples == 1 + sampler.extra_samples
    times = [s.time_ns for s in node_samples_of(outbox)[1:]]
    assert all(b - a >= EXTRA_SAMPLE_GAP_S * 1e9 * 0.9 for a, b in itertools.pairwise(times))


def test_only_a_runs_ready_and_first_response_ask_for_a_sample(tmp_path: Path) -> None:
    outbox = RecordingOutbox()
    settings = ObserveSettings(node="n", proc_root=write_proc(tmp_path / "proc"))
    sampler = ResourceSampler(outbox, settings, list)
    tap = SampleOnMilestones(outbox, sampler)
    of_run = events_pb2.PodRef(uid=UID, name="web-1", node="n", run_id="r1")
    phases = (
        events_pb2.PHASE_SCHEDULED,
        events_pb2.PHASE_CONTAINER_STARTED,
        events_pb2.PHASE_RUNNING,
        events_pb2.PHASE_DELETION_REQUESTED,
    )
    for phase in phases:
        tap.put_event(events_pb2.Event(pod=of_run, phase=phase))
    tap.put_event(events_pb2.Event(pod=pod_ref(), phase=events_pb2.PHASE_READY))  # no run
    tap.put_probe(events_pb2.ProbeResult(pod=of_run, ok=True))
    tap.put_sample(events_pb2.ResourceSample(pod=of_run, pod_memory_bytes=1))
    assert sampler.node_samples == 0
    assert len(outbox.events) == 5 and len(outbox.probes) == 1 and len(outbox.samples) == 1
    tap.put_event(events_pb2.Event(pod=of_run, phase=events_pb2.PHASE_READY))
    assert sampler.extra_samples == 1
    # The event first, then its sample: the outbox keeps the order of observation.
    assert outbox.events[-1].phase == events_pb2.PHASE_READY and len(outbox.samples) == 2
    time.sleep(EXTRA_SAMPLE_GAP_S)
    tap.put_event(events_pb2.Event(pod=of_run, phase=events_pb2.PHASE_FIRST_RESPONSE))
    assert sampler.extra_samples == 2


async def test_the_observer_samples_the_node_after_each_ready_and_first_response(
    observe: Observe, api: k8s.ApiClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    """Periodic samples a minute apart: what follows the last ready is the extra one."""
    one = observe(
        "sim-node-1",
        proc_root=write_proc(tmp_path / "proc"),
        cgroup_root=tmp_path,
        sample_interval_s=60.0,
        idle_sample_interval_s=60.0,
        containerd_socket="off",
    )
    deployment = workload_deployment("milestones", 3, run_id="milestones-1")
    deployment["spec"]["template"]["spec"]["nodeSelector"] = {
        "kubernetes.io/hostname": "sim-node-1"
    }
    await k8s.AppsV1Api(api).create_namespaced_deployment("default", as_body(deployment))

    def last(phase: int) -> int:
        times = [e.time_ns for e in one.outbox.events if e.phase == phase]
        return max(times) if len(times) == 3 else 0

    await wait_for(lambda: last(events_pb2.PHASE_READY), within=60)
    await wait_for(lambda: last(events_pb2.PHASE_FIRST_RESPONSE), within=60)
    # The sample after the last milestone comes within the gap, not a minute later.
    latest = max(last(events_pb2.PHASE_READY), last(events_pb2.PHASE_FIRST_RESPONSE))
    await wait_for(lambda: node_samples_of(one.outbox)[-1].time_ns >= latest, within=30)
    for phase in (events_pb2.PHASE_READY, events_pb2.PHASE_FIRST_RESPONSE):
        for event in [e for e in one.outbox.events if e.phase == phase]:
            after = [s.time_ns for s in node_samples_of(one.outbox) if s.time_ns >= event.time_ns]
            assert after and min(after) - event.time_ns < 5 * 10**9, event
    assert one.observer.sampler.extra_samples >= 1

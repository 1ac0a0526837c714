"""A real containerd with runc, crun and runsc: pods on CNI, OOM, stop and crash cleanup.

Each test starts its own node (about 0.2 s once the images are cached) and checks
the outcome with the real parts: HTTP to the pod's IP, the container's log file,
ContainerStatus, and the machine itself (processes, mounts, bridge, cgroups)
after ``stop()`` or after a crashed owner was recovered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from rtbench.cri import api_pb2 as cri
from simcluster.realnode import RealContainerd
from tests.conftest import REPO, wait_until

from .conftest import (
    PORT,
    leftovers,
    node_leftovers,
    nothing,
    remove_pod,
    require_real_node,
    start_pod,
)

HANDLERS = ["runc", "crun", "runsc"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_start_reports_ready_with_images(node: RealContainerd) -> None:
    status = await node.runtime.Status(cri.StatusRequest(), timeout=10)
    conditions = {c.type: c.status for c in status.status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    assert len(node.socket.as_posix()) < 100
    assert set(node.images) == {"pause", "workload"}
    for reference in node.images.values():
        reply = await node.image_service.ImageStatus(
            cri.ImageStatusRequest(image=cri.ImageSpec(image=reference)), timeout=10
        )
        assert reference in reply.image.repo_tags


async def test_unknown_image_status_is_empty(node: RealContainerd) -> None:
    reply = await node.image_service.ImageStatus(
        cri.ImageStatusRequest(image=cri.ImageSpec(image="rtbench.local/nothing:here")),
        timeout=10,
    )
    assert not reply.HasField("image")


async def test_unusable_handlers_say_why(node: RealContainerd) -> None:
    assert all(node.handlers[h] is None for h in HANDLERS)
    assert node.handlers["runsc-kvm"] == "the KVM platform hangs on this kernel; runsc uses ptrace"
    for kata in ("kata-qemu", "kata-fc", "kata-clh"):
        assert node.handlers[kata] == "not installed: no Kata packages in Debian"
    # And containerd indeed has no such handler.
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="kata", uid="u-kata", namespace="default")
    )
    with pytest.raises(Exception, match="kata-qemu"):
        await node.runtime.RunPodSandbox(
            cri.RunPodSandboxRequest(config=config, runtime_handler="kata-qemu"), timeout=10
        )


@pytest.mark.parametrize("handler", HANDLERS)
async def test_pod_serves_http_on_its_cni_address(node: RealContainerd, handler: str) -> None:
    pod = await start_pod(node, handler, memory_limit_bytes=64 << 20)
    assert pod.ip.startswith(node.subnet.rsplit(".", 2)[0])
    async with aiohttp.ClientSession() as http:

        async def answers() -> bool:
            try:
                async with http.get(
                    f"http://{pod.ip}:{PORT}/", timeout=aiohttp.ClientTimeout(total=2)
                ) as reply:
                    return reply.status == 200 and await reply.text() == "ok\n"
            except aiohttp.ClientError:
                return False

        await wait_until(answers, within=10, what=f"HTTP 200 from {handler} pod at {pod.ip}")
    line = await wait_until(
        lambda: pod.log.is_file() and "rtbench-workload listening" in pod.log.read_text(),
        within=5,
        what="the listening line in the container log",
    )
    assert line
    text = pod.log.read_text()
    assert " stdout F rtbench-workload listening addr=0.0.0.0 port=8080 epoch_ms=" in text
    used = node.pod_memory_bytes(pod.uid)
    assert used is not None and used > 0
    status = await node.runtime.ContainerStatus(
        cri.ContainerStatusRequest(container_id=pod.container_id), timeout=10
    )
    assert status.status.state == cri.CONTAINER_RUNNING
    print(f"{handler}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in pod.timings_ms.items()))
    await remove_pod(node, pod)
    listed = await node.runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10)
    assert [item.id for item in listed.items] == []
    assert node.pod_memory_bytes(pod.uid) is None


async def test_container_over_its_memory_limit_is_oom_killed_on_runc(
    node: RealContainerd,
) -> None:
    pod = await start_pod(node, "runc", memory_limit_bytes=16 << 20, command=["/hog", "64"])

    async def exited() -> object:
        reply = await node.runtime.ContainerStatus(
            cri.ContainerStatusRequest(container_id=pod.container_id), timeout=10
        )
        return reply.status if reply.status.state == cri.CONTAINER_EXITED else None

    status = await wait_until(exited, within=20, what="the hog to be killed")
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
    await remove_pod(node, pod)


async def test_stop_leaves_nothing_behind() -> None:
    require_real_node()
    node = RealContainerd()
    await node.start()
    try:
        # Left running on purpose: stop() must remove them.
        for handler in HANDLERS:
            await start_pod(node, handler)
        assert node_leftovers(node)["netns"]
        assert node_leftovers(node)["bridge"]
    finally:
        await node.stop()
    found = node_leftovers(node)
    assert nothing(found), found


async def test_a_crashed_owner_is_cleaned_up_by_the_next_start() -> None:
    require_real_node()
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.simcluster.realnode.crashed_owner",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(owner.stdout.readline(), 60)
        facts = json.loads(line)
        owner.kill()
        await owner.wait()
        os.kill(facts["containerd_pid"], signal.SIGKILL)
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()
    # The pod outlives both, as REAL-RUNTIMES found (the body tells our server from
    # anything else that might answer for the address).
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://{facts['ip']}:{PORT}/", timeout=aiohttp.ClientTimeout(total=5)
        ) as reply:
            assert (reply.status, await reply.text()) == (200, "ok\n")
    crashed = (
        facts["id"],
        Path(facts["run_dir"]),
        Path(facts["base"]),
        Path(facts["socket"]),
        facts["bridge"],
    )
    assert not nothing(leftovers(*crashed))

    node = RealContainerd()
    await node.start()
    try:
        found = leftovers(*crashed)
        assert nothing(found), found
        assert not alive(facts["container_pid"])
    finally:
        await node.stop()

"""Fixtures for the real-node tests: a started ``RealContainerd`` and CRI pods on it.

These tests run the real thing (containerd, runc, crun, runsc, CNI) as root; a
missing part fails the test with what to install, it never skips.

- ``node``: a started RealContainerd of this test alone, stopped afterwards.
- ``start_pod(node, handler, ...)``: RunPodSandbox, CreateContainer and
  StartContainer of one workload container, kubelet-style (labels, pod cgroup with
  the container's limit, log directory), with the time each call took.
- ``remove_pod(node, pod)``: StopPodSandbox and RemovePodSandbox, then the pod cgroup.
- ``leftovers(...)``: what of a node still exists on the machine (processes,
  mounts, bridge, cgroups, directories, registry entry); empty after ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rtbench.cri import api_pb2 as cri
from simcluster.realnode import RealContainerd
from simcluster.realnode.cgroups import PodCgroups
from simcluster.realnode.containerd import mounts_under
from simcluster.realnode.registry import NODES_DIR

PORT = 8080
CALL_TIMEOUT_S = 60.0


def require_real_node() -> None:
    if os.geteuid() != 0:
        pytest.fail("the real-node tests need root: run pytest as root (CI does)")
    missing = [b for b in ("containerd", "runc", "crun", "runsc") if shutil.which(b) is None]
    if not os.access("/usr/lib/cni/bridge", os.X_OK):
        missing.append("containernetworking-plugins")
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup")


@pytest.fixture
async def node() -> AsyncIterator[RealContainerd]:
    require_real_node()
    started = RealContainerd()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@dataclass
class Pod:
    uid: str
    handler: str
    sandbox_id: str
    container_id: str
    ip: str
    log: Path
    config: Any
    timings_ms: dict[str, float] = field(default_factory=dict)


async def start_pod(
    node: RealContainerd,
    handler: str,
    *,
    memory_limit_bytes: int | None = None,
    command: list[str] | None = None,
) -> Pod:
    uid = str(uuid.uuid4())
    name = f"{handler}-{uid[:8]}"
    parent = node.create_pod_cgroup(uid, memory_limit_bytes)
    labels = {
        "io.kubernetes.pod.uid": uid,
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": "default",
    }
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name,
        log_directory=str(node.base / "pods" / uid),
        labels=labels,
    )
    config.linux.cgroup_parent = parent
    runtime = node.runtime
    timings: dict[str, float] = {}
    began = time.monotonic()
    sandbox = await runtime.RunPodSandbox(
        cri.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=CALL_TIMEOUT_S
    )
    timings["RunPodSandbox"] = (time.monotonic() - began) * 1e3
    status = await runtime.PodSandboxStatus(
        cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox.pod_sandbox_id), timeout=10
    )
    container = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="web"),
        image=cri.ImageSpec(image=node.images["workload"]),
        envs=[cri.KeyValue(key="PORT", value=str(PORT))],
        labels={**labels, "io.kubernetes.container.name": "web"},
        log_path="web/0.log",
    )
    if command:
        container.command.extend(command)
    if memory_limit_bytes is not None:
        container.linux.resources.memory_limit_in_bytes = memory_limit_bytes
    began = time.monotonic()
    created = await runtime.CreateContainer(
        cri.CreateContainerRequest(
            pod_sandbox_id=sandbox.pod_sandbox_id, config=container, sandbox_config=config
        ),
        timeout=CALL_TIMEOUT_S,
    )
    timings["CreateContainer"] = (time.monotonic() - began) * 1e3
    began = time.monotonic()
    await runtime.StartContainer(
        cri.StartContainerRequest(container_id=created.container_id), timeout=CALL_TIMEOUT_S
    )
    timings["StartContainer"] = (time.monotonic() - began) * 1e3
    return Pod(
        uid=uid,
        handler=handler,
        sandbox_id=sandbox.pod_sandbox_id,
        container_id=created.container_id,
        ip=status.status.network.ip,
        log=node.base / "pods" / uid / "web" / "0.log",
        config=config,
        timings_ms=timings,
    )


async def remove_pod(node: RealContainerd, pod: Pod) -> None:
    runtime = node.runtime
    await runtime.StopPodSandbox(
        cri.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id), timeout=CALL_TIMEOUT_S
    )
    await runtime.RemovePodSandbox(
        cri.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id), timeout=CALL_TIMEOUT_S
    )
    node.remove_pod_cgroup(pod.uid)


def _live_processes_naming(needles: list[str]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n.encode() in cmdline for n in needles):
            shown = cmdline.replace(b"\0", b" ")[:200].decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found


def leftovers(
    node_id: str, run_dir: Path, base: Path, socket: Path, bridge: str
) -> dict[str, list[str]]:
    """Everything of a node that still exists; every list empty when it is gone."""
    found = {
        "processes": _live_processes_naming([str(socket), f"{run_dir}/", f"{base}/"]),
        "mounts": mounts_under([run_dir, base]),
        "bridge": [bridge] if Path(f"/sys/class/net/{bridge}").exists() else [],
        "cgroups": PodCgroups(f"rtbench-{node_id}").leftovers(),
        "directories": [str(d) for d in (run_dir, base) if d.exists()],
        "registry": [str(p) for p in NODES_DIR.glob(f"{node_id}.json")],
    }
    netns = base / "state" / "io.containerd.grpc.v1.cri" / "netns"
    found["netns"] = [str(p) for p in netns.glob("*")] if netns.is_dir() else []
    return found


def node_leftovers(node: RealContainerd) -> dict[str, list[str]]:
    return leftovers(node.id, node.run_dir, node.base, node.socket, node.bridge)


def nothing(found: dict[str, list[str]]) -> bool:
    return not any(found.values())

"""Node objects that describe the machine truthfully and the simulation honestly.

rtbench records the environment of every run next to its numbers, so the nodes
report the real machine (CPU count, memory, kernel, OS image, architecture) and
say plainly that the kubelet and the runtime are simulated
(``kubeletVersion v1.32.0-rtbench-sim``, ``containerRuntimeVersion
rtbench-sim://<version>``). Node i's InternalIP is 127.0.1.i; its pods live in
127.i.0.0/16.
"""

from __future__ import annotations

import os
import platform
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .objects import Obj, new_uid, rfc3339

KUBELET_VERSION = "v1.32.0-rtbench-sim"

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def sim_version() -> str:
    try:
        return metadata.version("rtbench")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0.0.0"


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory_bytes: int
    kernel: str
    os_image: str
    arch: str

    @classmethod
    def detect(cls) -> Machine:
        return cls(
            cpus=os.cpu_count() or 1,
            memory_bytes=_mem_total(),
            kernel=os.uname().release,
            os_image=_os_image(),
            arch=_ARCH.get(platform.machine().lower(), platform.machine().lower()),
        )


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * 2**30


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def node_name(index: int) -> str:
    return f"sim-node-{index}"


def node_ip(index: int) -> str:
    return f"127.0.1.{index}"


def build_node(
    index: int, machine: Machine, max_pods: int, *, real_runtime: str | None = None
) -> Obj:
    """Node ``index``; ``real_runtime`` (e.g. ``containerd://1.6.20``): its pods are real
    containers on that runtime, which the node then says instead of ``rtbench-sim://``."""
    name = node_name(index)
    memory = f"{machine.memory_bytes // 1024}Ki"
    resources = {
        "cpu": str(machine.cpus),
        "memory": memory,
        "pods": str(max_pods),
        "ephemeral-storage": "10Gi",
    }
    now = rfc3339()
    conditions = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status (simulated by rtbench-sim)",
        ),
    ]
    system_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rtbench-sim/{name}/{os.getpid()}"))
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": now,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine.arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": machine.arch,
                "node.kubernetes.io/instance-type": "rtbench-sim",
            },
            # The kubelet is always rtbench's; "simulated" says whether the pods are.
            "annotations": {"rtbench.dev/simulated": "false" if real_runtime else "true"},
        },
        "spec": {"podCIDR": f"127.{index}.0.0/16", "podCIDRs": [f"127.{index}.0.0/16"]},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for ctype, status, reason, message in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, system_uuid).hex,
                "systemUUID": system_uuid,
                "bootID": new_uid(),
                "kernelVersion": machine.kernel,
                "osImage": machine.os_image,
                "containerRuntimeVersion": real_runtime or f"rtbench-sim://{sim_version()}",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": machine.arch,
            },
        },
    }


def allocatable_pods(node: Obj) -> int:
    try:
        return int(node["status"]["allocatable"]["pods"])
    except (KeyError, TypeError, ValueError):
        return 110


def node_ready(node: Obj) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False

"""Real pods: ``rtbench-sim --node-mode real`` driven by kubectl, as a user would.

The simulator runs as a subprocess with rtbench's own containerd; pods are real
containers (runc, crun, runsc) on the CNI bridge in 198.18.0.0/15. Checked here:
a Deployment of 20 replicas gets pods with their own IPs that answer HTTP from
the host, ``kubectl logs`` shows each container's real output, deletion removes
the containers; each handler really runs; bad input ends in a named pod failure
(a handler containerd lacks, an image the node does not have, a 4Mi gVisor pod,
a container over its memory limit) instead of a hung pod; and nothing of a
simulator killed with SIGKILL survives the next start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.simcluster.conftest import SimProcess, start_sim_process, stop_sim_process
from tests.simcluster.test_kubectl import MANIFEST, Kubectl, _eventually

pytestmark = pytest.mark.timeout(300)

BENCHMARK_RANGE = ipaddress.ip_network("198.18.0.0/15")


@pytest.fixture(scope="module")
def real_sim(
    workload_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimProcess]:
    """One ``rtbench-sim --node-mode real`` (1 node, the real 1 s relist) for the module."""
    tmp = tmp_path_factory.mktemp("real-sim")
    sim = start_sim_process(
        tmp,
        "--workload",
        str(workload_binary),
        "--node-mode",
        "real",
        "--nodes",
        "1",
        "--pleg-period",
        "1",
        within=180,
    )
    try:
        yield sim
    finally:
        code = stop_sim_process(sim.process)
        assert code == 0, sim.stderr()


@pytest.fixture
def kubectl(real_sim: SimProcess, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig=real_sim.kubeconfig, cache_dir=tmp_path / "kube-cache")


def _state(sim: SimProcess) -> dict[str, Any]:
    with urllib.request.urlopen(sim.url + "/_sim/state", timeout=10) as reply:
        state: dict[str, Any] = json.loads(reply.read())
    return state


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read()


async def _pods(kubectl: Kubectl, selector: str) -> list[dict[str, Any]]:
    got = await kubectl("get", "pods", "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(got.stdout)["items"]
    return items


def _pod(name: str, *, runtime: str | None = None, image: str | None = None, **spec: Any) -> str:
    """A one-container pod of the workload; ``container`` in ``spec`` adds to its container."""
    container: dict[str, Any] = {
        "name": "server",
        "image": image or "ghcr.io/rtbench/workload:0.1.0",
        "ports": [{"containerPort": 8080}],
    }
    container.update(spec.pop("container", {}))
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 2, **spec},
    }
    if runtime is not None:
        pod["spec"]["runtimeClassName"] = runtime
    return yaml.safe_dump(pod)


async def _apply(kubectl: Kubectl, tmp_path: Path, text: str) -> None:
    path = tmp_path / f"{abs(hash(text))}.yaml"
    path.write_text(text)
    await kubectl("apply", "-f", str(path))


def _waiting_reason(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if "waiting" in state:
            return str(state["waiting"].get("reason"))
        if "terminated" in state:
            return str(state["terminated"].get("reason"))
    return None


async def test_the_cluster_says_its_pods_are_real(real_sim: SimProcess, kubectl: Kubectl) -> None:
    state = _state(real_sim)
    assert state["nodeMode"] == "real"
    assert state["handlers"]["runc"] == "available"
    assert "kata-qemu" in state["handlers"] and state["handlers"]["kata-qemu"] != "available"
    classes = json.loads((await kubectl("get", "runtimeclasses", "-o", "json")).stdout)["items"]
    labels = {rc["metadata"]["name"]: rc["metadata"]["labels"] for rc in classes}
    assert {"runc", "crun", "runsc"} <= set(labels)
    assert "kata-qemu" not in labels, "a handler that cannot run here gets no RuntimeClass"
    assert all(lab["rtbench.dev/simulated"] == "false" for lab in labels.values())
    node = json.loads((await kubectl("get", "node", "sim-node-1", "-o", "json")).stdout)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["metadata"]["annotations"]["rtbench.dev/simulated"] == "false"


async def test_deployment_of_twenty_real_pods(
    real_sim: SimProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["spec"]["replicas"] = 20
    manifest["metadata"]["name"] = "real-twenty"
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(manifest))
    await kubectl("apply", "-f", str(tmp_path / "deploy.yaml"))
    selector = "app=c-http-server"

    async def all_ready() -> list[dict[str, Any]] | None:
        pods = await _pods(kubectl, selector)
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return pods if len(ready) == 20 else None

    pods = await _eventually(all_ready, "20 real pods ready", within=120)
    addresses = [p["status"]["podIP"] for p in pods]
    assert len(set(addresses)) == 20, "every pod has its own network namespace and IP"
    assert all(ipaddress.ip_address(a) in BENCHMARK_RANGE for a in addresses)
    for address in addresses:
        status, body = await asyncio.to_thread(_get, f"http://{address}:8080/")
        assert status == 200 and body.strip() == b"ok"
    ids = {p["status"]["containerStatuses"][0]["containerID"] for p in pods}
    assert all(i.startswith("containerd://") for i in ids) and len(ids) == 20

    name = pods[0]["metadata"]["name"]
    logs = await kubectl("logs", name)
    line = logs.stdout.strip().splitlines()[0]
    assert line.startswith("rtbench-workload listening") and "port=8080" in line, logs.stdout
    assert " stdout F " not in logs.stdout, "the CRI log format is the kubelet's business"

    await kubectl("delete", "deployment", "real-twenty", "--wait=true")

    async def all_gone() -> bool:
        return not await _pods(kubectl, selector) and not _state(real_sim)["processes"]

    await _eventually(all_gone, "every pod and container gone", within=60)
    for address in addresses[:3]:
        with pytest.raises(OSError):
            await asyncio.to_thread(_get, f"http://{address}:8080/")


@pytest.mark.parametrize("runtime", ["runc", "crun", "runsc"])
async def test_each_real_runtime_serves(
    runtime: str, real_sim: SimProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    name = f"one-{runtime}"
    await _apply(kubectl, tmp_path, _pod(name, runtime=runtime))
    await kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s", within=90)
    pod = json.loads((await kubectl("get", "pod", name, "-o", "json")).stdout)
    status, _ = await asyncio.to_thread(_get, f"http://{pod['status']['podIP']}:8080/")
    assert status == 200
    await kubectl("delete", "pod", name, "--wait=true")


async def test_bad_input_ends_in_a_named_failure(
    real_sim: SimProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    await _apply(
        kubectl,
        tmp_path,
        yaml.safe_dump(
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "kata-missing"},
                "handler": "kata-missing",
            }
        ),
    )
    await _apply(kubectl, tmp_path, _pod("bad-handler", runtime="kata-missing"))
    await _apply(kubectl, tmp_path, _pod("bad-image", image="example.invalid/nothing:1"))
    tiny: dict[str, Any] = {"resources": {"limits": {"memory": "4Mi"}}}
    await _apply(kubectl, tmp_path, _pod("tiny-runsc", runtime="runsc", container=tiny))
    started = time.monotonic()

    async def reasons() -> dict[str, str] | None:
        found = {
            p["metadata"]["name"]: _waiting_reason(p)
            for p in await _pods(kubectl, "test in (bad-handler,bad-image,tiny-runsc)")
        }
        failed = {k: v for k, v in found.items() if v not in (None, "ContainerCreating")}
        return failed if len(failed) == 3 else None

    failed = await _eventually(reasons, "three named failures", within=60)
    assert failed["bad-handler"] == "CreatePodSandboxError"
    assert failed["bad-image"] in ("ErrImagePull", "ImagePullBackOff")
    # gVisor charges its sandbox to the pod's cgroup: under 4Mi the sandbox itself fails.
    assert failed["tiny-runsc"] in (
        "CreatePodSandboxError",
        "RunContainerError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "Error",
        "OOMKilled",
    )
    assert time.monotonic() - started < 60
    pods = {p["metadata"]["name"]: p for p in await _pods(kubectl, "test")}
    message = pods["bad-handler"]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "kata-missing" in message
    tiny = pods["tiny-runsc"]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert "runsc" in tiny["message"], tiny
    await kubectl("delete", "pod", "bad-handler", "bad-image", "tiny-runsc", "--wait=true")
    await kubectl("delete", "runtimeclass", "kata-missing")


def _shim_pids(socket: str) -> list[int]:
    """containerd shims started by the containerd listening on ``socket``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and socket.encode() in (b" ".join(cmdline))
        ):
            found.append(int(entry.name))
    return found


def _bridges() -> set[str]:
    """rtbench's pod bridges now (another test's node may have its own)."""
    return {p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("rtb")}


def _alive(pid: int) -> bool:
    """Running, not a zombie (PID 1 here may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _containerd_pid(socket: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"containerd\0") or b"/containerd\0" in cmdline[:64]:
            config = cmdline.split(b"\0")
            if any(socket.rsplit("/", 1)[0].encode() in part for part in config):
                return int(entry.name)
    return None


def test_nothing_survives_sigkill_of_every_process(workload_binary: Path, tmp_path: Path) -> None:
    """SIGKILL the simulator and its containerd with pods running: the next start
    leaves none of the pods, shims, addresses or the bridge behind."""
    args = ("--workload", str(workload_binary), "--node-mode", "real", "--nodes", "1")
    bridges_before = _bridges()
    (tmp_path / "first").mkdir()
    first = start_sim_process(tmp_path / "first", *args, within=180)
    state = _state(first)
    socket = state["realContainerd"]
    kubeconfig = str(first.kubeconfig)
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["spec"]["replicas"] = 3
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(manifest))
    subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "apply", "-f", str(tmp_path / "deploy.yaml")],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 90
    while len(_state(first)["processes"]) < 3:
        assert time.monotonic() < deadline, "3 real pods did not start"
        time.sleep(0.2)
    addresses = [p["ip"] for p in _state(first)["processes"]]
    shims = _shim_pids(socket)
    assert shims, "the pods' shims run"
    containerd = _containerd_pid(socket)
    assert containerd is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert first.process.stdout is not None
    first.process.stdout.close()
    os.kill(containerd, signal.SIGKILL)
    for address in addresses:
        status, body = _get(f"http://{address}:8080/")
        assert (status, body) == (200, b"ok\n"), "killing containerd leaves its pods running"

    (tmp_path / "second").mkdir()
    second = start_sim_process(tmp_path / "second", *args, within=180)
    try:
        assert not [p for p in shims if _alive(p)], "old shims remain"
        for address in addresses:
            with pytest.raises(OSError):
                _get(f"http://{address}:8080/")
    finally:
        assert stop_sim_process(second.process) == 0, second.stderr()
    assert _bridges() == bridges_before, "the killed node's bridge is gone"


async def test_a_crashed_real_container_backs_off_with_its_exit_code(
    real_sim: SimProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    await _apply(kubectl, tmp_path, _pod("crasher"))
    await kubectl("wait", "--for=condition=Ready", "pod/crasher", "--timeout=60s", within=90)
    request = urllib.request.Request(
        real_sim.url + "/_sim/faults/kill-container",
        data=json.dumps({"pod": "crasher", "signal": 9}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)

    async def backing_off() -> dict[str, Any] | None:
        pod = json.loads((await kubectl("get", "pod", "crasher", "-o", "json")).stdout)
        status = pod["status"]["containerStatuses"][0]
        waiting = status["state"].get("waiting") or {}
        return status if waiting.get("reason") == "CrashLoopBackOff" else None

    status = await _eventually(backing_off, "CrashLoopBackOff after the kill", within=30)
    assert status["restartCount"] == 1
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] == 137 and terminated["reason"] == "Error", terminated
    await kubectl("delete", "pod", "crasher", "--wait=true")

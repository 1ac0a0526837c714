"""``rtbench-sim`` as a process: flags, environment, ready line, signals, no orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from simcluster.profiles import load_profiles

from .conftest import BIN, SimProcess, as_body, start_sim_process, stop_sim_process
from .test_deployments import pid_alive
from .test_watch import deployment

SIM = str(BIN / "rtbench-sim")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIM, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--no-such-flag"], {}, "unrecognized arguments"),
        (["--nodes", "0"], {}, "--nodes"),
        (["--nodes", "many"], {}, "must be an integer"),
        (["--nodes", "300"], {}, "nodes must be between 1 and 254"),
        (["--listen", "localhost"], {}, "HOST:PORT"),
        (["--pleg-period", "-1"], {}, "must not be negative"),
        (["--log-level", "loud"], {}, "--log-level"),
        ([], {"RTBENCH_SIM_NODES": "abc"}, "RTBENCH_SIM_NODES"),
        (["extra"], {}, "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtbench-sim: error: ") and needle in lines[0]


def test_help_tells_the_flags_and_version() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in (
        "--nodes",
        "--kubeconfig",
        "--listen",
        "--max-pods",
        "--profiles",
        "--workload",
        "--state-dir",
        "--seed",
        "--pleg-period",
        "--bookmark-interval",
        "RTBENCH_SIM_",
    ):
        assert flag in result.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("rtbench-sim (rtbench) ")


def test_bad_profiles_file_names_the_field(tmp_path: Path, workload_binary: Path) -> None:
    bad = tmp_path / "profiles.yaml"
    bad.write_text("profiles:\n  runc:\n    sandbox_start: {median_ms: fast}\n")
    result = run(
        "--profiles", str(bad), "--workload", str(workload_binary), "--state-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert (
        "profiles.runc.sandbox_start.median_ms: must be a number" in result.stderr.splitlines()[-1]
    )


def http_json(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_processes(sim: SimProcess, count: int, within: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        processes: list[dict[str, Any]] = http_json(sim.url + "/_sim/state")["processes"]
        if len(processes) == count:
            return processes
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workload processes")


def wait_gone(pids: list[int], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, (
            f"workloads still alive: {[p for p in pids if pid_alive(p)]}"
        )
        time.sleep(0.05)


async def test_ready_line_kubeconfig_and_sigterm(sim_process: SimProcess) -> None:
    assert sim_process.nodes == 2 and sim_process.url.startswith("http://127.0.0.1:")
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(sim_process.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        nodes = await k8s.CoreV1Api(api).list_node()
        assert [n.metadata.name for n in nodes.items] == ["sim-node-1", "sim-node-2"]
        await k8s.AppsV1Api(api).create_namespaced_deployment(
            "default", as_body(deployment("web", 2))
        )
    procs = await asyncio.to_thread(wait_processes, sim_process, 2)
    pids = [int(p["pid"]) for p in procs]
    assert all(pid_alive(pid) for pid in pids)
    sim_process.process.send_signal(signal.SIGTERM)
    assert sim_process.process.wait(timeout=15) == 0
    wait_gone(pids)
    assert "stopping" in sim_process.stderr()


def test_sigkill_leaves_no_workload_behind(tmp_path: Path, workload_binary: Path) -> None:
    sim = start_sim_process(tmp_path, "--workload", str(workload_binary))
    try:
        http_json(
            sim.url + "/apis/apps/v1/namespaces/default/deployments",
            "POST",
            deployment("orphans", 3),
        )
        pids = [int(p["pid"]) for p in wait_processes(sim, 3)]
        sim.process.kill()
        sim.process.wait(timeout=10)
        # PR_SET_PDEATHSIG: the kernel kills every workload when the simulator dies.
        wait_gone(pids)
    finally:
        stop_sim_process(sim.process)


def test_environment_settings_and_flag_precedence(tmp_path: Path, workload_binary: Path) -> None:
    env = {"RTBENCH_SIM_MAX_PODS": "7", "RTBENCH_SIM_SEED": "5"}
    sim = start_sim_process(tmp_path, "--workload", str(workload_binary), "--nodes", "3", env=env)
    try:
        assert sim.nodes == 3  # the flag wins over the fixture's --nodes 2
        node = http_json(sim.url + "/api/v1/nodes/sim-node-3")
        assert node["status"]["allocatable"]["pods"] == "7"
    finally:
        assert stop_sim_process(sim.process) == 0


def test_custom_profile_file_adds_a_runtime_class(tmp_path: Path, workload_binary: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        "profiles:\n"
        "  instant:\n"
        "    base: crun\n"
        "    sandbox_create: 1\n"
        "    sandbox_start: 1\n"
        "    container_create: 1\n"
        "    container_start: 1\n"
        "    memory_overhead: 4Mi\n"
    )
    sim = start_sim_process(
        tmp_path, "--workload", str(workload_binary), "--profiles", str(profiles)
    )
    try:
        rc = http_json(sim.url + "/apis/node.k8s.io/v1/runtimeclasses/instant")
        assert rc["handler"] == "instant"
        assert (
            http_json(sim.url + "/apis/node.k8s.io/v1/runtimeclasses/kata-fc")["handler"]
            == "kata-fc"
        )
    finally:
        assert stop_sim_process(sim.process) == 0


def test_the_documented_profiles_example_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "sim-profiles.yaml"
    profiles = load_profiles(example)
    assert profiles["kata-fc"].sandbox_start.median_ms == 1800
    assert profiles["kata-fc"].contention == 0.15
    assert profiles["urunc-unikraft"].container_start.median_ms == 120
    assert profiles["urunc-unikraft"].memory_overhead == 16 * 2**20
    assert profiles["urunc-unikraft"].sandbox_create == profiles["urunc"].sandbox_create

"""The agent's ClusterRole grants exactly the API calls the agent makes: nothing missing,
nothing extra.

The simulated cluster records every API request with its authorizer attributes
(simcluster/audit.py). Two real ``agent run`` processes, one per node, run with
the environment the agent chart gives them and a kubeconfig holding their own
bearer token (the sim tells clients apart by token), through a whole workload run
of the workload chart's Deployment: pods start, answer and become ready, every
watch is cut and the history compacted (so the agent reconnects and lists
again), the Deployment is deleted and the pods go. Each agent also reads its
node's containerd socket (the simulator's), events and CRI for pod addresses, as
on a K3s node: what the runtime answers needs no Kubernetes permission. The set
of (verb, API group, resource) the agents used must equal the ClusterRole the
chart renders.

The mapping of requests to verbs, which the proof rests on, is checked against
the apiserver's own rules first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as k8s

from agent.settings import NODE_ENV
from rtbench.v1 import events_pb2
from simcluster.audit import RequestLog, request_attributes, token_identity
from simcluster.cluster import SimCluster
from simcluster.kubeconfig import kubeconfig
from tests.agent.fake_collector import FakeCollector
from tests.conftest import wait_until
from tests.deploy.helm import CHARTS, render
from tests.simcluster.conftest import as_body, running_sim, socket_dir

AGENT = Path(sys.executable).parent / "agent"
TOKEN = "agent-service-account-token"
"""Each agent gets TOKEN-<node>, so the record tells the two agents apart."""
NODES = ("sim-node-1", "sim-node-2")
REPLICAS = 4
__all__ = ["socket_dir"]


@pytest.fixture
async def sim(workload_binary: Path, tmp_path: Path, socket_dir: Path) -> AsyncIterator[SimCluster]:
    """The deploy tests' cluster, with a containerd socket (events and CRI) per node."""
    async with running_sim(workload_binary, tmp_path, containerd_dir=socket_dir) as cluster:
        yield cluster


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/namespaces/a/pods", {"watch": "1"}, ("watch", "", "pods", "", "a", "")),
        ("GET", "/api/v1/watch/namespaces/a/pods", {}, ("watch", "", "pods", "", "a", "")),
        ("GET", "/api/v1/nodes/n1", {}, ("get", "", "nodes", "", "", "n1")),
        ("HEAD", "/api/v1/nodes/n1", {}, ("get", "", "nodes", "", "", "n1")),
        ("GET", "/api/v1/namespaces/a/pods/p/log", {}, ("get", "", "pods", "log", "a", "p")),
        ("GET", "/api/v1/namespaces/a", {}, ("get", "", "namespaces", "", "a", "a")),
        (
            "POST",
            "/apis/apps/v1/namespaces/a/deployments",
            {},
            ("create", "apps", "deployments", "", "a", ""),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/a/deployments/d/scale",
            {},
            ("update", "apps", "deployments", "scale", "a", "d"),
        ),
        ("PATCH", "/api/v1/nodes/n1", {}, ("patch", "", "nodes", "", "", "n1")),
        ("DELETE", "/api/v1/namespaces/a/pods/p", {}, ("delete", "", "pods", "", "a", "p")),
        ("DELETE", "/api/v1/namespaces/a/pods", {}, ("deletecollection", "", "pods", "", "a", "")),
        (
            "GET",
            "/apis/node.k8s.io/v1/runtimeclasses",
            {},
            ("list", "node.k8s.io", "runtimeclasses", "", "", ""),
        ),
    ],
)
def test_requests_map_to_the_apiservers_verbs(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert request_attributes(method, path, query) == (*expected, "")


@pytest.mark.parametrize("path", ["/version", "/api", "/apis/apps/v1", "/openapi/v3", "/healthz"])
def test_other_paths_are_non_resource_requests(path: str) -> None:
    assert request_attributes("GET", path, {}) == ("get", "", "", "", "", "", path)


def test_tokens_are_fingerprinted_never_kept() -> None:
    identity = token_identity(TOKEN)
    assert identity.startswith("token:") and TOKEN not in identity
    assert identity != token_identity(TOKEN + "x")


def granted_permissions() -> set[tuple[str, str, str]]:
    """(verb, group, resource) the agent chart's ClusterRole grants, rule by rule."""
    minimal = CHARTS / "rtbench-agent" / "ci" / "minimal-values.yaml"
    (role,) = [
        o for o in render("rtbench-agent", values_files=[minimal]) if o["kind"] == "ClusterRole"
    ]
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def chart_environment(collector: str, tmp_path: Path) -> dict[str, str]:
    """The agent container's environment as the chart renders it (host paths off)."""
    objects = render(
        "rtbench-agent",
        {"collector": {"address": collector}},
        values_files=[CHARTS / "rtbench-agent" / "ci" / "minimal-values.yaml"],
        tmp_path=tmp_path,
    )
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["agent", "run"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def spawn_agent(
    sim: SimCluster, node: str, environ: dict[str, str], tmp_path: Path
) -> subprocess.Popen[bytes]:
    """``agent run`` for ``node`` with its own token, stderr in tmp_path/<node>.err."""
    config = kubeconfig(sim.url)
    config["users"][0]["user"] = {"token": f"{TOKEN}-{node}"}
    path = tmp_path / f"{node}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    argv = [str(AGENT), "run", "--kubeconfig", str(path), "--state-dir", str(tmp_path / node)]
    # The chart mounts the node's containerd socket directory; here, the simulator's socket.
    env = {
        **environ,
        NODE_ENV: node,
        "RTBENCH_AGENT_CONTAINERD_SOCKET": str(sim.containerd_socket(node)),
    }
    with open(tmp_path / f"{node}.err", "wb") as err:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)


async def _exit_code(process: subprocess.Popen[bytes]) -> int:
    await wait_until(lambda: process.poll() is not None, within=60, what="agent exit")
    return process.returncode


async def test_the_agents_calls_are_exactly_its_cluster_role(
    sim: SimCluster,
    api: k8s.ApiClient,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    agents: list[subprocess.Popen[bytes]],
) -> None:
    users = {node: token_identity(f"{TOKEN}-{node}") for node in NODES}
    sim.requests.enable()
    async with FakeCollector() as fake:
        base = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_AGENT_")}
        base.update(chart_environment(fake.address, tmp_path))
        for node in NODES:
            agents.append(spawn_agent(sim, node, base, tmp_path))
        await wait_until(lambda: len(fake.hellos) == len(NODES), within=60, what="both agents")

        (deployment,) = render(
            "http-server-bench",
            {"runId": "rbac-proof", "replicas": REPLICAS, "testId": "rbac"},
            tmp_path=tmp_path,
        )
        apps = k8s.AppsV1Api(api)
        await apps.create_namespaced_deployment("default", as_body(deployment))

        def pods_with(phase: int) -> set[str]:
            return {e.pod.uid for e in fake.events() if e.phase == phase}

        def answered_and_ready() -> bool:
            ready = pods_with(events_pb2.PHASE_READY)
            return len(pods_with(events_pb2.PHASE_FIRST_RESPONSE) & ready) == REPLICAS

        await wait_until(answered_and_ready, within=120, what="every pod answered and ready")
        # Probed at the addresses CRI gave, with containerd's phases: the runtime was read.
        answers = [e for e in fake.events() if e.phase == events_pb2.PHASE_FIRST_RESPONSE]
        assert {e.attributes["address_source"] for e in answers} == {"cri"}
        assert len(pods_with(events_pb2.PHASE_SANDBOX_STARTED)) == REPLICAS

        def lists() -> dict[str, int]:
            return {
                node: sum(1 for r in sim.requests.records(user) if r.verb == "list")
                for node, user in users.items()
            }

        # The recovery paths too: the watches are cut, and for a second the pods answer
        # 410 Gone (compacted history), so each agent lists again before it resumes.
        before = lists()
        sim.faults.inject_errors(410, 1.0, path_prefix="/api/v1/pods", methods=["GET"])
        sim.drop_watches()
        await wait_until(
            lambda: all(lists()[node] > before[node] for node in NODES),
            within=60,
            what="each agent listing again",
        )
        await apps.delete_namespaced_deployment(deployment["metadata"]["name"], "default")
        await wait_until(
            lambda: len(pods_with(events_pb2.PHASE_GONE)) == REPLICAS,
            within=120,
            what="every pod gone",
        )
        for process in agents:
            process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(_exit_code(p) for p in agents))
        errors = [(tmp_path / f"{node}.err").read_text() for node in NODES]
        assert codes == [0, 0], errors

    records = [r for user in users.values() for r in sim.requests.records(user)]
    used = RequestLog.permissions(records)
    assert used == granted_permissions(), f"used {sorted(used)}"
    for node, user in users.items():
        # Each agent read its own Node and nothing else by name.
        named = {(r.resource, r.name) for r in sim.requests.records(user) if r.name}
        assert named == {("nodes", node)}
    assert not [r.path for r in records if not r.is_resource], "non-resource requests"
    # The record told the clients apart: the test's own writes are not the agent's.
    anonymous = RequestLog.permissions(sim.requests.records("anonymous"))
    assert {("create", "apps", "deployments"), ("delete", "apps", "deployments")} <= anonymous
    # The admin endpoint serves the same record.
    user = users[NODES[0]]
    async with http.get(f"{sim.url}/_sim/requests", params={"user": user}) as response:
        body: dict[str, Any] = await response.json()
    assert body["enabled"] is True and body["dropped"] == 0
    assert body["requests"] == [r.to_dict() for r in sim.requests.records(user)]


async def test_recording_is_off_until_enabled_and_can_be_cleared(
    sim: SimCluster, api: k8s.ApiClient, http: aiohttp.ClientSession
) -> None:
    core = k8s.CoreV1Api(api)
    await core.list_node()
    assert sim.requests.records() == []
    async with http.post(f"{sim.url}/_sim/requests", json={"enabled": True}) as response:
        assert response.status == 200
    await core.list_node()
    await core.read_namespace("default")
    assert [(r.verb, r.resource, r.user) for r in sim.requests.records()] == [
        ("list", "nodes", "anonymous"),
        ("get", "namespaces", "anonymous"),
    ]
    async with http.post(f"{sim.url}/_sim/requests", json={"enabled": "yes"}) as response:
        assert response.status == 400
    async with http.delete(f"{sim.url}/_sim/requests") as response:
        assert (await response.json())["requests"] == []
    async with http.post(f"{sim.url}/_sim/requests", json={"enabled": False}) as response:
        assert response.status == 200
    await core.list_node()
    assert sim.requests.records() == []

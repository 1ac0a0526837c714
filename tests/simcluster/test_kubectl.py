"""kubectl 1.32 against the simulated cluster, as a user would drive it.

Each test runs the real ``kubectl`` binary against ``rtbench-sim`` started as a
subprocess (the ``sim_process`` fixture), with the sim's kubeconfig and a cache
directory of its own, so no discovery or OpenAPI cache leaks between tests. The
manifest is the documented example users apply, deploy/examples/http-server-bench.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "examples" / "http-server-bench.yaml"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
DEPLOYMENT = "c-http-server-runc"
SELECTOR = "app=c-http-server"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Kubectl:
    """Runs kubectl against one simulated cluster."""

    kubeconfig: Path
    cache_dir: Path

    def argv(self, *args: str) -> list[str]:
        return [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]

    async def __call__(self, *args: str, check: bool = True, within: float = 90) -> Result:
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), within)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        result = Result(process.returncode or 0, out.decode(), err.decode())
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result

    @contextlib.asynccontextmanager
    async def stream(self, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
        """A long-running kubectl (``get -w``), stopped when the block ends."""
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@pytest.fixture
def kubectl(sim_process: Any, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig=Path(sim_process.kubeconfig), cache_dir=tmp_path / "kube-cache")


async def _eventually(probe: Callable[[], Any], what: str, within: float = 60) -> Any:
    """Polls the async ``probe`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _pod_names(kubectl: Kubectl) -> list[str]:
    result = await kubectl("get", "pods", "-l", SELECTOR, "-o", "name")
    return sorted(result.stdout.split())


async def _apply_and_wait_ready(kubectl: Kubectl, replicas: int = 2) -> list[str]:
    applied = await kubectl("apply", "-f", str(MANIFEST))
    assert f"deployment.apps/{DEPLOYMENT} created" in applied.stdout
    assert "warning" not in applied.stderr.lower()

    async def all_created() -> list[str] | None:
        names = await _pod_names(kubectl)
        return names if len(names) == replicas else None

    # kubectl wait fails at once when no pod matches yet, so let them appear first.
    names: list[str] = await _eventually(all_created, f"{replicas} pods")
    waited = await kubectl("wait", "--for=condition=Ready", "pod", "-l", SELECTOR, "--timeout=60s")
    assert waited.stdout.count("condition met") == replicas
    return names


async def test_version_and_api_resources(kubectl: Kubectl) -> None:
    version = await kubectl("version", "-o", "yaml")
    assert yaml.safe_load(version.stdout)["serverVersion"]["gitVersion"] == "v1.32.0-rtbench-sim"
    resources = await kubectl("api-resources", "--no-headers")
    rows = {line.split()[0]: line.split() for line in resources.stdout.splitlines()}
    assert rows["pods"][1] == "po" and rows["deployments"][1] == "deploy"
    assert rows["runtimeclasses"][1] == "node.k8s.io/v1"


async def test_discovery_falls_back_from_aggregated(kubectl: Kubectl) -> None:
    """kubectl asks /api for aggregated discovery, gets the plain document and
    reads the per-group resource lists instead, without complaint."""
    result = await kubectl("get", "nodes", "-v=8")
    assert "as=APIGroupDiscoveryList" in result.stderr
    assert "GET http://" in result.stderr and "/api/v1?timeout" in result.stderr
    assert "/apis/apps/v1?timeout" in result.stderr
    assert "couldn't get resource list" not in result.stderr


async def test_get_nodes_pods_runtimeclasses(kubectl: Kubectl) -> None:
    await _apply_and_wait_ready(kubectl)
    result = await kubectl("get", "nodes,pods,runtimeclasses")
    lines = result.stdout.splitlines()
    node_rows = [line.split() for line in lines if line.startswith("node/")]
    assert len(node_rows) == 2 and all(row[1] == "Ready" for row in node_rows)
    assert any(h.split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] for h in lines)
    pod_rows = [line.split() for line in lines if line.startswith(f"pod/{DEPLOYMENT}-")]
    assert len(pod_rows) == 2
    assert all(row[1:3] == ["1/1", "Running"] for row in pod_rows)
    assert any(h.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] for h in lines)
    assert any(line.split()[:2] == ["runtimeclass.node.k8s.io/runc", "runc"] for line in lines)

    wide = await kubectl("get", "pods", "-o", "wide")
    assert wide.stdout.split("\n")[0].split()[5:7] == ["IP", "NODE"]


async def test_apply_wait_and_logs(kubectl: Kubectl) -> None:
    names = await _apply_and_wait_ready(kubectl)
    logs = await kubectl("logs", names[0])
    assert "rtbench-workload listening" in logs.stdout
    deployment = await kubectl("get", "deployment", DEPLOYMENT)
    assert deployment.stdout.split("\n")[1].split()[:4] == [DEPLOYMENT, "2/2", "2", "2"]


async def test_apply_again_after_an_edit_patches(kubectl: Kubectl, tmp_path: Path) -> None:
    await _apply_and_wait_ready(kubectl)
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["spec"]["replicas"] = 3
    manifest["metadata"]["labels"]["edited"] = "yes"
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(manifest))

    result = await kubectl("apply", "-f", str(edited))
    assert f"deployment.apps/{DEPLOYMENT} configured" in result.stdout
    assert "warning" not in result.stderr.lower()
    got = await kubectl("get", "deployment", DEPLOYMENT, "-o", "yaml")
    live = yaml.safe_load(got.stdout)
    assert live["spec"]["replicas"] == 3
    assert live["metadata"]["labels"]["edited"] == "yes"
    assert "kubectl.kubernetes.io/last-applied-configuration" in live["metadata"]["annotations"]

    again = await kubectl("apply", "-f", str(edited))
    assert f"deployment.apps/{DEPLOYMENT} unchanged" in again.stdout


async def test_get_pods_watch_shows_scaling(kubectl: Kubectl) -> None:
    seen: dict[str, list[str]] = {}

    async with kubectl.stream("get", "pods", "-w") as watch:
        assert watch.stdout is not None
        await kubectl("apply", "-f", str(MANIFEST))

        async def read_until(done: Callable[[], bool]) -> None:
            assert watch.stdout is not None
            while not done():
                line = (await asyncio.wait_for(watch.stdout.readline(), 60)).decode()
                assert line, "kubectl get -w ended early"
                fields = line.split()
                if fields and fields[0].startswith(DEPLOYMENT):
                    seen.setdefault(fields[0], []).append(" ".join(fields[1:3]))

        def running(count: int) -> Callable[[], bool]:
            return lambda: sum("1/1 Running" in s for s in seen.values()) >= count

        await read_until(running(2))
        await kubectl("scale", "deployment", DEPLOYMENT, "--replicas=3")
        await read_until(running(3))
    assert len(seen) == 3
    # Each pod went through the states a real cluster shows before it was ready.
    for states in seen.values():
        assert states[-1] == "1/1 Running"
        assert any(s.startswith("0/1") for s in states)


async def test_delete_deployment_waits_then_pods_go(kubectl: Kubectl) -> None:
    names = await _apply_and_wait_ready(kubectl)
    deleted = await kubectl("delete", "deployment", DEPLOYMENT)
    assert f'deployment.apps "{DEPLOYMENT}" deleted' in deleted.stdout
    missing = await kubectl("get", "deployment", DEPLOYMENT, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    await kubectl("wait", "--for=delete", *names, "--timeout=60s")
    result = await kubectl("get", "pods", "-l", SELECTOR)
    assert "No resources found" in result.stderr


async def test_unknown_field_is_refused(kubectl: Kubectl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.read_text().replace("replicas: 2", "replicaz: 2"))
    result = await kubectl("apply", "-f", str(bad), check=False)
    assert result.returncode == 1
    assert 'unknown field "replicaz" in io.k8s.api.apps.v1.DeploymentSpec' in result.stderr
    assert "ValidationError(Deployment.spec)" in result.stderr
    nothing = await kubectl("get", "deployments")
    assert "No resources found" in nothing.stderr


async def test_explain_reads_the_schemas(kubectl: Kubectl) -> None:
    result = await kubectl("explain", "deployment.spec.template.spec.runtimeClassName")
    assert "FIELD: runtimeClassName <string>" in result.stdout
    assert "RuntimeClass" in result.stdout


def test_manifest_is_the_rtbench_workload() -> None:
    """The example keeps the labels existing dashboards select on and the Pi 5 settings."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert set(labels) == {"app", "test_id", "runtime_class", "variant", "rtbench.io/run-id"}
    assert labels["app"] == "c-http-server"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == labels["runtime_class"] == "runc"
    (container,) = pod["containers"]
    assert container["ports"][0]["containerPort"] == 8080
    assert container["resources"]["limits"]["memory"] == "16Mi"
    assert container["readinessProbe"]["httpGet"]["path"] == "/"

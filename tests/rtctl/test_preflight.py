"""``rtctl start-run`` refuses runs whose numbers would mislead, before creating anything.

Each refusal is exit 2 with every problem listed at once; nothing is created and
no run is registered. A collector or a Kubernetes API that cannot be reached is
an operational error (exit 1) in one line, bad flags a usage error (exit 2). The
node filter behind the capacity check is tested on its own, without a cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from rtbench.influxd import free_port
from rtctl.preflight import pod_placement, tolerates, usable_node
from tests.rtctl.conftest import Stack, StackFactory


def error_lines(stderr: str) -> list[str]:
    """What rtctl printed as its error (progress lines on stderr are not)."""
    return [line for line in stderr.splitlines() if line.startswith("rtctl: ")]


def assert_nothing_started(stack: Stack) -> None:
    assert stack.sim("/apis/apps/v1/deployments")["items"] == []
    listed = stack.rtctl("runs", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_unknown_runtime_class_lists_the_existing_ones(stack: Stack) -> None:
    done = stack.rtctl("start-run", "--runtime-class", "kata-nope", "--test-id", "pf-rc")
    assert done.returncode == 2, done.stderr
    assert "RuntimeClass 'kata-nope' does not exist; existing: " in done.stderr
    for existing in ("crun", "kata-fc", "kata-qemu", "runc", "runsc", "wasmtime"):
        assert existing in done.stderr
    assert done.stdout == ""
    assert_nothing_started(stack)


def test_missing_namespace_and_bad_flags(stack: Stack) -> None:
    done = stack.rtctl("start-run", "--runtime-class", "runc", "--namespace", "nowhere")
    assert done.returncode == 2
    assert "namespace 'nowhere' does not exist" in done.stderr
    bad_memory = stack.rtctl("start-run", "--runtime-class", "runc", "--memory", "lots")
    assert bad_memory.returncode == 2 and "not a memory quantity" in bad_memory.stderr
    assert len(error_lines(bad_memory.stderr)) == 1, "one clear line"
    no_class = stack.rtctl("start-run")
    assert no_class.returncode == 2 and "--runtime-class" in no_class.stderr
    assert_nothing_started(stack)


def test_unreachable_collector_is_an_operational_error(stack: Stack) -> None:
    address = f"127.0.0.1:{free_port()}"
    # Without riding out the outage (0 s, from the environment): the first call's error.
    env = {"RTBENCH_RTCTL_COLLECTOR": address, "RTBENCH_RTCTL_COLLECTOR_OUTAGE": "0"}
    done = stack.rtctl("start-run", "--runtime-class", "runc", env=env)
    assert done.returncode == 1
    (error,) = error_lines(done.stderr)
    assert error.startswith(f"rtctl: collector {address} is unreachable")
    # Riding it out for 1 s (the flag wins over the environment): said, then given up.
    done = stack.rtctl("start-run", "--runtime-class", "runc", "--collector-outage", "1s", env=env)
    assert done.returncode == 1
    assert f"collector outage: collector {address} is unreachable" in done.stderr
    (error,) = error_lines(done.stderr)
    assert re.match(
        rf"rtctl: collector {address} unreachable for \d+ s, longer than --collector-outage 1 s",
        error,
    ), error


def test_capacity_and_agents_per_node(stack_factory: StackFactory) -> None:
    small = stack_factory(max_pods=3)  # 2 nodes x 3 pods
    near = small.rtctl(
        "start-run", "--runtime-class", "runc", "--replicas", "6", "--test-id", "pf-near",
        "--settle", "0", "--format", "json",
    )  # fmt: skip
    assert near.returncode == 0, near.stderr
    assert "warning: 6 replicas use 100% of the 6 free pod slots on 2 nodes" in near.stderr

    over = small.rtctl("start-run", "--runtime-class", "runc", "--replicas", "10")
    assert over.returncode == 2
    assert "10 replicas do not fit" in over.stderr and "6 free pod slots" in over.stderr
    assert "110 pods per node by default" in over.stderr

    # An agent that is gone: its node's pods would not be measured.
    os.kill(small.local.pids["agent-sim-node-2"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while True:
        listed = json.loads(small.rtctl("agents", "--format", "json").stdout)
        if not any(a["node"] == "sim-node-2" and a["connected"] for a in listed):
            break
        assert time.monotonic() < deadline, "the agent still shows as connected"
        time.sleep(0.2)
    both = small.rtctl("start-run", "--runtime-class", "runc", "--replicas", "10")
    assert both.returncode == 2
    assert "preflight refused the run:" in both.stderr
    assert "10 replicas do not fit" in both.stderr, "every problem at once"
    assert "no agent connected to collector" in both.stderr
    assert "for node(s) sim-node-2:" in both.stderr
    assert "sim-node-1" not in both.stderr.split("no agent connected")[1].split("\n")[0]


# -- the node filter: which nodes the workload's pods can really use (pure) ----------------


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    cordoned: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": cordoned},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def usable(nodes: list[dict[str, Any]], runtime_class: dict[str, Any] | None = None) -> list[str]:
    selector, tolerations = pod_placement(runtime_class)
    return [n["metadata"]["name"] for n in nodes if usable_node(n, selector, tolerations)]


def test_the_pods_node_selector_and_control_plane_toleration_decide() -> None:
    nodes = [
        node("plain"),
        node("windows", labels={"kubernetes.io/os": "windows"}),
        node("cp", taints=[{"key": CONTROL_PLANE, "effect": "NoSchedule"}]),
        # The pod tolerates the control-plane taint only with effect NoSchedule.
        node("cp-evicting", taints=[{"key": CONTROL_PLANE, "effect": "NoExecute"}]),
        node("gpu", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
        node("soft", taints=[{"key": "busy", "effect": "PreferNoSchedule"}]),
        node("down", ready=False),
        node("cordoned", cordoned=True),
    ]
    assert usable(nodes) == ["plain", "cp", "soft"]


def test_the_runtime_class_scheduling_narrows_and_tolerates() -> None:
    kata_label = {"katacontainers.io/kata-runtime": "true"}
    kata_taint = {"key": "kata", "value": "only", "effect": "NoExecute"}
    nodes = [
        node("plain"),
        node("kata", labels=kata_label),
        node("kata-tainted", labels=kata_label, taints=[kata_taint]),
    ]
    assert usable(nodes) == ["plain", "kata"]
    scheduling: dict[str, Any] = {"nodeSelector": kata_label}
    assert usable(nodes, {"scheduling": scheduling}) == ["kata"]
    for toleration in (
        {"key": "kata", "operator": "Equal", "value": "only", "effect": "NoExecute"},
        {"key": "kata", "operator": "Exists"},  # any effect
        {"operator": "Exists"},  # every taint
    ):
        scheduling["tolerations"] = [toleration]
        assert usable(nodes, {"scheduling": scheduling}) == ["kata", "kata-tainted"], toleration
    for toleration in (
        {"key": "kata", "value": "other", "effect": "NoExecute"},
        {"key": "kata", "operator": "Exists", "effect": "NoSchedule"},
    ):
        scheduling["tolerations"] = [toleration]
        assert usable(nodes, {"scheduling": scheduling}) == ["kata"], toleration
    # A RuntimeClass selector that no node matches leaves none (preflight refuses then).
    assert usable(nodes, {"scheduling": {"nodeSelector": {"kubernetes.io/os": "windows"}}}) == []
    assert tolerates([{"operator": "Exists"}], {"key": "x", "effect": "NoSchedule"})


# -- connection failures: one line each -------------------------------------------------------


def kubeconfig_for(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n",
        encoding="utf-8",
    )
    return path


def test_a_cluster_that_does_not_answer_is_one_line(stack: Stack, tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    config = kubeconfig_for(tmp_path / "closed.kubeconfig", server)
    done = stack.rtctl(
        "start-run", "--runtime-class", "runc", env={"RTBENCH_RTCTL_KUBECONFIG": str(config)}
    )
    assert done.returncode == 1, done.stderr
    (error,) = error_lines(done.stderr)
    assert error == (
        f"rtctl: Kubernetes API at {server} did not answer GET /version: connection refused"
    )
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr  # the preflight line at most

    missing = tmp_path / "nowhere.kubeconfig"
    gone = stack.rtctl(
        "start-run", "--runtime-class", "runc", env={"RTBENCH_RTCTL_KUBECONFIG": str(missing)}
    )
    assert gone.returncode == 2  # configuration, as a bad flag
    assert gone.stderr.strip() == (
        f"rtctl: kubeconfig {missing} does not exist (give --kubeconfig or set $KUBECONFIG)"
    )
    assert_nothing_started(stack)


def test_run_ids_are_checked_before_anything_is_registered(stack: Stack) -> None:
    for run_id in ("x" * 64, "bad id", "-dash"):
        done = stack.rtctl("start-run", "--runtime-class", "runc", f"--run-id={run_id}")
        assert done.returncode == 2, done.stderr
        (error,) = error_lines(done.stderr)
        assert error.startswith("rtctl: run id: ")
    # A RuntimeClass too long for the runtime_class label is refused the same way.
    long_class = stack.rtctl("start-run", "--runtime-class", "k" * 64)
    assert long_class.returncode == 2 and "runtime class: " in long_class.stderr
    assert_nothing_started(stack)

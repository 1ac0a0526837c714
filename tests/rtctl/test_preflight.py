"""``rtctl start-run`` refuses runs whose numbers would mislead, before creating anything.

Each refusal is exit 2 with every problem listed at once; nothing is created and
no run is registered. A collector that cannot be reached is an operational
error (exit 1), bad flags a usage error (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import time

from rtbench.influxd import free_port
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
    done = stack.rtctl(
        "start-run", "--runtime-class", "runc", env={"RTBENCH_RTCTL_COLLECTOR": address}
    )
    assert done.returncode == 1
    (error,) = error_lines(done.stderr)
    assert error.startswith(f"rtctl: collector {address} is unreachable")


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

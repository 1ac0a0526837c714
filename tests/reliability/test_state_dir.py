"""One live agent per state directory, and no identity adopted across nodes (issue 16, 1).

Two ``agent run`` for two nodes on one host with one ``--state-dir`` used to share
the first one's agent id and spool: the collector saw one agent and dropped half
of all batches as duplicates. Now the second agent refuses with one line naming
the directory and the holder; a directory whose identity belongs to another node
is refused even when nobody holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import poll_until
from tests.reliability.conftest import Stack

AGENT = Path(sys.executable).parent / "agent"


def _agent(stack: Stack, node: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.pop("NODE_NAME", None)
    return subprocess.run(
        [str(AGENT), "run", "--node", node, "--collector", stack.collector_address,
         "--kubeconfig", str(stack.kubeconfig), "--state-dir", str(state_dir),
         "--containerd-socket", "off", "--shutdown-flush", "0.5"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip


def test_a_second_agent_on_a_state_directory_refuses_naming_the_holder(stack: Stack) -> None:
    first_node, second_node = stack.nodes
    state = stack.local.settings.root / f"agent-{first_node}"
    holder = stack.local.pids[f"agent-{first_node}"]
    before = state.joinpath("agent-id").read_text()

    done = _agent(stack, second_node, state)

    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"agent: error: state directory {state} is in use by another agent "
        f"(pid {holder}, node {first_node}); give each agent its own --state-dir"
    ]
    # Nothing of the directory was touched, and the holder goes on.
    assert state.joinpath("agent-id").read_text() == before
    stack.local.check()


def test_an_identity_recorded_for_another_node_is_never_adopted(
    stack: Stack, tmp_path: Path
) -> None:
    first_node, second_node = stack.nodes
    state = tmp_path / "shared-state"
    # The first node's agent runs on the directory, then stops (the lock goes with it) ...
    first = _one_agent_briefly(stack, first_node, state)
    identity = state.joinpath("agent-id").read_text().strip()
    assert identity.startswith(f"{first_node}-"), first

    # ... and an agent for another node is refused, exit 2, without taking it over.
    done = _agent(stack, second_node, state)

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"agent: error: state directory {state} holds the identity of node {first_node} "
        f"(agent id {identity}), not of node {second_node}: give this agent its own "
        f"--state-dir (or remove {state / 'agent-id'} to start a new identity there)"
    ]
    assert state.joinpath("agent-id").read_text().strip() == identity


def test_an_agent_id_kept_before_the_node_was_recorded_is_judged_by_its_form(
    stack: Stack, tmp_path: Path
) -> None:
    first_node, second_node = stack.nodes
    state = tmp_path / "old-state"
    state.mkdir()
    state.joinpath("agent-id").write_text(f"{first_node}-0123abcd\n")  # no agent-node file

    done = _agent(stack, second_node, state)

    assert done.returncode == 2, done.stderr
    assert f"holds the identity of node {first_node}" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def _one_agent_briefly(stack: Stack, node: str, state: Path) -> str:
    """Start an agent on ``state``, wait for its start line, SIGTERM it; its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.pop("NODE_NAME", None)
    log = state.parent / f"{node}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(AGENT), "run", "--node", node, "--collector", stack.collector_address,
             "--kubeconfig", str(stack.kubeconfig), "--state-dir", str(state),
             "--containerd-socket", "off", "--shutdown-flush", "0.5", "--log-level", "info"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        poll_until(
            lambda: "agent started" in log.read_text(), within=60, what="the agent's start line"
        )
    finally:
        proc.terminate()
        proc.wait(30)
    return log.read_text()

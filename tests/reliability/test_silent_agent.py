"""A silent agent is not a ready one (issue 16, 3).

An agent frozen with SIGSTOP keeps its TCP connection, so the collector still
counted it connected and preflight let a run start that would sit at "2/4" for
minutes. Now an agent not heard from within 3 x its clock-sync interval is
stale: ``rtctl agents`` says so, preflight refuses naming the node, and a run's
progress names the node whose agent went silent.
The agents here sync their clocks every second, so the bound is 3 s.
"""

from __future__ import annotations

import json
import re
import signal

from tests.conftest import kill_if_running, poll_until
from tests.reliability.conftest import Stack, StackFactory
from tests.rtctl.test_planrun import Lines


def _stale(stack: Stack, node: str) -> bool:
    done = stack.rtctl("agents", "--format", "json")
    assert done.returncode == 0, done.stderr
    return any(a["node"] == node and a["connected"] and a["stale"] for a in json.loads(done.stdout))


def test_a_stopped_agent_is_stale_refused_by_preflight_and_named_during_a_run(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(agent_args=("--clock-sync-interval", "1"))
    node = stack.nodes[1]
    agent = f"agent-{node}"
    stack.local.kill(agent, signal.SIGSTOP)
    try:
        poll_until(lambda: _stale(stack, node), within=30, what=f"the agent on {node} stale")
        table = stack.rtctl("agents")
        (row,) = [line for line in table.stdout.splitlines() if node in line]
        assert "stale (silent > 3 s)" in row, table.stdout

        refused = stack.rtctl("start-run", "--runtime-class", "runc", "--replicas", "4")
        assert refused.returncode == 2, refused.stderr
        (problem,) = [line for line in refused.stderr.splitlines() if "silent for" in line]
        assert f"agent(s) on {node} (silent for " in problem, refused.stderr
        assert not stack.sim("/apis/apps/v1/deployments")["items"]
    finally:
        stack.local.kill(agent, signal.SIGCONT)
    poll_until(lambda: not _stale(stack, node), within=30, what=f"the agent on {node} back")

    run = stack.rtctl_process(
        "start-run", "--runtime-class", "runc", "--replicas", "4", "--settle", "0",
        "--timeout", "120",
    )  # fmt: skip
    with run:
        lines = Lines(run)
        try:
            poll_until(
                lambda: stack.sim("/apis/apps/v1/deployments")["items"],
                within=60,
                what="the create",
            )
            stack.local.kill(agent, signal.SIGSTOP)
            try:
                # The run's agent check (every 5 s) names the node; then the agent is back.
                lines.wait_for(re.compile(".*went silent"), 1, within=60)
            finally:
                stack.local.kill(agent, signal.SIGCONT)
            code = run.wait(timeout=180)
        finally:
            kill_if_running(run)
        text = lines.rest()
    assert code == 0, text
    (silent,) = [line for line in text.splitlines() if "went silent" in line]
    assert f"agent on {node} (silent for " in silent, text

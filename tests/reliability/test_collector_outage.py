"""rtctl start-run rides out a collector outage, at any stage, up to a limit (issue 16, 2).

The fault matrix (tests/faults, ``collector_restart_rtctl``) has the issue's own
case: the collector SIGKILLed 0.5 s after the Deployment's create and restarted
3 s later under a 40-pod run. Here the other stages and the limit, each on the
real processes: the collector down when start-run starts (preflight, then
register), killed during the settle time (the summary after teardown), and
kept down past ``--collector-outage`` (one line, exit 1, the Deployment
deleted, and the next run's ``--clean-leftovers`` still works).
"""

from __future__ import annotations

import json
import re
import time

from tests.conftest import kill_if_running, poll_until
from tests.reliability.conftest import Stack
from tests.rtctl.test_planrun import Lines

OUTAGE = "collector outage: "


def _run(stack: Stack, run_id: str, *extra: str) -> Lines:
    process = stack.rtctl_process(
        "start-run", "--runtime-class", "runc", "--replicas", "4", "--run-id", run_id,
        "--timeout", "120", "--format", "json", *extra,
    )  # fmt: skip
    return Lines(process)


def _finish(lines: Lines) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) once the start-run has ended."""
    process = lines.process
    try:
        code = process.wait(timeout=240)
    finally:
        kill_if_running(process)
    stdout = process.stdout.read() if process.stdout else ""
    stderr = lines.rest()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return code, stdout, stderr


def _agents_back(stack: Stack) -> None:
    """Until the restarted collector has every node's agent again (they reconnect within
    their 5 s backoff cap): a new rtctl's preflight needs them."""

    def back() -> bool:
        agents = json.loads(stack.rtctl("agents", "--format", "json").stdout)
        return {a["node"] for a in agents if a["connected"]} == set(stack.nodes)

    poll_until(back, within=60, what="the agents reconnected")


def test_an_outage_at_preflight_and_one_at_teardown_are_ridden_out(stack: Stack) -> None:
    stack.local.kill("collector")
    lines = _run(stack, "outage-preflight", "--settle", "0")
    try:
        lines.wait_for(re.compile(".*" + OUTAGE), 1, within=60)  # preflight's ListAgents
        time.sleep(2)
    finally:
        stack.local.restart("collector")
    code, stdout, stderr = _finish(lines)
    assert code == 0, stderr
    assert "during ListAgents; retrying for up to 60 s (--collector-outage)" in stderr
    assert re.search(r"collector \S+ answers again after a \d+\.\d s outage", stderr), stderr
    assert json.loads(stdout)["state"] == "succeeded"

    _agents_back(stack)
    lines = _run(stack, "outage-settle", "--settle", "3")
    try:
        lines.wait_for(re.compile(".*settling for 3 s"), 1, within=120)
        stack.local.kill("collector")
        time.sleep(4)  # past the settle: the summary call meets the outage
    finally:
        stack.local.restart("collector")
    code, stdout, stderr = _finish(lines)
    assert code == 0, stderr
    assert "during GetRunSummary" in stderr, stderr
    summary = json.loads(stdout)
    assert summary["state"] == "succeeded" and len(summary["pods"]) == 4
    _agents_back(stack)


def test_past_the_limit_one_line_exit_1_deployment_deleted_and_leftovers_still_handled(
    stack: Stack,
) -> None:
    lines = _run(stack, "outage-too-long", "--settle", "0", "--collector-outage", "2s")
    poll_until(
        lambda: stack.sim("/apis/apps/v1/deployments")["items"], within=60, what="the create"
    )
    stack.local.kill("collector")
    try:
        code, _, stderr = _finish(lines)
    finally:
        stack.local.restart("collector")
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("rtctl: ")]
    assert len(errors) == 1, stderr
    assert re.match(
        r"rtctl: collector \S+ unreachable for \d+ s, longer than --collector-outage 2 s "
        r"\(WatchProgress: collector \S+ is unreachable",
        errors[0],
    ), errors[0]
    assert "Deployment rtbench-outage-too-long deleted" in stderr
    assert not stack.sim("/apis/apps/v1/deployments")["items"]

    _agents_back(stack)
    nxt = stack.rtctl(
        "start-run", "--runtime-class", "runc", "--replicas", "2", "--run-id", "after-outage",
        "--settle", "0", "--clean-leftovers", "--format", "json",
    )  # fmt: skip
    assert nxt.returncode == 0, nxt.stderr
    assert json.loads(nxt.stdout)["state"] == "succeeded"

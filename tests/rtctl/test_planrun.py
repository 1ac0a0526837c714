"""``rtctl run-plan`` end to end on the local stack: interrupted, resumed, compared.

The stack (tests/rtctl/conftest.py) is the simulated cluster, the collector and
one agent per node, each a real process; ``rtctl`` runs as a subprocess, as a
user would start it. What the collector holds afterwards is read through its
control API. Operational trouble in the middle of a plan is made with the
simulator's fault injection (an API error answered once) and with a stray pod
that the preflight of the next run takes for a leftover of an earlier run.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from rtbench.v1 import control_pb2
from rtctl.control import Collector
from rtctl.plan import load_plan
from rtctl.planrun import RunKey, matrix, ordered, run_id
from rtctl.settings import ConnectionSettings
from rtctl.workload import RUN_ID_LABEL
from tests.conftest import wait_until
from tests.rtctl.conftest import Stack

PLAN = """\
plan: {plan_id}
seed: 3
replicas: [3]
repetitions: 2
timeout: 90s
settle: 0.2
baseline: runc
runtimes:
  runc:
  kata-fc:
"""
SMALL_PLAN = """\
plan: {plan_id}
replicas: [2]
repetitions: 3
timeout: 90s
settle: 0.2
runtimes:
  runc:
"""
"""One runtime class: the order is simply repetition 1, 2, 3 whatever the seed."""
STARTED = re.compile(r"^run (\d+) of (\d+): (\S+) x(\d+) #(\d+) \(run (\S+?)[,)]")
FINISHED = re.compile(r"^  (\S+) x(\d+) #(\d+): (\w+) in ")


class Lines:
    """A child's stderr (where run-plan's progress goes) read line by line in a thread, so
    the test can wait with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        stream = process.stderr
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], count: int, within: float) -> list[str]:
        """Lines matching ``pattern`` once there are ``count`` of them (AssertionError else)."""
        deadline = time.monotonic() + within
        while True:
            matching = [line for line in self.seen if pattern.match(line)]
            if len(matching) >= count:
                return matching
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count} lines like {pattern.pattern}:\n" + self.text)
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                stdout = self.process.stdout.read() if self.process.stdout else ""
                raise AssertionError(f"rtctl ended first:\n{self.text}\n{stdout}")
            self.seen.append(line)

    def rest(self) -> str:
        self._thread.join(timeout=60)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.seen.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "\n".join(self.seen)


def started_id(line: str) -> str:
    """The run id of a "run i of n: KEY (run ID, ETA …)" line."""
    match = STARTED.match(line)
    assert match is not None, line
    return match[6]


async def plan_runs(stack: Stack, plan_id: str) -> list[control_pb2.RunInfo]:
    settings = ConnectionSettings(collector=stack.collector_address)
    async with Collector.connect(settings) as collector:
        return await collector.runs(plan_id=plan_id)


def write_plan(root: Path, plan_id: str, text: str = PLAN) -> Path:
    path = root / f"{plan_id}.yaml"
    path.write_text(text.format(plan_id=plan_id))
    return path


async def test_an_interrupted_plan_resumes_without_repeating_finished_runs(
    stack: Stack, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, "resume")
    plan = load_plan(path)
    keys = {run.key for run in matrix(plan)}
    assert len(keys) == 4
    # Seed 3 puts a kata-fc run third: its simulated microVMs take a second or two to
    # answer, a window in which the test interrupts the run while it is RUNNING.
    assert ordered(plan, plan.seed)[2].key.runtime_class == "kata-fc"

    with stack.rtctl_process("run-plan", str(path)) as process:
        lines = Lines(process)
        try:
            finished = lines.wait_for(FINISHED, 2, within=240)
            assert all(": succeeded in " in line for line in finished), lines.text
            interrupted_id = started_id(lines.wait_for(STARTED, 3, within=60)[2])

            async def third_running() -> bool:
                runs = {i.spec.run_id: i.state for i in await plan_runs(stack, "resume")}
                return runs.get(interrupted_id) == control_pb2.RUN_STATE_RUNNING

            await wait_until(third_running, within=60, every=0.05, what="the third run RUNNING")
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        first_output = lines.rest()
        stdout = process.stdout.read() if process.stdout else ""
    assert code == 130, first_output + stdout
    assert "run the same command again to resume" in first_output
    assert not STARTED.search(stdout) and "registering run" not in stdout, stdout
    assert "order seed 3 (from the plan)" in first_output
    first_ids = [started_id(line) for line in first_output.splitlines() if STARTED.match(line)]
    first_ids = first_ids[:2]

    before = await plan_runs(stack, "resume")
    by_id = {info.spec.run_id: info for info in before}
    assert [by_id[i].state for i in first_ids] == [control_pb2.RUN_STATE_SUCCEEDED] * 2
    assert by_id[interrupted_id].state == control_pb2.RUN_STATE_ABORTED
    assert not stack.pods(), "the interrupted run left pods behind"

    # The rest under a first_response bound no probe can meet: the runs' own lines and
    # the comparison count no first response (and say so), while the runs succeed.
    again = stack.rtctl("run-plan", str(path), "--max-uncertainty", "first_response=0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming: 2 of 4 runs are already in the collector (2 succeeded)" in again.stderr
    assert "first_response by runtime, against runc" in again.stdout
    rerun = [started_id(line) for line in again.stderr.splitlines() if STARTED.match(line)]
    assert len(rerun) == 2 and not set(rerun) & set(first_ids), again.stderr
    finished_now = [line for line in again.stderr.splitlines() if ": succeeded in " in line]
    assert len(finished_now) == 2, again.stderr
    assert all("first responses left out" in line for line in finished_now), again.stderr
    assert all("SIMULATED runtime" in line for line in finished_now), again.stderr
    assert not any("first_response p50" in line for line in finished_now), again.stderr
    assert "pods within 0 ms" in again.stdout and "first_response ≤ 0 ms" in again.stdout

    after = await plan_runs(stack, "resume")
    assert len(after) == 5, after  # four successes and the aborted run: nothing ran twice
    succeeded = {
        RunKey.of(info.spec): info.spec.run_id
        for info in after
        if info.state == control_pb2.RUN_STATE_SUCCEEDED
    }
    assert set(succeeded) == keys
    assert [succeeded[RunKey.of(by_id[i].spec)] for i in first_ids] == first_ids
    interrupted = RunKey.of(by_id[interrupted_id].spec)
    assert succeeded[interrupted] == run_id("resume", interrupted, attempt=2)
    assert all(info.spec.plan_id == "resume" for info in after)

    # A third invocation finds everything done: it runs nothing and still compares.
    done = stack.rtctl("run-plan", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming: 4 of 4 runs" in done.stderr and "run 1 of 4" not in done.stderr
    assert "first_response by runtime, against runc" in done.stdout
    assert "runtime modes: runc x" in done.stdout and "REAL" not in done.stdout
    assert "SIMULATED" in done.stdout
    assert len(await plan_runs(stack, "resume")) == 5


def test_a_plan_with_an_unknown_runtime_class_is_refused_before_any_run(
    stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "unknown.yaml"
    path.write_text("replicas: [2]\nrepetitions: 1\nruntimes: [runc, no-such-runtime]\n")
    result = stack.rtctl("run-plan", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no-such-runtime" in result.stderr and "runc" in result.stderr
    assert "run 1 of" not in result.stdout + result.stderr
    assert "run the same command again to resume" in result.stderr


def small_plan_ids(plan_id: str) -> list[str]:
    """The run ids of SMALL_PLAN under ``plan_id``, in the order they run."""
    return [run_id(plan_id, RunKey("runc", "runc", 2, repetition)) for repetition in (1, 2, 3)]


def finish(
    process: subprocess.Popen[str], lines: Lines, within: float = 240
) -> tuple[int, str, str]:
    """Waits for rtctl to end: exit code, stderr, stdout (``stop`` kills it when it hangs)."""
    code = process.wait(timeout=within)
    stderr = lines.rest()
    return code, stderr, process.stdout.read() if process.stdout else ""


def stop(process: subprocess.Popen[str]) -> None:
    """Kills rtctl if it still runs (a failed assertion), so no test leaves it behind."""
    if process.poll() is None:
        process.kill()
        process.wait()


async def wait_running(stack: Stack, plan_id: str, run: str) -> None:
    """Until the collector has ``run`` RUNNING: its Deployment create was answered."""

    async def running() -> bool:
        states = {i.spec.run_id: i.state for i in await plan_runs(stack, plan_id)}
        return states.get(run) == control_pb2.RUN_STATE_RUNNING

    await wait_until(running, within=120, every=0.05, what=f"run {run} RUNNING")


async def test_a_run_that_fails_operationally_is_recorded_and_the_plan_goes_on(
    stack: Stack, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, "onefails", SMALL_PLAN)
    plan = load_plan(path)
    first, failing, last = small_plan_ids("onefails")
    assert [run_id("onefails", r.key) for r in ordered(plan, plan.seed)] == [first, failing, last]
    deployments = "/apis/apps/v1/namespaces/default/deployments"

    with stack.rtctl_process("run-plan", str(path)) as process:
        try:
            lines = Lines(process)
            assert started_id(lines.wait_for(STARTED, 1, within=120)[0]) == first
            await wait_running(stack, "onefails", first)
            # The first run's create has been answered and the first run is still going:
            # the next Deployment create is the second run's, and it gets one 403 (not
            # retried, unlike a 5xx: rtctl retries those for a while, see kube.py).
            fault = {"status": 403, "seconds": 600, "count": 1, "path_prefix": deployments}
            stack.sim("/_sim/faults/errors", "POST", {**fault, "methods": ["POST"]})
            code, stderr, stdout = finish(process, lines)
        finally:
            stop(process)

    output = stderr + stdout
    assert code == 1, output
    assert stack.sim("/_sim/faults")["errors"] == [], "the injected 403 was never answered"
    assert [started_id(line) for line in stderr.splitlines() if STARTED.match(line)] == [
        first,
        failing,
        last,
    ], stderr
    errored = [line for line in stderr.splitlines() if "recorded as failed" in line]
    assert len(errored) == 1, stderr
    assert errored[0].startswith("  runc x2 #2: FAILED in ") and f"(run {failing})" in errored[0]
    assert "going on with the next run" in errored[0] and "403" in errored[0]
    assert "runc x2 #3: succeeded in " in stderr, stderr
    assert "not every run succeeded: runc x2 #2 (failed)" in stderr
    assert "first_response by runtime, against runc" in stdout, stdout
    assert "3 runs: 1 failed, 2 succeeded; 3 run now" in stdout, stdout

    listed = stack.rtctl("runs", "--plan-id", "onefails", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    states = {row["run_id"]: row["state"] for row in json.loads(listed.stdout)}
    assert states == {first: "succeeded", failing: "failed", last: "succeeded"}, states
    settings = ConnectionSettings(collector=stack.collector_address)
    async with Collector.connect(settings) as collector:
        summary = await collector.summary(failing)
    assert summary.state == control_pb2.RUN_STATE_FAILED
    assert "create deployment" in summary.message and "403" in summary.message, summary.message
    assert not stack.pods(), "the plan left pods behind"
    assert not stack.sim(deployments)["items"], "the plan left Deployments behind"

    # The failure is a result: a rerun counts it as done; --retry-failed runs that key again.
    again = stack.rtctl("run-plan", str(path))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "resuming: 3 of 3 runs are already in the collector (1 failed, 2 succeeded)" in (
        again.stderr
    )
    assert not STARTED.search(again.stderr), again.stderr
    retried = stack.rtctl("run-plan", "--retry-failed", str(path))
    assert retried.returncode == 0, retried.stdout + retried.stderr
    rerun = [started_id(line) for line in retried.stderr.splitlines() if STARTED.match(line)]
    assert rerun == [run_id("onefails", RunKey("runc", "runc", 2, 2), attempt=2)], retried.stderr
    assert "first_response by runtime, against runc" in retried.stdout
    assert not stack.pods() and not stack.sim(deployments)["items"]


STRAY = "stray-leftover"
"""A pod the preflight takes for a leftover of an earlier run (it has the run-id label),
that no agent follows (no app label) and no node takes (its node selector matches none):
it lives in the API only, and a delete removes it at once."""


def add_stray(stack: Stack) -> None:
    stack.sim(
        "/api/v1/namespaces/default/pods",
        "POST",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": STRAY, "labels": {RUN_ID_LABEL: "stray"}},
            "spec": {
                "nodeSelector": {"rtbench.io/test": "nowhere"},
                "containers": [{"name": "c", "image": "rtbench/stray"}],
            },
        },
    )


def remove_stray(stack: Stack) -> None:
    if any(p["metadata"]["name"] == STRAY for p in stack.pods("default")):
        stack.sim(f"/api/v1/namespaces/default/pods/{STRAY}", "DELETE")


async def test_a_preflight_refusal_between_runs_is_retried_once_then_stops_the_plan(
    stack: Stack, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, "leftover", SMALL_PLAN)
    first, second, third = small_plan_ids("leftover")
    refused = re.compile(r"^warning: preflight refused run (\S+) \(.*\): trying once more in 10 s$")
    try:
        with stack.rtctl_process("run-plan", str(path)) as process:
            try:
                lines = Lines(process)
                # Past the first run's preflight, a pod appears that the next one refuses...
                assert started_id(lines.wait_for(STARTED, 1, within=120)[0]) == first
                add_stray(stack)
                warning = lines.wait_for(refused, 1, within=120)[0]
                assert f"preflight refused run {second} (" in warning and STRAY in warning
                # ...and goes within the wait: the retry lets the second run go.
                remove_stray(stack)
                assert started_id(lines.wait_for(STARTED, 2, within=120)[1]) == second
                # This time it stays: the third run is refused twice, and the plan stops.
                add_stray(stack)
                code, stderr, stdout = finish(process, lines)
            finally:
                stop(process)
        output = stderr + stdout
        assert code == 2, output
        warned = [m[1] for m in map(refused.match, stderr.splitlines()) if m]
        assert warned == [second, third], stderr
        assert "rtctl: preflight refused the run:" in stderr
        assert f"1 pod(s) of an earlier run left in namespace default: {STRAY};" in stderr
        assert "run the same command again to resume" in stderr, stderr
        assert not any(STARTED.match(line) and third in line for line in stderr.splitlines())
        states = {i.spec.run_id: i.state for i in await plan_runs(stack, "leftover")}
        assert states == {
            first: control_pb2.RUN_STATE_SUCCEEDED,
            second: control_pb2.RUN_STATE_SUCCEEDED,
        }, states
        assert not stack.sim("/apis/apps/v1/deployments")["items"]

        remove_stray(stack)
        again = stack.rtctl("run-plan", str(path))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "resuming: 2 of 3 runs are already in the collector (2 succeeded)" in again.stderr
        rerun = [started_id(line) for line in again.stderr.splitlines() if STARTED.match(line)]
        assert rerun == [third], again.stderr
        assert "preflight refused" not in again.stderr
    finally:
        remove_stray(stack)

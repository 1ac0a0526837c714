"""``rtctl run-plan`` end to end on the local stack: interrupted, resumed, compared.

The stack (tests/rtctl/conftest.py) is the simulated cluster, the collector and
one agent per node, each a real process; ``rtctl`` runs as a subprocess, as a
user would start it. What the collector holds afterwards is read through its
control API.
"""

from __future__ import annotations

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


def write_plan(root: Path, plan_id: str) -> Path:
    path = root / f"{plan_id}.yaml"
    path.write_text(PLAN.format(plan_id=plan_id))
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

    again = stack.rtctl("run-plan", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming: 2 of 4 runs are already in the collector (2 succeeded)" in again.stderr
    assert "first_response by runtime, against runc" in again.stdout
    rerun = [started_id(line) for line in again.stderr.splitlines() if STARTED.match(line)]
    assert len(rerun) == 2 and not set(rerun) & set(first_ids), again.stderr

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

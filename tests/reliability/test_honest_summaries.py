"""Every line of a run tells the same story, at any timing (issue 16, 4).

- An OOM run (memory limit under the runtime's minimum): the run's last line, the
  summary and the report count the same failed pods; reasons are per pod (their
  counts add up to the failed pods); failed pods never count as responded.
- A negative memory-per-pod figure (noise: the node's free memory grew) reads
  "below resolution" in start-run's summary (text and JSON) and in the report's
  text, JSON and HTML alike.
- SIGINT to run-plan during a run's settle time: the run was already finished,
  so the message counts it done, as the rerun's resumption does.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

from tests.conftest import kill_if_running, poll_until
from tests.reliability.conftest import Stack, StackFactory
from tests.rtctl.test_planrun import Lines, write_plan

LAST_LINE = re.compile(r"^rtctl: run (\S+) FAILED: (\d+) pod\(s\) failed")


def test_an_oom_run_counts_the_same_failed_pods_everywhere(stack: Stack, tmp_path: Path) -> None:
    done = stack.rtctl(
        "start-run", "--runtime-class", "kata-qemu", "--memory", "8Mi", "--replicas", "4",
        "--run-id", "oom-agrees", "--settle", "0", "--timeout", "60", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    last = LAST_LINE.match(done.stderr.strip().splitlines()[-1])
    assert last is not None, done.stderr
    failed = summary["failed_pods"]
    assert failed >= 1
    # The last line, the summary's count and its reasons agree.
    assert int(last[2]) == failed, done.stderr
    assert sum(summary["failures"].values()) == failed, summary["failures"]
    assert summary["message"] == "pods failed", summary["message"]
    # A failed pod is never a responded one.
    responded_alive = [
        p
        for p in summary["pods"]
        if "first_response" in p["phases"] and "failed" not in p["phases"]
    ]
    if len(responded_alive) < 4:
        assert summary["all_responded_ns"] == 0, summary["all_responded_ns"]

    text = stack.rtctl("report", "oom-agrees", "--include-failed")
    assert text.returncode == 0, text.stderr
    reasons = ", ".join(f"{n} with {r}" for r, n in summary["failures"].items())
    assert f"failed pods: {failed} ({reasons})" in text.stdout, text.stdout
    assert f"failed pods {failed} ({reasons})" in text.stdout, text.stdout
    if summary["all_responded_ns"] == 0:
        assert "not all 4 replicas responded" in text.stdout
    report = json.loads(stack.rtctl("report", "oom-agrees", "--format", "json").stdout)
    (group,) = report["groups"]
    assert (group["failed_pods"], report["runs"][0]["failed_pods"]) == (failed, failed)
    assert group["failures"] == summary["failures"]


PROFILES = """\
profiles:
  slowsandbox:
    base: runc
    memory_overhead: 1Mi
    sandbox_create: {median_ms: 1500, spread: 0.1, min_ms: 1200, max_ms: 2000}
"""
AVAILABLE_KB = 6 * 2**20


def _write_meminfo(stack: Stack, available_kb: int) -> None:
    """What every agent's /proc/meminfo says from now on (the simulator's mirror stopped)."""
    for node in stack.nodes:
        root = stack.root / "proc" / node
        text = (
            f"MemTotal:       {8 * 2**20:>8} kB\nMemFree:        {available_kb:>8} kB\n"
            f"MemAvailable:   {available_kb:>8} kB\n"
        )
        tmp = root / "meminfo.tmp"
        tmp.write_text(text)
        tmp.replace(root / "meminfo")


def test_a_negative_memory_figure_reads_below_resolution_in_every_view(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    stack = stack_factory(profiles=profiles)
    mirror = stack.local._mirror
    assert mirror is not None, "the stack mirrors the simulated nodes' meminfo"
    mirror.stop()
    _write_meminfo(stack, AVAILABLE_KB)
    time.sleep(6)  # past the agents' idle sampling interval: they read the new file
    run_id = "below-resolution"
    process = stack.rtctl_process(
        "start-run", "--runtime-class", "slowsandbox", "--replicas", "4", "--run-id", run_id,
        "--settle", "0", "--timeout", "60", "--format", "json",
    )  # fmt: skip
    try:

        def scheduled() -> bool:
            pods = [
                p for p in stack.pods("default")
                if p["metadata"].get("labels", {}).get("rtbench.io/run-id") == run_id
            ]  # fmt: skip
            return len(pods) == 4 and all(p["spec"].get("nodeName") for p in pods)

        poll_until(scheduled, within=60, what="the run's pods scheduled", every=0.02)
        time.sleep(0.4)  # the agents' first-sight samples ("before") are taken
        # The node's free memory grows while the pods start: the "after" sample is higher.
        _write_meminfo(stack, AVAILABLE_KB + 64 * 1024)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        kill_if_running(process)
    assert process.returncode == 0, stderr
    run = json.loads(stdout)
    assert run["memory_per_pod_bytes"] < 0, run["memory_per_pod_bytes"]
    assert run["memory_per_pod"] == "below resolution"

    text = stack.rtctl("report", run_id, "--out", str(tmp_path / "report"))
    assert text.returncode == 0, text.stderr
    assert "memory per pod: below resolution" in text.stdout  # the run's summary
    assert "memory per pod below resolution" in text.stdout  # its runtime's table
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["groups"][0]["memory_per_pod"] == "below resolution"
    assert report["runs"][0]["memory_per_pod"] == "below resolution"
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("below resolution") >= 3, "run, group and comparison rows"
    assert "-0." not in re.sub(r"<[^>]+>", " ", html).split("memory per pod")[1][:40]


SETTLING_PLAN = """\
plan: {plan_id}
replicas: [2]
repetitions: 2
timeout: 90s
settle: 30s
runtimes:
  runc:
"""


def test_sigint_during_settle_counts_the_run_as_the_resume_does(
    stack: Stack, tmp_path: Path
) -> None:
    path = write_plan(tmp_path, "settle-sigint", SETTLING_PLAN)
    with stack.rtctl_process("run-plan", str(path)) as process:
        lines = Lines(process)
        try:
            lines.wait_for(re.compile(r".*settling for 30 s"), 1, within=120)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=120)
        finally:
            kill_if_running(process)
        first = lines.rest()
    assert code == 130, first
    said = re.search(r"interrupted at run 1 of 2 .*: (\d+) runs are done", first)
    assert said is not None, first

    again = stack.rtctl("run-plan", str(path))
    assert again.returncode == 0, again.stderr
    found = re.search(r"resuming: (\d+) of 2 runs are already in the collector", again.stderr)
    assert found is not None, again.stderr
    assert said[1] == found[1] == "1"

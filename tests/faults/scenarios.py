"""The fault matrix of issue 8, one function per fault, shared by tests/faults and
bench/fault_matrix.py.

Each scenario runs a real run on a ``FaultStack``, injects its fault mid-run
(after some pods are ready, before all are), lets the system recover, and
returns a ``Verdict``: what was expected, what was observed, the numbers behind
it (pods expected and complete, duplicated events, batches missing from the
journal, points missing from InfluxDB...) and whether it passed. The waits are
conditions with deadlines; a fixed sleep only ever sets a fault's duration.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtbench.v1 import control_pb2, events_pb2
from rtctl.workload import deployment_name
from tests.conftest import poll_until
from tests.faults.harness import (
    LIVE_PHASES,
    RUNTIME,
    Driver,
    FaultStack,
    phases_per_pod,
)

__all__ = ["SCENARIOS", "Scenario", "Verdict"]

BIN = Path(sys.executable).parent


@dataclass
class Verdict:
    name: str
    fault: str
    expected: str
    observed: str = ""
    passed: bool = False
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    expected: str
    run: Callable[[FaultStack, Verdict], None]
    poisons: bool = False
    """Whether the stack must be replaced after it, whatever the outcome."""

    def __call__(self, fs: FaultStack) -> Verdict:
        verdict = Verdict(self.name, self.fault, self.expected)
        start = time.monotonic()
        try:
            self.run(fs, verdict)
        except Exception as exc:  # the table shows a failure, the test re-raises it
            verdict.passed = False
            verdict.observed = f"{verdict.observed} ERROR {type(exc).__name__}: {exc}".strip()
            verdict.numbers["error"] = repr(exc)
        verdict.seconds = round(time.monotonic() - start, 1)
        return verdict


def _complete(fs: FaultStack, d: Driver, summary: control_pb2.RunSummary, v: Verdict) -> bool:
    """Every pod has every live phase exactly once; nothing duplicated, no batch lost."""
    per_pod = phases_per_pod(summary)
    counts = {events_pb2.Phase.Name(s.phase): s.reached for s in summary.phases}
    v.numbers.update(
        pods_expected=d.replicas,
        pods_in_summary=len(summary.pods),
        pods_complete=min(per_pod.values()),
        phase_counts={k: counts.get(k, 0) for k in per_pod},
        duplicates=fs.duplicates(d.run_id),
        missing_batches=fs.missing_batches(),
        all_responded_ms=round(summary.all_responded_ns / 1e6, 1),
    )
    n = v.numbers
    return bool(
        n["pods_in_summary"] == n["pods_complete"] == d.replicas
        and all(c == d.replicas for c in n["phase_counts"].values())
        and n["duplicates"] == 0
        and n["missing_batches"] == 0
        and summary.all_responded_ns > 0
    )


def _observed(v: Verdict, extra: str = "") -> str:
    n = v.numbers
    text = (
        f"{n.get('pods_complete', '?')}/{n.get('pods_expected', '?')} pods complete, "
        f"{n.get('duplicates', '?')} duplicates, {n.get('missing_batches', '?')} batches missing"
    )
    return f"{text}{'; ' + extra if extra else ''}"


# -- 1. collector SIGKILLed ------------------------------------------------------------------------


def collector_kill(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, "f-collector-kill")
    d.start()
    v.numbers["ready_at_fault"] = d.wait_mid_run()
    old = fs.stack.pids["collector"]
    fs.stack.kill("collector")
    time.sleep(5)  # the fault's duration
    fs.stack.restart("collector")
    d.wait_complete()
    summary = d.finish()
    v.numbers["collector_pids"] = [old, fs.stack.pids["collector"]]
    v.passed = _complete(fs, d, summary, v) and summary.state == control_pb2.RUN_STATE_SUCCEEDED
    v.observed = _observed(v, "summary complete" if v.passed else "")


# -- 2. InfluxDB stopped 30 s ----------------------------------------------------------------------


def influxdb_stop(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, "f-influx-stop")
    d.start()
    v.numbers["ready_at_fault"] = d.wait_mid_run()
    fs.stack.kill("influxd")
    time.sleep(30)  # the fault's duration
    fs.stack.restart("influxd")
    d.wait_complete()
    summary = d.finish()
    complete = _complete(fs, d, summary, v)

    def caught_up() -> bool:
        return fs.influx_counts(d.run_id) == fs.journal_counts(d.run_id)

    with contextlib.suppress(AssertionError):
        poll_until(caught_up, within=120, what="InfluxDB to hold every journal event")
    journal, influx = fs.journal_counts(d.run_id), fs.influx_counts(d.run_id)
    missing = sum(max(n - influx.get(p, 0), 0) for p, n in journal.items())
    v.numbers.update(journal_events=journal, influx_points=influx, missing_points=missing)
    v.passed = complete and missing == 0 and sum(journal.values()) > 0
    v.observed = _observed(v, f"{missing} of {sum(journal.values())} events missing in InfluxDB")


# -- 3. agent <-> collector link cut 20 s ----------------------------------------------------------


def link_cut(fs: FaultStack, v: Verdict) -> None:
    assert fs.proxy is not None
    d = Driver(fs, "f-link-cut")
    d.start()
    v.numbers["ready_at_fault"] = d.wait_mid_run()
    refused = fs.proxy.refused
    fs.proxy.cut(20)
    time.sleep(20)  # the fault's duration
    v.numbers["reconnects_refused"] = fs.proxy.refused - refused
    d.wait_complete()
    summary = d.finish()
    v.passed = _complete(fs, d, summary, v) and v.numbers["reconnects_refused"] > 0
    v.observed = _observed(
        v, f"{v.numbers['reconnects_refused']} reconnects refused; run completed"
    )


# -- 4. agent SIGKILLed and restarted --------------------------------------------------------------


def agent_kill(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, "f-agent-kill")
    d.start()
    known = d.wait_mid_run()
    v.numbers["ready_at_fault"] = known
    node = fs.stack.nodes[0]
    fs.stack.kill(f"agent-{node}")
    # Let pods of the run become ready while the agent is away, so it misses some.
    with contextlib.suppress(AssertionError):
        poll_until(lambda: d.running_pods() >= known + 3, within=30, what="pods ready meanwhile")
    fs.stack.restart(f"agent-{node}")
    poll_until(lambda: d.running_pods() == d.replicas, within=120, what="all pods ready")

    def journal_has_all() -> bool:  # live or late: every pod's every phase reported once
        phases = ",".join(str(p) for p in LIVE_PHASES)
        with contextlib.closing(fs.journal()) as conn:
            row = conn.execute(
                "SELECT count(DISTINCT pod_uid || ':' || phase) FROM events"
                f" WHERE run_id = ? AND phase IN ({phases})",
                (d.run_id,),
            ).fetchone()
        return bool(row[0] == d.replicas * len(LIVE_PHASES))

    poll_until(journal_has_all, within=120, what="every phase reported, live or late")
    summary = d.finish()
    per_pod = phases_per_pod(summary)
    # A pod missing a phase in the summary must have a late (reasoned) event for it.
    with contextlib.closing(fs.journal()) as conn:
        late = {
            (uid, phase): reason
            for uid, phase, reason in conn.execute(
                "SELECT pod_uid, phase, json_extract(attributes, '$.seen_late') FROM events"
                " WHERE run_id = ? AND attributes LIKE '%\"seen_late\":%'",
                (d.run_id,),
            )
        }
    unexplained = 0
    gaps = 0
    for pod in summary.pods:
        have = {t.phase for t in pod.phases}
        for phase in LIVE_PHASES:
            if phase not in have:
                gaps += 1
                unexplained += (pod.pod.uid, phase) not in late
    v.numbers.update(
        pods_expected=d.replicas,
        pods_in_summary=len(summary.pods),
        pods_complete=min(per_pod.values()),
        gaps=gaps,
        gaps_without_reason=unexplained,
        late_events=len(late),
        late_reasons=sorted(set(late.values())),
        duplicates=fs.duplicates(d.run_id),
        missing_batches=fs.missing_batches(),
    )
    n = v.numbers
    v.passed = bool(
        n["pods_in_summary"] == d.replicas
        and n["duplicates"] == 0
        and n["missing_batches"] == 0
        and n["gaps_without_reason"] == 0
        and n["late_events"] > 0
    )
    v.observed = _observed(v, f"{gaps} phase gaps, all with a reason: {unexplained == 0}")


# -- 5. watch drops and 410s -----------------------------------------------------------------------


def watch_faults(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, "f-watch")
    d.start()
    v.numbers["ready_at_fault"] = d.wait_mid_run()
    dropped = 0
    for _ in range(4):
        dropped += fs.sim("/_sim/faults/drop-watches", "POST")["dropped"]
        fs.sim("/_sim/faults/expire", "POST")
        time.sleep(1)  # pacing of the faults
    v.numbers["watches_dropped"] = dropped
    d.wait_complete()
    summary = d.finish()
    v.passed = _complete(fs, d, summary, v) and dropped > 0
    v.observed = _observed(v, f"{dropped} watches dropped, history expired 4 times")


# -- 6. API answering 5xx during create ------------------------------------------------------------


def _rtctl(fs: FaultStack, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.update(fs.stack.rtctl_env())
    return subprocess.run(
        [str(BIN / "rtctl"), *args], capture_output=True, text=True, timeout=timeout,
        env=env, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _deployments(fs: FaultStack) -> list[str]:
    items = fs.sim("/apis/apps/v1/namespaces/default/deployments")["items"]
    return [str(i["metadata"]["name"]) for i in items]


def api_5xx(fs: FaultStack, v: Verdict) -> None:
    run_id = "f-api-5xx"
    fault = {"status": 503, "seconds": 5, "path_prefix": "/apis/apps", "methods": ["POST"]}
    fs.sim("/_sim/requests", "DELETE")
    fs.sim("/_sim/requests", "POST", {"enabled": True})
    fs.sim("/_sim/faults/errors", "POST", fault)
    try:
        done = _rtctl(
            fs, "start-run", "--runtime-class", RUNTIME, "--replicas", "8", "--run-id", run_id,
            "--settle", "0", "--timeout", "120", "--format", "json",
        )  # fmt: skip
        recorded = fs.sim("/_sim/requests")["requests"]
    finally:
        fs.sim("/_sim/requests", "POST", {"enabled": False})
        fs.sim("/_sim/requests", "DELETE")
    creates = [r for r in recorded if r["verb"] == "create" and r["resource"] == "deployments"]
    result = json.loads(done.stdout) if done.returncode == 0 else {}
    # The create time is the attempt that was applied: the retries' pauses are not
    # start-up time, so the create latency stays that of one request.
    latency = int(result.get("create_latency_ns", 0))
    left = [n for n in _deployments(fs) if n == deployment_name(run_id)]
    v.numbers.update(
        exit_code=done.returncode,
        create_attempts=len(creates),
        create_latency_ms=round(latency / 1e6),
        pods_measured=len(result.get("pods", [])),
        orphaned_deployments=len(left),
        stderr_tail=done.stderr.strip().splitlines()[-1:] if done.returncode else [],
    )
    v.passed = done.returncode == 0 and not left and len(creates) >= 2 and 0 < latency < 3 * 10**9
    v.observed = (
        f"exit {done.returncode}, create sent {len(creates)} times (one applied, "
        f"{latency / 1e6:.0f} ms), {len(left)} orphaned Deployment"
    )


# -- 7. rtctl killed mid-run -----------------------------------------------------------------------


def rtctl_kill(fs: FaultStack, v: Verdict) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.update(fs.stack.rtctl_env())
    killed = "f-rtctl-killed"
    proc = subprocess.Popen(
        [str(BIN / "rtctl"), "start-run", "--runtime-class", RUNTIME, "--replicas", "8",
         "--run-id", killed, "--settle", "0", "--timeout", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        d = Driver(fs, killed, replicas=8)

        def registered_and_ready() -> bool:
            runs = d.call("ListRuns", control_pb2.ListRunsRequest()).runs
            return any(r.spec.run_id == killed for r in runs) and d.ready() >= 2

        poll_until(registered_and_ready, within=120, what="the killed run's pods ready")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    left_before = [n for n in _deployments(fs) if n == deployment_name(killed)]
    refused = _rtctl(fs, "start-run", "--runtime-class", RUNTIME, "--replicas", "4",
                     "--run-id", "f-rtctl-next", "--settle", "0", "--timeout", "120")  # fmt: skip
    cleaned = _rtctl(fs, "start-run", "--runtime-class", RUNTIME, "--replicas", "4",
                     "--run-id", "f-rtctl-next", "--settle", "0", "--timeout", "120",
                     "--clean-leftovers")  # fmt: skip
    runs = {
        r.spec.run_id: control_pb2.RunState.Name(r.state)
        for r in Driver(fs, killed).call("ListRuns", control_pb2.ListRunsRequest()).runs
    }
    left_after = [n for n in _deployments(fs) if n == deployment_name(killed)]
    v.numbers.update(
        leftover_deployments_before=len(left_before),
        exit_without_flag=refused.returncode,
        names_the_flag="--clean-leftovers" in refused.stderr,
        exit_with_flag=cleaned.returncode,
        leftover_deployments_after=len(left_after),
        killed_run_state=runs.get(killed, "?"),
        next_run_state=runs.get("f-rtctl-next", "?"),
    )
    n = v.numbers
    v.passed = bool(
        n["leftover_deployments_before"] == 1
        and n["exit_without_flag"] == 2
        and n["names_the_flag"]
        and n["exit_with_flag"] == 0
        and n["leftover_deployments_after"] == 0
        and n["killed_run_state"] == "RUN_STATE_ABORTED"
        and n["next_run_state"] == "RUN_STATE_SUCCEEDED"
    )
    v.observed = (
        f"leftovers found (exit {n['exit_without_flag']}, flag named: {n['names_the_flag']}); "
        f"with the flag exit {n['exit_with_flag']}, killed run {n['killed_run_state']}"
    )


# -- 8. disk full for the journal ------------------------------------------------------------------


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; bytes written."""
    written = 0
    chunk = b"\0" * 2**20
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError:
                break
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as out:
        while True:  # the last partial MB
            written += out.write(b"\0" * 4096)
    return written


def disk_full(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, "f-disk-full")
    d.start()
    v.numbers["ready_at_fault"] = d.wait_mid_run()
    pid = fs.stack.pids["collector"]
    log = fs.stack.logs["collector"]
    log_start = log.stat().st_size
    # An empty WAL: the next commit must allocate, so a full disk fails it at once.
    conn = sqlite3.connect(fs.stack.journal, timeout=10)
    try:
        poll_until(
            lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
            within=30, what="the WAL checkpointed",
        )  # fmt: skip
    finally:
        conn.close()
    filler = fs.journal_dir / "filler"
    v.numbers["filler_bytes"] = _fill(filler)
    try:

        def refused() -> bool:
            text = log.read_bytes()[log_start:].decode(errors="replace")
            return "journal commit" in text and "failed" in text

        poll_until(refused, within=60, what="the collector refusing a commit")
        time.sleep(3)  # keep the disk full a little longer: the agents keep retrying
        fs.stack.check()  # raises when the collector died
        v.numbers["collector_alive_while_full"] = True
    finally:
        filler.unlink()
    d.wait_complete()
    summary = d.finish()
    failures = log.read_bytes()[log_start:].decode(errors="replace").count("journal commit")
    v.numbers.update(
        commit_failures_logged=failures, collector_restarted=fs.stack.pids["collector"] != pid
    )
    v.passed = (
        _complete(fs, d, summary, v)
        and failures > 0
        and not v.numbers["collector_restarted"]
        and v.numbers["collector_alive_while_full"]
    )
    v.observed = _observed(v, f"{failures} commits refused while full, collector kept running")


# -- 9. collector restarted under rtctl start-run --------------------------------------------------


def collector_restart_rtctl(fs: FaultStack, v: Verdict) -> None:
    """Issue 16: the collector SIGKILLed 0.5 s after start-run's Deployment create and
    restarted on the same journal 3 s later; a real ``rtctl start-run`` of 40 pods must
    ride it out and end with every pod complete."""
    run_id, replicas = "f-collector-restart-rtctl", 40
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.update(fs.stack.rtctl_env())
    name = deployment_name(run_id)
    out, err = fs.root / f"{run_id}.json", fs.root / f"{run_id}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "rtctl"), "start-run", "--runtime-class", RUNTIME, "--replicas",
             str(replicas), "--run-id", run_id, "--settle", "0", "--timeout", "180",
             "--format", "json"],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        poll_until(lambda: name in _deployments(fs), within=120, what="the Deployment", every=0.02)
        time.sleep(0.5)  # the fault: 0.5 s after the create ...
        fs.stack.kill("collector")
        time.sleep(3)  # ... for 3 s
        fs.stack.restart("collector")
        code = proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    result = json.loads(out.read_text()) if code == 0 else {}
    d = Driver(fs, run_id, replicas=replicas)
    summary = d.summary(pods=True)
    complete = _complete(fs, d, summary, v)
    v.numbers.update(
        exit_code=code,
        outage_named="collector outage" in text and "answers again" in text,
        run_state=result.get("state", "?"),
        pods_in_output=len(result.get("pods", [])),
        left_deployments=len([n for n in _deployments(fs) if n == name]),
        stderr_tail=text.strip().splitlines()[-3:],
    )
    n = v.numbers
    v.passed = bool(
        complete
        and code == 0
        and n["outage_named"]
        and n["run_state"] == "succeeded"
        and n["pods_in_output"] == replicas
        and n["left_deployments"] == 0
    )
    v.observed = _observed(
        v, f"start-run exit {code}, outage named: {n['outage_named']}, run {n['run_state']}"
    )


SCENARIOS = (
    Scenario("collector_kill", "collector SIGKILLed mid-run, restarted after 5 s",
             "every pod has every phase exactly once; the summary is complete", collector_kill),
    Scenario("influxdb_stop", "InfluxDB stopped 30 s mid-run",
             "nothing missing in InfluxDB once it is back", influxdb_stop),
    Scenario("link_cut", "agent <-> collector link cut 20 s",
             "nothing lost; the run completes", link_cut),
    Scenario("agent_kill", "agent SIGKILLed and restarted mid-run",
             "no event duplicated; missed pods are gaps with reasons", agent_kill),
    Scenario("watch_faults", "watch drops and 410s from the API",
             "nothing lost", watch_faults),
    Scenario("api_5xx", "API answering 503 for 5 s during create",
             "rtctl retries; no orphaned Deployment", api_5xx),
    Scenario("rtctl_kill", "rtctl SIGKILLed mid-run",
             "next start-run finds the leftovers and cleans them with --clean-leftovers",
             rtctl_kill),
    Scenario("disk_full", "disk full for the journal",
             "collector pushes back, neither crashes nor acks what it did not store",
             disk_full, poisons=False),
    Scenario("collector_restart_rtctl",
             "collector SIGKILLed 0.5 s after start-run's create, restarted 3 s later (40 pods)",
             "start-run rides it out (a line names the outage), exit 0, every pod complete",
             collector_restart_rtctl),
)  # fmt: skip

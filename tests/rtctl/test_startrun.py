"""``rtctl start-run`` end to end: simulated cluster, agents and collector as processes.

The run's summary is checked against the journal the collector wrote (queried
here with our own SQL and our own nearest-rank percentiles), against the
cluster (no pod of the run left) and against InfluxDB (the run's points
arrived). Then the endings other than success: pods that fail, Ctrl-C, and
``--keep``; and ``--runtime-class default`` (no runtimeClassName: the simulator runs
such pods with its runc profile).
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import time
from typing import Any

from rtbench.v1 import events_pb2
from rtctl.workload import RUN_ID_LABEL
from tests.rtctl.conftest import Stack

PHASES = {
    "scheduled": events_pb2.PHASE_SCHEDULED,
    "running": events_pb2.PHASE_RUNNING,
    "first_response": events_pb2.PHASE_FIRST_RESPONSE,
    "ready": events_pb2.PHASE_READY,
}


def nearest_rank(values: list[int], percent: int) -> int:
    ordered = sorted(values)
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1]


def run_pods(stack: Stack, run_id: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in stack.pods()
        if (p["metadata"].get("labels") or {}).get(RUN_ID_LABEL) == run_id
    ]


def deployments(stack: Stack, namespace: str = "default") -> list[str]:
    items = stack.sim(f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    return [d["metadata"]["name"] for d in items]


def collector_runs(stack: Stack, test_id: str) -> list[dict[str, Any]]:
    listed = stack.rtctl("runs", "--test-id", test_id, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    runs: list[dict[str, Any]] = json.loads(listed.stdout)
    return runs


def journal_view(stack: Stack, run_id: str) -> tuple[int, dict[str, dict[str, int]]]:
    """created_ns and, per pod name, each start-up phase's earliest time from its best
    source (probe over watch, as collector/summaries.py prefers), straight from the journal:
    an explicit ranking, since SQLite promises no order among GROUP BY rows."""
    conn = sqlite3.connect(f"file:{stack.journal}?mode=ro", uri=True)
    try:
        (created,) = conn.execute(
            "SELECT created_ns FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        times: dict[str, dict[str, int]] = {}
        query = """
            WITH ranked AS (
              SELECT name, phase, corrected_ns,
                     ROW_NUMBER() OVER (
                       PARTITION BY name, phase
                       ORDER BY CASE source WHEN :probe THEN 0 ELSE 1 END, corrected_ns
                     ) AS pick
              FROM events
              WHERE run_id = :run AND phase IN (:p1, :p2, :p3, :p4)
                AND source IN (:watch, :probe))
            SELECT name, phase, corrected_ns FROM ranked WHERE pick = 1"""
        p1, p2, p3, p4 = PHASES.values()
        params = {
            "run": run_id, "p1": p1, "p2": p2, "p3": p3, "p4": p4,
            "watch": events_pb2.SOURCE_WATCH, "probe": events_pb2.SOURCE_PROBE,
        }  # fmt: skip
        for name, phase, corrected in conn.execute(query, params):
            label = next(k for k, v in PHASES.items() if v == phase)
            times.setdefault(name, {})[label] = corrected
        return created, times
    finally:
        conn.close()


def test_thirty_replicas_summary_matches_the_journal_cluster_and_influxdb(stack: Stack) -> None:
    run_id = "core-e2e-30"
    # Every pod's numbers against the journal's, so no first response may be left out
    # for a bracket that a loaded machine widened past the default bound (test_report.py
    # checks the bound's numbers against the journal).
    done = stack.rtctl(
        "start-run", "--runtime-class", "runc", "--replicas", "30", "--test-id", "core-e2e",
        "--run-id", run_id, "--settle", "0.5", "--label", "team=core", "--format", "json",
        "--max-uncertainty", "first_response=none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["run_id"] == run_id and summary["state"] == "succeeded"
    assert summary["spec"]["replicas"] == 30 and summary["spec"]["test_id"] == "core-e2e"
    assert summary["spec"]["environment"]["cluster_type"] == "rtbench-sim"
    assert summary["mode"] == "simulated"
    assert summary["mode_basis"] == "RuntimeClass runc labelled rtbench.dev/simulated=true"
    assert "runtime mode: simulated (RuntimeClass runc labelled" in done.stderr
    assert summary["create_latency_ns"] > 0 and summary["delete_latency_ns"] > 0
    assert "preflight" in done.stderr and "pods gone: 30/30" in done.stderr

    # The cluster: rtctl returned only once every pod of the run was gone.
    assert run_pods(stack, run_id) == []
    assert deployments(stack) == []

    # The journal, read independently: per pod and phase, latency from created.
    created, seen = journal_view(stack, run_id)
    assert summary["created_ns"] == created
    pods = {pod["name"]: pod for pod in summary["pods"]}
    assert len(pods) == 30 and set(pods) == set(seen)
    assert sorted(p["ordinal"] for p in pods.values()) == list(range(30))
    for name, phases in seen.items():
        for label, at in phases.items():
            reported = pods[name]["phases"][label]
            assert reported["time_ns"] == at, (name, label)
            assert reported["latency_ns"] == at - created
    for label in PHASES:
        latencies = [
            at - created for phases in seen.values() for lab, at in phases.items() if lab == label
        ]
        assert len(latencies) == 30, label
        stats = summary["phases"][label]
        assert stats["count"] == 30
        for percent in (50, 90, 99):
            assert stats[f"p{percent}_ns"] == nearest_rank(latencies, percent), (label, percent)
        assert stats["max_ns"] == max(latencies) and stats["min_ns"] == min(latencies)
    first = [phases["first_response"] - created for phases in seen.values()]
    assert summary["all_responded_ns"] == max(first)
    assert all(pods[n]["phases"]["first_response"]["source"] == "probe" for n in pods)
    assert summary["failed_pods"] == 0
    assert {c["node"] for c in summary["clocks"]} == set(stack.nodes)
    # rtctl and the collector share this machine's clock: the true offset 0 is within bounds.
    rtctl_clock = summary["rtctl_clock"]
    assert (
        0 < rtctl_clock["uncertainty_ns"]
        and abs(rtctl_clock["offset_ns"]) <= rtctl_clock["uncertainty_ns"]
    )

    # The collector's registry agrees, and InfluxDB got one first_response point per pod.
    (info,) = collector_runs(stack, "core-e2e")
    assert info["state"] == "succeeded" and info["created_ns"] == created
    query = (
        f"SELECT count(latency_ms) FROM pod_phase WHERE run_id = '{run_id}' "
        "AND phase = 'first_response' GROUP BY pod"
    )
    deadline = time.monotonic() + 60
    while True:
        series = stack.influxd.query(query, db=stack.influx_db)[0].get("series", [])
        if len(series) == 30 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert sorted(int(s["tags"]["pod"]) for s in series) == list(range(30))


def test_text_output_and_the_list_commands(stack: Stack) -> None:
    # A first_response bound no probe bracket plus clock uncertainty can meet: the run
    # succeeds, and its table shows every answer left out beside the bound.
    done = stack.rtctl(
        "start-run", "--runtime-class", "crun", "--replicas", "4", "--test-id", "core-text",
        "--settle", "0", "--max-uncertainty", "first_response=0ms",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "first_response" in done.stdout
    assert "SIMULATED runtime" in done.stdout and "REAL" not in done.stdout
    assert "runtime mode: simulated (RuntimeClass crun labelled" in done.stdout
    assert "API latency: create" in done.stdout
    first = next(line for line in done.stdout.splitlines() if "│ first_response" in line)
    assert "4/4" in first and "0/4 within 0 ms" in first, done.stdout
    assert "uncertainty bounds: first_response ≤ 0 ms; other phases unbounded" in done.stdout
    assert "all 4 replicas responded, but 4 of their first responses are left out" in done.stdout

    runs = stack.rtctl("runs", "--test-id", "core-text")
    assert runs.returncode == 0, runs.stderr
    assert "crun/crun" in runs.stdout and "succeeded" in runs.stdout

    agents = stack.rtctl("agents", "--format", "json")
    assert agents.returncode == 0, agents.stderr
    listed = json.loads(agents.stdout)
    assert sorted(a["node"] for a in listed) == sorted(stack.nodes)
    assert all(a["connected"] and a["clock"]["samples"] > 0 for a in listed)
    text = stack.rtctl("agents")
    assert text.returncode == 0 and all(node in text.stdout for node in stack.nodes)
    assert " ms ± " in text.stdout


def test_pods_that_fail_end_the_run_failed_with_exit_1(stack: Stack) -> None:
    # 1Mi is below every runtime profile's minimum: the simulated kubelet OOM-kills them.
    done = stack.rtctl(
        "start-run", "--runtime-class", "runc", "--replicas", "3", "--memory", "1Mi",
        "--test-id", "core-oom", "--timeout", "120", "--settle", "0", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "failed" and summary["failed_pods"] > 0
    assert "FAILED" in done.stderr
    assert run_pods(stack, summary["run_id"]) == []


def test_keep_leaves_the_deployment_running(stack: Stack) -> None:
    done = stack.rtctl(
        "start-run", "--runtime-class", "runc", "--replicas", "2", "--test-id", "core-keep",
        "--run-id", "core-keep-1", "--keep", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept"] is True
    assert deployments(stack) == ["rtbench-core-keep-1"]
    assert len(run_pods(stack, "core-keep-1")) == 2
    # A second run refuses to start next to them (the fixture cleans up afterwards).
    again = stack.rtctl("start-run", "--runtime-class", "runc", "--test-id", "core-keep")
    assert again.returncode == 2
    assert "2 pod(s) of an earlier run left in namespace default" in again.stderr
    assert "kubectl -n default delete deployment,pod -l app=c-http-server" in again.stderr


def test_ctrl_c_deletes_the_deployment_and_aborts_the_run(stack: Stack) -> None:
    run_id = "core-sigint"
    # kata-fc pods take seconds to start: the interrupt lands while the run is going.
    proc = stack.rtctl_process(
        "start-run", "--runtime-class", "kata-fc", "--replicas", "20", "--test-id", "core-int",
        "--run-id", run_id, "--timeout", "200",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not run_pods(stack, run_id):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run's pods never appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "marked aborted" in stderr
    assert deployments(stack) == []
    assert run_pods(stack, run_id) == []
    (info,) = collector_runs(stack, "core-int")
    assert info["run_id"] == run_id and info["state"] == "aborted"


def test_sigterm_is_an_interrupt_too(stack: Stack) -> None:
    proc = stack.rtctl_process(
        "start-run", "--runtime-class", "kata-qemu", "--replicas", "6", "--test-id", "core-term",
        "--run-id", "core-term-1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not deployments(stack):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    except (BaseException, subprocess.TimeoutExpired):
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 130
    assert deployments(stack) == []
    (info,) = collector_runs(stack, "core-term")
    assert info["state"] == "aborted"


def test_a_run_past_its_timeout_is_timed_out_with_exit_1(stack: Stack) -> None:
    # kata-fc's four start stages take about 2 s together: 10 pods cannot all answer in 0.5 s.
    done = stack.rtctl(
        "start-run", "--runtime-class", "kata-fc", "--replicas", "10", "--timeout", "0.5",
        "--test-id", "core-late", "--settle", "0", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "timed_out"
    assert summary["message"] == "not every replica answered within 0.5 s"
    assert "TIMED OUT" in done.stderr
    assert run_pods(stack, summary["run_id"]) == []


def test_the_default_runtime_class_runs_without_a_runtime_class_name(stack: Stack) -> None:
    # $KUBECONFIG lists a missing file first: kubectl skips it, and so does rtctl, saying so.
    missing = stack.root / "missing.kubeconfig"
    env = {
        "RTBENCH_RTCTL_KUBECONFIG": "",
        "KUBECONFIG": f"{missing}:{stack.kubeconfig}",
    }
    proc = stack.rtctl_process(
        "start-run", "--runtime-class", "default", "--replicas", "3", "--test-id", "core-default",
        "--run-id", "Core_Default.1", "--keep", "--settle", "0", "--timeout", "2m",
        "--format", "json", env=env,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    assert f"kubeconfig: {stack.kubeconfig} (not found, skipped: {missing})" in stderr
    assert "the cluster default handler" in stderr
    summary = json.loads(stdout)
    assert summary["spec"]["runtime_class"] == "default" and summary["state"] == "succeeded"
    # The simulated nodes say they are simulated: the default handler's pods are too.
    assert summary["mode"] == "simulated"
    assert summary["mode_basis"].startswith("default handler: node(s) sim-node-1")
    # The Deployment's name was mapped from the id, so it carries the id's hash.
    (name,) = deployments(stack)
    assert name.startswith("rtbench-core-default-1-") and name != "rtbench-core-default-1"
    pods = [
        p for p in stack.pods() if p["metadata"]["labels"].get(RUN_ID_LABEL) == "Core_Default.1"
    ]
    assert len(pods) == 3
    for pod in pods:
        assert "runtimeClassName" not in pod["spec"]
        labels = pod["metadata"]["labels"]
        assert labels["runtime_class"] == labels["variant"] == "default"

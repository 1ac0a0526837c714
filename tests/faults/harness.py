"""The stack the fault scenarios break, and what they measure on it.

One ``FaultStack`` carries every fault of the matrix, so the scenarios can share
it (a scenario that breaks it beyond repair makes the next one start a new
one): the local stack (simulated cluster, collector, one agent per node, a
private InfluxDB it may stop) with

- the agents dialling the collector through a ``LinkProxy`` (the link cut);
- the collector on a fixed port (a restarted collector is found again) and its
  journal on a small tmpfs of its own (disk full: the scenario fills it);
- a runtime profile ``slowstart`` whose sandbox start is spread over seconds,
  so that a run of ``REPLICAS`` pods is long enough to be hit "mid-run".

``Driver`` plays rtctl's part through the control API, surviving a collector
that is away (calls are retried until a deadline), so a scenario can finish a
run whatever it did to the collector. The checks read the collector's own
answers (summary with per-pod timelines), its journal (read-only) and InfluxDB.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rtbench.clock import OffsetEstimator, SyncSample, offset_message, wall_ns
from rtbench.influxd import free_port
from rtbench.v1 import control_pb2, control_pb2_grpc, events_pb2
from rtctl.localstack import LocalStack, StackSettings
from rtctl.workload import pod_labels, run_selector, workload_deployment
from tests.conftest import poll_until
from tests.faults.proxy import LinkProxy

__all__ = ["LIVE_PHASES", "REPLICAS", "Driver", "FaultStack", "poll_until"]


REPLICAS = 16
"""Pods per run: enough to be mid-run for several seconds on 2 simulated nodes."""
RUNTIME = "slowstart"
PROFILES = """\
profiles:
  slowstart:
    base: runc
    sandbox_start: {median_ms: 2500, spread: 0.6, min_ms: 300, max_ms: 9000}
"""
JOURNAL_FS_BYTES = 48 * 2**20
"""The journal's tmpfs: a few MB of journal per minute of stack, with room to spare."""
LIVE_PHASES = (
    events_pb2.PHASE_SCHEDULED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
    events_pb2.PHASE_READY,
)
"""Phases every pod of a successful run reaches, each reported once by its agent."""


class FaultStack:
    """A LocalStack wired for faults (see the module docstring); ``start()``/``stop()``."""

    def __init__(self, root: Path, workload: Path) -> None:
        self.root = root
        self.workload = workload
        self.journal_dir = Path(tempfile.mkdtemp(prefix="rtbench-journal-"))
        self.mounted = False
        self.proxy: LinkProxy | None = None
        self.local: LocalStack | None = None
        self.collector_port = free_port()

    @property
    def stack(self) -> LocalStack:
        assert self.local is not None, "stack not started"
        return self.local

    @property
    def collector(self) -> str:
        return f"127.0.0.1:{self.collector_port}"

    def start(self) -> FaultStack:
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={JOURNAL_FS_BYTES}", "tmpfs",
                 str(self.journal_dir)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            self.mounted = True
            self.proxy = LinkProxy(self.collector)
            self.proxy.start()
            self.root.mkdir(parents=True, exist_ok=True)
            profiles = self.root / "profiles.yaml"
            profiles.write_text(PROFILES)
            settings = StackSettings(
                root=self.root, nodes=2, seed=11, workload=self.workload, pleg_period=0.1,
                profiles=profiles, start_influxd=True, stop_grace=20.0,
                collector_args=("--listen", self.collector,
                                "--journal", str(self.journal_dir / "journal.sqlite")),
                agent_args=("--collector", self.proxy.address),
            )  # fmt: skip
            self.local = LocalStack(settings)
            self.local.start()
        except BaseException:
            self.stop(strict=False)
            raise
        return self

    def healthy(self) -> bool:
        """Every process up, the proxy forwarding, the journal's disk not filled."""
        try:
            self.stack.check()
        except Exception:
            return False
        return not (self.journal_dir / "filler").exists()

    def stop(self, *, strict: bool = True) -> None:
        try:
            if self.local is not None:
                self.local.stop(strict=strict)
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            if self.mounted:
                subprocess.run(["umount", "-l", str(self.journal_dir)], check=False)
                self.mounted = False
            with contextlib.suppress(OSError):
                self.journal_dir.rmdir()

    # -- the simulator and InfluxDB --------------------------------------------------------

    def sim(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.stack.sim_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as reply:
            raw = reply.read()
        return json.loads(raw) if raw else None

    def pods(self, selector: str) -> list[dict[str, Any]]:
        query = urllib.parse.quote(selector)
        items: list[dict[str, Any]] = self.sim(f"/api/v1/pods?labelSelector={query}")["items"]
        return items

    def influx_counts(self, run_id: str) -> dict[str, int]:
        """Points of the run in InfluxDB per phase (empty while InfluxDB is down)."""
        url = self.stack.influx_url
        assert url is not None
        q = f"SELECT count(raw_time_ns) FROM pod_phase WHERE run_id = '{run_id}' GROUP BY phase"
        params = urllib.parse.urlencode({"db": self.stack.settings.influx_db, "q": q})
        try:
            with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as reply:
                result = json.loads(reply.read())["results"][0]
        except OSError:
            return {}
        return {s["tags"]["phase"]: int(s["values"][0][1]) for s in result.get("series", [])}

    # -- the journal, read-only ------------------------------------------------------------

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.stack.journal}?mode=ro", uri=True, timeout=10)

    def journal_counts(self, run_id: str) -> dict[str, int]:
        """Events of the run in the journal per phase name (as InfluxDB tags them)."""
        with contextlib.closing(self.journal()) as conn:
            rows = conn.execute(
                "SELECT phase, count(*) FROM events WHERE run_id = ? GROUP BY phase", (run_id,)
            ).fetchall()
        return {events_pb2.Phase.Name(p).removeprefix("PHASE_").lower(): n for p, n in rows}

    def duplicates(self, run_id: str) -> int:
        """Live (not ``seen_late``) events of the run beyond one per pod, phase and source,
        for the phases an agent reports once per pod."""
        phases = ",".join(str(p) for p in LIVE_PHASES)
        with contextlib.closing(self.journal()) as conn:
            row = conn.execute(
                "SELECT count(*) - count(DISTINCT pod_uid || ':' || phase || ':' || source)"
                f" FROM events WHERE run_id = ? AND phase IN ({phases})"
                " AND (attributes IS NULL OR attributes NOT LIKE '%\"seen_late\":%')",
                (run_id,),
            ).fetchone()
        return int(row[0])

    def late_events(self, run_id: str) -> int:
        with contextlib.closing(self.journal()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM events WHERE run_id = ?"
                " AND attributes LIKE '%\"seen_late\":%'",
                (run_id,),
            ).fetchone()
        return int(row[0])

    def missing_batches(self) -> int:
        """Holes in each agent's batch sequences in the journal: a batch acked but not
        stored (the agent drops what was acked) would leave one."""
        with contextlib.closing(self.journal()) as conn:
            rows = conn.execute(
                "SELECT agent_id, count(*), min(sequence), max(sequence) FROM batches"
                " GROUP BY agent_id"
            ).fetchall()
        return sum(high - low + 1 - n for _, n, low, high in rows)


@dataclass
class Driver:
    """rtctl's part of one run, through the control API and the Kubernetes API."""

    fs: FaultStack
    run_id: str
    replicas: int = REPLICAS
    created_ns: int = 0
    notes: list[str] = field(default_factory=list)

    def call(self, name: str, request: Any, *, within: float = 120.0) -> Any:
        """One control call, retried while the collector is away (restarted, overloaded)."""
        deadline = time.monotonic() + within
        while True:
            try:
                with grpc.insecure_channel(self.fs.collector) as channel:
                    stub = control_pb2_grpc.ControlServiceStub(channel)
                    return getattr(stub, name)(request, timeout=10)
            except grpc.RpcError as exc:
                code = exc.code()
                retry = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if code not in retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def clock(self) -> events_pb2.ClockOffset:
        estimator = OffsetEstimator(8)
        for n in range(8):
            t1 = wall_ns()
            reply = self.call("SyncClock", events_pb2.ClockSyncRequest(id=n + 1, t1_ns=t1))
            estimator.add(SyncSample(t1=t1, t2=reply.t2_ns, t3=reply.t3_ns, t4=wall_ns()))
        estimate = estimator.estimate()
        assert estimate is not None
        return offset_message(estimate)

    def deployment(self) -> dict[str, Any]:
        labels = pod_labels(
            run_id=self.run_id, test_id="faults", runtime_class=RUNTIME, variant=RUNTIME
        )
        return workload_deployment(
            run_id=self.run_id, namespace="default", replicas=self.replicas,
            image="rtbench/workload:1", memory="16Mi", runtime_class=RUNTIME, labels=labels,
        )  # fmt: skip

    def start(self) -> None:
        spec = control_pb2.RunSpec(
            run_id=self.run_id, test_id="faults", runtime_class=RUNTIME, variant=RUNTIME,
            replicas=self.replicas, image="rtbench/workload:1", namespace="default",
        )  # fmt: skip
        self.call("RegisterRun", control_pb2.RegisterRunRequest(spec=spec))
        clock = self.clock()
        sent = wall_ns()
        self.fs.sim("/apis/apps/v1/namespaces/default/deployments", "POST", self.deployment())
        received = wall_ns()
        request = control_pb2.RecordCreateRequest(
            run_id=self.run_id, request_sent_ns=sent, response_received_ns=received,
            rtctl_clock=clock,
        )  # fmt: skip
        self.created_ns = self.call("RecordCreate", request).created_ns

    def summary(self, *, pods: bool = False) -> control_pb2.RunSummary:
        """The run's summary with no bound on first_response: the fault matrix asks
        whether every event arrived once, not how precise each is (a loaded machine
        widens probe brackets past the default bound; the report tests cover that)."""
        request = control_pb2.GetRunSummaryRequest(run_id=self.run_id, include_pods=pods)
        request.max_uncertainty.add(phase=events_pb2.PHASE_FIRST_RESPONSE, max_uncertainty_ns=-1)
        summary: control_pb2.RunSummary = self.call("GetRunSummary", request)
        return summary

    def counts(self) -> dict[int, int]:
        """Pods that reached each phase (counted in the statistics or not)."""
        return {s.phase: s.reached for s in self.summary().phases}

    def ready(self) -> int:
        return self.counts().get(events_pb2.PHASE_READY, 0)

    def wait_mid_run(self, *, at_least: int = 3, within: float = 120.0) -> int:
        """Until ``at_least`` pods are ready (fewer than all): the fault goes in now."""
        ready = poll_until(
            lambda: (n := self.ready()) >= at_least and n, within=within, what="pods ready"
        )
        assert ready < self.replicas, f"the run was over ({ready} ready) before the fault"
        return ready

    def running_pods(self) -> int:
        """Pods of the run the API shows Ready (the truth, whatever the collector knows)."""
        return sum(
            any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or [])
            for p in self.fs.pods(run_selector(self.run_id))
        )  # fmt: skip

    def wait_complete(self, *, within: float = 180.0) -> control_pb2.RunSummary:
        """Until the collector has every live phase for every pod; the summary with pods."""

        def complete() -> bool:
            counts = self.counts()
            return all(counts.get(p, 0) >= self.replicas for p in LIVE_PHASES)

        poll_until(complete, within=within, what=f"every phase of {self.replicas} pods")
        return self.summary(pods=True)

    def finish(
        self, state: control_pb2.RunState = control_pb2.RUN_STATE_SUCCEEDED
    ) -> control_pb2.RunSummary:
        self.call("FinishRun", control_pb2.FinishRunRequest(run_id=self.run_id, state=state))
        self.teardown()
        return self.summary(pods=True)

    def teardown(self, within: float = 120.0) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            name = self.deployment()["metadata"]["name"]
            self.fs.sim(f"/apis/apps/v1/namespaces/default/deployments/{name}", "DELETE")
        selector = run_selector(self.run_id)
        poll_until(lambda: not self.fs.pods(selector), within=within, what="pods gone")


def phases_per_pod(summary: control_pb2.RunSummary) -> dict[str, int]:
    """How many pods of the summary have each live phase exactly once (by name)."""
    out: dict[str, int] = {}
    for phase in LIVE_PHASES:
        out[events_pb2.Phase.Name(phase)] = sum(
            [t.phase for t in pod.phases].count(phase) == 1 for pod in summary.pods
        )
    return out

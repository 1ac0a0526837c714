"""Benchmark of the whole pipeline at scale: 10 simulated nodes x 110 pods in one run.

Run: ``.venv/bin/python bench/scale.py [--nodes 10 --pods-per-node 110 --repeat 3]``
(about 3 minutes at the defaults). Each repetition starts a fresh local stack
(``rtctl.localstack``: the simulated cluster with ``--nodes`` nodes allowing
``--pods-per-node`` pods each, a containerd socket per node, one agent per node,
one collector, a private InfluxDB) and runs ``rtctl start-run`` with exactly the
cluster's capacity as replicas, as a user would (the installed command, in its
own process). Then:

- preflight at the boundary: ``replicas + 1`` must be refused (exit 2, "do not
  fit"), ``replicas`` accepted with the "above 90 %" warning;
- completeness: every pod of the run has every phase the pipeline promises with
  containerd on (``PHASES``), first in the journal (polled until complete or
  ``--complete-within``), then in the per-pod timelines of ``rtctl report``'s
  ``report.json``; the pods missing each phase are counted, not hidden;
- cost: CPU time (utime + stime from ``/proc/PID/stat``) of every agent and of the
  collector from just before ``start-run`` until the journal is complete, and
  their RSS sampled every 0.1 s (peak), plus ``VmHWM``; the simulator's the same
  way but apart (it is the test harness, not the product; its workload processes'
  CPU, reaped, shows as its children's time). rtctl's own CPU comes from wait4;
- the report: ``rtctl report RUN --out DIR`` (HTML, JSON, PNGs), timed;
- InfluxDB: the run's ``pod_phase`` and ``pod_probe`` points counted by InfluxQL
  against the journal's rows with distinct point identities (lineprotocol.py: a
  point is measurement, tag set and ns), polled until they match.

The baseline, in the same repetition and on a fresh stack: the same pipeline at
``--baseline-nodes`` x ``--pods-per-node`` (default 1 x 110, so each agent has
as many pods as at scale and only the number of nodes, agents and pods behind
the one collector grows). Ratios scale / baseline of CPU per pod for the agents
(total) and the collector say whether the cost per pod stays flat. Median and
spread (min..max) over the repetitions; every run's figures are kept in
bench/results/scale.json. One summary line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from procstats import cpu_seconds, cpu_times, status_kb

from rtbench.v1 import events_pb2
from rtctl.localstack import LocalStack, StackSettings

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
BIN = Path(sys.executable).parent

PHASES = (
    "scheduled", "sandbox_created", "sandbox_started", "container_created",
    "container_started", "running", "first_response", "ready",
    "deletion_requested", "container_exited", "gone",
)  # fmt: skip
"""What the pipeline promises for every pod with containerd on: the runtime phases from
containerd, the rest from the watch and the probe, the teardown included."""
CONTAINERD_PHASES = ("sandbox_created", "sandbox_started", "container_created",
                     "container_started", "container_exited")  # fmt: skip
"""Phases containerd reports: each is also counted with source containerd, since the watch
standing in for a missed event would hide a loss."""


def phase_number(name: str) -> int:
    return int(events_pb2.Phase.Value("PHASE_" + name.upper()))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# -- process accounting ---------------------------------------------------------------------


class RssSampler:
    """Samples VmRSS of ``pids`` every ``interval`` s in a thread; keeps each one's peak."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kb = dict.fromkeys(pids, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in self.pids.items():
                try:
                    self.peak_kb[name] = max(self.peak_kb[name], status_kb(pid, "VmRSS"))
                except OSError:
                    continue
            self.samples += 1


def rtctl(args: list[str], env: dict[str, str]) -> tuple[int, str, str, float, float]:
    """Run the installed rtctl; (exit code, stdout, stderr, wall s, CPU s from wait4)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(BIN / "rtctl"), *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return (
            proc.returncode,
            out.read().decode(),
            err.read().decode(),
            wall,
            usage.ru_utime + usage.ru_stime,
        )


# -- what the journal and InfluxDB hold -----------------------------------------------------


def journal_counts(journal: Path, run_id: str) -> dict[str, int]:
    """Distinct pods per phase (and per containerd phase from containerd), and the pods."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        (pods,) = conn.execute("SELECT COUNT(*) FROM pods WHERE run_id = ?", (run_id,)).fetchone()
        rows = conn.execute(
            "SELECT phase, source, COUNT(DISTINCT pod_uid) FROM events WHERE run_id = ? "
            "GROUP BY phase, source",
            (run_id,),
        ).fetchall()
        by_phase = dict(
            conn.execute(
                "SELECT phase, COUNT(DISTINCT pod_uid) FROM events WHERE run_id = ? GROUP BY phase",
                (run_id,),
            ).fetchall()
        )
    finally:
        conn.close()
    counts = {"pods": int(pods)}
    for name in PHASES:
        counts[name] = int(by_phase.get(phase_number(name), 0))
    ctd = events_pb2.SOURCE_CONTAINERD
    for name in CONTAINERD_PHASES:
        number = phase_number(name)
        counts[f"{name}/containerd"] = sum(n for p, s, n in rows if p == number and s == ctd)
    return counts


def wait_complete(journal: Path, run_id: str, replicas: int, within: float) -> dict[str, Any]:
    """Poll the journal until every pod has every phase; the counts and how long it took."""
    started = time.monotonic()
    while True:
        counts = journal_counts(journal, run_id)
        done = all(n >= replicas for n in counts.values())
        if done or time.monotonic() - started > within:
            return {"complete": done, "waited_s": time.monotonic() - started, "counts": counts}
        time.sleep(0.25)


def expected_points(journal: Path, run_id: str) -> dict[str, int]:
    """Distinct InfluxDB point identities of the run's pod_phase and pod_probe rows."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        (phase_points,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT pod_uid, node, phase, source, container, "
            "CASE WHEN phase = ? THEN reason END, corrected_ns FROM events WHERE run_id = ? "
            "AND pod_uid IN (SELECT uid FROM pods WHERE run_id = ?))",
            (events_pb2.PHASE_FAILED, run_id, run_id),
        ).fetchone()
        (probe_points,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT pod_uid, node, corrected_ns FROM probes "
            "WHERE run_id = ? AND pod_uid IN (SELECT uid FROM pods WHERE run_id = ?))",
            (run_id, run_id),
        ).fetchone()
    finally:
        conn.close()
    return {"pod_phase": int(phase_points), "pod_probe": int(probe_points)}


def influx_count(url: str, db: str, measurement: str, field: str, run_id: str) -> int:
    query = f"SELECT count({field}) FROM {measurement} WHERE run_id = '{run_id}'"
    data = urllib.parse.urlencode({"q": query, "db": db}).encode()
    with urllib.request.urlopen(url + "/query", data=data, timeout=30) as reply:
        body = json.loads(reply.read())
    series = body["results"][0].get("series") or []
    return int(series[0]["values"][0][1]) if series else 0


def wait_influx(stack: LocalStack, run_id: str, within: float) -> dict[str, Any]:
    """Poll InfluxDB until it holds every point the journal implies (or ``within``)."""
    url, db = stack.influx_url, stack.influx_db
    assert url is not None and db is not None
    expected = expected_points(stack.journal, run_id)
    started = time.monotonic()
    while True:
        found = {
            "pod_phase": influx_count(url, db, "pod_phase", "uid", run_id),
            "pod_probe": influx_count(url, db, "pod_probe", "ok", run_id),
        }
        if found == expected or time.monotonic() - started > within:
            return {"expected": expected, "found": found, "all": found == expected,
                    "waited_s": time.monotonic() - started}  # fmt: skip
        time.sleep(0.5)


def timeline_gaps(report_json: Path, run_id: str) -> dict[str, Any]:
    """From report.json's per-pod timelines: pods, pods with every phase, missing per phase."""
    report = json.loads(report_json.read_text())
    (run,) = [r for r in report["runs"] if r["run_id"] == run_id]
    pods = run["pods"]
    missing = {name: sum(name not in p["phases"] for p in pods) for name in PHASES}
    complete = sum(all(name in p["phases"] for name in PHASES) for p in pods)
    return {"pods": len(pods), "complete_pods": complete, "missing": missing}


# -- one configuration on a fresh stack -----------------------------------------------------


def measure(nodes: int, per_node: int, label: str, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh stack of ``nodes`` x ``per_node``, one run of its whole capacity, measured."""
    replicas = nodes * per_node
    root = Path(tempfile.mkdtemp(prefix=f"rtbench-scale-{label}-"))
    settings = StackSettings(
        root=root, nodes=nodes, max_pods=per_node, seed=args.seed, start_influxd=True,
        containerd=True, start_timeout=300.0,
    )  # fmt: skip
    run_id = f"scale-{label}-{int(time.time())}"
    result: dict[str, Any] = {"label": label, "nodes": nodes, "pods_per_node": per_node,
                              "replicas": replicas, "run_id": run_id}  # fmt: skip
    started = time.monotonic()
    with LocalStack(settings, progress=lambda text: None) as stack:
        result["stack_start_s"] = time.monotonic() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
        env.update(stack.rtctl_env())
        common = ["--runtime-class", "runc", "--test-id", "bench-scale", "--settle", "0"]
        # One over the capacity is refused by preflight, before anything is created.
        code, _, err, _, _ = rtctl(["start-run", *common, "--replicas", str(replicas + 1)], env)
        result["over_capacity_refused"] = code == 2 and "do not fit" in err
        product = {name: pid for name, pid in stack.pids.items() if name != "rtbench-sim"}
        sim_pid = stack.pids["rtbench-sim"]
        before = {name: cpu_seconds(pid) for name, pid in product.items()}
        sim_before = cpu_times(sim_pid)
        with RssSampler({**product, "rtbench-sim": sim_pid}) as rss:
            code, out, err, wall, rtctl_cpu = rtctl(
                ["start-run", *common, "--replicas", str(replicas), "--run-id", run_id,
                 "--timeout", str(args.timeout), "--format", "json"], env,
            )  # fmt: skip
            if code != 0:
                raise RuntimeError(f"start-run exited {code}:\n{err[-3000:]}")
            summary = json.loads(out)
            result["start_run_s"] = wall
            result["rtctl_cpu_s"] = rtctl_cpu
            result["capacity_warning"] = f"{replicas} replicas use 100%" in err
            result["journal"] = wait_complete(stack.journal, run_id, replicas, args.complete_within)
            after = {name: cpu_seconds(pid) for name, pid in product.items()}
            sim_after = cpu_times(sim_pid)
        peaks = {name: status_kb(pid, "VmHWM") for name, pid in stack.pids.items()}
        agents = sorted(name for name in product if name.startswith("agent-"))
        cpu = {name: after[name] - before[name] for name in product}
        result["cpu_s"] = {
            "agents_total": sum(cpu[a] for a in agents),
            "agents_max": max(cpu[a] for a in agents),
            "per_agent": {a: cpu[a] for a in agents},
            "collector": cpu["collector"],
            "sim": sim_after[0] - sim_before[0],
            "sim_workload_children": sim_after[1] - sim_before[1],
        }
        result["window_s"] = wall + result["journal"]["waited_s"]
        result["rss_peak_mb"] = {
            "agent_max": max(rss.peak_kb[a] for a in agents) / 1024,
            "agents_total": sum(rss.peak_kb[a] for a in agents) / 1024,
            "collector": rss.peak_kb["collector"] / 1024,
            "sim": rss.peak_kb["rtbench-sim"] / 1024,
            "samples": rss.samples,
        }
        result["vm_hwm_mb"] = {
            "agent_max": max(peaks[a] for a in agents) / 1024,
            "collector": peaks["collector"] / 1024,
            "sim": peaks["rtbench-sim"] / 1024,
        }
        phases = summary["phases"]
        result["all_responded_s"] = summary["all_responded_ns"] / 1e9
        result["all_ready_s"] = phases.get("ready", {}).get("max_ns", 0) / 1e9
        # Over the first responses within start-run's uncertainty bound (rtctl/bounds.py):
        # under this load many probe brackets are wider, and all_responded is then 0.
        first = phases["first_response"]
        result["first_response_counted"] = first["count"]
        result["first_response_reached"] = first["reached"]
        result["first_response_p50_ms"] = (first["p50_ns"] or 0) / 1e6
        result["first_response_p99_ms"] = (first["p99_ns"] or 0) / 1e6
        result["create_latency_ms"] = summary["create_latency_ns"] / 1e6
        result["delete_latency_ms"] = summary["delete_latency_ns"] / 1e6
        result["state"] = summary["state"]
        out_dir = root / "report"
        code, _, err, report_s, _ = rtctl(["report", run_id, "--out", str(out_dir)], env)
        if code != 0:
            raise RuntimeError(f"rtctl report exited {code}:\n{err[-3000:]}")
        result["report_s"] = report_s
        result["report_files"] = len(list(out_dir.iterdir()))
        result["timelines"] = timeline_gaps(out_dir / "report.json", run_id)
        result["influx"] = wait_influx(stack, run_id, args.complete_within)
    result["per_pod_cpu_ms"] = {
        "agents": 1000 * result["cpu_s"]["agents_total"] / replicas,
        "collector": 1000 * result["cpu_s"]["collector"] / replicas,
        "sim": 1000 * result["cpu_s"]["sim"] / replicas,
    }
    result["stack_total_s"] = time.monotonic() - started
    if ok(result):  # kept when something is missing: the logs say what
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["kept"] = str(root)
    return result


def ok(run: dict[str, Any]) -> bool:
    return bool(
        run["journal"]["complete"]
        and run["timelines"]["complete_pods"] == run["replicas"]
        and run["influx"]["all"]
        and run["over_capacity_refused"]
        and run["capacity_warning"]
    )


def aggregate(reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median and spread per figure, for the scale and the baseline, and the ratios."""

    def figures(run: dict[str, Any]) -> dict[str, float]:
        return {
            "agent_cpu_per_pod_ms": run["per_pod_cpu_ms"]["agents"],
            "collector_cpu_per_pod_ms": run["per_pod_cpu_ms"]["collector"],
            "sim_cpu_per_pod_ms": run["per_pod_cpu_ms"]["sim"],
            "agents_cpu_s": run["cpu_s"]["agents_total"],
            "agent_max_cpu_s": run["cpu_s"]["agents_max"],
            "collector_cpu_s": run["cpu_s"]["collector"],
            "sim_cpu_s": run["cpu_s"]["sim"],
            "agent_rss_peak_mb": run["rss_peak_mb"]["agent_max"],
            "collector_rss_peak_mb": run["rss_peak_mb"]["collector"],
            "sim_rss_peak_mb": run["rss_peak_mb"]["sim"],
            "all_responded_s": run["all_responded_s"],
            "all_ready_s": run["all_ready_s"],
            "start_run_s": run["start_run_s"],
            "report_s": run["report_s"],
            "first_response_p50_ms": run["first_response_p50_ms"],
            "first_response_p99_ms": run["first_response_p99_ms"],
        }

    out: dict[str, Any] = {}
    for which in ("scale", "baseline"):
        values = [figures(r[which]) for r in reps]
        out[which] = {key: spread([v[key] for v in values]) for key in values[0]}
    out["ratio_scale_over_baseline"] = {
        key: spread([figures(r["scale"])[key] / figures(r["baseline"])[key] for r in reps])
        for key in ("agent_cpu_per_pod_ms", "collector_cpu_per_pod_ms", "sim_cpu_per_pod_ms")
    }
    return out


def fmt(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}..{s['max']:.{digits}f}]"


def summary_line(result: dict[str, Any], args: argparse.Namespace) -> str:
    scale, ratio = result["scale"], result["ratio_scale_over_baseline"]
    reps = result["repetitions"]
    complete = [r["scale"]["timelines"]["complete_pods"] for r in reps]
    replicas = args.nodes * args.pods_per_node
    return (
        f"scale: {len(reps)} x {args.nodes} nodes x {args.pods_per_node} pods; complete "
        f"timelines {min(complete)}/{replicas} (worst run), InfluxDB complete "
        f"{sum(r['scale']['influx']['all'] for r in reps)}/{len(reps)}; all responded "
        f"{fmt(scale['all_responded_s'])} s, all ready {fmt(scale['all_ready_s'])} s; CPU per pod "
        f"agents {fmt(scale['agent_cpu_per_pod_ms'], 2)} ms "
        f"({fmt(ratio['agent_cpu_per_pod_ms'], 2)}x {args.baseline_nodes}x{args.pods_per_node}), "
        f"collector {fmt(scale['collector_cpu_per_pod_ms'], 2)} ms "
        f"({fmt(ratio['collector_cpu_per_pod_ms'], 2)}x); peak RSS agent "
        f"{fmt(scale['agent_rss_peak_mb'], 0)} MB, collector "
        f"{fmt(scale['collector_rss_peak_mb'], 0)} MB; report {fmt(scale['report_s'])} s; "
        f"sim CPU {fmt(scale['sim_cpu_s'])} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--pods-per-node", type=int, default=110, help="max pods per node")
    parser.add_argument("--baseline-nodes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (fresh stacks)")
    parser.add_argument("--seed", type=int, default=7, help="the simulator's delay seed")
    parser.add_argument("--timeout", type=float, default=600.0, help="start-run --timeout (s)")
    parser.add_argument(
        "--complete-within", type=float, default=120.0,
        help="seconds to wait for the journal and InfluxDB to hold everything",
    )  # fmt: skip
    args = parser.parse_args(argv)
    reps: list[dict[str, dict[str, Any]]] = []
    for index in range(args.repeat):
        # Baseline first, then scale, in every repetition: drift hits both alike.
        baseline = measure(args.baseline_nodes, args.pods_per_node, f"b{index}", args)
        scale = measure(args.nodes, args.pods_per_node, f"s{index}", args)
        reps.append({"baseline": baseline, "scale": scale})
        print(f"repetition {index + 1}/{args.repeat} done", file=sys.stderr)
    result: dict[str, Any] = {
        "environment": {
            "cluster": "rtbench-sim local stack, containerd sockets, private InfluxDB, one host",
            "cpus": os.cpu_count(),
            "runtime_class": "runc",
            "seed": args.seed,
        },
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "baseline_nodes": args.baseline_nodes,
        "repetitions": reps,
        "all_ok": all(ok(r["scale"]) and ok(r["baseline"]) for r in reps),
        **aggregate(reps),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(summary_line(result, args))
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: real runc, crun and gVisor (runsc) pods, as a user's report shows them.

Run: ``.venv/bin/python bench/real_runtimes.py`` as root (about 25 minutes; the
packages come from scripts/setup). Everything runs on the local stack with real
pods (``rtbench-sim --node-mode real``: rtbench's own containerd, CNI bridge,
1 node at the kubelet's real 1 s relist), one ``agent run`` reading that
containerd, ``collector serve``.

1. **Start-up per runtime.** For each of ``--repetitions`` (3), every runtime in
   a random order, two runs each (memory limits as the demo's: 16Mi, runsc 64Mi):
   a burst (``rtctl start-run --replicas 30``)
   and 30 pods one at a time (30 runs of one replica). Per phase
   (sandbox_started, container_started, first_response, ready) from the create:
   p50 and p99 of the pods, from ``rtctl report RUN --format json``. Ratios
   crun/runc and runsc/runc of the p50 with bootstrap CIs over the runs
   (rtctl/stats.py), printed beside the published serial ``nerdctl run``
   figures (crun 0.82, runsc 1.82 of runc).
2. **Accuracy.** Each pod's first_response against the listen time its own
   container logged (``kubectl logs``, from the container's CRI log), which
   nothing in the pipeline produced: |error| p50/p99 per runtime and mode.
3. **Observer effect.** Bursts created directly through the API (the same
   Deployment rtctl makes), measured from ground truth only: the container's
   start as containerd recorded it (CRI ``ContainerStatus.started_at``) and the
   workload's logged listen, both from the create. Once with the agent's prober
   on (the default), once with ``agent run --probe-rate 0`` (prober off, the
   containerd events still read), alternating, per runtime. The p50 shift is
   the prober's cost to the pods it measures.
4. **Agent cost.** The agent's CPU seconds and peak RSS over each burst run.

Writes bench/results/real_runtimes.json and prints one summary line per figure
group. Median and [min..max] over repetitions where a figure is per run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc
from rtbench.percentiles import nearest_rank
from rtctl.demo import REAL_MEMORY
from rtctl.localstack import LocalStack, StackSettings
from rtctl.stats import bootstrap_ratio_runs
from rtctl.workload import DEFAULT_IMAGE, DEFAULT_MEMORY, pod_labels, workload_deployment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstats import cpu_seconds, status_kb

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "real_runtimes.json"
RUNTIMES = ("runc", "crun", "runsc")
PHASES = ("sandbox_started", "container_started", "first_response", "ready")
PUBLISHED = {"crun": 0.82, "runsc": 1.82}
"""Published serial ``nerdctl run`` means relative to runc (REAL-RUNTIMES.md)."""
LISTENING = re.compile(r"epoch_ms=(\d+)\.(\d{3})")
MS = 1_000_000
Result = dict[str, Any]


def ms(ns: float) -> float:
    return ns / MS


def pct(values: list[int], percent: int) -> float:
    return ms(nearest_rank(sorted(values), percent)) if values else float("nan")


def spread(values: list[float]) -> Result:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Bench:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
        self.env.update(stack.rtctl_env())

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        program = str(BIN / "rtctl") if argv[0] == "rtctl" else argv[0]
        return subprocess.run(
            [program, *argv[1:]], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--kubeconfig", str(self.stack.kubeconfig), *args)

    def listen_ns(self, pod: str) -> int | None:
        logs = self.kubectl("logs", pod)
        match = LISTENING.search(logs.stdout)
        return int(match[1]) * MS + int(match[2]) * 1000 if match else None

    def delete_run(self, run_id: str) -> None:
        selector = f"rtbench.io/run-id={run_id}"
        self.kubectl("delete", "deployment", "-l", selector, "--wait=true")
        deadline = time.monotonic() + 120
        while self.kubectl("get", "pods", "-l", selector, "-o", "name").stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods of {run_id} still there after 120 s")
            time.sleep(0.2)

    def start_run(self, runtime: str, replicas: int, run_id: str) -> Result:
        """One ``rtctl start-run``; per pod its phase latencies and first_response error."""
        agent = self.stack.pids[f"agent-{self.stack.nodes[0]}"]
        cpu_before = cpu_seconds(agent)
        started = self.run(
            "rtctl", "start-run", "--runtime-class", runtime, "--replicas", str(replicas),
            "--run-id", run_id, "--keep", "--settle", "0", "--format", "json",
            "--memory", memory(runtime),
        )  # fmt: skip
        cpu = cpu_seconds(agent) - cpu_before
        if started.returncode != 0:
            raise RuntimeError(f"start-run {run_id} failed: {started.stderr[-2000:]}")
        reported = self.run("rtctl", "report", run_id, "--format", "json")
        if reported.returncode != 0:
            raise RuntimeError(f"report {run_id} failed: {reported.stderr[-2000:]}")
        (summary,) = json.loads(reported.stdout)["runs"]
        pods = []
        for pod in summary["pods"]:
            phases = pod["phases"]
            listened = self.listen_ns(pod["name"])
            first = phases.get("first_response")
            pods.append(
                {
                    "latency_ns": {p: phases[p]["latency_ns"] for p in PHASES if p in phases},
                    "error_ns": abs(first["time_ns"] - listened)
                    if first is not None and listened is not None
                    else None,
                    # Positive: the first response came after the logged listen.
                    "late_ns": first["time_ns"] - listened
                    if first is not None and listened is not None
                    else None,
                }
            )
        self.delete_run(run_id)
        return {
            "pods": pods,
            "agent_cpu_s": cpu,
            "agent_peak_rss_kb": status_kb(agent, "VmHWM"),
        }

    def direct_burst(self, runtime: str, replicas: int, run_id: str) -> Result:
        """A Deployment created through the API, measured from containerd and the logs."""
        labels = pod_labels(
            run_id=run_id, test_id="observer", runtime_class=runtime, variant=runtime
        )
        body = workload_deployment(
            run_id=run_id, namespace="default", replicas=replicas, image=DEFAULT_IMAGE,
            memory=memory(runtime), runtime_class=runtime, labels=labels,
        )  # fmt: skip
        request = urllib.request.Request(
            self.stack.sim_url + "/apis/apps/v1/namespaces/default/deployments",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        created_ns = time.time_ns()
        with urllib.request.urlopen(request, timeout=30):
            pass
        selector = f"rtbench.io/run-id={run_id}"
        deadline = time.monotonic() + 180
        listens: dict[str, int] = {}
        while len(listens) < replicas:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run_id}: {len(listens)} of {replicas} pods listened")
            names = self.kubectl("get", "pods", "-l", selector, "-o", "name").stdout.split()
            for name in names:
                pod = name.removeprefix("pod/")
                if pod not in listens:
                    found = self.listen_ns(pod)
                    if found is not None:
                        listens[pod] = found
            time.sleep(0.5)
        started = container_starts(self.stack.real_containerd, selector_uids(self, selector))
        self.delete_run(run_id)
        return {
            "container_started_ns": [s - created_ns for s in started],
            "listen_ns": [v - created_ns for v in listens.values()],
        }


def memory(runtime: str) -> str:
    """The demo's limits: 16Mi, gVisor 64Mi (its sandbox is charged to the pod)."""
    return REAL_MEMORY.get(runtime, DEFAULT_MEMORY)


def selector_uids(bench: Bench, selector: str) -> set[str]:
    pods = json.loads(bench.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)
    return {p["metadata"]["uid"] for p in pods["items"]}


def container_starts(socket: Path | None, uids: set[str]) -> list[int]:
    """containerd's own start time (ns) of each app container of the pods ``uids``."""
    assert socket is not None
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        listed = runtime.ListContainers(cri.ListContainersRequest(), timeout=30)
        starts = []
        for container in listed.containers:
            if container.labels.get("io.kubernetes.pod.uid") in uids:
                status = runtime.ContainerStatus(
                    cri.ContainerStatusRequest(container_id=container.id), timeout=30
                ).status
                starts.append(status.started_at)
    return starts


@contextmanager
def real_stack(root: Path, *, prober: bool) -> Iterator[LocalStack]:
    settings = StackSettings(
        root=root,
        nodes=1,
        pods="real",
        workload=REPO / "workload" / "build" / "server",
        containerd=True,
        start_timeout=300.0,
        agent_args=() if prober else ("--probe-rate", "0"),
    )
    with LocalStack(settings) as stack:
        if stack.pods != "real":
            raise RuntimeError(f"the stack's pods are not real: {stack.real_unavailable}")
        yield stack


def phase_table(runs: list[Result]) -> Result:
    """Per phase p50/p99 over every pod of ``runs``, and per-run p50s."""
    table: Result = {}
    for phase in PHASES:
        values = [
            p["latency_ns"][phase] for r in runs for p in r["pods"] if phase in p["latency_ns"]
        ]
        per_run = [
            pct([p["latency_ns"][phase] for p in r["pods"] if phase in p["latency_ns"]], 50)
            for r in runs
        ]
        table[phase] = {
            "p50_ms": pct(values, 50),
            "p99_ms": pct(values, 99),
            "pods": len(values),
            "run_p50_ms": spread([v for v in per_run if v == v]),
        }
    errors = [p["error_ns"] for r in runs for p in r["pods"] if p["error_ns"] is not None]
    late = [p["late_ns"] for r in runs for p in r["pods"] if p.get("late_ns") is not None]
    table["first_response_error"] = {
        "p50_ms": pct(errors, 50),
        "p99_ms": pct(errors, 99),
        "max_ms": ms(max(errors)) if errors else None,
        "pods": len(errors),
        "late_share": sum(v > 0 for v in late) / len(late) if late else None,
    }
    return table


def ratios(by_runtime: dict[str, list[Result]], phase: str) -> Result:
    base = [
        [p["latency_ns"][phase] for p in r["pods"] if phase in p["latency_ns"]]
        for r in by_runtime.get("runc", [])
    ]
    out: Result = {}
    for runtime, runs in by_runtime.items():
        if runtime == "runc":
            continue
        values = [
            [p["latency_ns"][phase] for p in r["pods"] if phase in p["latency_ns"]] for r in runs
        ]
        interval = bootstrap_ratio_runs(values, base, seed=f"real:{runtime}:{phase}")
        if interval is not None:
            out[runtime] = {
                "ratio": interval.ratio,
                "low": interval.low,
                "high": interval.high,
                "published": PUBLISHED.get(runtime),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--pods", type=int, default=30, help="pods per burst and per serial run")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-observer", action="store_true")
    parser.add_argument("--out-file", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runtimes = tuple(r for r in args.runtimes.split(",") if r)
    rng = random.Random(args.seed)
    began = time.monotonic()
    burst: dict[str, list[Result]] = {r: [] for r in runtimes}
    serial: dict[str, list[Result]] = {r: [] for r in runtimes}
    observer: dict[str, dict[str, list[Result]]] = {
        "on": {r: [] for r in runtimes},
        "off": {r: [] for r in runtimes},
    }
    with tempfile.TemporaryDirectory(prefix="rtb-real-") as tmp:
        with real_stack(Path(tmp) / "main", prober=True) as stack:
            bench = Bench(stack)
            for rep in range(args.repetitions):
                order = [(r, mode) for r in runtimes for mode in ("burst", "serial")]
                rng.shuffle(order)
                for runtime, mode in order:
                    tag = f"{runtime}-{mode}-{rep}"
                    if mode == "burst":
                        result = bench.start_run(runtime, args.pods, f"rr-{tag}")
                        burst[runtime].append(result)
                        errors = [
                            p["error_ns"] for p in result["pods"] if p["error_ns"] is not None
                        ]
                        print(
                            f"{tag}: first_response |error| p99 {pct(errors, 99):.2f} ms, "
                            f"agent {result['agent_cpu_s']:.2f} s CPU",
                            file=sys.stderr,
                        )
                    else:
                        pods: list[Result] = []
                        for index in range(args.pods):
                            pods += bench.start_run(runtime, 1, f"rs-{tag}-{index}")["pods"]
                        serial[runtime].append({"pods": pods})
                        errors = [p["error_ns"] for p in pods if p["error_ns"] is not None]
                        print(
                            f"{tag}: {len(pods)} pods one at a time, first_response |error| "
                            f"p99 {pct(errors, 99):.2f} ms",
                            file=sys.stderr,
                        )
        if not args.skip_observer:
            for rep in range(args.repetitions):
                conditions = ["on", "off"] if rep % 2 == 0 else ["off", "on"]
                for condition in conditions:
                    root = Path(tmp) / f"observer-{rep}-{condition}"
                    with real_stack(root, prober=condition == "on") as stack:
                        bench = Bench(stack)
                        order = list(runtimes)
                        rng.shuffle(order)
                        for runtime in order:
                            result = bench.direct_burst(
                                runtime, args.pods, f"ob-{runtime}-{rep}-{condition}"
                            )
                            observer[condition][runtime].append(result)
                            print(
                                f"observer {condition} {runtime} rep {rep}: listen p50 "
                                f"{pct(result['listen_ns'], 50):.1f} ms",
                                file=sys.stderr,
                            )

    result: Result = {
        "benchmark": "real_runtimes",
        "command": " ".join([".venv/bin/python bench/real_runtimes.py", *sys.argv[1:]]),
        "config": {
            "repetitions": args.repetitions,
            "pods": args.pods,
            "runtimes": runtimes,
            "pleg_period_s": 1.0,
            "nodes": 1,
            "seed": args.seed,
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "targets": {
            "first_response_error_p99_ms": {"serial runc": 2.0, "burst runc": 5.0},
            "observer_effect_p50_percent": 2.0,
        },
        "burst": {r: phase_table(runs) for r, runs in burst.items()},
        "serial": {r: phase_table(runs) for r, runs in serial.items()},
        "ratios_p50": {
            "burst": {phase: ratios(burst, phase) for phase in PHASES},
            "serial": {phase: ratios(serial, phase) for phase in PHASES},
        },
        "agent": {
            r: {
                "cpu_s": spread([run["agent_cpu_s"] for run in runs]),
                "peak_rss_mb": max((run["agent_peak_rss_kb"] for run in runs), default=0) / 1024,
            }
            for r, runs in burst.items()
        },
        "seconds": time.monotonic() - began,
    }
    if not args.skip_observer:
        effect: Result = {}
        for runtime in runtimes:
            row: Result = {}
            for key in ("container_started_ns", "listen_ns"):
                on = [v for run in observer["on"][runtime] for v in run[key]]
                off = [v for run in observer["off"][runtime] for v in run[key]]
                p_on, p_off = pct(on, 50), pct(off, 50)
                row[key.removesuffix("_ns")] = {
                    "p50_on_ms": p_on,
                    "p50_off_ms": p_off,
                    "shift_percent": 100.0 * (p_on - p_off) / p_off if p_off else None,
                    "run_p50_on_ms": spread([pct(run[key], 50) for run in observer["on"][runtime]]),
                    "run_p50_off_ms": spread(
                        [pct(run[key], 50) for run in observer["off"][runtime]]
                    ),
                }
            effect[runtime] = row
        result["observer_effect"] = effect
    args.out_file.parent.mkdir(parents=True, exist_ok=True)
    args.out_file.write_text(json.dumps(result, indent=2) + "\n")

    for mode in ("burst", "serial"):
        table = result[mode]
        for runtime in runtimes:
            row = table[runtime]
            phases = ", ".join(
                f"{p} p50 {row[p]['p50_ms']:.0f} p99 {row[p]['p99_ms']:.0f}" for p in PHASES
            )
            err = row["first_response_error"]
            print(
                f"real_runtimes {mode} {runtime}: {phases} ms; first_response |error| "
                f"p50 {err['p50_ms']:.2f} p99 {err['p99_ms']:.2f} ms"
            )
        for phase in ("container_started", "first_response"):
            for runtime, r in result["ratios_p50"][mode][phase].items():
                print(
                    f"real_runtimes {mode} {phase} {runtime}/runc p50 {r['ratio']:.2f} "
                    f"[{r['low']:.2f}..{r['high']:.2f}] (published serial: {r['published']})"
                )
    if not args.skip_observer:
        for runtime, row in result["observer_effect"].items():
            c, li = row["container_started"], row["listen"]
            print(
                f"real_runtimes observer {runtime}: container_started p50 {c['p50_on_ms']:.1f} "
                f"vs {c['p50_off_ms']:.1f} ms ({c['shift_percent']:+.1f}%), listen p50 "
                f"{li['p50_on_ms']:.1f} vs {li['p50_off_ms']:.1f} ms ({li['shift_percent']:+.1f}%)"
            )
    for runtime, a in result["agent"].items():
        print(
            f"real_runtimes agent {runtime} burst: {a['cpu_s']['median']:.2f} s CPU, "
            f"peak RSS {a['peak_rss_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ``rtctl report``: the bootstrap, and a whole report of a study.

Run: ``.venv/bin/python bench/report_build.py`` (about a minute on 2 cores).

1. Bootstrap of one ratio (p50 first_response of X / baseline, 2000 resamples,
   95 %), for groups of ``--pods`` pods: rtctl.stats draws each resample's
   nearest-rank percentile as one Beta order statistic; the baseline in the
   same run is the textbook bootstrap (draw n pods with replacement, sort, take
   the rank). Reported: seconds per ratio for both, the speed-up (baseline /
   rtctl, paired per repetition), and both intervals, which must agree.
2. A whole report of a synthetic study like the demo's, scaled up: 5 runtimes x
   3 repetitions x 100 pods (1500 pods, 15 runs, containerd phases): seconds for
   ``build_report`` (all ratios with intervals), for ``render_plots`` (CDF, box
   plots, one timeline per run) and ``render_html``. Groups of several runs use
   the two-stage bootstrap (runs, then pods within runs), which resamples
   plainly: the Beta shortcut of part 1 only applies to single-run groups, so
   part 2 has no in-run baseline to compare with and reports times only.

Each measured ``--reps`` times (3 by default): median and spread (min..max).
Writes bench/results/report_build.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import rtctl.stats
from rtbench.percentiles import nearest_rank
from rtbench.v1 import control_pb2
from rtbench.v1 import events_pb2 as P
from rtctl.htmlreport import render_html
from rtctl.plots import render_plots
from rtctl.report import build_report
from rtctl.stats import bootstrap_ratio

RESULT = Path(__file__).resolve().parent / "results" / "report_build.json"
MS = 1_000_000
RUNTIMES = {"runc": 400.0, "crun": 330.0, "runsc": 720.0, "kata-qemu": 1500.0, "kata-fc": 1900.0}


def literal_percentiles(
    sorted_values: Sequence[int], percent: int, resamples: int, rng: random.Random
) -> list[int]:
    """The textbook bootstrap: n pods drawn with replacement, sorted, the nearest rank."""
    n = len(sorted_values)
    out = []
    for _ in range(resamples):
        out.append(nearest_rank(sorted(rng.choices(sorted_values, k=n)), percent))
    return out


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return time.perf_counter() - started, result


@contextlib.contextmanager
def textbook() -> Iterator[None]:
    """rtctl.stats with the textbook resampler swapped in (bootstrap_ratio looks it up)."""
    original = rtctl.stats.resampled_percentiles
    rtctl.stats.resampled_percentiles = literal_percentiles
    try:
        yield
    finally:
        rtctl.stats.resampled_percentiles = original


def latencies(rng: random.Random, n: int, median_ms: float) -> list[int]:
    return [int(median_ms * MS * rng.lognormvariate(0.0, 0.35)) for _ in range(n)]


def synthetic_run(rng: random.Random, run_id: str, runtime: str, rep: int, pods: int) -> Any:
    """A run summary as the collector gives it (include_pods), containerd phases included."""
    base = RUNTIMES[runtime] * (1 + 0.05 * rep)
    created = 1_750_000_000_000_000_000
    summary = control_pb2.RunSummary(
        spec=control_pb2.RunSpec(
            run_id=run_id, test_id="bench", runtime_class=runtime, variant=runtime,
            replicas=pods, repetition=rep, environment={"cluster_type": "synthetic"},
        ),
        state=control_pb2.RUN_STATE_SUCCEEDED,
        created_ns=created,
        bounds_applied=True,  # uncertainties up to 2 ms: every event within the 10 ms bound
    )  # fmt: skip
    summary.max_uncertainty.add(phase=P.PHASE_FIRST_RESPONSE, max_uncertainty_ns=10 * MS)
    responded = []
    for ordinal in range(pods):
        timeline = summary.pods.add(ordinal=ordinal)
        timeline.pod.name, timeline.pod.uid = f"{run_id}-{ordinal}", f"{run_id}-{ordinal}"
        at = rng.uniform(5, 40)
        steps = [(P.PHASE_SCHEDULED, at)]
        for phase, share in (
            (P.PHASE_SANDBOX_STARTED, 0.35),
            (P.PHASE_CONTAINER_STARTED, 0.25),
            (P.PHASE_RUNNING, 0.05),
            (P.PHASE_FIRST_RESPONSE, 0.35),
            (P.PHASE_READY, 0.6),
        ):
            at += base * share * rng.lognormvariate(0.0, 0.3)
            steps.append((phase, at))
        for phase, ms in steps:
            ns = int(ms * MS)
            timeline.phases.add(
                phase=phase, source=P.SOURCE_CONTAINERD, time_ns=created + ns, latency_ns=ns,
                uncertainty_ns=rng.randint(100_000, 2_000_000),
            )  # fmt: skip
        responded.append(int(steps[4][1] * MS))
    ordered = sorted(responded)
    summary.phases.add(
        phase=P.PHASE_FIRST_RESPONSE, count=pods, reached=pods, min_ns=ordered[0],
        p50_ns=nearest_rank(ordered, 50), p90_ns=nearest_rank(ordered, 90),
        p99_ns=nearest_rank(ordered, 99), max_ns=ordered[-1],
    )  # fmt: skip
    summary.all_responded_ns = ordered[-1]
    return summary


def bench_bootstrap(pods: int, reps: int) -> dict[str, Any]:
    ours, base, ratios = [], [], []
    intervals: dict[str, list[list[float]]] = {"rtctl": [], "textbook": []}
    for rep in range(reps):
        rng = random.Random(rep)
        slower, baseline = latencies(rng, pods, 600.0), latencies(rng, pods, 400.0)
        t_ours, fast = timed(bootstrap_ratio, slower, baseline, seed=rep)
        with textbook():
            t_base, slow = timed(bootstrap_ratio, slower, baseline, seed=rep)
        assert fast is not None and slow is not None
        ours.append(t_ours)
        base.append(t_base)
        ratios.append(t_base / t_ours)
        intervals["rtctl"].append([fast.low, fast.high])
        intervals["textbook"].append([slow.low, slow.high])
    return {
        "pods_per_group": pods,
        "rtctl_s": spread(ours),
        "textbook_s": spread(base),
        "speedup_vs_textbook": spread(ratios),
        "intervals": intervals,
    }


def bench_report(reps: int, pods: int) -> dict[str, Any]:
    rng = random.Random(7)
    runs = [
        synthetic_run(rng, f"{runtime}-{rep}", runtime, rep, pods)
        for runtime in RUNTIMES
        for rep in range(3)
    ]
    build, plots, page, figures = [], [], [], 0
    for _ in range(reps):
        t_build, report = timed(build_report, runs)
        t_plots, rendered = timed(render_plots, report)
        t_html, _ = timed(render_html, report, rendered)
        build.append(t_build)
        plots.append(t_plots)
        page.append(t_html)
        figures = len(rendered)
    return {
        "runs": len(runs),
        "pods": len(runs) * pods,
        "comparisons": len(report.comparisons),
        "figures": figures,
        "build_report_s": spread(build),
        "render_plots_s": spread(plots),
        "render_html_s": spread(page),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pods", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--report-pods", type=int, default=100, help="pods per run in part 2")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    boot = [bench_bootstrap(n, args.reps) for n in args.pods]
    whole = bench_report(args.reps, args.report_pods)
    result = {
        "benchmark": "report_build",
        "settings": {"reps": args.reps, "pods": args.pods, "report_pods": args.report_pods},
        "cpu_count": os.cpu_count(),
        "bootstrap": boot,
        "report": whole,
        "duration_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    per_size = "; ".join(
        f"{b['pods_per_group']} pods {b['rtctl_s']['median'] * 1e3:.0f} ms/ratio"
        f" (x{b['speedup_vs_textbook']['median']:.0f}"
        f" [{b['speedup_vs_textbook']['min']:.0f}..{b['speedup_vs_textbook']['max']:.0f}]"
        " vs textbook)"
        for b in boot
    )
    print(
        f"report_build: bootstrap {per_size}; report of {whole['runs']} runs/{whole['pods']} pods:"
        f" build {whole['build_report_s']['median']:.2f} s"
        ","
        f" {whole['figures']} figures {whole['render_plots_s']['median']:.1f} s,"
        f" html {whole['render_html_s']['median']:.2f} s; median of {args.reps} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

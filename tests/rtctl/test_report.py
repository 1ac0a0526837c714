"""``rtctl report``: the report's numbers, figures, HTML and JSON.

Most tests build run summaries whose every latency is known, so each pooled
percentile and ratio can be stated; the bound and order tests also make those
flags as the collector would, and one feeds a real in-process collector over
gRPC so that the collector's flags and rtctl's skipping are checked together.
The end-to-end test makes real runs on the simulated cluster (agents,
collector, the stack of tests/rtctl/conftest.py), runs ``rtctl report --format
json --out DIR`` and recomputes every number it prints from the collector's
journal with its own SQL and its own statement of the bound and order rules
(the issue's requirement): per run and phase the pods reached, counted and left
out, count/p50/p90/p99/max, every pod's phase times and flags, the out-of-order
list, and the pooled per-runtime numbers, at the default bound and at one the
user sets.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import shutil
import sqlite3
import struct
import subprocess
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from collector.settings import CollectorSettings
from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, control_pb2, events_pb2
from rtctl.bounds import parse_bounds
from rtctl.control import Collector
from rtctl.errors import UsageError
from rtctl.htmlreport import render_html
from rtctl.plots import (
    DPI,
    OUT_OF_ORDER_COLOUR,
    UNCERTAIN_COLOUR,
    cdf_plot,
    render_plots,
    repetitions_plot,
    timeline_plot,
)
from rtctl.report import Report, build_report
from rtctl.reportcli import collect_report, report_json
from rtctl.reporttables import comparison_table, out_of_order_table, print_report
from rtctl.settings import ConnectionSettings
from tests.collector.agent_client import TestAgent
from tests.collector.conftest import running
from tests.conftest import wait_until
from tests.rtctl.conftest import Stack

MS = 1_000_000
T0 = 1_750_000_000_000_000_000
P = events_pb2
PHASE = {
    "scheduled": P.PHASE_SCHEDULED,
    "sandbox_started": P.PHASE_SANDBOX_STARTED,
    "container_started": P.PHASE_CONTAINER_STARTED,
    "running": P.PHASE_RUNNING,
    "first_response": P.PHASE_FIRST_RESPONSE,
    "ready": P.PHASE_READY,
    "failed": P.PHASE_FAILED,
}


def rank(values: Sequence[int], percent: int) -> int:
    """Nearest rank, written out again here so the test does not trust the code it checks."""
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * percent / 100), 1) - 1]


BOUND_NS = 10 * MS
"""The collector's default bound on first_response, as these summaries apply it."""


def summary(
    run_id: str,
    runtime: str,
    pods: Sequence[Mapping[str, float]],
    *,
    variant: str = "",
    replicas: int | None = None,
    repetition: int = 0,
    environment: Mapping[str, str] | None = None,
    memory_mib: float = 0.0,
    failed: Mapping[str, int] | None = None,
    uncertain: Mapping[tuple[int, str], float] | None = None,
    out_of_order: Mapping[tuple[int, str], str] | None = None,
    bounds_applied: bool = True,
) -> control_pb2.RunSummary:
    """A summary as the collector would give it: pods with phase latencies in ms, each
    event ±1 ms unless ``uncertain`` says otherwise ((ordinal, phase) -> ms);
    ``out_of_order`` marks (ordinal, phase) as seen before the phase given. The
    statistics leave out what the collector would: first responses over 10 ms and
    phases out of order. ``bounds_applied=False`` is an older collector's summary:
    no bounds, no flags, every event counted."""
    replicas = len(pods) if replicas is None else replicas
    uncertain, out_of_order = uncertain or {}, out_of_order or {}
    result = control_pb2.RunSummary(
        spec=control_pb2.RunSpec(
            run_id=run_id,
            test_id="report-unit",
            runtime_class=runtime,
            variant=variant or runtime,
            replicas=replicas,
            repetition=repetition,
            environment=environment if environment is not None else {"kubernetes": "1.32"},
        ),
        state=control_pb2.RUN_STATE_SUCCEEDED,
        created_ns=T0,
        memory_per_pod_bytes=memory_mib * (1 << 20),
        bounds_applied=bounds_applied,
    )
    if bounds_applied:
        result.max_uncertainty.add(phase=P.PHASE_FIRST_RESPONSE, max_uncertainty_ns=BOUND_NS)
    by_phase: dict[str, list[tuple[int, int]]] = defaultdict(list)
    left_out: dict[str, list[str]] = defaultdict(list)
    for ordinal, phases in enumerate(pods):
        pod = result.pods.add(ordinal=ordinal)
        pod.pod.name, pod.pod.uid, pod.pod.node = f"{run_id}-{ordinal}", f"u{ordinal}", "n1"
        for name, ms in phases.items():
            latency = int(ms * MS)
            source = P.SOURCE_PROBE if name == "first_response" else P.SOURCE_WATCH
            unc = int(uncertain.get((ordinal, name), 1.0) * MS)
            must_follow = out_of_order.get((ordinal, name)) if bounds_applied else None
            over = bounds_applied and name == "first_response" and unc > BOUND_NS
            pod.phases.add(
                phase=PHASE[name],
                source=source,
                time_ns=T0 + latency,
                latency_ns=latency,
                uncertainty_ns=unc,
                over_bound=over,
                out_of_order=must_follow is not None,
            )
            if must_follow is not None:
                left_out[name].append("out_of_order")
                early = int(phases[must_follow] * MS) - latency
                result.out_of_order.add(
                    ordinal=ordinal,
                    pod_name=pod.pod.name,
                    pod_uid=pod.pod.uid,
                    phase=PHASE[name],
                    must_follow=PHASE[must_follow],
                    early_by_ns=early,
                    beyond_uncertainty_ns=early - 2 * MS,
                )
            elif over:
                left_out[name].append("over_bound")
            else:
                by_phase[name].append((latency, unc))
    for name in sorted(by_phase.keys() | left_out.keys(), key=lambda n: PHASE[n]):
        values = [latency for latency, _ in by_phase[name]]
        uncertainties = [unc for _, unc in by_phase[name]]
        result.phases.add(
            phase=PHASE[name],
            count=len(values),
            reached=len(values) + len(left_out[name]) if bounds_applied else 0,
            out_of_order=left_out[name].count("out_of_order"),
            over_bound=left_out[name].count("over_bound"),
            min_ns=min(values, default=0),
            p50_ns=rank(values, 50) if values else 0,
            p90_ns=rank(values, 90) if values else 0,
            p99_ns=rank(values, 99) if values else 0,
            max_ns=max(values, default=0),
            p50_uncertainty_ns=rank(uncertainties, 50) if values else 0,
            max_uncertainty_ns=max(uncertainties, default=0),
        )
    responded = sorted(latency for latency, _ in by_phase.get("first_response", []))
    result.all_responded_ns = responded[replicas - 1] if len(responded) >= replicas else 0
    for reason, count in (failed or {}).items():
        result.failures.add(reason=reason, count=count)
        result.failed_pods += count
    return result


def lifecycle(first_response: float, *, containerd: bool = False) -> dict[str, float]:
    """A pod's phases around its first response (ms)."""
    phases = {"scheduled": 5.0, "running": first_response - 30, "first_response": first_response}
    phases["ready"] = first_response + 200
    if containerd:
        phases["sandbox_started"] = first_response * 0.3
        phases["container_started"] = first_response * 0.6
    return phases


def study() -> list[control_pb2.RunSummary]:
    """runc twice (4 pods each), kata-qemu twice at exactly twice runc's latencies."""
    runc_a = [lifecycle(ms) for ms in (100, 200, 300, 400)]
    runc_b = [lifecycle(ms) for ms in (150, 250, 350, 450)]
    kata_a = [lifecycle(2 * ms, containerd=True) for ms in (100, 200, 300, 400)]
    kata_b = [lifecycle(2 * ms, containerd=True) for ms in (150, 250, 350, 450)]
    return [
        summary("kata-1", "kata-qemu", kata_a, memory_mib=150, failed={"OOMKilled": 1}),
        summary("runc-2", "runc", runc_b, repetition=1, memory_mib=12),
        summary("runc-1", "runc", runc_a, memory_mib=10),
        summary(
            "kata-2", "kata-qemu", kata_b, repetition=1, memory_mib=154, failed={"OOMKilled": 1}
        ),
    ]


def test_runtimes_pool_the_pods_of_their_repetitions() -> None:
    report = build_report(study())
    assert report.baseline == "runc"
    assert [g.key.label for g in report.groups] == ["runc x4", "kata-qemu x4"]
    assert [r.run_id for r in report.runs] == ["runc-1", "runc-2", "kata-1", "kata-2"]
    runc, kata = report.groups
    assert runc.run_ids == ("runc-1", "runc-2") and runc.pods == 8
    first = runc.phase("first_response")
    assert first is not None
    # Pooled: 100 150 200 250 300 350 400 450 ms -> p50 the 4th, p90 the 8th.
    assert (first.latency.count, first.latency.p50_ns, first.latency.p90_ns) == (
        8,
        250 * MS,
        450 * MS,
    )
    assert (first.latency.min_ns, first.latency.max_ns) == (100 * MS, 450 * MS)
    # Lifecycle order; containerd phases only where pods have them.
    assert [row.phase for row in runc.phases] == ["scheduled", "running", "first_response", "ready"]
    assert [row.phase for row in kata.phases] == [
        "scheduled", "sandbox_started", "container_started", "running", "first_response", "ready",
    ]  # fmt: skip
    assert kata.failures == (("OOMKilled", 2),) and kata.failed_pods == 2
    assert kata.memory_per_pod_bytes == 152 * (1 << 20)
    # Across repetitions: each run's own p50 (200 and 250 ms for runc).
    assert (runc.first_response_p50.low, runc.first_response_p50.high) == (200 * MS, 250 * MS)
    assert runc.all_responded.count == 2 and runc.all_responded.high == 450 * MS


def test_groups_count_the_pods_measured_against_the_pods_expected() -> None:
    # Two runs of 5 replicas: in one a pod never answered (no first_response), in the
    # other one never showed up at all; 8 pods measured of the 10 expected.
    pods = [lifecycle(ms) for ms in (100, 200, 300, 400)]
    runs = [
        summary("runc-1", "runc", [*pods, {"scheduled": 5.0}]),
        summary("runc-2", "runc", pods, replicas=5),
    ]
    report = build_report(runs)
    (group,) = report.groups
    assert (group.measured, group.expected, group.pods) == (8, 10, 9)
    assert report_json(report)["groups"][0]["pods_measured"] == 8
    assert report_json(report)["groups"][0]["pods_expected"] == 10
    console = Console(width=200, record=True)
    console.print(comparison_table(report))
    assert "8/10" in console.export_text()


def test_ratios_against_the_baseline_come_with_an_interval() -> None:
    report = build_report(study(), seed=1)
    kata = report.groups[1].key
    comparison = report.comparison(kata, "first_response")
    assert comparison is not None and comparison.interval is not None
    assert comparison.baseline == report.groups[0].key
    assert comparison.interval.ratio == 2.0  # every kata pod at exactly twice a runc pod
    assert comparison.interval.contains(2.0)
    assert comparison.interval.low < 2.0 < comparison.interval.high  # 8 pods: not certain
    assert not comparison.across_environments
    # Phases only kata has get no ratio; scheduled is the same for both.
    sandbox = report.comparison(kata, "sandbox_started")
    assert sandbox is not None and sandbox.interval is None
    scheduled = report.comparison(kata, "scheduled")
    assert scheduled is not None and scheduled.interval is not None
    assert scheduled.interval.ratio == 1.0
    # Seeded: the same report twice has the same intervals, another seed others.
    assert build_report(study(), seed=1).comparisons == report.comparisons
    assert build_report(study(), seed=2).comparisons != report.comparisons


def test_the_baseline_is_chosen_or_refused_with_the_runtimes_there_are() -> None:
    assert build_report(study(), baseline="kata-qemu").groups[0].key.runtime == "kata-qemu"
    with pytest.raises(
        UsageError, match=r"'youki' is in none of the runs; runtimes: kata-qemu, runc"
    ):
        build_report(study(), baseline="youki")
    with pytest.raises(UsageError):
        build_report([])
    no_runc = [s for s in study() if s.spec.runtime_class != "runc"]
    no_runc.append(summary("crun-1", "crun", [lifecycle(90)]))
    assert build_report(no_runc).baseline == "crun"
    variants = [
        summary("u1", "urunc", [lifecycle(120)], variant="unikraft-qemu"),
        summary("u2", "urunc", [lifecycle(300)], variant="linux-qemu"),
        summary("r1", "runc", [lifecycle(100)]),
    ]
    report = build_report(variants, baseline="urunc")
    assert report.baseline == "urunc/linux-qemu"
    assert any("urunc has variants" in note for note in report.notes)
    by_runtime = {g.key.runtime: g for g in report.groups}
    assert set(by_runtime) == {"urunc/linux-qemu", "urunc/unikraft-qemu", "runc"}


def test_other_replica_counts_are_compared_only_with_their_own_baseline() -> None:
    runs = [*study(), summary("kata-8", "kata-qemu", [lifecycle(200)] * 8)]
    report = build_report(runs)
    eight = next(g for g in report.groups if g.key.replicas == 8)
    assert report.comparison(eight.key, "first_response") is None
    assert "kata-qemu x8: no runc run with 8 replicas" in report.notes


def test_runs_from_different_environments_are_flagged() -> None:
    runs = study()
    runs[0].spec.environment["kubernetes"] = "1.31"
    runs[0].spec.environment["node_kernel"] = "6.6"
    report = build_report(runs)
    assert report.differing_keys == ("kubernetes", "node_kernel")
    assert len(report.environments) == 2
    kata = report.comparison(report.groups[1].key, "first_response")
    assert kata is not None and kata.across_environments
    assert report.groups[1].environments == 2 and report.groups[0].environments == 1
    assert any("2 different environments" in note for note in report.notes)
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "≠env" in text and "1.31" in text
    html = render_html(report, [])
    assert "differs" in html and "≠env" in html


def report_outputs(report: Report) -> tuple[str, dict[str, Any], str]:
    """The text report, the JSON and the HTML page of ``report``."""
    console = Console(file=io.StringIO(), width=240)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return text, json.loads(json.dumps(report_json(report))), render_html(report, [])


def test_a_real_runtime_against_a_simulated_one_is_marked_in_every_output() -> None:
    runs = study()
    for run in runs:
        real = run.spec.runtime_class == "runc"
        run.spec.runtime_mode = (
            control_pb2.RUNTIME_MODE_REAL if real else control_pb2.RUNTIME_MODE_SIMULATED
        )
        run.spec.runtime_mode_basis = f"RuntimeClass labelled rtbench.dev/simulated={not real}"
    report = build_report(runs)
    assert report.modes == {"runc x4": "real", "kata-qemu x4": "simulated"}
    assert report.mode == "mixed"
    kata = report.comparison(report.groups[1].key, "first_response")
    assert kata is not None and kata.across_modes and not kata.across_environments
    text, data, html = report_outputs(report)
    assert "runtime modes: runc x4 REAL; kata-qemu x4 SIMULATED" in text
    assert "kata-qemu x4 (SIMULATED runtime)" in text and "runc x4 (REAL runtime)" in text
    assert "≠mode" in text and "SIMULATED runtime(s): kata-qemu x4" in text
    assert data["mode"] == "mixed"
    assert data["runtime_modes"] == {"runc": "real", "kata-qemu": "simulated"}
    assert [g["mode"] for g in data["groups"]] == ["real", "simulated"]
    assert data["groups"][1]["vs_baseline"]["first_response"]["across_modes"] is True
    assert {r["run_id"]: r["mode"] for r in data["runs"]} == {
        "runc-1": "real", "runc-2": "real", "kata-1": "simulated", "kata-2": "simulated"
    }  # fmt: skip
    assert "rtbench.dev/simulated=True" in data["runs"][-1]["mode_basis"]
    # The page: the banner, the comparison, each runtime's and each run's heading.
    assert html.count('<span class="mode mode-simulated">SIMULATED</span>') == 1 + 1 + 1 + 2
    assert html.count('<span class="mode mode-real">REAL</span>') == 1 + 1 + 1 + 2
    assert "≠mode" in html


def test_runs_recorded_without_a_mode_are_unknown_everywhere() -> None:
    """Runs an older rtctl registered have no runtime_mode: never shown as real."""
    report = build_report(study())
    assert set(report.modes.values()) == {"unknown"} and report.mode == "unknown"
    text, data, html = report_outputs(report)
    assert "runtime modes: kata-qemu x4 UNKNOWN" in text or "runc x4 UNKNOWN" in text
    assert "runtime mode: unknown (not recorded (a run from an older rtctl))" in text
    assert "REAL" not in text and "SIMULATED" not in text
    assert data["mode"] == "unknown" and {r["mode"] for r in data["runs"]} == {"unknown"}
    assert {g["mode"] for g in data["groups"]} == {"unknown"}
    assert any("runtime mode unknown" in note for note in data["notes"])
    assert '<span class="mode mode-unknown">UNKNOWN</span>' in html
    assert 'class="mode mode-real"' not in html


def test_the_comparison_table_has_a_row_per_runtime() -> None:
    report = build_report(study())
    console = Console(file=io.StringIO(), width=220)
    console.print(comparison_table(report))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "first_response by runtime, against runc" in text
    runc_line = next(line for line in text.splitlines() if "│ runc" in line)
    assert "baseline" in runc_line and "250.0" in runc_line
    kata_line = next(line for line in text.splitlines() if "│ kata-qemu" in line)
    assert "2.00 [" in kata_line and "500.0" in kata_line


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def pixels_of(png: bytes, colour: str) -> int:
    """How many pixels have this colour (#rrggbb), give or take antialiasing."""
    image = imread(io.BytesIO(png), format="png")[..., :3]
    target = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - target).max(axis=-1) < 0.02).sum())


def drawn_fraction(png: bytes) -> float:
    image = imread(io.BytesIO(png), format="png")[..., :3]
    return float((image.min(axis=-1) < 0.9).mean())


def hundred_pods() -> Report:
    slow = [lifecycle(300 + 7 * i, containerd=True) for i in range(100)]
    fast = [lifecycle(100 + 3 * i) for i in range(100)]
    slow[3]["failed"] = 900.0
    return build_report(
        [summary("fast", "runc", fast), summary("slow", "kata-fc", slow)], resamples=200
    )


def test_the_figures_are_pngs_of_the_expected_size_with_something_drawn() -> None:
    report = hundred_pods()
    cdf = cdf_plot(report)
    assert cdf is not None and cdf.name == "cdf-first_response.png"
    assert png_size(cdf.png) == (10 * DPI, 6 * DPI)
    assert drawn_fraction(cdf.png) > 0.02
    boxes = repetitions_plot(report)
    assert boxes is not None and png_size(boxes.png) == (12 * DPI, int(5.5 * DPI))
    slow, fast = (next(r for r in report.runs if r.run_id == name) for name in ("slow", "fast"))
    timeline = timeline_plot(slow)
    width, height = png_size(timeline.png)
    assert width == 12 * DPI and height > 10 * DPI  # 100 rows get room
    # Every stage has its colour in the figure (segments drawn), and failed pods a marker.
    for colour in ("#9e9e9e", "#8e6bbf", "#4c72b0", "#64b5cd", "#55a868", "#dd8452", "#c44e52"):
        assert pixels_of(timeline.png, colour) > 50, colour
    # A pod without containerd events has no sandbox or container segment.
    plain = timeline_plot(fast).png
    assert pixels_of(plain, "#8e6bbf") == 0 and pixels_of(plain, "#55a868") > 1000
    names = [p.name for p in render_plots(report)]
    assert names == [
        "cdf-first_response.png",
        "repetitions.png",
        "timeline-fast.png",
        "timeline-slow.png",
    ]


def test_the_html_is_self_contained_and_escapes_what_users_wrote() -> None:
    runs = study()
    runs[1].spec.environment["note"] = "<script>alert(1)</script>"
    report = build_report(runs)
    html = render_html(report, render_plots(report))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert html.count('src="data:image/png;base64,') == 2 + len(report.runs)
    for run in report.runs:
        assert run.run_id in html
    assert "How the numbers are computed" in html and "bootstrap" in html


def test_the_json_has_every_number_and_every_pod() -> None:
    report = build_report(study())
    data = json.loads(json.dumps(report_json(report)))
    assert data["baseline"] == "runc"
    assert data["bootstrap"] == {"resamples": 2000, "seed": 0, "confidence": 0.95, "percent": 50}
    runc, kata = data["groups"]
    assert runc["phases"]["first_response"]["p50_ns"] == 250 * MS
    assert kata["vs_baseline"]["first_response"]["ratio"] == 2.0
    assert kata["vs_baseline"]["sandbox_started"] is None
    run = next(r for r in data["runs"] if r["run_id"] == "runc-1")
    assert run["phases"]["first_response"]["p90_ns"] == 400 * MS
    pod = run["pods"][2]
    assert pod["phases"]["first_response"] == {
        "source": "probe", "time_ns": T0 + 300 * MS, "latency_ns": 300 * MS, "uncertainty_ns": MS,
        "over_bound": False, "out_of_order": False,
    }  # fmt: skip


# -- pods left out: over their uncertainty bound, or out of order ---------------------------


def left_out_study() -> list[control_pb2.RunSummary]:
    """runc: 5 pods at 100..500 ms, the 500 ms one answered with a ±300 ms bracket. kata:
    5 pods at twice those, the fastest seen at 50 ms, 70 ms before its container started."""
    runc = [lifecycle(ms, containerd=True) for ms in (100, 200, 300, 400, 500)]
    kata = [lifecycle(2 * ms, containerd=True) for ms in (100, 200, 300, 400, 500)]
    kata[0]["first_response"] = 50.0
    return [
        summary("runc-b", "runc", runc, uncertain={(4, "first_response"): 300}),
        summary(
            "kata-b", "kata-qemu", kata, out_of_order={(0, "first_response"): "container_started"}
        ),
    ]


def test_pooled_numbers_and_ratios_skip_the_pod_phases_the_collector_left_out() -> None:
    report = build_report(left_out_study(), resamples=300)
    runc, kata = report.groups
    first = runc.phase("first_response")
    assert first is not None
    # 100..400 ms count; the ±300 ms answer at 500 ms is reached but not measured.
    assert (first.reached, first.count, first.over_bound, first.out_of_order) == (5, 4, 1, 0)
    assert (first.latency.max_ns, first.latency.p50_ns) == (400 * MS, 200 * MS)
    assert first.bound_ns == BOUND_NS and first.max_uncertainty_ns == MS
    kata_first = kata.phase("first_response")
    assert kata_first is not None
    assert (kata_first.reached, kata_first.count, kata_first.out_of_order) == (5, 4, 1)
    assert (kata_first.latency.min_ns, kata_first.latency.p50_ns) == (400 * MS, 600 * MS)
    # Pods measured: those whose first response counts.
    assert (runc.measured, runc.expected, kata.measured, kata.expected) == (4, 5, 4, 5)
    # The ratio compares what counts: p50 600 ms (kata) / 200 ms (runc) = 3, not 2.
    comparison = report.comparison(kata.key, "first_response")
    assert comparison is not None and comparison.interval is not None
    assert comparison.interval.ratio == 3.0 and comparison.interval.count == 4
    assert comparison.interval.baseline_count == 4
    # The phase it must follow still counts.
    started = kata.phase("container_started")
    assert started is not None and started.count == 5
    # The CDF shows what the tables show: the same figure as without the pods left out.
    runc_pods, kata_pods = ([p.latency("first_response") for p in r.pods] for r in report.runs)
    assert runc_pods[4] == 500 * MS and kata_pods[0] == 50 * MS
    kept = [
        summary("runc-b", "runc", [lifecycle(ms) for ms in (100, 200, 300, 400)], replicas=5),
        summary(
            "kata-b", "kata-qemu", [lifecycle(ms, containerd=True) for ms in (400, 600, 800, 1000)],
            replicas=5,
        ),
    ]  # fmt: skip
    shown, expected = cdf_plot(report), cdf_plot(build_report(kept, resamples=300))
    assert shown is not None and expected is not None and shown.png == expected.png


def test_pods_left_out_are_shown_as_measured_of_reached_beside_the_bound() -> None:
    report = build_report(left_out_study(), resamples=300)
    console = Console(file=io.StringIO(), width=220)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "uncertainty bounds: first_response ≤ 10 ms; other phases unbounded" in text
    rows = [line for line in text.splitlines() if "│ first_response" in line]
    assert any("4/5 within 10 ms" in line and "out of order" not in line for line in rows)
    assert any("4/5 within 10 ms, 1 out of order" in line for line in rows)
    assert "pods within 10 ms" in text  # the comparison's measured/expected column
    data = json.loads(json.dumps(report_json(report)))
    assert data["max_uncertainty_ns"] == {"first_response": BOUND_NS}
    numbers = data["groups"][0]["phases"]["first_response"]
    assert {k: numbers[k] for k in ("count", "reached", "over_bound", "out_of_order")} == {
        "count": 4, "reached": 5, "over_bound": 1, "out_of_order": 0,
    }  # fmt: skip
    assert numbers["bound_ns"] == BOUND_NS and numbers["max_ns"] == 400 * MS
    assert data["groups"][0]["pods_measured"] == 4
    run = next(r for r in data["runs"] if r["run_id"] == "runc-b")
    assert run["pods"][4]["phases"]["first_response"]["over_bound"] is True
    assert run["phases"]["first_response"]["over_bound"] == 1
    html = render_html(report, [])
    assert "4/5 within 10 ms" in html and "4/5 within 10 ms, 1 out of order" in html
    assert "pods measured within 10 ms/expected" in html
    assert "Uncertainty bounds: first_response ≤ 10 ms; other phases unbounded" in html


def test_out_of_order_pods_are_named_in_text_json_and_html() -> None:
    report = build_report(left_out_study(), resamples=300)
    ((run, found),) = report.out_of_order
    assert (run.run_id, found.pod, found.ordinal) == ("kata-b", "kata-b-0", 0)
    assert (found.phase, found.must_follow, found.early_by_ns) == (
        "first_response", "container_started", 70 * MS,
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=220)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "out of order: 1 pod phases, left out of their statistics" in text
    line = next(line for line in text.splitlines() if "│ kata-b-0" in line)
    assert "first_response" in line and "container_started" in line and "70.0 ms" in line
    # The per-run table names it too.
    assert "pod kata-b-0 (#0): first_response 70.0 ms before container_started" in text
    data = report_json(report)
    kata = next(r for r in data["runs"] if r["run_id"] == "kata-b")
    assert kata["out_of_order"] == [
        {
            "ordinal": 0, "name": "kata-b-0", "uid": "u0", "phase": "first_response",
            "must_follow": "container_started", "early_by_ns": 70 * MS,
            "beyond_uncertainty_ns": 68 * MS,
        }
    ]  # fmt: skip
    assert kata["pods"][0]["phases"]["first_response"]["out_of_order"] is True
    html = render_html(report, [])
    section = html[html.index("<h2>Out of order</h2>") :]
    assert "kata-b-0" in section and "container_started" in section and "70.0 ms" in section
    clean = build_report([summary("runc-c", "runc", [lifecycle(100)])])
    assert "No pod has a phase out of order" in render_html(clean, [])
    assert out_of_order_table(clean) is None


def test_a_user_set_bound_changes_the_pooled_numbers() -> None:
    """The bound rtctl asked for is the report's (the collector applied it: here the
    summaries are made with the flags it would set for a 400 ms bound)."""
    runc = [lifecycle(ms) for ms in (100, 200, 300, 400, 500)]
    wide = summary("runc-w", "runc", runc, uncertain={(4, "first_response"): 300})
    for pod in wide.pods:
        for t in pod.phases:
            t.over_bound = False
    wide.max_uncertainty[0].max_uncertainty_ns = 400 * MS
    stats = next(p for p in wide.phases if p.phase == P.PHASE_FIRST_RESPONSE)
    stats.count, stats.over_bound, stats.max_ns = 5, 0, 500 * MS
    stats.p50_ns = 300 * MS
    report = build_report([wide], bounds={P.PHASE_FIRST_RESPONSE: 400 * MS})
    first = report.groups[0].phase("first_response")
    assert first is not None
    assert (first.count, first.latency.max_ns, first.bound_ns) == (5, 500 * MS, 400 * MS)
    assert report.bounds_text == "first_response ≤ 400 ms; other phases unbounded"
    assert not any("other uncertainty bounds" in note for note in report.notes)
    # Asked for the default, but the collector applied 400 ms: said so.
    mismatch = build_report([wide])
    assert any("run runc-w: the collector applied other" in note for note in mismatch.notes)


def test_an_older_collector_is_named_and_its_pods_bounded_by_rtctl() -> None:
    runc = [lifecycle(ms) for ms in (100, 200, 300, 400, 500)]
    old = summary(
        "runc-old", "runc", runc, uncertain={(4, "first_response"): 300}, bounds_applied=False
    )
    assert old.all_responded_ns == 500 * MS  # the old collector's: every answer counted
    report = build_report([old])
    (run,) = report.runs
    assert not run.bounds_applied and run.bounds == {}
    # rtctl applies the bound to the run's pods itself, its rows and all-responded too.
    row = run.phase("first_response")
    assert row is not None and (row.reached, row.count, row.over_bound) == (5, 4, 1)
    assert row.bound_ns == BOUND_NS and run.all_responded_ns == 0
    first = report.groups[0].phase("first_response")
    assert first is not None and (first.count, first.latency.max_ns) == (4, 400 * MS)
    assert report.groups[0].measured == 4
    assert any(
        "applied no uncertainty bound and no order check to run(s) runc-old" in note
        for note in report.notes
    )
    console = Console(file=io.StringIO(), width=220)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    # The collector's own table on the terminal: every event, and said so.
    per_run = next(line for line in text.splitlines() if "│ first_response" in line)
    assert "unchecked" in per_run and "500.0 ms" in per_run
    assert "the collector applied no uncertainty bound and no order check" in text
    html = render_html(report, [])
    assert "not checked" in html and "applied no uncertainty bound" in html
    assert html.count("4/5 within 10 ms") == 2  # the run's rows and the runtime's
    assert "applied by rtctl (the collector, older than rtctl, applied none)" in html


def test_the_timeline_marks_an_out_of_order_phase() -> None:
    """The out-of-order first response is drawn as a red hatched span to the container
    start it precedes, never as a segment that shows the pod responding first."""
    pods = [{**lifecycle(400, containerd=True), "container_started": 300.0} for _ in range(20)]
    early = [dict(p) for p in pods]
    for p in early:
        p["first_response"] = 150.0
    flagged = {(i, "first_response"): "container_started" for i in range(20)}
    report = build_report(
        [
            summary("in-order", "runc", pods),
            summary("early", "crun", early, out_of_order=flagged),
            summary("unflagged", "youki", early),
        ]
    )
    drawn = {run.run_id: timeline_plot(run).png for run in report.runs}
    assert pixels_of(drawn["in-order"], OUT_OF_ORDER_COLOUR) == 0
    assert pixels_of(drawn["early"], OUT_OF_ORDER_COLOUR) > 500
    # Not drawn as a responding segment: only the legend's swatch keeps its colour.
    responding = {name: pixels_of(png, "#55a868") for name, png in drawn.items()}
    assert responding["early"] * 20 < responding["in-order"], responding
    # The same numbers without the collector's flag: the old drawing, no red.
    assert pixels_of(drawn["unflagged"], OUT_OF_ORDER_COLOUR) == 0
    assert responding["unflagged"] > responding["early"] * 20


def test_the_timeline_shows_the_uncertainty_of_a_phase_over_its_bound() -> None:
    pods = [lifecycle(400) for _ in range(10)]
    wide = summary("wide", "runc", pods, uncertain={(i, "first_response"): 80 for i in range(10)})
    narrow = summary("narrow", "runc", pods)
    bars = {
        s.spec.run_id: pixels_of(timeline_plot(build_report([s]).runs[0]).png, UNCERTAIN_COLOUR)
        for s in (wide, narrow)
    }
    assert bars["narrow"] == 0 and bars["wide"] > 100, bars


async def test_a_real_collector_flags_the_pods_and_the_report_shows_and_skips_them(
    tmp_path: Path,
) -> None:
    """The collector's journal and control API over real gRPC, fed by an agent client:
    the pods it leaves out are the ones rtctl's pooled numbers skip and every output
    names, and a bound rtctl asks for is the one the collector applies."""
    settings = CollectorSettings(listen_port=0, journal=tmp_path / "j.sqlite", stats_interval=0)
    async with running(settings) as server:
        connection = ConnectionSettings(collector=server.address)
        async with Collector.connect(connection) as collector:
            spec = control_pb2.RunSpec(
                run_id="flagged", test_id="t", runtime_class="crun", variant="crun", replicas=4
            )
            await collector.register_run(spec)
            created = wall_ns() - 10 * 10**9
            await collector.record_create("flagged", created, created + MS, P.ClockOffset())
            batch = agent_pb2.Batch(sequence=1)
            batch.clock.uncertainty_ns = 100_000  # ±0.1 ms on every event

            def add(pod: int, phase: int, source: int, ms: float, unc_ms: float = 0) -> None:
                ev = batch.events.add(
                    phase=phase,
                    source=source,
                    time_ns=created + int(ms * MS),
                    uncertainty_ns=int(unc_ms * MS),
                )
                ev.pod.uid, ev.pod.name, ev.pod.run_id = f"u{pod}", f"web-{pod}", "flagged"
                ev.pod.node = "node-1"

            for pod in range(4):
                add(pod, P.PHASE_SCHEDULED, P.SOURCE_WATCH, 10 + pod)
                add(pod, P.PHASE_CONTAINER_STARTED, P.SOURCE_CONTAINERD, 200 + pod)
                add(pod, P.PHASE_READY, P.SOURCE_WATCH, 400 + pod)
            add(0, P.PHASE_FIRST_RESPONSE, P.SOURCE_PROBE, 250, 1)
            add(1, P.PHASE_FIRST_RESPONSE, P.SOURCE_PROBE, 260, 1)
            add(2, P.PHASE_FIRST_RESPONSE, P.SOURCE_PROBE, 100, 1)  # 102 ms before its start
            add(3, P.PHASE_FIRST_RESPONSE, P.SOURCE_PROBE, 300, 40)  # ±40 ms
            async with TestAgent(server.address, "agent-1", "node-1") as agent:
                await agent.send_all([batch])
            await collector.finish_run("flagged", control_pb2.RUN_STATE_SUCCEEDED)
            report = await collect_report(collector, ["flagged"])
            wider = await collect_report(
                collector, ["flagged"], bounds=parse_bounds(["first_response=50ms"])
            )
    (run,) = report.runs
    # Registered without a runtime mode (as an older rtctl did): unknown, through the journal.
    assert (run.mode, report.groups[0].mode) == ("unknown", "unknown")
    assert run.bounds_applied and run.bounds == {"first_response": BOUND_NS}
    assert [(v.pod, v.phase, v.must_follow, v.early_by_ns) for v in run.out_of_order] == [
        ("web-2", "first_response", "container_started", 102 * MS)
    ]
    first = report.groups[0].phase("first_response")
    assert first is not None
    assert (first.reached, first.count, first.out_of_order, first.over_bound) == (4, 2, 1, 1)
    assert (first.latency.min_ns, first.latency.max_ns) == (250 * MS, 260 * MS)
    assert report.groups[0].measured == 2 and run.all_responded_ns == 0
    wide = wider.groups[0].phase("first_response")
    assert wide is not None and (wide.count, wide.latency.max_ns) == (3, 300 * MS)
    assert wide.bound_ns == 50 * MS and wider.runs[0].bounds == {"first_response": 50 * MS}
    # Named and counted in every output.
    console = Console(file=io.StringIO(), width=220)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "2/4 within 10 ms, 1 out of order" in text
    assert "pod web-2 (#2): first_response 102.0 ms before container_started" in text
    data = report_json(report)
    assert data["runs"][0]["out_of_order"][0]["name"] == "web-2"
    assert data["groups"][0]["phases"]["first_response"]["count"] == 2
    html = render_html(report, render_plots(report))
    assert "web-2" in html[html.index("<h2>Out of order</h2>") :]
    assert pixels_of(timeline_plot(run).png, OUT_OF_ORDER_COLOUR) > 50


# -- end to end: real runs on the simulated cluster, numbers recomputed from the journal --

SOURCE_RANK_SQL = (
    "CASE source WHEN 3 THEN 0 WHEN 5 THEN 1 WHEN 2 THEN 2 WHEN 1 THEN 3 WHEN 4 THEN 4 ELSE 5 END"
)
"""collector/summaries.py's source preference (containerd > simulator > probe > watch >
rtctl), restated as SQL."""


def journal_events(journal: Path, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per run, pod and phase, the event the summary should pick: one SQL query."""
    marks = ",".join("?" * len(run_ids))
    query = f"""
        WITH ranked AS (
          SELECT run_id, pod_uid, phase, source, corrected_ns,
                 MAX(COALESCE(uncertainty_ns, 0), 0)
                   + MAX(COALESCE(clock_uncertainty_ns, 0), 0) AS uncertainty_ns,
                 ROW_NUMBER() OVER (
                   PARTITION BY run_id, pod_uid, phase
                   ORDER BY {SOURCE_RANK_SQL}, corrected_ns) AS pick
          FROM events WHERE run_id IN ({marks}))
        SELECT ranked.run_id, pod_uid, pods.ordinal, phase, source, corrected_ns,
               corrected_ns - runs.created_ns AS latency_ns, uncertainty_ns
        FROM ranked JOIN runs ON runs.run_id = ranked.run_id
        LEFT JOIN pods ON pods.run_id = ranked.run_id AND pods.uid = ranked.pod_uid
        WHERE pick = 1"""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(query, list(run_ids))]


def name(enum: Any, value: int, prefix: str) -> str:
    """``first_response`` for PHASE_FIRST_RESPONSE, ``probe`` for SOURCE_PROBE."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


BEFORE = ("scheduled", "sandbox_created", "sandbox_started", "container_created")
MUST_FOLLOW = {
    "sandbox_created": BEFORE[:1],
    "sandbox_started": BEFORE[:2],
    "container_created": BEFORE[:3],
    "container_started": BEFORE,
    "running": (*BEFORE, "container_started"),
    "first_response": (*BEFORE, "container_started"),
    "ready": (*BEFORE, "container_started", "running"),
}
"""collector/screening.py's order table, written out again."""
RUNTIME_LAG_NS = 50 * MS


def screen(events: Sequence[dict[str, Any]], bounds: Mapping[str, int]) -> list[tuple[Any, ...]]:
    """Sets ``over_bound`` and ``out_of_order`` on each pod's chosen events as the
    collector's rules say (restated: a watch stamp bounds the truth only from above, a
    runtime's may lag 50 ms behind for another source); returns the out-of-order ones as
    (run, ordinal, phase, must_follow, early by)."""
    by_pod: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for e in events:
        by_pod[(e["run_id"], e["pod_uid"])][name(P.Phase, e["phase"], "PHASE_")] = e
    found = []
    for (run_id, _), phases in by_pod.items():
        for phase, e in phases.items():
            bound = bounds.get(phase)
            e["over_bound"] = bound is not None and e["uncertainty_ns"] > bound
            worst = None
            for first in MUST_FOLLOW.get(phase, ()):
                b = phases.get(first)
                if b is None:
                    continue
                if b["source"] == P.SOURCE_WATCH and e["source"] != P.SOURCE_WATCH:
                    continue
                lag = 0
                if b["source"] in (P.SOURCE_CONTAINERD, P.SOURCE_SIMULATOR):
                    lag = RUNTIME_LAG_NS if e["source"] != b["source"] else 0
                beyond = (b["corrected_ns"] - b["uncertainty_ns"] - lag) - (
                    e["corrected_ns"] + e["uncertainty_ns"]
                )
                if beyond > 0 and (worst is None or beyond > worst[1]):
                    worst = (first, beyond, b["corrected_ns"] - e["corrected_ns"])
            e["out_of_order"] = worst is not None
            if worst is not None:
                found.append((run_id, e["ordinal"], phase, worst[0], worst[2]))
    return sorted(found)


def phase_numbers(events: Sequence[Mapping[str, Any]], bound: int | None) -> dict[str, Any]:
    """Pods reached, counted and left out, and count, min, p50/p90/p99/max latency and
    p50/max uncertainty over the counted ones (None when none counts)."""
    counted = [e for e in events if not (e["over_bound"] or e["out_of_order"])]
    latencies = [e["latency_ns"] for e in counted]
    uncertainties = [e["uncertainty_ns"] for e in counted]
    numbers: dict[str, Any] = {
        "count": len(counted),
        "reached": len(events),
        "out_of_order": sum(e["out_of_order"] for e in events),
        "over_bound": sum(e["over_bound"] and not e["out_of_order"] for e in events),
        "bound_ns": bound,
    }
    if not counted:
        return {**numbers, **dict.fromkeys(LATENCY_KEYS)}
    return {
        **numbers,
        "min_ns": min(latencies),
        "p50_ns": rank(latencies, 50),
        "p90_ns": rank(latencies, 90),
        "p99_ns": rank(latencies, 99),
        "max_ns": max(latencies),
        "p50_uncertainty_ns": rank(uncertainties, 50),
        "max_uncertainty_ns": max(uncertainties),
    }


LATENCY_KEYS = (
    *("min_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns"),
    *("p50_uncertainty_ns", "max_uncertainty_ns"),
)


def check_report(data: dict[str, Any], journal: Path, runs: Mapping[str, str], bound: int) -> None:
    """Every number of ``rtctl report --format json`` recomputed from the journal with the
    first_response bound ``bound``: per run and phase, every pod, the out-of-order list,
    the pooled per-runtime numbers and the ratio."""
    picked = journal_events(journal, list(runs))
    bounds = {"first_response": bound}
    out_of_order = screen(picked, bounds)
    assert data["max_uncertainty_ns"] == bounds
    assert {r["run_id"] for r in data["runs"]} == set(runs)
    reported = sorted(
        (run["run_id"], v["ordinal"], v["phase"], v["must_follow"], v["early_by_ns"])
        for run in data["runs"]
        for v in run["out_of_order"]
    )
    assert reported == out_of_order
    for run in data["runs"]:
        mine = [e for e in picked if e["run_id"] == run["run_id"]]
        by_phase: dict[str, list[dict[str, Any]]] = defaultdict(list)
        pods: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        for e in mine:
            phase = name(P.Phase, e["phase"], "PHASE_")
            by_phase[phase].append(e)
            pods[e["ordinal"]][phase] = {
                "source": name(P.Source, e["source"], "SOURCE_"),
                "time_ns": e["corrected_ns"],
                "latency_ns": e["latency_ns"],
                "uncertainty_ns": e["uncertainty_ns"],
                "over_bound": e["over_bound"],
                "out_of_order": e["out_of_order"],
            }
        expected = {
            phase: phase_numbers(events, bounds.get(phase)) for phase, events in by_phase.items()
        }
        assert run["phases"] == expected, run["run_id"]
        assert run["bounds_applied"] and run["max_uncertainty_ns"] == bounds
        assert {p["ordinal"]: p["phases"] for p in run["pods"]} == pods, run["run_id"]

    # Per runtime: the pods of both runc runs pooled, recomputed from the journal too.
    groups = {g["runtime"]: g for g in data["groups"]}
    assert data["baseline"] == "runc" and list(groups) == ["runc", "runsc"]
    assert sorted(groups["runc"]["run_ids"]) == ["report-runc-1", "report-runc-2"]
    pooled: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for e in picked:
        pooled[runs[e["run_id"]]][name(P.Phase, e["phase"], "PHASE_")].append(e)
    for runtime, group in groups.items():
        assert "first_response" in group["phases"] and "gone" not in group["phases"]
        for phase, numbers in group["phases"].items():
            expected_numbers = phase_numbers(pooled[runtime][phase], bounds.get(phase))
            assert numbers == expected_numbers, (runtime, phase)
        counted = group["phases"]["first_response"]["count"]
        assert group["pods_measured"] == counted
    first = {
        rt: [
            e["latency_ns"]
            for e in pooled[rt]["first_response"]
            if not (e["over_bound"] or e["out_of_order"])
        ]
        for rt in ("runc", "runsc")
    }
    ratio = groups["runsc"]["vs_baseline"]["first_response"]
    if not first["runc"] or not first["runsc"]:
        assert ratio is None
        return
    assert ratio["ratio"] == rank(first["runsc"], 50) / rank(first["runc"], 50)
    assert ratio["low"] <= ratio["ratio"] <= ratio["high"]
    assert (ratio["count"], ratio["baseline_count"], ratio["resamples"]) == (
        len(first["runsc"]),
        len(first["runc"]),
        500,
    )


def pods_without_gone(journal: Path, run_ids: Sequence[str]) -> int:
    marks = ",".join("?" * len(run_ids))
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        (missing,) = conn.execute(
            f"SELECT COUNT(*) FROM pods WHERE run_id IN ({marks}) AND uid NOT IN"
            f" (SELECT pod_uid FROM events WHERE phase = ? AND run_id IN ({marks}))",
            [*run_ids, P.PHASE_GONE, *run_ids],
        ).fetchone()
        (pods,) = conn.execute(
            f"SELECT COUNT(*) FROM pods WHERE run_id IN ({marks})", list(run_ids)
        ).fetchone()
    return int(missing) if pods else -1


async def test_report_numbers_match_the_journal(stack: Stack, tmp_path: Path) -> None:
    test_id, replicas = "report-e2e", 6
    runs = {"report-runc-1": "runc", "report-runsc-1": "runsc", "report-runc-2": "runc"}
    for run_id, runtime in runs.items():
        done = await asyncio.to_thread(
            stack.rtctl,
            *("start-run", "--runtime-class", runtime, "--replicas", str(replicas)),
            *("--test-id", test_id, "--run-id", run_id, "--settle", "0", "--format", "json"),
        )
        assert done.returncode == 0, done.stderr
    # start-run waited until the pods were gone from the API; the agents' last events
    # (gone) reach the journal just after. Once they have, nothing of these runs changes.
    await wait_until(
        lambda: pods_without_gone(stack.journal, list(runs)) == 0,
        within=60,
        what="a gone event for every pod in the journal",
    )

    out = tmp_path / "report"
    done = await asyncio.to_thread(
        stack.rtctl,
        *("report", "--test-id", test_id, "--format", "json", "--out", str(out)),
        *("--bootstrap", "500", "--seed", "3"),
    )
    assert done.returncode == 0, done.stderr
    assert f"report: {out / 'report.html'}" in done.stderr
    data = json.loads(done.stdout)

    check_report(data, stack.journal, runs, 10 * MS)
    # The simulated cluster's runtimes are simulated, and every output says so.
    assert data["mode"] == "simulated"
    assert data["runtime_modes"] == {"runc": "simulated", "runsc": "simulated"}
    assert [g["mode"] for g in data["groups"]] == ["simulated", "simulated"]
    for run in data["runs"]:
        assert run["mode"] == "simulated"
        assert run["mode_basis"] == (
            f"RuntimeClass {runs[run['run_id']]} labelled rtbench.dev/simulated=true"
        )
    # The probes of the simulated stack bracket first responses well within 10 ms.
    assert all(r["phases"]["first_response"]["reached"] == replicas for r in data["runs"])

    # The files: a self-contained page naming every run, and the figures.
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert all(run_id in html for run_id in runs)
    assert 'class="mode mode-real"' not in html
    banner, comparison, per_runtime, runs_part = (
        html.split("<h2>Environment</h2>")[0],
        html.split("<h2>Comparison</h2>")[1].split("<h2>")[0],
        html.split("<h2>Per runtime</h2>")[1].split("<h2>")[0],
        html.split("<h2>Runs</h2>")[1].split("<h2>")[0],
    )
    simulated = '<span class="mode mode-simulated">SIMULATED</span>'
    assert banner.count(simulated) == 2 and comparison.count(simulated) == 2
    assert per_runtime.count(simulated) == 2 and runs_part.count(simulated) == 3
    assert json.loads((out / "report.json").read_text()) == data
    assert png_size((out / "cdf-first_response.png").read_bytes()) == (10 * DPI, 6 * DPI)
    for run_id in runs:
        timeline = (out / f"timeline-{run_id}.png").read_bytes()
        assert pixels_of(timeline, "#55a868") > 100  # the responding segments are drawn

    text = await asyncio.to_thread(stack.rtctl, "report", "report-runsc-1", "report-runc-1")
    assert text.returncode == 0, text.stderr
    assert "first_response by runtime, against runc" in text.stdout
    assert "run report-runsc-1" in text.stdout and "report-runc-2" not in text.stdout
    assert "runtime modes: runc x6 SIMULATED; runsc x6 SIMULATED" in text.stdout
    assert "runsc x6 (SIMULATED runtime)" in text.stdout and "REAL" not in text.stdout
    assert text.stdout.count("SIMULATED runtime)") == 2  # each runtime's table
    assert text.stdout.count("succeeded, SIMULATED runtime") == 2  # each run's table
    assert "uncertainty bounds: first_response ≤ 10 ms; other phases unbounded" in text.stdout

    # A bound set by the user travels to the collector and changes the numbers: no
    # probe bracket plus clock uncertainty is 0, so at 0 ms no first response counts.
    tight = await asyncio.to_thread(
        stack.rtctl,
        *("report", "--test-id", test_id, "--format", "json", "--seed", "3"),
        *("--bootstrap", "500", "--max-uncertainty", "first_response=0"),
    )
    assert tight.returncode == 0, tight.stderr
    data = json.loads(tight.stdout)
    check_report(data, stack.journal, runs, 0)
    numbers = [g["phases"]["first_response"] for g in data["groups"]]
    assert [(n["count"], n["over_bound"] + n["out_of_order"]) for n in numbers] == [(0, 12), (0, 6)]
    assert [g["pods_measured"] for g in data["groups"]] == [0, 0]
    lifted = await asyncio.to_thread(
        stack.rtctl,
        *("report", "report-runc-1", "--max-uncertainty", "first_response=0ms"),
        *("--max-uncertainty", "ready=none"),
    )
    assert lifted.returncode == 0, lifted.stderr
    assert "first_response ≤ 0 ms; other phases unbounded" in lifted.stdout
    assert "0/6 within 0 ms" in lifted.stdout


REAL_CLASS = """apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: crun-said-real
  labels: {"rtbench.dev/simulated": "false"}
handler: crun
"""


def kubectl(stack: Stack, *args: str, stdin: str | None = None) -> str:
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(stack.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_runtime_class_labelled_real_is_reported_real(stack: Stack, tmp_path: Path) -> None:
    """The labelling path of the embedded cluster's real-pod mode: a RuntimeClass labelled
    rtbench.dev/simulated=false is real in start-run's summary and in the report (here the
    simulator still simulates its pods underneath: only the labels are under test)."""
    await asyncio.to_thread(kubectl, stack, "apply", "-f", "-", stdin=REAL_CLASS)
    try:
        done = await asyncio.to_thread(
            stack.rtctl,
            *("start-run", "--runtime-class", "crun-said-real", "--replicas", "2"),
            *("--test-id", "report-mode", "--run-id", "report-real-1", "--settle", "0"),
        )
    finally:
        await asyncio.to_thread(kubectl, stack, "delete", "runtimeclass", "crun-said-real")
    assert done.returncode == 0, done.stderr
    assert "crun-said-real, 2 replicas, succeeded, REAL runtime" in done.stdout
    assert (
        "runtime mode: real (RuntimeClass crun-said-real labelled rtbench.dev/simulated=false)"
        in done.stdout
    )
    out = tmp_path / "report"
    report = await asyncio.to_thread(
        stack.rtctl, "report", "report-real-1", "--format", "json", "--out", str(out)
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["mode"] == "real" and data["runtime_modes"] == {"crun-said-real": "real"}
    assert data["groups"][0]["mode"] == data["runs"][0]["mode"] == "real"
    html = (out / "report.html").read_text()
    assert html.count('<span class="mode mode-real">REAL</span>') == 4
    assert 'class="mode mode-simulated"' not in html
    text = await asyncio.to_thread(stack.rtctl, "report", "report-real-1")
    assert text.returncode == 0, text.stderr
    assert "runtime modes: crun-said-real x2 REAL" in text.stdout
    assert "SIMULATED" not in text.stdout


async def test_report_refuses_what_it_cannot_report_on(stack: Stack) -> None:
    nothing = await asyncio.to_thread(stack.rtctl, "report", "--test-id", "no-such-test")
    assert nothing.returncode == 2
    assert (
        nothing.stderr.strip()
        == "rtctl: no succeeded runs with test id 'no-such-test' in the collector"
        " (--include-failed adds failed ones)"
    )
    # A run id that does not exist is a usage error too, as an unknown test id is.
    unknown = await asyncio.to_thread(stack.rtctl, "report", "no-such-run")
    assert unknown.returncode == 2, unknown.stderr
    assert (
        unknown.stderr.strip()
        == "rtctl: no run 'no-such-run' in the collector (rtctl runs lists them)"
    )
    bad = await asyncio.to_thread(stack.rtctl, "report", "--bootstrap", "0")
    assert bad.returncode == 2 and "--bootstrap" in bad.stderr


def test_a_container_start_seen_after_the_first_response_is_a_tick_not_a_segment() -> None:
    """The watch reports container starts up to a PLEG period late (DESIGN.md)."""
    on_time = [{**lifecycle(400), "container_started": 300.0} for _ in range(20)]
    late = [{**lifecycle(400), "container_started": 420.0} for _ in range(20)]
    report = build_report([summary("on-time", "runc", on_time), summary("late", "crun", late)])
    drawn = {run.run_id: timeline_plot(run).png for run in report.runs}
    segment, tick = pixels_of(drawn["on-time"], "#4c72b0"), pixels_of(drawn["late"], "#4c72b0")
    assert 0 < tick * 5 < segment, (tick, segment)
    # Without it, the pod went from scheduled to running in one segment; first response
    # still spans 370..400 ms.
    responding = [pixels_of(drawn[name], "#55a868") for name in ("on-time", "late")]
    assert abs(responding[0] - responding[1]) < 0.1 * responding[0], responding
    assert pixels_of(drawn["late"], "#64b5cd") > 2 * pixels_of(drawn["on-time"], "#64b5cd")

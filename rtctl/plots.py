"""The report's figures as PNG: latency CDFs per runtime, per-pod phase timelines, and box
plots across repetitions.

A table of percentiles hides the shape of a distribution (a long tail, two
modes when a node is slower) and hides which part of a pod's start-up a
runtime spends its time in. The figures published with runtime studies show
both: a CDF per runtime, and a Gantt-like timeline with one row per pod and a
segment per start-up stage. These are those figures, drawn from the same
``Report`` the tables come from.

The timeline never draws an impossible order unmarked: a stage seen after a
later one (within the uncertainties) is a tick, not a segment, and a phase
the collector found out of order (collector/screening.py) is not a segment
at all but a red hatched span from where it was seen to the phase it must
follow, with its own legend entry. A phase over its uncertainty bound keeps
its segment and gets a grey bar of ± its uncertainty. The CDF shows the pods
the statistics count, as the tables do.

matplotlib's object API with the Agg canvas only (no pyplot, no global state,
no display): figures are rendered to PNG bytes in memory, which the CLI writes
to files and rtctl/htmlreport.py embeds. Sizes are fixed in pixels (``DPI``),
so the HTML page lays out the same for every report.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from rtbench.percentiles import nearest_rank

from .report import Report, RunReport

__all__ = [
    "DPI",
    "MILESTONES",
    "OUT_OF_ORDER_COLOUR",
    "UNCERTAIN_COLOUR",
    "Plot",
    "cdf_plot",
    "render_plots",
    "repetitions_plot",
    "timeline_name",
    "timeline_plot",
]

DPI = 100
"""Pixels per inch of every PNG: a 10-inch figure is 1000 pixels wide."""

MILESTONES = (
    ("scheduled", "scheduled", "#9e9e9e"),
    ("sandbox", "sandbox started", "#8e6bbf"),
    ("container", "container started", "#4c72b0"),
    ("running", "running", "#64b5cd"),
    ("first_response", "responding", "#55a868"),
    ("ready", "ready", "#dd8452"),
)
"""The timeline's stages: (milestone, legend text, colour). A segment ends at the
milestone it is coloured for and starts at the pod's previous milestone (the
Deployment's create for the first), so a pod without containerd events simply
has no sandbox or container segment."""

_SANDBOX = ("sandbox_started", "sandbox_created")
_CONTAINER = ("container_started", "container_created")
_PRECEDE = ("scheduled", "sandbox", "container")
OUT_OF_ORDER_COLOUR = "#d62728"
"""The out-of-order span's hatch and edge; no stage uses it."""
UNCERTAIN_COLOUR = "#8c564b"
"""The ± bars of phases over their uncertainty bound; no stage uses it."""


@dataclass(frozen=True)
class Plot:
    """One figure: its file name, what it shows, and the PNG itself."""

    name: str
    title: str
    png: bytes


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no pyplot, no display
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _modes(report: Report) -> str:
    """``all SIMULATED``, ``all REAL``, or each runtime's when they differ."""
    if report.mode in ("real", "simulated", "unknown"):
        return f"all {report.mode.upper()}"
    return ", ".join(f"{label} {mode.upper()}" for label, mode in report.modes.items())


def timeline_name(run_id: str) -> str:
    """The file name of a run's timeline (run ids are user input: keep it a plain name)."""
    return "timeline-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id) + ".png"


def cdf_plot(report: Report, phase: str = "first_response") -> Plot | None:
    """Empirical CDF of ``phase`` latency, a step line per runtime group; None if no pod has it."""
    series = []
    for group in report.groups:
        latencies = sorted(
            t.latency_ns
            for run in report.runs
            if run.key == group.key and run.created_ns
            for pod in run.pods
            for t in pod.phases
            if t.phase == phase and t.counted
        )
        if latencies:
            label = f"{group.key.label} [{group.mode.upper()}]"
            series.append((label, group.key.runtime == report.baseline, latencies))
    if not series:
        return None
    figure = Figure(figsize=(10, 6), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    for label, is_baseline, latencies_ns in series:
        n = len(latencies_ns)
        fractions = [(i + 1) / n for i in range(n)]
        median = nearest_rank(latencies_ns, 50) / 1e6
        in_ms = [ns / 1e6 for ns in latencies_ns]
        ax.step(
            [in_ms[0], *in_ms],
            [0.0, *fractions],
            where="post",
            linewidth=2.2 if is_baseline else 1.6,
            linestyle="--" if is_baseline else "-",
            label=f"{label}{' (baseline)' if is_baseline else ''}: n={n}, p50 {median:.0f} ms",
        )
    lows = min(s[2][0] for s in series) / 1e6
    highs = max(s[2][-1] for s in series) / 1e6
    if lows > 0 and highs / lows > 30:
        ax.set_xscale("log")  # a 30x spread squeezes the fast runtimes into one pixel column
    else:
        ax.set_xlim(left=0)  # from zero, so the eye reads ratios between the curves right
    ax.axhline(0.5, color="#bbbbbb", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"{phase} latency per runtime (CDF over the counted pods of all runs)"
        f"\nruntime modes: {_modes(report)}"
    )
    ax.set_xlabel(f"{phase} latency from the Deployment's create (ms)")
    ax.set_ylabel("fraction of pods")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return Plot(f"cdf-{phase}.png", f"{phase} latency CDF per runtime", _png(figure))


@dataclass
class _Row:
    """One pod's row of the timeline (times in ms since the create)."""

    drawn: list[tuple[float, str]]
    """Milestones drawn as segments, in time order."""
    late: list[tuple[float, str]]
    """Milestones seen after a later stage: ticks."""
    out_of_order: list[tuple[float, float]]
    """(where the phase was seen, where the phase it must follow was): hatched spans."""
    uncertain: list[tuple[float, float]]
    """(time, ± uncertainty) of milestones over their phase's bound: error bars."""


def _milestones(run: RunReport) -> list[_Row]:
    """Per pod (by ordinal), what the timeline draws.

    Scheduling, the sandbox and the container precede every later stage, so one
    seen after a later stage was seen late (a watch reports container starts up to
    a PLEG period late): it becomes a tick, not a segment that would stretch the
    stage before it. Running, first response and ready have no fixed order
    (the probe may answer before the watch shows Running or Ready). A phase the
    collector flagged out of order is no milestone: a hatched span instead.
    """
    must_follow = {(v.ordinal, v.phase): v.must_follow for v in run.out_of_order}
    rows = []
    for pod in run.pods:
        times = {t.phase: t for t in pod.phases}
        found, flagged, uncertain = [], [], []
        for milestone, _, _ in MILESTONES:
            names = {"sandbox": _SANDBOX, "container": _CONTAINER}.get(milestone, (milestone,))
            t = next((times[n] for n in names if n in times), None)
            if t is None:
                continue
            at = t.latency_ns / 1e6
            if t.out_of_order:
                other = times.get(must_follow.get((pod.ordinal, t.phase), ""))
                flagged.append((at, other.latency_ns / 1e6 if other is not None else at))
                continue
            found.append((at, milestone))
            if t.over_bound:
                uncertain.append((at, t.uncertainty_ns / 1e6))
        drawn, late = [], []
        for i, (at, milestone) in enumerate(found):
            early = milestone in _PRECEDE
            if early and any(later < at for later, _ in found[i + 1 :]):
                late.append((at, milestone))
            else:
                drawn.append((at, milestone))
        rows.append(_Row(sorted(drawn), late, flagged, uncertain))
    return rows


def timeline_plot(run: RunReport) -> Plot:
    """One row per pod, a horizontal segment per start-up stage the pod went through."""
    pods = len(run.pods)
    height = min(max(3.5, 1.8 + 0.09 * pods), 30.0)
    figure = Figure(figsize=(12, height), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    segments: dict[str, tuple[list[int], list[float], list[float]]] = {
        m: ([], [], []) for m, _, _ in MILESTONES
    }
    ticks: dict[str, tuple[list[int], list[float]]] = {m: ([], []) for m, _, _ in MILESTONES}
    spans: list[tuple[int, float, float]] = []
    bars: list[tuple[int, float, float]] = []
    for row, found in enumerate(_milestones(run)):
        start = 0.0
        for at, milestone in found.drawn:
            ys, lefts, widths = segments[milestone]
            ys.append(row)
            lefts.append(start)
            widths.append(max(at - start, 0.0))
            start = max(start, at)
        for at, milestone in found.late:
            ticks[milestone][0].append(row)
            ticks[milestone][1].append(at)
        spans += [(row, seen, until) for seen, until in found.out_of_order]
        bars += [(row, at, plus_minus) for at, plus_minus in found.uncertain]
    handles: list[Artist] = []
    for milestone, legend, colour in MILESTONES:
        ys, lefts, widths = segments[milestone]
        if ys:
            # One collection per stage: a thousand bar patches take seconds to draw.
            boxes = [
                [(x, y - 0.425), (x + w, y - 0.425), (x + w, y + 0.425), (x, y + 0.425)]
                for y, x, w in zip(ys, lefts, widths, strict=True)
            ]
            ax.add_collection(PolyCollection(boxes, facecolors=colour, linewidths=0))
            handles.append(Patch(color=colour, label=f"→ {legend}"))
    tick_size = max(min(400.0 / max(pods, 1), 14.0), 4.0)
    for milestone, _, colour in MILESTONES:
        ys, xs = ticks[milestone]
        if ys:
            ax.scatter(xs, ys, marker="|", s=tick_size**2, color=colour, linewidths=2.5, zorder=3)
    if any(ys for ys, _ in ticks.values()):
        handles.append(
            Line2D([], [], color="#333333", marker="|", linestyle="", markersize=10,
                   markeredgewidth=2.5, label="seen after a later stage")
        )  # fmt: skip
    if spans:
        handles.append(_out_of_order_spans(ax, spans, tick_size))
    if bars:
        ax.errorbar(
            [at for _, at, _ in bars],
            [row for row, _, _ in bars],
            xerr=[plus_minus for _, _, plus_minus in bars],
            fmt="none",
            ecolor=UNCERTAIN_COLOUR,
            elinewidth=1.2,
            capsize=3,
            zorder=4,
        )
        handles.append(
            Line2D([], [], color=UNCERTAIN_COLOUR, marker="|", markersize=8,
                   label="over its uncertainty bound (± shown)")
        )  # fmt: skip
    failed = [
        (row, t.latency_ns / 1e6)
        for row, pod in enumerate(run.pods)
        for t in pod.phases
        if t.phase == "failed"
    ]
    if failed:
        ax.scatter([f[1] for f in failed], [f[0] for f in failed], marker="x", color="#c44e52")
        handles.append(Patch(color="#c44e52", label="failed"))
    if run.all_responded_ns > 0:
        ax.axvline(run.all_responded_ns / 1e6, color="#333333", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="#333333", linestyle="--", label="all responded"))
    ax.set_ylim(pods - 0.5, -0.5)  # the first pod on top, as in a Gantt chart
    ends = [
        x + w for _, lefts, widths in segments.values() for x, w in zip(lefts, widths, strict=True)
    ]
    ends += [x for _, xs in ticks.values() for x in xs]
    ends += [max(seen, until) for _, seen, until in spans]
    ends += [at + plus_minus for _, at, plus_minus in bars]
    ax.set_xlim(0, max(ends, default=1.0) * 1.03)
    ax.set_title(
        f"per-pod start-up timeline, run {run.run_id} ({run.key.label}, {run.state},"
        f" {run.mode.upper()} runtime)"
    )
    ax.set_xlabel("time since the Deployment's create (ms)")
    ax.set_ylabel("pod (ordinal: order of first sight)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # ordinals, never 2.5
    ax.grid(True, axis="x", alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), fontsize="small")
    return Plot(timeline_name(run.run_id), f"timeline of run {run.run_id}", _png(figure))


def _out_of_order_spans(ax: Axes, spans: Sequence[tuple[int, float, float]], size: float) -> Artist:
    """Red hatched boxes from where each out-of-order phase was seen to the phase it must
    follow, and a red cross where it was seen; the legend entry."""
    boxes = [
        [(lo, y - 0.425), (hi, y - 0.425), (hi, y + 0.425), (lo, y + 0.425)]
        for y, seen, until in spans
        for lo, hi in [(min(seen, until), max(seen, until))]
    ]
    ax.add_collection(
        PolyCollection(
            boxes,
            facecolors="none",
            edgecolors=OUT_OF_ORDER_COLOUR,
            hatch="////",
            linewidths=1.0,
            zorder=4,
        )
    )
    ax.scatter(
        [seen for _, seen, _ in spans],
        [y for y, _, _ in spans],
        marker="X",
        s=max(size, 6.0) ** 2,
        color=OUT_OF_ORDER_COLOUR,
        zorder=5,
    )
    return Patch(
        facecolor="none",
        edgecolor=OUT_OF_ORDER_COLOUR,
        hatch="////",
        label="out of order (left out): seen → the phase it must follow",
    )


def repetitions_plot(report: Report) -> Plot | None:
    """Box plots of per-run p50 first_response and all-responded time, one box per group."""
    labels: list[str] = []
    p50s: list[list[float]] = []
    alls: list[list[float]] = []
    for group in report.groups:
        runs = [r for r in report.runs if r.key == group.key and r.created_ns]
        row_p50 = [r.phase("first_response") for r in runs]
        values = [row.latency.p50_ns / 1e6 for row in row_p50 if row is not None and row.count]
        if values:
            labels.append(f"{group.key.label} [{group.mode.upper()}]")
            p50s.append(values)
            alls.append([r.all_responded_ns / 1e6 for r in runs if r.all_responded_ns > 0])
    if not labels:
        return None
    figure = Figure(figsize=(12, 5.5), dpi=DPI, layout="constrained")
    left, right = figure.subplots(1, 2)
    _boxes(left, labels, p50s, "p50 first_response of each run", "p50 first_response (ms)")
    _boxes(right, labels, alls, "time until all replicas responded, per run", "all responded (ms)")
    figure.suptitle(f"across repetitions (one point per run); runtime modes: {_modes(report)}")
    return Plot("repetitions.png", "across repetitions", _png(figure))


def _boxes(
    ax: Axes, labels: Sequence[str], data: Sequence[list[float]], title: str, ylabel: str
) -> None:
    positions = list(range(1, len(labels) + 1))
    present = [(p, d) for p, d in zip(positions, data, strict=True) if d]
    if present:
        ax.boxplot([d for _, d in present], positions=[p for p, _ in present], widths=0.5)
        for position, values in present:
            # A small fixed jitter, so the few points of each box stay visible side by side.
            spread = [position + 0.06 * ((i % 5) - 2) for i in range(len(values))]
            ax.scatter(spread, values, s=14, color="#4c72b0", alpha=0.7, zorder=3)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)


def render_plots(report: Report) -> list[Plot]:
    """Every figure of the report: CDF, repetitions, then one timeline per run."""
    plots = [p for p in (cdf_plot(report), repetitions_plot(report)) if p is not None]
    plots.extend(timeline_plot(run) for run in report.runs if run.created_ns and run.pods)
    return plots

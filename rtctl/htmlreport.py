"""The report as one self-contained HTML file: tables, figures, environment and method.

A report travels: attached to a mail, dropped next to a paper's artifacts,
opened years later without network. So the page has no external resources at
all (no scripts, fonts or stylesheets from elsewhere; the PNG figures are
embedded as ``data:`` URIs) and states what a reader needs to trust the numbers:
the environment of every run (flagged when runs differ), how each number is
computed, and how uncertain it is: the uncertainty bounds the statistics
applied, per phase how many pods it counts of those that reached it and why
the others are left out, and every pod phase left out as out of order, named;
and, above all, whether each runtime's figures come from a REAL runtime or a
SIMULATED one: a banner under the title, a mode column in the comparison, the mode
in every runtime's and every run's heading and facts, and ≠mode on ratios between
the two (rtctl/runtimemode.py).

Everything is escaped: run ids, labels and environment values come from users.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

from rtbench.protocol import RUNTIME_REPORT_LAG_NS

from .bounds import format_bound
from .plots import Plot, timeline_name
from .report import GroupReport, PhaseRow, Report, RunReport
from .reporttables import (
    OUT_OF_ORDER_HEAD,
    format_ms,
    format_ratio,
    out_of_order_rows,
    row_counted,
)
from .stats import Spread
from .summarytable import format_failures, format_memory

__all__ = ["render_html"]


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1.2em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: bottom; text-align: left; color: #666; font-size: .9em; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: .5em 1em; }
.flag { color: #a35b00; font-weight: bold; }
.mode { font-weight: bold; padding: 0 .3em; border-radius: 3px; }
.mode-real { background: #dff0d8; } .mode-simulated, .mode-unknown, .mode-mixed
{ background: #fde2c8; color: #8a3b00; }
img { max-width: 100%; border: 1px solid #eee; }
details { margin: .8em 0; } summary { cursor: pointer; font-weight: bold; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(
    head: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", raw: bool = False
) -> str:
    """A table; cells are escaped unless ``raw`` (for cells this module built itself)."""
    cells = (lambda v: v) if raw else _e
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cells(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return f'<figure><img alt="{_e(plot.title)}" src="data:image/png;base64,{data}"></figure>'


def _phase_rows(rows: Sequence[PhaseRow]) -> list[list[str]]:
    out = []
    for row in rows:
        d = row.latency
        numbers = [d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns]
        numbers += [row.p50_uncertainty_ns, row.max_uncertainty_ns]
        out.append(
            [
                row.phase,
                str(row.reached),
                row_counted(row),
                *(format_ms(ns) if d.count else "-" for ns in numbers),
            ]
        )
    return out


_PHASE_HEAD = ("phase", "pods", "counted", "p50", "p90", "p99", "max", "± p50", "± max")


def _out_of_order(report: Report) -> str:
    rows = out_of_order_rows(report)
    if not rows:
        return "<p>No pod has a phase out of order beyond the uncertainties.</p>"
    caption = (
        f"{len(rows)} pod phases seen before a phase they must follow, beyond both events'"
        " uncertainties; each is left out of its phase's statistics"
    )
    return _table(OUT_OF_ORDER_HEAD, rows, caption)


def _mode(mode: str) -> str:
    """The mode as a marked word: ``<span class="mode mode-simulated">SIMULATED</span>``."""
    return f'<span class="mode mode-{_e(mode)}">{_e(mode.upper())}</span>'


def _modes(report: Report) -> str:
    items = ", ".join(f"{_e(label)} {_mode(mode)}" for label, mode in report.modes.items())
    simulated = report.mode != "real"
    css = ' class="warn"' if simulated else ""
    return f"<p{css}><b>Runtime modes</b> (real runtime or simulated): {items}.</p>"


def _ratio_cell(report: Report, group: GroupReport, phase: str) -> str:
    if group.key.runtime == report.baseline:
        return "baseline"
    comparison = report.comparison(group.key, phase)
    if comparison is None:
        return "-"
    cell = _e(format_ratio(comparison.interval))
    if comparison.across_environments:
        cell += ' <span class="flag" title="runs from different environments">≠env</span>'
    if comparison.across_modes:
        cell += ' <span class="flag" title="a real runtime against a simulated one">≠mode</span>'
    return cell


def _comparison(report: Report) -> str:
    rows = []
    for group in report.groups:
        row = group.phase("first_response")
        d = row.latency if row and row.count else None
        rows.append(
            [
                _e(group.key.runtime),
                _mode(group.mode),
                str(group.key.replicas),
                str(len(group.run_ids)),
                f"{group.measured}/{group.expected}",
                str(group.failed_pods),
                format_ms(d.p50_ns) if d else "-",
                format_ms(d.p90_ns) if d else "-",
                format_ms(d.max_ns) if d else "-",
                _ratio_cell(report, group, "first_response"),
                _spread(group.first_response_p50),
                _spread(group.all_responded),
                format_memory(group.memory_per_pod_bytes),
            ]
        )
    bound = report.bounds.get("first_response")
    within = f" within {format_bound(bound)}" if bound is not None else ""
    head = [
        "runtime",
        "mode",
        "replicas",
        "runs",
        f"pods measured{within}/expected",
        "failed",
        "p50",
    ]
    head += ["p90"]
    head += ["max"]
    head += [f"ratio to {report.baseline} [{report.confidence:.0%} CI]", "per-run p50"]
    head += ["all responded", "memory/pod"]
    caption = (
        "first_response, ms from the Deployment's create; per-run p50 and all responded:"
        " median (min-max) over the repetitions"
    )
    return _table(head, rows, caption, raw=True)


def _spread(spread: Spread) -> str:
    if spread.count == 0:
        return "-"
    if spread.count == 1:
        return format_ms(spread.median)
    return f"{format_ms(spread.median)} ({format_ms(spread.low)}-{format_ms(spread.high)})"


def _group_section(report: Report, group: GroupReport) -> str:
    head = [*_PHASE_HEAD, f"p{report.percent} ratio to {report.baseline}"]
    rows = [
        [*map(_e, cells), _ratio_cell(report, group, row.phase)]
        for cells, row in zip(_phase_rows(group.phases), group.phases, strict=True)
    ]
    failures = format_failures(group.failed_pods, group.failures)
    memory = format_memory(group.memory_per_pod_bytes)
    return (
        f"<h3>{_e(group.key.label)} {_mode(group.mode)}</h3>"
        f"<p>runtime mode: {_e(group.mode)}; runs: {_e(', '.join(group.run_ids))};"
        f" {group.pods} pods, {group.measured} measured"
        f" of {group.expected} expected; failed pods {_e(failures)};"
        f" memory per pod {_e(memory)}</p>"
        + _table(head, rows, "ms from the Deployment's create, over all pods of the runs", raw=True)
    )


def _run_section(run: RunReport, plots: dict[str, Plot]) -> str:
    failures = format_failures(run.failed_pods, run.failures)
    clocks = [
        [agent, node, format_ms(offset), format_ms(unc) if unc >= 0 else "unknown"]
        for agent, node, offset, unc in run.clocks
    ]
    clocks.append(["rtctl", "", format_ms(run.rtctl_clock[0]), format_ms(run.rtctl_clock[1])])
    facts = [
        ["runtime mode", f"{run.mode} ({run.mode_basis})"],
        ["state", run.state + (f" ({run.message})" if run.message else "")],
        ["test id / plan id", f"{run.test_id} / {run.plan_id or '-'}"],
        ["repetition", str(run.repetition)],
        ["image, memory limit", f"{run.image or '-'}, {run.memory_limit or '-'}"],
        ["all responded", format_ms(run.all_responded_ns) + " ms" if run.all_responded_ns else "-"],
        ["failed pods", failures],
        [
            "pod phases out of order",
            str(len(run.out_of_order)) if run.bounds_applied else "not checked",
        ],
        ["memory per pod", format_memory(run.memory_per_pod_bytes)],
    ]
    parts = [
        f'<details id="run-{_e(run.run_id)}"><summary>run {_e(run.run_id)}'
        f" ({_e(run.key.label)}, {_e(run.state)}) {_mode(run.mode)}</summary>",
        _table(["", ""], facts),
        _table(
            _PHASE_HEAD,
            _phase_rows(run.phases),
            "the collector's summary of this run, ms"
            if run.bounds_applied
            else "this run's pods under the bounds, applied by rtctl (the collector, older than"
            " rtctl, applied none), ms; its phases were not checked for order",
        ),
        _table(["agent", "node", "offset ms", "± ms"], clocks, "clock offsets to the collector"),
    ]
    timeline = plots.get(timeline_name(run.run_id))
    if timeline is not None:
        parts.append(_figure(timeline))
    parts.append("</details>")
    return "\n".join(parts)


def _environment(report: Report) -> str:
    keys = sorted({k for env in report.environments for k in env.values})
    head = [
        "key",
        *(
            f"environment {i + 1} ({len(e.run_ids)} runs)"
            for i, e in enumerate(report.environments)
        ),
    ]
    rows = []
    for key in keys:
        flag = ' <span class="flag">differs</span>' if key in report.differing_keys else ""
        values = [_e(env.values.get(key, "(not recorded)")) for env in report.environments]
        rows.append([_e(key) + flag, *values])
    if not rows:
        return "<p>The runs recorded no environment.</p>"
    return _table(head, rows, raw=True)


def _method(report: Report) -> str:
    return f"""
<ul>
<li><b>Latency</b> of a phase = the pod's time of that phase minus the run's created time
(rtctl's request time for the Deployment), both in the collector's timebase (agents' and
rtctl's clocks corrected by their measured offsets, see each run's clock table).</li>
<li><b>Sources</b>: when several sources saw a phase, the most precise wins (containerd
&gt; simulator kubelet &gt; node-local HTTP probe &gt; Kubernetes watch &gt; rtctl).
first_response is the node-local probe's first success.</li>
<li><b>Uncertainty</b> (± columns) = the event's own bracket (for a probe, half the time
between the last failed attempt and the first success) plus its agent's clock-offset
uncertainty.</li>
<li><b>Uncertainty bounds</b>: a pod's phase counts in the statistics (percentiles, all
responded, ratios, the CDF) only if its uncertainty is at most the phase's bound
({_e(report.bounds_text)}; <code>--max-uncertainty PHASE=DURATION</code> changes them). The
counted column shows the pods counted / the pods that reached the phase, with the bound.</li>
<li><b>Order</b>: a phase the numbers prove came before a phase it must follow (a first
response before its container started, ready before scheduled, a container started before
its sandbox, ...) is out of order: left out of its phase's statistics (the phase it must
follow still counts) and listed under "Out of order". A Kubernetes watch event is stamped
on arrival, late by the watch's lag, so it only bounds the truth from above; a container
runtime's event may be stamped up to {RUNTIME_REPORT_LAG_NS // 1_000_000} ms after the step
it reports; a phase is only flagged when it lies before the other beyond both events'
uncertainties and these allowances. Timelines mark such phases in red.</li>
<li><b>Percentiles</b> are nearest-rank: pN is the smallest latency with at least N % of the
pods at or below it; every value shown is one pod's real latency. Per-runtime tables pool
all pods of all runs of that runtime, variant and replica count.</li>
<li><b>Ratios</b> = p{report.percent} of the runtime / p{report.percent} of {_e(report.baseline)}
with the same replica count. The interval is a {report.confidence:.0%} percentile bootstrap,
{report.resamples} resamples (seed {report.seed}), each group resampled on its own. A group
of several runs is resampled in two stages: its runs with replacement, then the pods of each
drawn run with replacement, pooled; its interval covers run-to-run as well as pod-to-pod
variation (pods of one run share its node state and are not independent). A group of one
run can only show pod-to-pod variation: its pods are resampled with replacement. The
repetitions plot and the per-run p50 column show the runs themselves. ≠env marks ratios
between runs taken in different environments, ≠mode ratios between a real runtime and a
simulated one (or one whose mode is unknown).</li>
<li><b>Runtime mode</b>: REAL figures come from a real container runtime; SIMULATED ones from
the simulated cluster's runtime profiles (delays drawn from a profile, real workload
processes): they show the pipeline, not the runtime. rtctl reads the mode from the cluster
at each run's start: the RuntimeClass's <code>rtbench.dev/simulated</code> label
(<code>"true"</code> simulated, <code>"false"</code> real), for the default handler the
nodes' annotation of the same name; a class without the label on nodes that do not say they
are simulated is real. A run recorded by an older rtctl is UNKNOWN.</li>
<li><b>Pods measured / expected</b> = pods with a counted first_response / the replicas the
runs asked for. Pods that never answered, or whose answer is left out, have no latency: a
group with fewer measured than expected looks faster than it is. Failed and timed-out runs
are left out unless <code>--include-failed</code>.</li>
<li><b>Memory per pod</b> = (node MemAvailable before the create minus after all of the node's
pods were ready) / pods on the node, averaged over nodes (per runtime: over its runs).</li>
</ul>"""


def render_html(report: Report, plots: Sequence[Plot], *, title: str = "rtbench report") -> str:
    """The whole report as one HTML document with the plots embedded."""
    by_name = {p.name: p for p in plots}
    test_ids = sorted({r.test_id for r in report.runs if r.test_id})
    plan_ids = sorted({r.plan_id for r in report.runs if r.plan_id})
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(report.runs)} runs, {len(report.groups)} runtime groups;"
        f" test ids: {_e(', '.join(test_ids) or '-')}; plans: {_e(', '.join(plan_ids) or '-')};"
        f" baseline: {_e(report.baseline)}.</p>",
    ]
    body.append(_modes(report))
    if report.notes:
        body.append('<div class="warn">' + "<br>".join(_e(n) for n in report.notes) + "</div>")
    body.append(
        f"<p>Uncertainty bounds: {_e(report.bounds_text)}. A pod's phase over its bound or out"
        " of order is left out of that phase's statistics and counted beside them.</p>"
    )
    body += ["<h2>Environment</h2>", _environment(report)]
    body += ["<h2>Comparison</h2>", _comparison(report)]
    body += [_figure(p) for name, p in by_name.items() if not name.startswith("timeline-")]
    body.append("<h2>Per runtime</h2>")
    body += [_group_section(report, group) for group in report.groups]
    body += ["<h2>Out of order</h2>", _out_of_order(report)]
    body.append("<h2>Runs</h2>")
    body += [_run_section(run, by_name) for run in report.runs]
    body += ["<h2>How the numbers are computed</h2>", _method(report)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )

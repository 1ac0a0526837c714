"""InfluxDB line protocol: escaping, one point per line, and the measurements rtbench writes.

The exporter turns journal rows into text that InfluxDB 1.x, 2.x and 3.x all parse
the same way. Getting the escaping wrong loses data quietly (a comma in a value
splits a tag, a quote ends a string early) or makes a whole batch bounce, so the
rules live here, once, and are tested against a real InfluxDB.

Escaping (what the InfluxDB 1.x parser accepts and gives back unchanged):

- measurement: ``,`` and space are escaped with a backslash;
- tag keys, tag values, field keys: ``,``, ``=`` and space are escaped; a
  backslash is literal.
- a measurement name, tag key or field key that cannot come back as written is
  refused with ValueError (they are this module's constants, so only a new one
  can trip this): empty, holding a newline, ending in a backslash (it would
  escape the separator after it: ``a\\`` came back as measurement ``a,t=v``) or
  before a character that is escaped or a double quote, starting with a tab or NUL (skipped as
  white space), a measurement starting with ``#`` (the line is a comment:
  dropped without an error) and the key ``time`` (InfluxDB drops the point).
- tag values: a backslash at the end or before a character that is escaped
  cannot be written (the parser reads ``\\,`` as an escaped comma, and no
  escaping gives back ``\\,``), newlines end the line, and an empty tag value is
  invalid. Tag values are therefore normalised: CR and LF become spaces, those
  backslashes are dropped, and a tag whose value is
  then empty is left out. Our tag values are Kubernetes names and ids, which
  never contain any of these; the rule only keeps a stray value from breaking
  a batch.
- string fields: in double quotes, ``\\`` and ``"`` escaped; newlines are kept.
- integers get the ``i`` suffix, floats must be finite (NaN and infinities are
  left out), booleans are ``true``/``false``.

Measurements (the schema Grafana dashboards use; tags are bounded, names and
UIDs are fields, and the pod is its ordinal within the run):

``pod_phase``  one point per journal event of a run pod.
    tags: run_id, test_id, runtime_class, variant, node, phase (``first_response``),
    source (``probe``), pod (ordinal), container (container phases only; names
    come from the pod spec), failure_reason (``failed`` events only: Kubernetes'
    short reason vocabulary, anything else becomes ``other``). fields:
    latency_ms (from the run's created time, when known), uncertainty_ms,
    clock_uncertainty_ms (left out when the agent's offset was unknown), uid,
    name, namespace, reason (the full text, any phase), raw_time_ns. time: the
    event's corrected (collector timebase) ns. A tag never shares its name with
    a field: InfluxDB 3 keeps both in one column namespace, and InfluxQL on 1.x
    cannot tell them apart without ``::tag``.
``node_resources``  one point per node sample. tags: node, run_id (when the
    sample belongs to a run). fields: mem_available_bytes, mem_total_bytes, cpu_busy.
``pod_memory``  one point per pod sample of a run pod. tags: run tags, node, pod.
    field: bytes.
``pod_probe``  one point per probe attempt of a run pod. tags: run tags, node,
    pod. fields: ok, latency_ms, status_code, error.
``run_summary``  one point per phase of a stored run summary. tags: run tags,
    phase. fields: count (pods the latencies rest on), reached, out_of_order,
    over_bound (pods left out of them, collector/summaries.py), bound_ms (the
    phase's uncertainty bound, left out when it has none), min_ms, p50_ms,
    p90_ms, p99_ms, max_ms, max_uncertainty_ms, p50_uncertainty_ms (the
    latency fields left out when no pod counted: a 0 would read as a latency).
``run``  one point per stored run summary. tags: run tags. fields: state,
    replicas, all_responded_ms (left out when not every replica responded),
    memory_per_pod_bytes, failed_pods (distinct pods with a failed event: a pod
    failing for two reasons counts once), message.
``run_failures``  one point per failure reason of a summary. tags: run tags,
    reason (Kubernetes' short reason vocabulary: OOMKilled, ErrImagePull, ...).
    field: pods.

Agent and collector health (``agent_status``, ``collector_status``) are gauges, not
journal rows: ``collector.agentstatus`` writes them and documents them.

Point identity: InfluxDB keys a point by measurement, tag set and timestamp and
overwrites on a repeat, which is what makes a resend after a crash harmless.
So every point must be unique per journal row. The agent stamps every event
derived from one watch line with that line's arrival ns, so one pod update can
yield several events of the same phase at the same ns: a pod_phase point is
therefore a pod (ordinal), phase, source, container and (for failures)
failure_reason at an exact ns on one node. That separates two containers starting in one
update, and a pod-level failure from a container's in the same update. What it
cannot separate: two instances of one container reported in the same update
(a restart's ``lastState`` and its new state, same phase and reason), and two
failures whose reasons both fall outside the vocabulary; InfluxDB keeps one
point of each such pair, the journal and the summaries keep both (a restart
count or free text as a tag would let the series count grow without bound).
Probes and pod samples are per pod and ns; node samples per node and ns. Rows
of pods outside any run (events, pod samples, probes) have no bounded identity
(only their UID tells them apart, and a list stamps them all with one ns), so
they are not exported. Summary points carry the run's created time, so a
recomputed summary replaces the earlier one instead of adding to it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from rtbench.v1 import control_pb2, events_pb2

__all__ = [
    "FieldValue",
    "Row",
    "escape_key",
    "escape_measurement",
    "field_string",
    "format_field",
    "normalize_tag_value",
    "phase_name",
    "pod_phase_line",
    "probe_line",
    "reason_tag",
    "render_line",
    "run_state_name",
    "sample_line",
    "source_name",
    "summary_lines",
]

FieldValue = str | int | float | bool


class Row(Protocol):
    """A journal row by column name (sqlite3.Row, or a dict in tests)."""

    def __getitem__(self, key: str, /) -> Any: ...


# Reasons and probe errors are free text from the agents; a few KiB is plenty to
# diagnose, and it keeps one odd value from making a batch too large.
_MAX_TEXT = 4096
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_NEWLINES = str.maketrans({"\n": " ", "\r": " "})
# Backslashes InfluxDB would read as (part of) an escape: before a character that is
# escaped, or at the end. No escaping writes them back as they were (``a\\,b`` as
# ``a\\\,b`` comes back as ``a\\\\,b``), so a tag value loses them and a name is refused.
_BACKSLASH_ESCAPING = re.compile(r"\\+(?=[,= \\]|$)")
# Kubernetes reasons are one CamelCase word (OOMKilled, CrashLoopBackOff,
# ErrImagePull, Evicted, DeadlineExceeded...): a small, fixed vocabulary, so
# safe as a tag. Anything else (free text from some agent) is bucketed.
_REASON_WORD = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_OTHER_REASON = "other"


def _check_name(kind: str, name: str) -> None:
    """Refuses a measurement name or key InfluxDB would not give back as written."""
    if not name:
        raise ValueError(f"a {kind} cannot be empty")
    if "\n" in name or '\\"' in name or _BACKSLASH_ESCAPING.search(name) or name[0] in "\t\0":
        raise ValueError(
            f"a {kind} cannot hold a newline, start with a tab or NUL, or have a backslash "
            f"before a comma, '=', space, quote, backslash or its end: {name!r}"
        )
    if kind == "measurement name" and name.startswith("#"):
        raise ValueError(f"a measurement name cannot start with '#' (a comment): {name!r}")
    if kind != "measurement name" and name == "time":
        raise ValueError(f"{kind} 'time' is reserved by InfluxDB")


def escape_measurement(name: str) -> str:
    _check_name("measurement name", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Escapes a tag key, tag value or field key (already normalised, not empty)."""
    return text.translate(_KEY_ESCAPES)


def normalize_tag_value(value: str) -> str:
    """The value as InfluxDB will store it; empty means the tag is left out."""
    return _BACKSLASH_ESCAPING.sub("", value.translate(_NEWLINES))


def field_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: FieldValue) -> str | None:
    """One field value in line protocol, or None when it cannot be written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer field {value} does not fit in int64")
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return field_string(value)


def render_line(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, FieldValue | None],
    time_ns: int,
) -> str:
    """One point. Empty or None tags and None fields are left out; tags are sorted
    by key, as InfluxDB stores them. Raises ValueError when no field is left."""
    parts = [_measurement(measurement)]
    for key in sorted(tags):
        raw = tags[key]
        if raw:
            pair = _tag_pair(key, raw)
            if pair:
                parts.append(pair)
    rendered = []
    for key, field in fields.items():
        if field is None:
            continue
        text = format_field(field)
        if text is not None:
            rendered.append(f"{_field_key(key)}={text}")
    if not rendered:
        raise ValueError(f"a {measurement} point needs at least one field")
    return f"{','.join(parts)} {','.join(rendered)} {time_ns}"


# Tag values repeat from point to point (run ids, nodes, phases, ordinals), so
# their escaped form is cached; this roughly halves the cost of a line.
@functools.lru_cache(maxsize=1 << 16)
def _tag_pair(key: str, value: str) -> str:
    _check_name("tag key", key)
    normalized = normalize_tag_value(value)
    return f"{escape_key(key)}={escape_key(normalized)}" if normalized else ""


@functools.lru_cache(maxsize=1 << 10)
def _field_key(key: str) -> str:
    _check_name("field key", key)
    return escape_key(key)


@functools.lru_cache(maxsize=1 << 10)
def _measurement(name: str) -> str:
    return escape_measurement(name)


def phase_name(phase: int) -> str:
    """``PHASE_FIRST_RESPONSE`` → ``first_response``; unknown numbers stay numbers."""
    try:
        return events_pb2.Phase.Name(phase).removeprefix("PHASE_").lower()
    except ValueError:
        return str(phase)


def source_name(source: int) -> str:
    try:
        return events_pb2.Source.Name(source).removeprefix("SOURCE_").lower()
    except ValueError:
        return str(source)


def run_state_name(state: int) -> str:
    try:
        return control_pb2.RunState.Name(state).removeprefix("RUN_STATE_").lower()
    except ValueError:
        return str(state)


def ms(ns: int) -> float:
    return ns / 1e6


def _run_tags(row: Row) -> dict[str, str | None]:
    return {
        "run_id": row["run_id"],
        "test_id": row["test_id"],
        "runtime_class": row["runtime_class"],
        "variant": row["variant"],
    }


def reason_tag(reason: str | None) -> str | None:
    """The ``failure_reason`` tag of a failed event: the Kubernetes reason word, else
    ``other`` (a tag's values must stay few: each one is a series)."""
    if not reason:
        return None
    return reason if _REASON_WORD.fullmatch(reason) else _OTHER_REASON


def pod_phase_line(row: Row) -> str | None:
    """A pod_phase point from an events row joined with its run and pod ordinal
    (columns as selected by the exporter; created_ns and the run columns may be
    NULL); None for a pod outside any run, which has no bounded identity."""
    ordinal = row["ordinal"]
    if not row["run_id"] or ordinal is None:
        return None
    tags = _run_tags(row)
    tags["node"] = row["node"]
    tags["phase"] = phase_name(row["phase"])
    tags["source"] = source_name(row["source"])
    tags["pod"] = str(ordinal)
    tags["container"] = row["container"]
    if row["phase"] == events_pb2.PHASE_FAILED:
        tags["failure_reason"] = reason_tag(row["reason"])
    corrected = row["corrected_ns"]
    created = row["created_ns"]
    clock_uncertainty = row["clock_uncertainty_ns"]
    return render_line(
        "pod_phase",
        tags,
        {
            "latency_ms": ms(corrected - created) if created is not None else None,
            "uncertainty_ms": ms(row["uncertainty_ns"]),
            "clock_uncertainty_ms": ms(clock_uncertainty) if clock_uncertainty >= 0 else None,
            "uid": row["pod_uid"],
            "name": row["name"] or None,
            "namespace": row["namespace"] or None,
            "reason": _clip(row["reason"]),
            "raw_time_ns": row["time_ns"],
        },
        corrected,
    )


def sample_line(row: Row) -> str | None:
    """A node_resources point (no pod) or a pod_memory point (a pod of a run);
    None for a pod sample outside any run, which has no bounded identity."""
    if not row["pod_uid"]:
        return render_line(
            "node_resources",
            {"node": row["node"], "run_id": row["run_id"]},
            {
                "mem_available_bytes": row["mem_available_bytes"],
                "mem_total_bytes": row["mem_total_bytes"],
                "cpu_busy": row["cpu_busy"],
            },
            row["corrected_ns"],
        )
    if not row["run_id"] or row["ordinal"] is None:
        return None
    tags = _run_tags(row)
    tags["node"] = row["node"]
    tags["pod"] = str(row["ordinal"])
    return render_line(
        "pod_memory", tags, {"bytes": row["pod_memory_bytes"] or 0}, row["corrected_ns"]
    )


def probe_line(row: Row) -> str | None:
    """A pod_probe point; None for a pod outside any run (no bounded identity)."""
    if not row["run_id"] or row["ordinal"] is None:
        return None
    tags = _run_tags(row)
    tags["node"] = row["node"]
    tags["pod"] = str(row["ordinal"])
    latency = row["latency_ns"]
    return render_line(
        "pod_probe",
        tags,
        {
            "ok": bool(row["ok"]),
            "latency_ms": ms(latency) if latency is not None else None,
            "status_code": row["status_code"],
            "error": _clip(row["error"]),
        },
        row["corrected_ns"],
    )


def _clip(text: str | None) -> str | None:
    """Free text from agents, kept well under InfluxDB's 64 KiB string limit."""
    if not text:
        return None
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def summary_lines(summary: control_pb2.RunSummary, fallback_time_ns: int) -> Iterable[str]:
    """The run_summary, run and run_failures points of one stored summary.

    Timestamped with the run's created time (else the fallback, the time the
    summary was computed), so the latest summary of a run replaces earlier ones.
    """
    spec = summary.spec
    time_ns = summary.created_ns or fallback_time_ns
    run_tags: dict[str, str | None] = {
        "run_id": spec.run_id,
        "test_id": spec.test_id,
        "runtime_class": spec.runtime_class,
        "variant": spec.variant,
    }
    bounds = {b.phase: b.max_uncertainty_ns for b in summary.max_uncertainty}
    for stats in summary.phases:
        measured = stats.count > 0
        bound = bounds.get(stats.phase)
        yield render_line(
            "run_summary",
            {**run_tags, "phase": phase_name(stats.phase)},
            {
                "count": stats.count,
                "reached": stats.reached,
                "out_of_order": stats.out_of_order,
                "over_bound": stats.over_bound,
                "bound_ms": ms(bound) if bound is not None else None,
                "min_ms": ms(stats.min_ns) if measured else None,
                "p50_ms": ms(stats.p50_ns) if measured else None,
                "p90_ms": ms(stats.p90_ns) if measured else None,
                "p99_ms": ms(stats.p99_ns) if measured else None,
                "max_ms": ms(stats.max_ns) if measured else None,
                "max_uncertainty_ms": ms(stats.max_uncertainty_ns) if measured else None,
                "p50_uncertainty_ms": ms(stats.p50_uncertainty_ns) if measured else None,
            },
            time_ns,
        )
    yield render_line(
        "run",
        run_tags,
        {
            "state": run_state_name(summary.state),
            "replicas": spec.replicas,
            "all_responded_ms": ms(summary.all_responded_ns) if summary.all_responded_ns else None,
            "memory_per_pod_bytes": summary.memory_per_pod_bytes,
            "failed_pods": summary.failed_pods,
            "message": summary.message or None,
        },
        time_ns,
    )
    for failure in summary.failures:
        yield render_line(
            "run_failures",
            {**run_tags, "reason": failure.reason or "unknown"},
            {"pods": failure.count},
            time_ns,
        )

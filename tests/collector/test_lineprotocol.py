"""Line protocol rendering: the escaping rules, checked against a real InfluxDB 1.x.

The property tests write what ``render_line`` makes of arbitrary text and read
it back with InfluxQL: string fields must come back identical, tag values as
``normalize_tag_value`` documents (identical unless they hold CR/LF or end in
a backslash).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector.lineprotocol import (
    escape_key,
    escape_measurement,
    field_string,
    format_field,
    normalize_tag_value,
    phase_name,
    pod_phase_line,
    probe_line,
    reason_tag,
    render_line,
    sample_line,
    source_name,
    summary_lines,
)
from rtbench.influxd import LocalInfluxd
from rtbench.v1 import control_pb2, events_pb2

DB = "lineprotocol"
_times = itertools.count(1_700_000_000_000_000_000, 1_000)


@pytest.fixture(scope="module")
def db(influxd: LocalInfluxd) -> LocalInfluxd:
    influxd.create_database(DB)
    return influxd


def read_back(
    server: LocalInfluxd, measurement: str, first: int, last: int
) -> list[dict[str, Any]]:
    """Points of one measurement between two timestamps, as column → value dicts."""
    results = server.query(
        f'SELECT * FROM "{measurement}" WHERE time >= {first} AND time <= {last}', db=DB
    )
    series = results[0].get("series", [])
    if not series:
        return []
    columns = series[0]["columns"]
    return [dict(zip(columns, values, strict=True)) for values in series[0]["values"]]


def test_escaping_rules() -> None:
    assert escape_measurement("a b,c=d") == "a\\ b\\,c=d"
    assert escape_key("a b,c=d\\e") == "a\\ b\\,c\\=d\\e"
    assert field_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert normalize_tag_value("line\nbreak\r\\\\") == "line break "
    with pytest.raises(ValueError):
        escape_measurement("")


def test_field_values() -> None:
    assert format_field(True) == "true"
    assert format_field(False) == "false"
    assert format_field(-42) == "-42i"
    assert format_field(0.25) == "0.25"
    assert format_field(math.nan) is None
    assert format_field(math.inf) is None
    assert format_field("x") == '"x"'
    with pytest.raises(ValueError):
        format_field(2**63)


def test_render_line_sorts_tags_and_drops_empty_parts() -> None:
    line = render_line(
        "m",
        {"z": "1", "a": "2", "empty": "", "none": None, "slash": "\\"},
        {"f": 1, "skip": None, "nan": math.nan},
        123,
    )
    assert line == "m,a=2,z=1 f=1i 123"
    with pytest.raises(ValueError):
        render_line("m", {"a": "b"}, {"x": None}, 1)


def test_enum_names() -> None:
    assert phase_name(events_pb2.PHASE_FIRST_RESPONSE) == "first_response"
    assert source_name(events_pb2.SOURCE_CONTAINERD) == "containerd"
    assert phase_name(999) == "999"


EVENT_ROW: dict[str, Any] = {
    "id": 1,
    "run_id": "run-1",
    "test_id": "t1",
    "runtime_class": "kata-fc",
    "variant": "16Mi",
    "node": "node-a",
    "phase": events_pb2.PHASE_READY,
    "source": events_pb2.SOURCE_WATCH,
    "ordinal": 3,
    "pod_uid": "uid-3",
    "name": "web-3",
    "namespace": "bench",
    "reason": None,
    "container": None,
    "time_ns": 5_000_000,
    "corrected_ns": 12_500_000,
    "created_ns": 2_500_000,
    "uncertainty_ns": 1_000_000,
    "clock_uncertainty_ns": -1,
}


def test_pod_phase_line() -> None:
    line = pod_phase_line(EVENT_ROW)
    assert line == (
        "pod_phase,node=node-a,phase=ready,pod=3,run_id=run-1,runtime_class=kata-fc,"
        'source=watch,test_id=t1,variant=16Mi latency_ms=10.0,uncertainty_ms=1.0,uid="uid-3",'
        'name="web-3",namespace="bench",raw_time_ns=5000000i 12500000'
    )
    # A pod outside any run has no bounded identity: no point (the exporter counts it skipped).
    outside = {**EVENT_ROW, "run_id": "", "ordinal": None, "test_id": None, "created_ns": None}
    outside["runtime_class"] = outside["variant"] = None
    assert pod_phase_line(outside) is None
    assert pod_phase_line({**EVENT_ROW, "ordinal": None}) is None


def test_pod_phase_container_and_failure_reason_tags() -> None:
    started = {**EVENT_ROW, "phase": events_pb2.PHASE_CONTAINER_STARTED, "container": "app"}
    line = pod_phase_line(started)
    assert line is not None
    assert line.startswith("pod_phase,container=app,node=node-a,phase=container_started,pod=3,")
    assert "container=" not in line.split(" ")[1]  # a tag, not also a field
    failed = {**EVENT_ROW, "phase": events_pb2.PHASE_FAILED, "reason": "OOMKilled"}
    line = pod_phase_line(failed)
    assert line is not None
    assert ",failure_reason=OOMKilled," in line and 'reason="OOMKilled"' in line
    odd = pod_phase_line({**failed, "reason": "back-off 5m0s restarting failed container"})
    assert odd is not None and ",failure_reason=other," in odd
    # Only failures get the tag: other reasons (probe errors...) are free text.
    gone = pod_phase_line({**EVENT_ROW, "phase": events_pb2.PHASE_GONE, "reason": "Gone"})
    assert gone is not None and "failure_reason" not in gone
    assert [reason_tag(r) for r in ("Error", "", None, "x y", "lower", "A" * 65)] == [
        "Error",
        None,
        None,
        "other",
        "other",
        "other",
    ]


def test_sample_and_probe_lines() -> None:
    node = {
        "run_id": None,
        "pod_uid": None,
        "node": "n",
        "corrected_ns": 7,
        "mem_available_bytes": 10,
        "mem_total_bytes": 20,
        "cpu_busy": 0.5,
    }
    assert sample_line(node) == (
        "node_resources,node=n mem_available_bytes=10i,mem_total_bytes=20i,cpu_busy=0.5 7"
    )
    pod = {**EVENT_ROW, "pod_memory_bytes": 4096, "corrected_ns": 8}
    assert sample_line(pod) == (
        "pod_memory,node=node-a,pod=3,run_id=run-1,runtime_class=kata-fc,test_id=t1,"
        "variant=16Mi bytes=4096i 8"
    )
    assert sample_line({**pod, "run_id": None, "ordinal": None}) is None
    probe = {**EVENT_ROW, "ok": 0, "latency_ns": 2_000_000, "status_code": 503, "error": "no"}
    assert probe_line(probe) == (
        "pod_probe,node=node-a,pod=3,run_id=run-1,runtime_class=kata-fc,test_id=t1,"
        'variant=16Mi ok=false,latency_ms=2.0,status_code=503i,error="no" 12500000'
    )
    assert probe_line({**probe, "run_id": None}) is None


def test_summary_lines() -> None:
    summary = control_pb2.RunSummary(
        spec=control_pb2.RunSpec(run_id="r", test_id="t", runtime_class="runc", replicas=2),
        state=control_pb2.RUN_STATE_SUCCEEDED,
        created_ns=1000,
        all_responded_ns=0,
        memory_per_pod_bytes=1.5,
    )
    summary.phases.add(
        phase=events_pb2.PHASE_FIRST_RESPONSE, count=2, reached=3, over_bound=1, p50_ns=3_000_000
    )
    summary.phases.add(phase=events_pb2.PHASE_READY, count=0, reached=2, out_of_order=2)
    summary.max_uncertainty.add(phase=events_pb2.PHASE_FIRST_RESPONSE, max_uncertainty_ns=10**7)
    summary.failures.add(reason="OOMKilled", count=1)
    summary.failures.add(reason="Error", count=1)
    summary.failed_pods = 1  # the same pod, reported for two reasons
    lines = list(summary_lines(summary, 5))
    assert lines[0].startswith("run_summary,phase=first_response,run_id=r,runtime_class=runc,")
    assert "count=2i" in lines[0] and "p50_ms=3.0" in lines[0] and lines[0].endswith(" 1000")
    assert "reached=3i,out_of_order=0i,over_bound=1i,bound_ms=10.0," in lines[0]
    # No pod counted: the latency fields are left out, never written as 0 ms.
    assert lines[1] == (
        "run_summary,phase=ready,run_id=r,runtime_class=runc,test_id=t"
        " count=0i,reached=2i,out_of_order=2i,over_bound=0i 1000"
    )
    lines.pop(1)
    assert lines[1] == (
        'run,run_id=r,runtime_class=runc,test_id=t state="succeeded",replicas=2i,'
        "memory_per_pod_bytes=1.5,failed_pods=1i 1000"
    )
    assert (
        lines[2]
        == "run_failures,reason=OOMKilled,run_id=r,runtime_class=runc,test_id=t pods=1i 1000"
    )


def test_measurement_and_keys_round_trip(db: LocalInfluxd) -> None:
    t = next(_times)
    db.write(DB, render_line("odd name,x", {"tag key,=": "v"}, {"field key=,": 1}, t))
    (point,) = read_back(db, "odd name,x", t, t)
    assert point["tag key,="] == "v"
    assert point["field key=,"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=25))
@example(
    values=["a\\", "\\", "x\ny\r", " lead", "trail ", "a,b=c d", '"q"', '\\"', "\\\\,", "=", "#"]
)
def test_strings_round_trip_through_influxdb(db: LocalInfluxd, values: list[str]) -> None:
    times = [next(_times) for _ in values]
    body = "\n".join(
        render_line("roundtrip", {"t": value}, {"s": value, "i": index}, at)
        for index, (value, at) in enumerate(zip(values, times, strict=True))
    )
    db.write(DB, body)
    points = read_back(db, "roundtrip", times[0], times[-1])
    assert [p["i"] for p in points] == list(range(len(values)))
    for point, value in zip(points, values, strict=True):
        assert point["s"] == value
        assert point["t"] == (normalize_tag_value(value) or None)

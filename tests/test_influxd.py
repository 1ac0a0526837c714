"""The InfluxDB fixture is a real server: write + query round trips, restarts keep data."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtbench.influxd import InfluxdError, LocalInfluxd


def test_write_query_round_trip(influxd: LocalInfluxd) -> None:
    influxd.create_database("roundtrip")
    influxd.write(
        "roundtrip",
        "pod_phase,run_id=r1,phase=ready,pod=0 latency_ms=12.5 1700000000000000000\n"
        "pod_phase,run_id=r1,phase=ready,pod=1 latency_ms=14.0 1700000000100000000\n",
    )
    results = influxd.query(
        "SELECT count(latency_ms), max(latency_ms) FROM pod_phase WHERE run_id='r1'", db="roundtrip"
    )
    series = results[0]["series"][0]
    assert series["columns"] == ["time", "count", "max"]
    assert series["values"][0][1:] == [2, 14.0]


def test_restart_keeps_data_and_port(own_influxd: LocalInfluxd) -> None:
    own_influxd.create_database("keep")
    own_influxd.write("keep", "m v=1 1000000000")
    url = own_influxd.url
    own_influxd.stop()
    assert not own_influxd.ping()
    own_influxd.start()
    assert own_influxd.url == url
    values = own_influxd.query("SELECT v FROM m", db="keep")[0]["series"][0]["values"]
    assert values == [[1000000000, 1]]


def test_bad_query_and_bad_write_raise(influxd: LocalInfluxd) -> None:
    with pytest.raises(InfluxdError, match="query"):
        influxd.query("SELEKT nonsense")
    influxd.create_database("bad")
    with pytest.raises(InfluxdError, match="write failed: 400"):
        influxd.write("bad", "this is not line protocol")


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InfluxdError, match="apt-get install influxdb"):
        LocalInfluxd()


def test_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    server = LocalInfluxd(root=tmp_path, binary="/bin/false")
    with pytest.raises(InfluxdError, match="exited with 1 while starting"):
        server.start()

"""Settings: defaults < environment < flags, and refusals without any I/O."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.cli import UsageError, parse_serve
from collector.errors import ConfigError
from collector.influxwrite import InfluxTarget, InvalidTarget
from collector.settings import OPTIONS, CollectorSettings, from_sources, is_loopback
from rtbench.v1 import agent_pb2, events_pb2


def test_defaults_are_valid_and_loopback() -> None:
    settings = from_sources({}, {})
    assert settings == CollectorSettings()
    assert settings.listen == "127.0.0.1:7070"
    assert settings.journal == Path("rtbench-journal.sqlite")
    assert not settings.influx_enabled


def test_every_flag_has_an_environment_variable_and_a_field() -> None:
    fields = set(CollectorSettings.__dataclass_fields__)
    for option in OPTIONS:
        assert option.env == "RTBENCH_COLLECTOR_" + option.flag[2:].upper().replace("-", "_")
        assert option.dest in fields or option.dest == "listen"


def test_environment_over_defaults_and_flags_over_environment() -> None:
    env = {
        "RTBENCH_COLLECTOR_LISTEN": "127.0.0.2:9000",
        "RTBENCH_COLLECTOR_JOURNAL": "/tmp/env.sqlite",
        "RTBENCH_COLLECTOR_MAX_PENDING_BATCHES": "7",
        "RTBENCH_COLLECTOR_LOG_LEVEL": "DEBUG",
        "RTBENCH_COLLECTOR_AGENT_TOKEN": "",  # empty counts as unset
    }
    settings = parse_serve([], env)
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.2", 9000)
    assert settings.journal == Path("/tmp/env.sqlite")
    assert settings.max_pending_batches == 7
    assert settings.log_level == "debug"
    assert settings.agent_token == ""
    flagged = parse_serve(["--listen", "127.0.0.1:0", "--max-pending-batches", "9"], env)
    assert (flagged.listen_host, flagged.listen_port) == ("127.0.0.1", 0)
    assert flagged.max_pending_batches == 9
    assert flagged.journal == Path("/tmp/env.sqlite")


def test_switch_from_environment_and_flag() -> None:
    wide = ["--listen", "0.0.0.0:7070"]
    with pytest.raises(ConfigError, match="refusing to listen on non-loopback"):
        parse_serve(wide, {})
    assert parse_serve(wide, {"RTBENCH_COLLECTOR_INSECURE": "yes"}).insecure
    assert parse_serve([*wide, "--insecure"], {}).insecure
    with pytest.raises(ConfigError, match="refusing"):
        parse_serve(wide, {"RTBENCH_COLLECTOR_INSECURE": "false"})
    with pytest.raises(ConfigError, match="RTBENCH_COLLECTOR_INSECURE: must be true or false"):
        parse_serve(wide, {"RTBENCH_COLLECTOR_INSECURE": "maybe"})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RTBENCH_COLLECTOR_MAX_BATCH_EVENTS: must be an integer"):
        parse_serve([], {"RTBENCH_COLLECTOR_MAX_BATCH_EVENTS": "lots"})
    with pytest.raises(ConfigError, match="RTBENCH_COLLECTOR_LISTEN: must be HOST:PORT"):
        parse_serve([], {"RTBENCH_COLLECTOR_LISTEN": "nowhere"})


def test_token_allows_a_wide_address() -> None:
    settings = parse_serve(["--listen", "0.0.0.0:7070", "--agent-token", "s3cret"], {})
    assert settings.listen_host == "0.0.0.0"
    token_file = parse_serve(
        ["--listen", "[::]:7070", "--agent-token-file", "/run/secrets/agent"], {}
    )
    assert token_file.listen == "[::]:7070"
    # Only a control token leaves agents open: still refused.
    with pytest.raises(ConfigError, match="refusing"):
        parse_serve(["--listen", "10.0.0.5:7070", "--control-token", "c"], {})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("collector.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agent_token": "a", "agent_token_file": Path("f")}, "not both"),
        ({"control_token": "a", "control_token_file": Path("f")}, "not both"),
        ({"tls_cert": Path("c")}, "go together"),
        ({"tls_key": Path("k")}, "go together"),
        ({"tls_client_ca": Path("ca")}, "needs --tls-cert"),
        ({"influx_db": "x"}, "--influx-db needs --influx-url"),
        ({"influx_url": "http://h:8086"}, "v1 needs --influx-db"),
        ({"influx_url": "h:8086", "influx_db": "x"}, "must start with http"),
        (
            {"influx_url": "http://h", "influx_db": "x", "influx_bucket": "b"},
            "need --influx-api v2",
        ),
        (
            {"influx_url": "http://h", "influx_db": "x", "influx_password": "p"},
            "needs --influx-user",
        ),
        ({"influx_url": "http://h", "influx_api": "v2", "influx_org": "o"}, "v2 needs"),
        (
            {
                "influx_url": "http://h",
                "influx_api": "v2",
                "influx_org": "o",
                "influx_bucket": "b",
                "influx_token": "t",
                "influx_db": "x",
            },
            "are for --influx-api v1",
        ),
        ({"influx_url": "http://h", "influx_api": "v3"}, "v1 or v2"),
        ({"listen_port": 70000}, "between 0 and 65535"),
        ({"max_batch_events": 0}, "at least 1"),
        ({"max_pending_batches": 0}, "at least 1"),
        ({"max_message_bytes": 100}, "max_message_bytes"),
        ({"max_export_backlog": -1}, ">= 0"),
        ({"shutdown_grace": float("nan")}, ">= 0"),
        ({"log_level": "loud"}, "log level"),
    ],
)
def test_impossible_combinations_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(CollectorSettings(), **changes).check()


def test_valid_influx_targets() -> None:
    v1 = replace(
        CollectorSettings(),
        influx_url="http://127.0.0.1:8086",
        influx_db="rtbench",
        influx_user="u",
        influx_password="p",
    )
    v1.check()
    v2 = replace(
        CollectorSettings(),
        influx_url="https://influx.example",
        influx_api="v2",
        influx_org="o",
        influx_bucket="b",
        influx_token="t",
    )
    v2.check()
    assert v1.influx_enabled and v2.influx_enabled


def test_influx_target_rules_are_the_targets_own() -> None:
    """check() refuses exactly what InfluxTarget refuses (one source of truth)."""
    refused: list[dict[str, Any]] = [
        {"influx_url": "h:8086", "influx_db": "x"},
        {"influx_url": "http://h:8086"},
        {"influx_url": "http://h", "influx_api": "v2", "influx_org": "o"},
        {"influx_url": "http://h", "influx_api": "v3"},
    ]
    for changes in refused:
        settings = replace(CollectorSettings(), **changes)
        with pytest.raises(InvalidTarget) as raised:
            settings.check()
        with pytest.raises(InvalidTarget) as direct:
            settings.influx_target()
        assert str(raised.value) == str(direct.value)
    v1 = replace(CollectorSettings(), influx_url="http://h:8086", influx_db="rtbench")
    assert v1.influx_target() == InfluxTarget("http://h:8086", database="rtbench")
    assert CollectorSettings().influx_target() is None


def test_journal_path_must_name_a_file() -> None:
    with pytest.raises(UsageError, match="--journal: must not be empty"):
        parse_serve(["--journal", ""], {})
    with pytest.raises(ConfigError, match="RTBENCH_COLLECTOR_JOURNAL: must not be empty"):
        parse_serve([], {"RTBENCH_COLLECTOR_JOURNAL": "  "})
    with pytest.raises(ConfigError, match="must name a file"):
        replace(CollectorSettings(), journal=Path("")).check()


def test_default_message_limit_holds_a_full_batch() -> None:
    """A batch of max_batch_events realistic records must fit, or the agent is
    answered RESOURCE_EXHAUSTED (push back) for it forever."""
    defaults = CollectorSettings()
    ref = events_pb2.PodRef(
        uid="0f5c8a3e-1b2d-4c6e-9f10-2a3b4c5d6e7f",
        namespace="rtbench-bench",
        name="http-server-bench-kata-fc-16mi-7d9f8c6b5-x2k4p",
        node="worker-node-017.cluster.example",
        run_id="run-20250615-kata-fc-16mi-r03",
        labels={
            "app": "c-http-server",
            "test_id": "startup-latency",
            "runtime_class": "kata-fc",
            "variant": "16Mi",
        },
    )
    batch = agent_pb2.Batch(sequence=2**40, sealed_ns=1_750_000_000_000_000_000)
    for i in range(defaults.max_batch_events):
        ev = batch.events.add(pod=ref, phase=events_pb2.PHASE_CONTAINER_STARTED, source=1)
        ev.time_ns = ev.monotonic_ns = ev.api_time_ns = 1_750_000_000_000_000_000 + i
        ev.uncertainty_ns = 1_000_000
        ev.container = "http-server"
        ev.attributes["restart_count"] = "0"
        ev.attributes["pod_ip"] = "10.244.17.203"
    size = agent_pb2.AgentMessage(batch=batch).ByteSize()
    assert size > 16 * 2**20  # the old default was too small
    assert size < defaults.max_message_bytes

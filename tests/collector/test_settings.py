"""Settings: defaults < environment < flags, and refusals without any I/O."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.cli import parse_serve
from collector.errors import ConfigError
from collector.settings import OPTIONS, CollectorSettings, from_sources, is_loopback


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

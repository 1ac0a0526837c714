"""Agent settings: defaults < environment < flags, and a clear refusal of every bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.cli import parse_run, run_parser
from agent.errors import ConfigError
from agent.observing import ObserveSettings
from agent.settings import (
    OPTIONS,
    AgentSettings,
    UplinkSettings,
    help_text,
    settings_from_sources,
)

BASE = ["--node", "n1", "--collector", "127.0.0.1:7070"]


def test_defaults() -> None:
    settings = parse_run(BASE, {})
    assert settings.node == "n1"
    assert settings.observe == ObserveSettings(node="n1")
    assert settings.uplink == UplinkSettings(collector="127.0.0.1:7070")
    assert settings.uplink.state_dir == Path("/var/lib/rtbench-agent")
    assert settings.uplink.batch_max_events == 500
    assert settings.uplink.flush_interval_s == 0.1
    assert settings.uplink.spool_max_bytes == 256 * 2**20
    assert settings.kubeconfig is None and settings.log_level == "info"
    assert not settings.uplink.uses_tls


def test_environment_over_defaults_and_flags_over_environment() -> None:
    env = {
        "RTBENCH_AGENT_COLLECTOR": "localhost:1",
        "RTBENCH_AGENT_BATCH_MAX_EVENTS": "200",
        "RTBENCH_AGENT_PROBE_RATE": "500",
        "RTBENCH_AGENT_LOG_LEVEL": "debug",
        "RTBENCH_AGENT_SPOOL_MAX_BYTES": "64Mi",
        "RTBENCH_AGENT_NAMESPACE": "bench",
        "RTBENCH_AGENT_INSECURE": "true",
        "NODE_NAME": "from-downward-api",
    }
    from_env = parse_run([], env)
    assert from_env.node == "from-downward-api"
    assert from_env.uplink.collector == "localhost:1"
    assert from_env.uplink.batch_max_events == 200
    assert from_env.observe.probe_rate == 500.0
    assert from_env.observe.namespace == "bench"
    assert from_env.log_level == "debug"
    assert from_env.uplink.spool_max_bytes == 64 * 2**20
    assert from_env.uplink.insecure is True

    flags = parse_run(
        "--node n9 --collector 10.1.2.3:7070 --batch-max-events 300 "
        "--probe-rate 100 --log-level WARNING --spool-max-bytes 2G".split(),
        env,
    )
    assert flags.node == "n9"
    assert flags.uplink.collector == "10.1.2.3:7070"  # allowed: --insecure came from env
    assert flags.uplink.batch_max_events == 300
    assert flags.observe.probe_rate == 100.0
    assert flags.log_level == "warning"
    assert flags.uplink.spool_max_bytes == 2 * 1000**3
    assert flags.observe.namespace == "bench", "unset flags keep the environment's value"
    off = parse_run("--node n9 --collector 10.1.2.3:7070 --probe-rate 0".split(), env)
    assert off.observe.probe_rate == 0, "0 turns the prober off"


def test_node_sources_in_order() -> None:
    env = {"NODE_NAME": "downward", "RTBENCH_AGENT_COLLECTOR": "127.0.0.1:1"}
    assert parse_run([], env).node == "downward"
    assert parse_run([], {**env, "RTBENCH_AGENT_NODE": "explicit"}).node == "explicit"
    assert parse_run(["--node", "flag"], {**env, "RTBENCH_AGENT_NODE": "x"}).node == "flag"


def test_empty_environment_values_are_unset() -> None:
    env = {"RTBENCH_AGENT_BATCH_MAX_EVENTS": "", "RTBENCH_AGENT_TOKEN": ""}
    settings = parse_run(BASE, env)
    assert settings.uplink.batch_max_events == 500 and settings.uplink.token is None


def test_every_option_names_a_settings_field() -> None:
    sections = {
        "agent": AgentSettings,
        "uplink": UplinkSettings,
        "observe": ObserveSettings,
    }
    for option in OPTIONS:
        names = {f.name for f in dataclasses.fields(sections[option.section])}
        assert option.name in names, option.flag
        assert option.env == "RTBENCH_AGENT_" + option.flag[2:].upper().replace("-", "_")
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)


def test_help_states_every_default() -> None:
    sections = {"agent": AgentSettings, "uplink": UplinkSettings, "observe": ObserveSettings}
    for option in OPTIONS:
        field = {f.name: f for f in dataclasses.fields(sections[option.section])}[option.name]
        unset = field.default is dataclasses.MISSING or field.default is None
        if not unset and not isinstance(field.default, bool):  # a switch's default is off
            assert "default:" in help_text(option), option.flag
    shown = {o.flag: help_text(o) for o in OPTIONS}
    assert shown["--flush-interval"].endswith("(default: 0.1)")
    assert shown["--spool-max-bytes"].endswith("(default: 256Mi)")
    assert shown["--state-dir"].endswith("(default: /var/lib/rtbench-agent)")
    kubeconfig = shown["--kubeconfig"]
    order = ("KUBERNETES_SERVICE_HOST", "$KUBECONFIG", "~/.kube/config")
    assert all(word in kubeconfig for word in order), kubeconfig
    assert sorted(order, key=kubeconfig.index) == list(order)
    assert "(default: 90)" in " ".join(run_parser().format_help().split())


def test_token_is_not_in_the_repr() -> None:
    settings = parse_run([*BASE, "--token", "s3cret"], {})
    assert settings.uplink.token == "s3cret"
    assert "s3cret" not in repr(settings)


def test_tls_settings() -> None:
    settings = parse_run(
        "--node n1 --collector collector.example:7070 --tls-ca /ca.pem "
        "--tls-cert /c.pem --tls-key /c.key --tls-server-name collector".split(),
        {},
    )
    assert settings.uplink.uses_tls
    assert settings.uplink.tls_ca == Path("/ca.pem")
    assert (settings.uplink.host, settings.uplink.port) == ("collector.example", 7070)
    v6 = parse_run(["--node", "n1", "--collector", "[::1]:7070"], {})
    assert (v6.uplink.host, v6.uplink.port) == ("::1", 7070)


BAD: list[tuple[list[str], dict[str, str], str]] = [
    (["--collector", "127.0.0.1:1"], {}, "--node is required"),
    (["--node", "n1"], {}, "--collector is required"),
    (["--node", "n1", "--collector", "nohost"], {}, "--collector must be HOST:PORT"),
    (["--node", "n1", "--collector", "h:99999"], {}, "port 1-65535"),
    (["--node", "n1", "--collector", "10.0.0.5:7070"], {}, "not on loopback"),
    ([*BASE, "--batch-max-events", "0"], {}, "--batch-max-events must be an integer of at least 1"),
    ([*BASE, "--batch-max-events", "many"], {}, "--batch-max-events: must be an integer"),
    ([*BASE, "--flush-interval", "0.5"], {}, "--flush-interval must be at most 0.1 s"),
    ([*BASE, "--flush-interval", "-1"], {}, "--flush-interval must be positive"),
    ([*BASE, "--flush-interval", "nan"], {}, "--flush-interval: must be a finite number"),
    ([*BASE, "--token", "a", "--token-file", "/t"], {}, "not both"),
    ([*BASE, "--token", "a b"], {}, "--token must be"),
    ([*BASE, "--tls-ca", "/ca", "--tls-cert", "/c"], {}, "--tls-cert and --tls-key go together"),
    ([*BASE, "--tls-cert", "/c", "--tls-key", "/k"], {}, "--tls-cert needs --tls-ca"),
    ([*BASE, "--tls-ca", "/ca", "--insecure"], {}, "--insecure contradicts --tls-ca"),
    ([*BASE, "--spool-max-bytes", "10"], {}, "--spool-max-bytes must be an integer of at least"),
    ([*BASE, "--spool-max-bytes", "12XB"], {}, "must be a byte count"),
    ([*BASE, "--reconnect-min", "10", "--reconnect-max", "1"], {}, "must not exceed"),
    ([*BASE, "--agent-id", "bad id"], {}, "--agent-id must be"),
    ([*BASE, "--log-level", "loud"], {}, "--log-level must be one of"),
    ([*BASE, "--probe-rate", "-5"], {}, "probe_rate must be a positive number"),
    ([*BASE, "--label-selector", "app in ("], {}, "label_selector"),
    (BASE, {"RTBENCH_AGENT_WINDOW": "many"}, "RTBENCH_AGENT_WINDOW: must be an integer"),
    (BASE, {"RTBENCH_AGENT_INSECURE": "maybe"}, "RTBENCH_AGENT_INSECURE: must be true or false"),
]


@pytest.mark.parametrize(("argv", "env", "message"), BAD)
def test_bad_values_are_refused_with_a_clear_message(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run(argv, env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_from_sources_takes_a_plain_mapping() -> None:
    settings = settings_from_sources(
        {"NODE_NAME": "n"}, {"collector": "127.0.0.1:5", "insecure": True, "window": "3"}
    )
    assert settings.uplink.insecure and settings.uplink.window == 3

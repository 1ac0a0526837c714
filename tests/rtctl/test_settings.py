"""rtctl's connection settings, run requests and workload manifest: pure, no I/O.

Precedence (defaults < environment < flags), the refusals with one clear line,
and the Deployment shape the agent and old dashboards depend on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rtctl.errors import UsageError
from rtctl.runcli import run_request
from rtctl.settings import ConnectionSettings, add_connection_options, connection_settings
from rtctl.startrun import RunRequest, new_run_id
from rtctl.workload import (
    PROBE_PORT_ANNOTATION,
    RUN_ID_LABEL,
    deployment_name,
    pod_labels,
    workload_deployment,
)


def parse(
    argv: list[str], environ: dict[str, str], *, kubernetes: bool = True
) -> ConnectionSettings:
    parser = argparse.ArgumentParser()
    add_connection_options(parser, kubernetes=kubernetes)
    return connection_settings(parser.parse_args(argv), environ)


def test_defaults_point_at_a_local_collector() -> None:
    settings = parse([], {})
    assert settings == ConnectionSettings()
    assert settings.collector == "127.0.0.1:7070"
    assert settings.kubeconfig is None and settings.context is None
    assert not settings.uses_tls


def test_environment_fills_in_and_flags_win() -> None:
    environ = {
        "RTBENCH_RTCTL_COLLECTOR": "127.0.0.1:9000",
        "RTBENCH_RTCTL_TOKEN": "from-env",
        "RTBENCH_RTCTL_KUBECONFIG": "/env/kubeconfig",
        "RTBENCH_RTCTL_CONTEXT": "env-context",
        "RTBENCH_RTCTL_RPC_TIMEOUT": "12.5",
    }
    from_env = parse([], environ)
    assert from_env.collector == "127.0.0.1:9000"
    assert from_env.token == "from-env"
    assert from_env.kubeconfig == Path("/env/kubeconfig")
    assert from_env.context == "env-context"
    assert from_env.rpc_timeout_s == 12.5
    flags = ["--collector", "localhost:9100", "--token", "from-flag", "--context", "flag-context"]
    from_flags = parse(flags, environ)
    assert from_flags.collector == "localhost:9100"
    assert from_flags.token == "from-flag"
    assert from_flags.context == "flag-context"
    assert from_flags.kubeconfig == Path("/env/kubeconfig")  # not given as a flag: env stays


def test_insecure_switch_from_environment_and_flag() -> None:
    remote = ["--collector", "collector.example:7070"]
    with pytest.raises(UsageError, match="not on loopback"):
        parse(remote, {})
    assert parse(remote, {"RTBENCH_RTCTL_INSECURE": "yes"}).insecure
    assert parse([*remote, "--insecure"], {}).insecure
    with pytest.raises(UsageError, match="RTBENCH_RTCTL_INSECURE: must be true or false"):
        parse(remote, {"RTBENCH_RTCTL_INSECURE": "maybe"})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--collector", "no-port"], "--collector must be HOST:PORT"),
        (["--collector", "127.0.0.1:99999"], "port 1-65535"),
        (["--token", "a", "--token-file", "/t"], "not both"),
        (["--token", "two words"], "--token must be"),
        (["--tls-cert", "/c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/c.pem", "--tls-key", "/k.pem"], "needs --tls-ca"),
        (["--tls-server-name", "x.test"], "needs --tls-ca"),
        (["--tls-ca", "/ca.pem", "--insecure"], "contradicts"),
        (["--tls-ca", "/ca.pem", "--tls-server-name", "bad name"], "not a host name"),
        (["--rpc-timeout", "0"], "positive"),
        (["--rpc-timeout", "soon"], "--rpc-timeout: must be a number"),
        (["--context", ""], "--context must not be empty"),
    ],
)
def test_bad_settings_are_refused_with_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse(argv, {})
    assert "\n" not in str(caught.value)


def test_tls_towards_a_remote_collector_is_accepted() -> None:
    settings = parse(["--collector", "10.0.0.5:7070", "--tls-ca", "/ca.pem"], {})
    assert settings.uses_tls and settings.tls_ca == Path("/ca.pem")


def test_commands_reading_only_the_collector_have_no_cluster_flags() -> None:
    parser = argparse.ArgumentParser()
    add_connection_options(parser, kubernetes=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--kubeconfig", "/k"])


def request(**overrides: object) -> RunRequest:
    values: dict[str, object] = {
        "runtime_class": "kata-fc",
        "variant": "fc",
        "replicas": 3,
        "image": "img:1",
        "memory": "16Mi",
        "test_id": "t1",
    }
    values.update(overrides)
    return RunRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"memory": "lots"}, "not a memory quantity"),
        ({"memory": "0Mi"}, "not a memory quantity"),
        ({"runtime_class": "Kata_FC"}, "not a valid name"),
        ({"namespace": ""}, "not a valid name"),
        ({"variant": "a b"}, "variant:"),
        ({"test_id": "x" * 64}, "longer than 63"),
        ({"labels": {"app": "other"}}, "label app is set by rtctl itself"),
        ({"labels": {"bad key!": "v"}}, "label key"),
        ({"labels": {"team": "a/b"}}, "label team:"),
        ({"run_id": ""}, "run id: must not be empty"),
        ({"timeout_s": 0}, "timeout must be positive"),
        ({"settle_s": -1}, "settle must not be negative"),
        ({"image": ""}, "image must not be empty"),
    ],
)
def test_bad_run_requests_are_usage_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(**overrides)


def test_start_run_flags_become_a_request() -> None:
    from rtctl.cli import build_parser

    args = build_parser().parse_args(
        ["start-run", "--runtime-class", "runsc", "--label", "team=perf", "--keep"]
    )
    made = run_request(args)
    assert made.variant == "runsc" and made.replicas == 10 and made.memory == "16Mi"
    assert made.test_id == "adhoc" and made.namespace == "default"
    assert dict(made.labels) == {"team": "perf"} and made.keep
    assert made.timeout_s == 300 and made.settle_s == 5
    args.label = ["no-equals-sign"]
    with pytest.raises(UsageError, match="--label must be KEY=VALUE"):
        run_request(args)


def test_run_ids_say_what_ran_and_differ() -> None:
    first, second = new_run_id("kata-qemu"), new_run_id("kata-qemu")
    assert first.startswith("kata-qemu-") and first != second
    assert len(deployment_name("x" * 80)) <= 63


def test_the_deployment_carries_labels_probe_port_runtime_class_and_memory() -> None:
    labels = pod_labels(
        run_id="run-1", test_id="t1", runtime_class="kata-fc", variant="fc", extra={"team": "p"}
    )
    deployment = workload_deployment(
        run_id="run-1",
        namespace="bench",
        replicas=7,
        image="img:1",
        memory="20Mi",
        runtime_class="kata-fc",
        labels=labels,
    )
    assert deployment["metadata"]["namespace"] == "bench"
    assert deployment["metadata"]["name"] == "rtbench-run-1"
    spec = deployment["spec"]
    assert spec["replicas"] == 7
    assert spec["selector"]["matchLabels"] == {"app": "c-http-server", RUN_ID_LABEL: "run-1"}
    template = spec["template"]
    assert template["metadata"]["labels"] == {
        "app": "c-http-server",
        "test_id": "t1",
        "runtime_class": "kata-fc",
        "variant": "fc",
        RUN_ID_LABEL: "run-1",
        "team": "p",
    }
    assert template["metadata"]["annotations"][PROBE_PORT_ANNOTATION] == "8080"
    pod = template["spec"]
    assert pod["runtimeClassName"] == "kata-fc"
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["resources"] == {"requests": {"memory": "20Mi"}, "limits": {"memory": "20Mi"}}
    assert container["ports"][0]["containerPort"] == 8080

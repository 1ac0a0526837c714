"""rtctl's connection settings, run requests and workload manifest: pure, no I/O.

Precedence (defaults < environment < flags), the refusals with one clear line,
and the Deployment shape the agent and old dashboards depend on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rtbench.cli import parse_positive_int
from rtctl.cliargs import (
    WIDE_COLUMNS,
    console,
    duration_arg,
    format_duration,
    parse_duration,
)
from rtctl.errors import UsageError
from rtctl.runcli import run_request
from rtctl.settings import ConnectionSettings, add_connection_options, connection_settings
from rtctl.startrun import RunRequest, new_run_id
from rtctl.workload import (
    DEFAULT_RUNTIME_CLASS,
    PROBE_PORT_ANNOTATION,
    RUN_ID_LABEL,
    deployment_name,
    pod_labels,
    run_id_problem,
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
        ({"runtime_class": "Kata_FC"}, "runtime class: .*not a valid name"),
        ({"namespace": ""}, "not a namespace name"),
        ({"namespace": "a.b"}, "not a namespace name"),
        ({"runtime_class": "k" * 64}, "runtime class: .* longer than 63"),
        ({"run_id": "x" * 64}, "run id: .* longer than 63"),
        ({"run_id": "-x"}, "run id: .* starting and ending"),
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


def test_generated_run_ids_stay_label_values_for_long_runtime_classes() -> None:
    long_class = "kata-" + "q" * 200  # RuntimeClass names may be 253 long
    made = new_run_id(long_class)
    assert run_id_problem(made) is None and len(made) == 63
    assert made.startswith("kata-qqq") and made.rsplit("-", 1)[1].isalnum()
    # A cut that would end in '-' is trimmed, so the id still ends the label rules' way.
    assert run_id_problem(new_run_id("a" * 49 + "-" + "b" * 30)) is None
    RunRequest(  # a request for that class builds: the id is made later, and valid
        runtime_class="kata-" + "q" * 58, variant="v", replicas=1, image="i", memory="1Mi",
        test_id="t",
    )  # fmt: skip


def test_deployment_names_never_collide_when_ids_are_mapped() -> None:
    assert deployment_name("a-b") == "rtbench-a-b"  # a plain id keeps its plain name
    mapped = {deployment_name(i) for i in ("a-b", "A_b", "a_b", "a.b", "A-B")}
    assert len(mapped) == 5
    for run_id in ("A_b", "a.b", "x" * 63, "Y" * 63):
        name = deployment_name(run_id)
        assert len(name) <= 63 and name == name.lower() and "_" not in name and "." not in name
        assert name[-1].isalnum()
    assert deployment_name("x" * 63) != deployment_name("x" * 62 + "y")


def test_the_default_runtime_class_leaves_runtime_class_name_out() -> None:
    labels = pod_labels(run_id="r", test_id="t", runtime_class="default", variant="default")
    made = workload_deployment(
        run_id="r", namespace="default", replicas=1, image="i", memory="16Mi",
        runtime_class=DEFAULT_RUNTIME_CLASS, labels=labels,
    )  # fmt: skip
    pod = made["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod
    assert made["spec"]["template"]["metadata"]["labels"]["runtime_class"] == "default"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300.0), ("2.5", 2.5), ("90s", 90.0), ("250ms", 0.25), ("5m", 300.0),
     ("1h", 3600.0), (" 0 ", 0.0), (".5s", 0.5)],
)  # fmt: skip
def test_durations_take_seconds_or_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["nan", "inf", "1e7", "-1", "5 minutes", "", "8d", "200h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than a week"):
        parse_duration(text)
    with pytest.raises(argparse.ArgumentTypeError):
        duration_arg(text)


def test_start_run_takes_durations_with_units_and_positive_counts() -> None:
    from rtctl.cli import build_parser

    args = build_parser().parse_args(
        ["start-run", "--runtime-class", "default", "--timeout", "5m", "--settle", "500ms"]
    )
    made = run_request(args)
    assert made.timeout_s == 300 and made.settle_s == 0.5
    assert made.runtime_class == made.variant == "default"
    assert parse_positive_int("3") == 3
    for bad in ("0", "-2", "three", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_positive_int(bad)
    for argv in (["--timeout", "nan"], ["--replicas", "0"], ["--settle", "1e7"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["start-run", "--runtime-class", "runc", *argv])


def test_the_console_is_wide_off_a_terminal_unless_columns_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == WIDE_COLUMNS  # pytest captures stdout: not a terminal
    monkeypatch.setenv("COLUMNS", "97")
    assert console().width == 97


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

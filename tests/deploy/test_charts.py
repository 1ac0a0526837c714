"""The charts and manifests in deploy/: they parse, lint, validate, and agree with the code.

- Every YAML file in the repository parses (chart templates only once rendered).
- Both charts pass ``helm lint --strict`` and render objects that validate against
  the strict Kubernetes schemas, with the default values and with each values set
  in the chart's ``ci/`` (every optional part on; the agent's minimal variant).
- The workload chart renders exactly the Deployment rtctl/workload.py builds from
  the same inputs (run id, namespace, replicas, image, memory, runtime class,
  variant, test id, extra labels), for chosen and for generated inputs;
  deploy/examples/http-server-bench.yaml is that chart's output, and agrees with
  rtctl too.
- The agent chart uses only environment variables and flags that ``agent run``
  has, its environment makes valid agent settings, and every path it hands the
  agent lies on a volume it mounts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.settings import NODE_ENV, OPTIONS, settings_from_sources
from rtctl.workload import DEFAULT_IMAGE, DEFAULT_MEMORY, pod_labels, workload_deployment
from tests.deploy.helm import (
    CHARTS,
    REPO,
    find_helm,
    helm,
    render,
    schema_problems,
    yaml_documents,
)

SKIP_DIRS = {
    ".git",
    ".venv",
    ".tools",
    "node_modules",
    "build",
    "rtbench-demo",
    "demo-out",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
}
EXAMPLE = REPO / "deploy" / "examples" / "http-server-bench.yaml"
STATIC_MANIFESTS = (REPO / "deploy" / "k3s" / "runtimeclasses.yaml", EXAMPLE)


def _values_sets(chart: str) -> list[Path | None]:
    """None (the defaults, for a chart that renders with them) and every values file in
    the chart's ci/ folder. The agent chart needs collector.address (see below)."""
    defaults: list[Path | None] = [] if chart == "rtbench-agent" else [None]
    return [*defaults, *sorted((CHARTS / chart / "ci").glob("*.yaml"))]


VALUES_SETS = [
    pytest.param(chart, path, id=f"{chart}-{path.stem if path else 'defaults'}")
    for chart in ("http-server-bench", "rtbench-agent")
    for path in _values_sets(chart)
]


def _yaml_files() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        here = Path(root)
        if here.name == "templates" and here.parent.parent == CHARTS:
            dirs[:] = []
            continue  # Go templates, parsed once rendered (below)
        found += [here / f for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(found)


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    relative = {str(f.relative_to(REPO)) for f in files}
    assert {
        "deploy/k3s/runtimeclasses.yaml",
        "charts/rtbench-agent/values.yaml",
        "examples/plan.yaml",
    } <= relative
    problems = []
    for path in files:
        try:
            list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            problems.append(f"{path.relative_to(REPO)}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("chart", "values"), VALUES_SETS)
def test_chart_lints_and_renders_valid_objects(chart: str, values: Path | None) -> None:
    files = [values] if values else []
    args = [a for f in files for a in ("--values", str(f))]
    helm("lint", "--strict", str(CHARTS / chart), *args)
    objects = render(chart, values_files=files)
    kinds = sorted(str(o["kind"]) for o in objects)
    if chart == "http-server-bench":
        assert kinds == ["Deployment"]
    else:
        assert kinds == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
    assert schema_problems(objects) == []


def test_static_manifests_validate() -> None:
    objects = [o for path in STATIC_MANIFESTS for o in yaml_documents(path.read_text())]
    assert schema_problems(objects) == []


def test_schema_check_catches_unknown_and_mistyped_fields() -> None:
    (unknown,) = render("http-server-bench")
    unknown["spec"]["template"]["spec"]["containers"][0]["memoryLimit"] = "16Mi"
    assert "'memoryLimit' was unexpected" in "\n".join(schema_problems([unknown]))
    (mistyped,) = render("http-server-bench")
    mistyped["spec"]["replicas"] = "ten"
    assert "'ten' is not of type 'integer'" in "\n".join(schema_problems([mistyped]))


def test_runtime_classes_name_their_installers_handlers() -> None:
    classes = yaml_documents((REPO / "deploy" / "k3s" / "runtimeclasses.yaml").read_text())
    assert {c["metadata"]["name"]: c["handler"] for c in classes} == {
        name: name
        for name in ("runc", "crun", "runsc", "kata-qemu", "kata-fc", "kata-clh", "urunc")
    }


# -- the workload chart against rtctl -------------------------------------------------------


def _rtctl_deployment(inputs: dict[str, Any]) -> dict[str, Any]:
    labels = pod_labels(
        run_id=inputs["run_id"],
        test_id=inputs["test_id"],
        runtime_class=inputs["runtime_class"],
        variant=inputs["variant"],
        extra=inputs["labels"],
    )
    return workload_deployment(
        run_id=inputs["run_id"],
        namespace=inputs["namespace"],
        replicas=inputs["replicas"],
        image=inputs["image"],
        memory=inputs["memory"],
        runtime_class=inputs["runtime_class"],
        labels=labels,
    )


def _chart_deployment(inputs: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    values = {
        "runId": inputs["run_id"],
        "replicas": inputs["replicas"],
        "runtimeClass": inputs["runtime_class"],
        "variant": inputs["variant"],
        "testId": inputs["test_id"],
        "labels": inputs["labels"],
        "image": inputs["image"],
        "memory": inputs["memory"],
    }
    (deployment,) = render(
        "http-server-bench", values, namespace=inputs["namespace"], tmp_path=tmp_path
    )
    return deployment


def _inputs(**overrides: Any) -> dict[str, Any]:
    """rtctl start-run's inputs with its defaults (rtctl/runcli.py)."""
    inputs: dict[str, Any] = {
        "run_id": "runc-0123456789ab",
        "namespace": "default",
        "replicas": 10,
        "image": DEFAULT_IMAGE,
        "memory": DEFAULT_MEMORY,
        "runtime_class": "runc",
        "variant": "runc",
        "test_id": "adhoc",
        "labels": {},
    }
    inputs.update(overrides)
    return inputs


DRIFT_CASES = {
    "start-run-defaults": _inputs(),
    "default-class-with-labels": _inputs(
        runtime_class="default",
        variant="runc",
        labels={"board": "pi5", "rtbench.io/site": "lab-2"},
    ),
    "name-needs-a-hash": _inputs(run_id="Plan_A.rep-1", namespace="bench"),
    "longest-run-id": _inputs(run_id="k" * 40 + "-" + "x" * 22),
    "extra-labels-cannot-override": _inputs(
        labels={"app": "other", "test_id": "other", "rtbench.io/run-id": "other"}
    ),
    "numeric-looking-values": _inputs(
        run_id="2024.10",
        test_id="007",
        variant="1.0",
        runtime_class="urunc",
        memory="20Mi",
        image="registry.local:5000/workload@sha256:" + "a" * 64,
        replicas=100,
        labels={"true": "false", "n": "1e3"},
    ),
}


@pytest.mark.parametrize("case", sorted(DRIFT_CASES))
def test_workload_chart_renders_rtctls_deployment(case: str, tmp_path: Path) -> None:
    inputs = DRIFT_CASES[case]
    assert _chart_deployment(inputs, tmp_path) == _rtctl_deployment(inputs)


_LABEL_VALUE = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    run_id=_LABEL_VALUE,
    test_id=_LABEL_VALUE,
    variant=_LABEL_VALUE,
    replicas=st.integers(min_value=0, max_value=500),
)
def test_workload_chart_agrees_for_generated_inputs(
    run_id: str, test_id: str, variant: str, replicas: int
) -> None:
    inputs = _inputs(run_id=run_id, test_id=test_id, variant=variant, replicas=replicas)
    with tempfile.TemporaryDirectory() as tmp:
        assert _chart_deployment(inputs, Path(tmp)) == _rtctl_deployment(inputs)


def test_example_manifest_is_the_charts_output_and_agrees_with_rtctl() -> None:
    values = CHARTS / "http-server-bench" / "ci" / "example-values.yaml"
    (example,) = yaml_documents(EXAMPLE.read_text())
    assert [example] == render("http-server-bench", values_files=[values], release="example")
    # rtctl would build the same, but for the name the example keeps and its BODY variable.
    expected = _rtctl_deployment(
        _inputs(run_id="example", test_id="example", variant="default", replicas=2)
    )
    expected["metadata"]["name"] = "c-http-server-runc"
    expected["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "BODY", "value": "ok"}
    )
    assert example == expected


def test_workload_chart_defaults_are_rtctls() -> None:
    values = yaml.safe_load((CHARTS / "http-server-bench" / "values.yaml").read_text())
    assert values["image"] == DEFAULT_IMAGE
    assert values["memory"] == DEFAULT_MEMORY
    assert not values["image"].endswith(":latest")


# -- the agent chart against the agent ------------------------------------------------------


def _daemonset(values: Path | None) -> dict[str, Any]:
    objects = render("rtbench-agent", values_files=[values] if values else [])
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    return daemonset


AGENT_VALUES = [
    pytest.param(p, id=p.stem if p else "defaults") for p in _values_sets("rtbench-agent")
]


def _agent_help_flags() -> set[str]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agent"), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))


@pytest.mark.parametrize("values", AGENT_VALUES)
def test_agent_chart_uses_only_what_the_agent_has(values: Path | None) -> None:
    container = _daemonset(values)["spec"]["template"]["spec"]["containers"][0]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"][0] in scripts and container["command"][1:] == ["run"]
    known_env = {option.env for option in OPTIONS} | {NODE_ENV}
    env_names = [e["name"] for e in container["env"]]
    assert set(env_names) <= known_env, set(env_names) - known_env
    assert len(env_names) == len(set(env_names))
    node = next(e for e in container["env"] if e["name"] == NODE_ENV)
    assert node["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    flags = {a.split("=", 1)[0] for a in container.get("args", []) if a.startswith("--")}
    assert flags <= _agent_help_flags() & {option.flag for option in OPTIONS}


@pytest.mark.parametrize("values", AGENT_VALUES)
def test_agent_chart_environment_makes_valid_settings(values: Path | None) -> None:
    container = _daemonset(values)["spec"]["template"]["spec"]["containers"][0]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    environ[NODE_ENV] = "node-1"
    args = container.get("args", [])
    flags = {a[2:].replace("-", "_"): v for a, v in zip(args[::2], args[1::2], strict=True)}
    agent = settings_from_sources(environ, flags)
    assert agent.node == "node-1"
    assert agent.uplink.collector == environ["RTBENCH_AGENT_COLLECTOR"]


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


@pytest.mark.parametrize("values", AGENT_VALUES)
def test_agent_chart_paths_lie_on_its_volumes(values: Path | None) -> None:
    pod = _daemonset(values)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in mounts.values()} == set(volumes)
    for env in container["env"]:
        value = env.get("value", "")
        if env["name"] == "RTBENCH_AGENT_CONTAINERD_SOCKET" and value == "off":
            continue
        if value.startswith("/"):
            assert any(_under(value, m) for m in mounts), f"{env['name']}={value} is on no volume"
    for mount in mounts.values():
        if mount["mountPath"] == "/var/lib/rtbench-agent":
            assert "readOnly" not in mount  # the spool is written
        else:
            assert mount["readOnly"] is True, mount
    socket = next(e["value"] for e in container["env"] if e["name"].endswith("CONTAINERD_SOCKET"))
    if socket != "off":
        # containerd's directory is mounted where it is on the host, so the path holds.
        (mount,) = [m for p, m in mounts.items() if _under(socket, p)]
        assert volumes[mount["name"]]["hostPath"]["path"] == mount["mountPath"]


# -- the agent chart refuses what the agent would refuse ---------------------------------


def _render_agent(*args: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the agent chart with ``args``, its failure returned, not raised."""
    return subprocess.run(
        [str(find_helm()), "template", "rtbench", str(CHARTS / "rtbench-agent"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "names"),
    [
        # The schema refuses an empty address first, naming it by its path.
        pytest.param((), ["'/collector/address': minLength"], id="no-address"),
        pytest.param(
            ("--set", "collector.address=monitor.lan:7070"),
            [
                "collector.address monitor.lan:7070 is not on loopback",
                "collector.tls.caSecret",
                "collector.insecure=true",
            ],
            id="remote-plaintext",
        ),
        pytest.param(
            ("--skip-schema-validation",),
            ["collector.address is required", "--set collector.address="],
            id="no-address-without-schema",
        ),
        pytest.param(
            ("--set", "collector.address=[fd00::1]:7070"),
            ["collector.address [fd00::1]:7070 is not on loopback"],
            id="remote-ipv6-plaintext",
        ),
    ],
)
def test_agent_chart_fails_at_render_naming_the_value_to_set(
    args: tuple[str, ...], names: list[str]
) -> None:
    done = _render_agent(*args)
    assert done.returncode != 0, done.stdout
    for name in names:
        assert name in done.stderr, done.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"collector.address": "127.0.0.1:7070"},
        {"collector.address": "localhost:7070"},
        {"collector.address": "[::1]:7070"},
        {"collector.address": "monitor.lan:7070", "collector.insecure": "true"},
        {"collector.address": "monitor.lan:7070", "collector.tls.caSecret": "collector-ca"},
    ],
    ids=lambda values: ",".join(f"{k}={v}" for k, v in values.items()),
)
def test_what_the_agent_chart_renders_the_agent_accepts(values: dict[str, str]) -> None:
    args = [a for key, value in values.items() for a in ("--set", f"{key}={value}")]
    done = _render_agent(*args)
    assert done.returncode == 0, done.stderr
    (daemonset,) = [o for o in yaml_documents(done.stdout) if o["kind"] == "DaemonSet"]
    env = {
        e["name"]: e["value"]
        for e in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    settings = settings_from_sources({**env, NODE_ENV: "node-1"}, {})
    assert settings.uplink.collector == values["collector.address"]

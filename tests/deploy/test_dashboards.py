"""The monitoring machine (deploy/monitoring): dashboards whose queries really return rows,
and a compose file whose pieces really exist.

The core test starts the whole stack as processes (simulated cluster, collector
exporting to a database of its own in the session's real InfluxDB 1.6, one agent
per node), runs ``rtctl start-run`` with 6 replicas, and then does what Grafana
would: resolves every templating variable by running its query (in declaration
order, so dependent variables see their parents' values), substitutes macros and
variables into every panel query (``tests.deploy.grafana.substitute``) and runs it
over HTTP ``/query``. Every query must succeed and return at least one row, and
every panel and variable must use the provisioned datasource's uid.

The compose file cannot be started here (a docker client, no engine), so it is
checked for what can go wrong without Docker: every file it mounts or builds from
exists, the collector's environment parses into valid collector settings with the
values of .env.example, every secret compose requires is in .env.example, and the
variables the init script and the Grafana provisioning read are passed to them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.settings import OPTIONS, from_sources
from rtbench.influxd import LocalInfluxd
from rtctl.localstack import LocalStack, StackSettings
from tests.deploy.grafana import (
    TimeRange,
    UnknownMacro,
    Variable,
    influxql,
    load_dashboards,
    panel_queries,
    panels,
    substitute,
    tag_values,
    variables,
)

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
DATASOURCE = MONITORING / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
PROVIDER = MONITORING / "grafana" / "provisioning" / "dashboards" / "rtbench.yaml"
INIT_SCRIPT = MONITORING / "influxdb" / "init" / "10-rtbench-v1.sh"
BIN = Path(sys.executable).parent
RANGE = TimeRange(1_700_000_000_000, 1_700_000_600_000)
DATA_DEADLINE_S = 60.0
"""How long exported points may take to show up; the exporter needs well under a second."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def provisioned_uid() -> str:
    (source,) = load_yaml(DATASOURCE)["datasources"]
    return str(source["uid"])


# -- substitution, on its own -------------------------------------------------------------


def test_substitute_macros_and_variable_forms() -> None:
    run = Variable("run_id", ("run-a", "run.b"), multi=True)
    single = Variable("runtime_class", ("kata-fc",))
    known = {"run_id": run, "runtime_class": single}
    assert substitute("WHERE $timeFilter", known, RANGE) == (
        "WHERE time >= 1700000000000ms and time <= 1700000600000ms"
    )
    assert substitute("$__timeFilter", known, RANGE) == substitute("$timeFilter", known, RANGE)
    assert substitute("time($__interval)", known, RANGE, 1000) == "time(1s)"
    assert substitute("time($__interval)", known, RANGE, 120_000) == "time(2m)"
    assert substitute("time($interval) $__interval_ms", known, RANGE, 250) == "time(250ms) 250"
    assert substitute("/^${run_id:regex}$/", known, RANGE) == r"/^(run-a|run\.b)$/"
    assert (
        substitute("/^$run_id$/ [[run_id]]", known, RANGE) == r"/^(run-a|run\.b)$/ (run-a|run\.b)"
    )
    assert substitute("'$runtime_class' ${runtime_class}", known, RANGE) == "'kata-fc' kata-fc"
    assert substitute("${runtime_class:regex} ${run_id:csv}", known, RANGE) == "kata-fc run-a,run.b"
    slash = {"v": Variable("v", ("a/b",), multi=True)}
    assert substitute("/${v:regex}/", slash, RANGE) == r"/a\/b/"
    assert substitute("$__from-$__to", known, RANGE) == "1700000000000-1700000600000"


@pytest.mark.parametrize(
    "text",
    [
        "time($__rate_interval)",  # a Grafana macro this module does not implement
        "$__range",
        "WHERE node = '$node'",  # not a variable of the dashboard
        "${run_id:percentencode}",  # an unknown format
        "${timeFilter:regex}",
        "${}",
    ],
)
def test_substitute_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(UnknownMacro):
        substitute(text, {"run_id": Variable("run_id", ("r",))}, RANGE)


# -- files, without a stack ------------------------------------------------------------


def test_every_yaml_in_deploy_monitoring_parses() -> None:
    found = sorted(MONITORING.rglob("*.yaml")) + sorted(MONITORING.rglob("*.yml"))
    assert len(found) >= 3
    for path in found:
        assert isinstance(load_yaml(path), dict), path


def test_dashboard_model_and_datasource_uids() -> None:
    uid = provisioned_uid()
    (source,) = load_yaml(DATASOURCE)["datasources"]
    assert source["type"] == "influxdb" and source["database"] == "rtbench"
    assert source["jsonData"]["dbName"] == "rtbench"
    assert "password" not in source and "password" in source["secureJsonData"]
    dashboards = load_dashboards(DASHBOARDS)
    assert set(dashboards) == {
        "run-overview.json",
        "pod-timeline.json",
        "first-response.json",
        "node-memory.json",
        "agent-health.json",
    }
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    for name, dash in dashboards.items():
        assert 36 <= dash["schemaVersion"] <= 41, name
        ids = [p["id"] for p in panels(dash)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        queries = list(panel_queries(name, dash))
        assert queries, name
        for query in queries:
            assert query.datasource_uids == (uid, uid), (name, query.panel)
            assert "$timeFilter" in query.text, (name, query.panel)
        for var in variables(dash):
            if var["type"] == "query":
                assert var["datasource"]["uid"] == uid, (name, var["name"])


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(MONITORING / "compose.yaml")
    return loaded


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (MONITORING / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([?-])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``; a missing required
    variable fails the test."""

    def replace(match: re.Match[str]) -> str:
        name, kind, extra = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise AssertionError(f"compose requires {name}, which .env.example does not set")
        return extra if kind == "-" else ""

    return _INTERPOLATION.sub(replace, value)


def test_compose_mounts_and_builds_only_what_exists() -> None:
    spec = compose()
    named = set(spec.get("volumes") or {})
    for name, service in spec["services"].items():
        if "build" in service:
            context = (MONITORING / service["build"]["context"]).resolve()
            assert context == REPO, name
            assert (context / service["build"]["dockerfile"]).is_file(), name
        else:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                assert (MONITORING / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name}: volume {source} not declared"
            assert target.startswith("/"), volume
    assert os.access(INIT_SCRIPT, os.X_OK), "the influxdb entrypoint runs only executable *.sh"
    subprocess.run(["bash", "-n", str(INIT_SCRIPT)], check=True)


def test_compose_environment_matches_what_its_programs_read() -> None:
    spec = compose()
    example = env_example()
    services = {
        name: {k: interpolate(str(v), example) for k, v in svc.get("environment", {}).items()}
        for name, svc in spec["services"].items()
    }
    # The collector: only variables `collector serve` has, and they make valid settings.
    collector = services["collector"]
    known = {option.env for option in OPTIONS}
    ours = {k: v for k, v in collector.items() if k.startswith("RTBENCH_COLLECTOR_")}
    assert set(ours) <= known, set(ours) - known
    flags = {option.flag for option in OPTIONS}
    for word in spec["services"]["collector"].get("command") or []:
        assert not word.startswith("--") or word.split("=")[0] in flags, word
    settings = from_sources({}, ours)
    assert settings.listen_host == "0.0.0.0" and settings.agent_token
    assert settings.influx_url == "http://influxdb:8086" and settings.influx_db == "rtbench"
    assert settings.influx_user == example["RTBENCH_INFLUX_COLLECTOR_USER"]
    # What the init script and the Grafana provisioning read is passed to them.
    script_vars = set(re.findall(r"\$\{(\w+):\?\}", INIT_SCRIPT.read_text()))
    assert script_vars and script_vars <= set(services["influxdb"]), script_vars
    provisioned = set(re.findall(r"\$\{(\w+)\}", DATASOURCE.read_text()))
    assert provisioned and provisioned <= set(services["grafana"]), provisioned
    # Grafana reads dashboards where the provider says, and the home dashboard exists.
    (provider,) = load_yaml(PROVIDER)["providers"]
    mounts = dict(v.split(":")[:2][::-1] for v in spec["services"]["grafana"]["volumes"])
    dashboards_dir = MONITORING / mounts[provider["options"]["path"]]
    assert dashboards_dir.resolve() == DASHBOARDS.resolve()
    home = services["grafana"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).relative_to(provider["options"]["path"])).is_file()


# -- every query against a real run -------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    influx_url: str
    database: str
    run_id: str
    runtime_class: str
    nodes: tuple[str, ...]
    created_ms: int

    def expected(self) -> dict[str, tuple[str, ...]]:
        """What the test selects in the variables that name things of this run."""
        return {
            "run_id": (self.run_id,),
            "runtime_class": (self.runtime_class,),
            "variant": (self.runtime_class,),
            "node": self.nodes,
        }

    def time_range(self) -> TimeRange:
        return TimeRange(self.created_ms - 60_000, int(time.time() * 1000) + 60_000)


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, influxd: LocalInfluxd, workload_binary: Path
) -> Iterator[Demo]:
    database = f"dashboards_{os.getpid()}"
    influxd.create_database(database)
    settings = StackSettings(
        root=tmp_path_factory.mktemp("stack"),
        nodes=2,
        seed=11,
        workload=workload_binary,
        pleg_period=0.1,
        influx_url=influxd.url,
        influx_db=database,
    )
    with LocalStack(settings) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
        run_id = f"dash-{os.getpid()}"
        done = subprocess.run(
            [str(BIN / "rtctl"), "start-run", "--runtime-class", "runc", "--replicas", "6",
             "--test-id", "dashboards", "--run-id", run_id, "--settle", "0.5",
             "--format", "json"],
            capture_output=True, text=True, timeout=240, check=False,
            env={**env, **stack.rtctl_env()}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        demo = Demo(
            influxd.url, database, run_id, "runc", stack.nodes, summary["created_ns"] // 10**6
        )
        # The summary is exported after the pods' events; the agent status every 5 s.
        wait_for_rows(demo, f'SELECT last("replicas") FROM "run" WHERE run_id = \'{run_id}\'')
        wait_for_rows(demo, 'SELECT last("offset_ms") FROM "agent_status" GROUP BY "node"', 2)
        yield demo


def rows(series: list[dict[str, Any]]) -> int:
    return sum(len(s.get("values", [])) for s in series)


def wait_for_rows(demo: Demo, query: str, series_count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DATA_DEADLINE_S
    while True:
        found = influxql(demo.influx_url, demo.database, query)
        if len(found) >= series_count and rows(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no rows after {DATA_DEADLINE_S:.0f} s: {query}")
        time.sleep(0.25)


def resolve(name: str, dash: Mapping[str, Any], demo: Demo) -> dict[str, Variable]:
    """Every variable's values, as Grafana would offer them and the test selects them."""
    resolved: dict[str, Variable] = {}
    expected = demo.expected()
    for var in variables(dash):
        multi = bool(var.get("multi") or var.get("includeAll"))
        if var["type"] == "custom":
            options = tuple(v.strip() for v in str(var["query"]).split(","))
            resolved[var["name"]] = Variable(var["name"], options, multi)
            continue
        assert var["type"] == "query", f"{name}: variable type {var['type']} not handled"
        text = substitute(str(var["query"]), resolved, demo.time_range())
        offered = tag_values(influxql(demo.influx_url, demo.database, text))
        assert offered, f"{name}: variable {var['name']} offers nothing: {text}"
        chosen = expected.get(var["name"], tuple(offered))
        assert set(chosen) <= set(offered), (name, var["name"], offered)
        if not multi:
            chosen = chosen[:1]
        resolved[var["name"]] = Variable(var["name"], chosen, multi)
    return resolved


@pytest.mark.parametrize("dashboard", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_every_panel_query_returns_rows_after_a_run(demo: Demo, dashboard: str) -> None:
    dash = load_dashboards(DASHBOARDS)[dashboard]
    resolved = resolve(dashboard, dash, demo)
    empty: list[str] = []
    for query in panel_queries(dashboard, dash):
        text = substitute(query.text, resolved, demo.time_range(), interval_ms=1000)
        assert not re.search(r"\$[{\w]|\[\[", text), text
        if not rows(influxql(demo.influx_url, demo.database, text)):
            empty.append(f"{query.panel} ({query.ref_id}): {text}")
    # Anything empty once more after a pause, in case an export was still in flight.
    if empty:
        time.sleep(5)
        empty = [
            entry
            for entry in empty
            if not rows(influxql(demo.influx_url, demo.database, entry.split(": ", 1)[1]))
        ]
    assert not empty, "queries without rows:\n" + "\n".join(empty)

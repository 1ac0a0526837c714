"""Server-side printing: the Tables kubectl prints, cell by cell.

The STATUS cases are the ones rtbench runs into (a pod still being created, an
OOM-killed workload under a 16Mi limit, a crash loop, a pod being torn down)
and must read exactly as kubectl shows them on a real cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from simcluster import tables
from simcluster.errors import BadRequest

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
NOW = 1_700_000_000.0
CREATED = datetime.fromtimestamp(NOW - 100, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request(accept: str = KUBECTL_GET, query: str = "") -> web.Request:
    return make_mocked_request("GET", f"/api/v1/pods{query}", headers={"Accept": accept})


def _pod(
    *,
    phase: str = "Running",
    state: dict[str, Any] | None = None,
    ready: bool = True,
    restarts: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "podIP": "127.0.1.7"}
    if state is not None:
        status["containerStatuses"] = [
            {"name": "server", "ready": ready, "restartCount": restarts, "state": state}
        ]
    metadata = {"name": "web-1", "namespace": "default", "creationTimestamp": CREATED, **extra}
    return {
        "metadata": metadata,
        "spec": {"nodeName": "sim-node-1", "containers": [{"name": "server"}]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("pod", "status", "ready"),
    [
        (_pod(phase="Pending"), "Pending", "0/1"),
        (
            _pod(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}, ready=False),
            "ContainerCreating",
            "0/1",
        ),
        (_pod(state={"running": {"startedAt": CREATED}}), "Running", "1/1"),
        (_pod(state={"running": {"startedAt": CREATED}}, ready=False), "Running", "0/1"),
        (
            _pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, ready=False, restarts=3),
            "CrashLoopBackOff",
            "0/1",
        ),
        (
            _pod(phase="Running", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
            "OOMKilled",
            "0/1",
        ),
        (
            _pod(phase="Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}}),
            "Completed",
            "0/1",
        ),
        (_pod(phase="Failed", state={"terminated": {"exitCode": 2}}), "ExitCode:2", "0/1"),
        (
            _pod(state={"running": {}}, deletionTimestamp=CREATED),
            "Terminating",
            "1/1",
        ),
    ],
)
def test_pod_status_reads_like_kubectl(pod: dict[str, Any], status: str, ready: str) -> None:
    cells = tables.table("Pod", pod, now=NOW)["rows"][0]["cells"]
    assert cells[:3] == ["web-1", ready, status]
    assert cells[4] == "100s"


def test_init_containers_show_progress() -> None:
    pod = _pod(phase="Pending")
    pod["spec"]["initContainers"] = [{"name": "init"}]
    pod["status"]["initContainerStatuses"] = [
        {"name": "init", "ready": False, "restartCount": 0, "state": {"running": {}}}
    ]
    assert tables.pod_status(pod)[0] == "Init:0/1"


def test_restarts_say_when() -> None:
    pod = _pod(state={"running": {}}, restarts=2)
    pod["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 1, "finishedAt": CREATED}
    }
    assert tables.table("Pod", pod, now=NOW)["rows"][0]["cells"][3] == "2 (100s ago)"


def test_pod_wide_columns_have_priority_one() -> None:
    result = tables.table("Pod", {"items": [_pod(state={"running": {}})]}, now=NOW)
    columns = [(c["name"], c["priority"]) for c in result["columnDefinitions"]]
    assert columns[:5] == [(n, 0) for n in ("Name", "Ready", "Status", "Restarts", "Age")]
    assert ("IP", 1) in columns and ("Node", 1) in columns
    cells = result["rows"][0]["cells"]
    assert cells[5:7] == ["127.0.1.7", "sim-node-1"]


def test_render_needs_the_table_accept_header() -> None:
    pod = _pod()
    assert tables.render(_request("application/json"), "Pod", pod) is None
    assert tables.render(_request(), "Secret", pod) is None
    table = tables.render(_request(), "Pod", pod)
    assert table is not None and table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    beta = tables.render(_request("application/json;as=Table;v=v1beta1;g=meta.k8s.io"), "Pod", pod)
    assert beta is not None and beta["apiVersion"] == "meta.k8s.io/v1beta1"


def test_list_table_keeps_list_metadata_and_partial_objects() -> None:
    body = {"kind": "PodList", "metadata": {"resourceVersion": "42"}, "items": [_pod(), _pod()]}
    table = tables.render(_request(), "Pod", body)
    assert table is not None
    assert table["metadata"] == {"resourceVersion": "42"}
    row_object = table["rows"][0]["object"]
    assert row_object["kind"] == "PartialObjectMetadata"
    assert row_object["metadata"]["name"] == "web-1"
    assert "spec" not in row_object


def test_include_object() -> None:
    full = tables.render(_request(query="?includeObject=Object"), "Pod", _pod())
    assert full is not None
    assert full["rows"][0]["object"]["kind"] == "Pod"
    assert full["rows"][0]["object"]["apiVersion"] == "v1"
    assert full["rows"][0]["object"]["spec"]["nodeName"] == "sim-node-1"
    none = tables.render(_request(query="?includeObject=None"), "Pod", _pod())
    assert none is not None and "object" not in none["rows"][0]
    with pytest.raises(BadRequest):
        tables.render(_request(query="?includeObject=Everything"), "Pod", _pod())


def test_watch_event_object_is_a_one_row_table() -> None:
    event_object = tables.render_watch_event(_request(), "Pod", {"kind": "Pod", **_pod()})
    assert event_object is not None and len(event_object["rows"]) == 1
    status = {"kind": "Status", "status": "Failure", "code": 410, "metadata": {}}
    assert tables.render_watch_event(_request(), "Pod", status) is None
    bookmark = {"kind": "Pod", "metadata": {"resourceVersion": "9"}}
    assert tables.render_watch_event(_request(), "Pod", bookmark) is None
    assert tables.render_watch_event(_request("application/json"), "Pod", _pod()) is None


def test_node_row() -> None:
    node = {
        "metadata": {
            "name": "sim-node-1",
            "creationTimestamp": CREATED,
            "labels": {"node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux"},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.1.1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-rtbench-sim"},
        },
    }
    cells = tables.table("Node", node, now=NOW)["rows"][0]["cells"]
    assert cells[:5] == [
        "sim-node-1",
        "Ready,SchedulingDisabled",
        "worker",
        "100s",
        "v1.32.0-rtbench-sim",
    ]
    assert cells[5:7] == ["127.0.1.1", "<none>"]


def test_deployment_row() -> None:
    deployment = {
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "c-http-server"},
                "matchExpressions": [{"key": "variant", "operator": "In", "values": ["b", "a"]}],
            },
            "template": {"spec": {"containers": [{"name": "server", "image": "img:1"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    cells = tables.table("Deployment", deployment, now=NOW)["rows"][0]["cells"]
    assert cells == [
        "web",
        "2/3",
        3,
        2,
        "100s",
        "server",
        "img:1",
        "app=c-http-server,variant in (a,b)",
    ]


def test_namespace_and_runtimeclass_rows() -> None:
    namespace = {
        "metadata": {"name": "bench", "creationTimestamp": CREATED},
        "status": {"phase": "Active"},
    }
    assert tables.table("Namespace", namespace, now=NOW)["rows"][0]["cells"] == [
        "bench",
        "Active",
        "100s",
    ]
    runtimeclass = {
        "metadata": {"name": "kata-fc", "creationTimestamp": CREATED},
        "handler": "kata-fc",
    }
    cells = tables.table("RuntimeClass", runtimeclass, now=NOW)["rows"][0]["cells"]
    assert cells == ["kata-fc", "kata-fc", "100s"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (47 * 3600, "47h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400, "3y"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert tables.human_duration(seconds) == text

"""The API surface over raw HTTP: object shapes, verbs, and a Status for every bad input.

Each bad request gets the right code and a Kubernetes Status object, and the
server keeps serving afterwards.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import aiohttp
import pytest

from simcluster.cluster import SimCluster

from .conftest import WaitFor
from .test_watch import deployment, pod

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def call(
    http: aiohttp.ClientSession,
    sim: SimCluster,
    method: str,
    path: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if body is not None:
        data = json.dumps(body).encode()
    payload = io.BytesIO(data) if data is not None else None
    async with http.request(
        method, sim.url + path, data=payload, headers=headers, params=params
    ) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def assert_status(body: Any, code: int, reason: str) -> None:
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["metadata"] == {} and body["status"] == "Failure"
    assert (body["code"], body["reason"]) == (code, reason), body
    assert isinstance(body["message"], str) and body["message"]


BAD_REQUESTS: list[tuple[str, str, str, Any, int, str]] = [
    ("malformed JSON", "POST", PODS, b"{not json", 400, "BadRequest"),
    ("JSON that is no object", "POST", PODS, [1, 2], 400, "BadRequest"),
    (
        "kind of another endpoint",
        "POST",
        PODS,
        {**pod("x"), "kind": "Deployment"},
        400,
        "BadRequest",
    ),
    (
        "apiVersion of another group",
        "POST",
        DEPLOYMENTS,
        {**deployment("x", 1), "apiVersion": "v1"},
        400,
        "BadRequest",
    ),
    ("unknown resource", "GET", "/api/v1/frobnicators", None, 404, "NotFound"),
    ("unknown group", "GET", "/apis/example.com/v1/things", None, 404, "NotFound"),
    ("unknown path", "GET", "/nonsense/path", None, 404, "NotFound"),
    ("unknown subresource", "GET", PODS + "/x/exec", None, 404, "NotFound"),
    ("PUT on a collection", "PUT", PODS, pod("x"), 405, "MethodNotAllowed"),
    (
        "creating a node",
        "POST",
        "/api/v1/nodes",
        {"metadata": {"name": "n"}},
        405,
        "MethodNotAllowed",
    ),
    ("deleting a node", "DELETE", "/api/v1/nodes/sim-node-1", None, 405, "MethodNotAllowed"),
    ("writing pod status", "PATCH", PODS + "/x/status", {}, 405, "MethodNotAllowed"),
    ("creating across namespaces", "POST", "/api/v1/pods", pod("x"), 405, "MethodNotAllowed"),
    ("POST to discovery", "POST", "/api/v1", {}, 405, "MethodNotAllowed"),
    ("POST to an admin GET", "POST", "/_sim/state", {}, 405, "MethodNotAllowed"),
    ("bad label selector", "GET", PODS + "?labelSelector=a%20in%20(", None, 400, "BadRequest"),
    ("bad label value", "GET", PODS + "?labelSelector=a=b%20c", None, 400, "BadRequest"),
    ("bad selector on a watch", "GET", PODS + "?watch=1&labelSelector=!", None, 400, "BadRequest"),
    ("unsupported field", "GET", PODS + "?fieldSelector=spec.foo=bar", None, 400, "BadRequest"),
    (
        "field selector without operator",
        "GET",
        PODS + "?fieldSelector=spec.nodeName",
        None,
        400,
        "BadRequest",
    ),
    (
        "non-numeric timeoutSeconds",
        "GET",
        PODS + "?watch=true&timeoutSeconds=soon",
        None,
        400,
        "BadRequest",
    ),
    ("non-boolean watch", "GET", PODS + "?watch=maybe", None, 400, "BadRequest"),
    (
        "non-numeric resourceVersion",
        "GET",
        PODS + "?watch=true&resourceVersion=x1",
        None,
        400,
        "BadRequest",
    ),
    (
        "missing name",
        "POST",
        PODS,
        {"apiVersion": "v1", "kind": "Pod", "spec": pod("x")["spec"]},
        422,
        "Invalid",
    ),
    ("bad name", "POST", PODS, {**pod("x"), "metadata": {"name": "Not_A_Name"}}, 422, "Invalid"),
    (
        "pod without containers",
        "POST",
        PODS,
        {"metadata": {"name": "empty"}, "spec": {}},
        422,
        "Invalid",
    ),
    (
        "selector not matching labels",
        "POST",
        DEPLOYMENTS,
        {
            **deployment("x", 1),
            "spec": {**deployment("x", 1)["spec"], "selector": {"matchLabels": {"app": "y"}}},
        },
        422,
        "Invalid",
    ),
    (
        "negative replicas",
        "POST",
        DEPLOYMENTS,
        {**deployment("x", 1), "spec": {**deployment("x", 1)["spec"], "replicas": -1}},
        422,
        "Invalid",
    ),
    ("missing object", "GET", PODS + "/ghost", None, 404, "NotFound"),
    ("missing namespace", "POST", "/api/v1/namespaces/nope/pods", pod("x"), 404, "NotFound"),
    ("deleting default", "DELETE", "/api/v1/namespaces/default", None, 403, "Forbidden"),
    ("unknown RuntimeClass", "POST", PODS, pod("x", runtimeClassName="nope"), 403, "Forbidden"),
    ("YAML body", "POST", PODS, b"kind: Pod", 415, "UnsupportedMediaType"),
    ("dry run", "POST", PODS + "?dryRun=All", pod("x"), 400, "BadRequest"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "reason"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_input_gets_a_status_and_the_server_keeps_serving(
    sim: SimCluster,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    code: int,
    reason: str,
) -> None:
    raw = body if isinstance(body, bytes) else None
    ctype = "application/yaml" if reason == "UnsupportedMediaType" else "application/json"
    status, answer = await call(
        http, sim, method, path, None if raw else body, data=raw, content_type=ctype
    )
    assert status == code
    assert_status(answer, code, reason)
    async with http.get(sim.url + "/healthz") as response:
        assert response.status == 200 and await response.text() == "ok"
    status, listing = await call(http, sim, "GET", PODS)
    assert status == 200 and listing["kind"] == "PodList"


async def test_status_details_and_messages(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, sim, "GET", PODS + "/ghost")
    assert body["message"] == 'pods "ghost" not found'
    assert body["details"] == {"name": "ghost", "kind": "pods"}
    status, body = await call(http, sim, "GET", DEPLOYMENTS + "/ghost")
    assert body["message"] == 'deployments.apps "ghost" not found'
    assert body["details"] == {"name": "ghost", "group": "apps", "kind": "deployments"}
    status, body = await call(http, sim, "GET", PODS + "?fieldSelector=spec.foo%3Dbar")
    assert body["message"] == "field label not supported: spec.foo"
    status, body = await call(http, sim, "POST", PODS, pod("x", runtimeClassName="nope"))
    assert body["message"] == 'pods "x" is forbidden: pod rejected: RuntimeClass "nope" not found'
    status, body = await call(
        http, sim, "POST", PODS, {"metadata": {"generateName": ""}, "spec": {}}
    )
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    status, body = await call(
        http,
        sim,
        "POST",
        PODS,
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
    )
    assert body["message"] == 'Pod "p" is invalid: spec.containers[0].image: Required value'

    assert (await call(http, sim, "POST", PODS, pod("twice")))[0] == 201
    status, body = await call(http, sim, "POST", PODS, pod("twice"))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'pods "twice" already exists'
    assert body["details"] == {"name": "twice", "kind": "pods"}


async def test_oversized_body_is_413(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    huge = pod("huge")
    huge["metadata"]["annotations"] = {"blob": "x" * (3 * 2**20 + 10)}
    status, body = await call(http, sim, "POST", PODS, huge)
    assert status == 413
    assert_status(body, 413, "RequestEntityTooLarge")
    assert (await call(http, sim, "GET", "/api/v1/namespaces"))[0] == 200


async def test_objects_carry_kind_version_and_metadata(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    status, created = await call(
        http,
        sim,
        "POST",
        PODS,
        pod("shape"),
        params={"fieldManager": "kubectl", "fieldValidation": "Strict", "pretty": "true"},
    )
    assert status == 201
    md = created["metadata"]
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    assert re.fullmatch(r"[0-9a-f-]{36}", md["uid"]) and md["namespace"] == "default"
    assert RFC3339.match(md["creationTimestamp"]) and md["resourceVersion"].isdigit()
    status, generated = await call(
        http, sim, "POST", PODS, {"metadata": {"generateName": "gen-"}, "spec": pod("x")["spec"]}
    )
    assert status == 201 and re.fullmatch(r"gen-[a-z0-9]{5}", generated["metadata"]["name"])

    for path, kind, api_version in [
        ("/api/v1/namespaces", "Namespace", "v1"),
        ("/api/v1/nodes", "Node", "v1"),
        ("/api/v1/pods", "Pod", "v1"),
        (DEPLOYMENTS, "Deployment", "apps/v1"),
        ("/apis/node.k8s.io/v1/runtimeclasses", "RuntimeClass", "node.k8s.io/v1"),
    ]:
        status, listing = await call(http, sim, "GET", path)
        assert (
            status == 200
            and listing["kind"] == f"{kind}List"
            and listing["apiVersion"] == api_version
        )
        assert int(listing["metadata"]["resourceVersion"]) == sim.store.resource_version
        for item in listing["items"]:
            assert (item["kind"], item["apiVersion"]) == (kind, api_version)
    status, namespaces = await call(http, sim, "GET", "/api/v1/namespaces")
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in namespaces["items"]}
    status, node = await call(http, sim, "GET", "/api/v1/nodes/sim-node-1")
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.32.0-rtbench-sim"
    assert info["containerRuntimeVersion"].startswith("rtbench-sim://")
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
    assert node["metadata"]["labels"]["kubernetes.io/arch"] in ("amd64", "arm64")
    assert node["status"]["allocatable"]["pods"] == "110"
    assert {a["type"]: a["address"] for a in node["status"]["addresses"]} == {
        "InternalIP": "127.0.1.1",
        "Hostname": "sim-node-1",
    }
    status, rc = await call(http, sim, "GET", "/apis/node.k8s.io/v1/runtimeclasses/kata-qemu")
    assert rc["handler"] == "kata-qemu" and rc["overhead"]["podFixed"]["memory"] == "152Mi"


async def test_update_patch_and_conflicts(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    status, dep = await call(http, sim, "POST", DEPLOYMENTS, deployment("edit", 1))
    assert status == 201 and dep["metadata"]["generation"] == 1
    stale_rv = dep["metadata"].pop("resourceVersion")  # unconditional: controllers write status
    dep["spec"]["replicas"] = 2
    status, updated = await call(http, sim, "PUT", DEPLOYMENTS + "/edit", dep)
    assert status == 200 and updated["metadata"]["generation"] == 2
    dep["metadata"]["resourceVersion"] = stale_rv
    status, body = await call(http, sim, "PUT", DEPLOYMENTS + "/edit", dep)
    assert status == 409 and body["reason"] == "Conflict"
    status, body = await call(http, sim, "PUT", DEPLOYMENTS + "/other", updated)
    assert status == 400

    # A no-op write does not move the resourceVersion.
    await wait_for(
        lambda: (
            (sim.store.peek("Deployment", "default", "edit") or {})
            .get("status", {})
            .get("readyReplicas")
            == 2
        )
    )
    before = sim.store.resource_version
    same = {"spec": {"replicas": 2}}
    status, again = await call(
        http, sim, "PATCH", DEPLOYMENTS + "/edit", same, content_type="application/merge-patch+json"
    )
    assert status == 200 and again["metadata"]["generation"] == 2
    assert int(again["metadata"]["resourceVersion"]) <= before

    strategic = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"name": "web", "env": [{"name": "BODY", "value": "v2"}]}],
                }
            }
        }
    }
    status, patched = await call(
        http,
        sim,
        "PATCH",
        DEPLOYMENTS + "/edit",
        strategic,
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200
    (web,) = patched["spec"]["template"]["spec"]["containers"]
    assert (
        web["image"] == "rtbench/workload:1" and web["ports"][0]["containerPort"] == 8080
    )  # merged by name
    assert web["env"] == [{"name": "BODY", "value": "v2"}]
    assert "$setElementOrder/containers" not in patched["spec"]["template"]["spec"]

    ops = [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    status, patched = await call(
        http, sim, "PATCH", DEPLOYMENTS + "/edit", ops, content_type="application/json-patch+json"
    )
    assert status == 200 and patched["spec"]["replicas"] == 0
    status, body = await call(
        http, sim, "PATCH", DEPLOYMENTS + "/edit", {}, content_type="text/plain"
    )
    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    status, body = await call(
        http,
        sim,
        "PATCH",
        DEPLOYMENTS + "/edit",
        {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}},
        content_type="application/merge-patch+json",
    )
    assert status == 409


async def test_namespaces_delete_their_content(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    status, ns = await call(
        http, sim, "POST", "/api/v1/namespaces", {"metadata": {"name": "scratch"}}
    )
    assert status == 201 and ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "scratch"
    assert (
        await call(
            http, sim, "POST", "/apis/apps/v1/namespaces/scratch/deployments", deployment("d", 2)
        )
    )[0] == 201
    await wait_for(lambda: len(sim.processes()) == 2)
    status, terminating = await call(http, sim, "DELETE", "/api/v1/namespaces/scratch")
    assert status == 200 and terminating["status"]["phase"] == "Terminating"
    status, body = await call(http, sim, "POST", "/api/v1/namespaces/scratch/pods", pod("late"))
    # Forbidden while Terminating (NotFound if the namespace is already gone).
    assert (status, body["reason"]) in ((403, "Forbidden"), (404, "NotFound"))
    await wait_for(lambda: sim.store.peek("Namespace", "", "scratch") is None, within=10)
    assert sim.store.items("Pod", "scratch") == [] and sim.processes() == []


async def test_delete_collection_by_label(
    sim: SimCluster, http: aiohttp.ClientSession, wait_for: WaitFor
) -> None:
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        assert (await call(http, sim, "POST", PODS, pod(name, {"tier": tier})))[0] == 201
    status, body = await call(
        http, sim, "DELETE", PODS + "?labelSelector=tier%3Dx&gracePeriodSeconds=0"
    )
    assert status == 200 and {i["metadata"]["name"] for i in body["items"]} == {"a", "b"}
    assert [p["metadata"]["name"] for p in sim.store.items("Pod", "default")] == ["c"]

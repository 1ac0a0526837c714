"""Discovery and OpenAPI documents: what kubectl reads before it touches a resource.

Most are served over real HTTP by an app with only the discovery routes, so they
do not depend on the rest of the server; one checks the whole simulated cluster
routes everything discovery names, and test_kubectl.py reads the same documents
through kubectl.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from simcluster import discovery, openapi, openapi_proto, openapi_schemas, resources
from simcluster.cluster import SimCluster
from simcluster.openapi_paths import v2_document, v3_documents

AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
"""The Accept header kubectl 1.32 sends to /api and /apis."""


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.add_routes(discovery.routes())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _json(client: TestClient[web.Request, web.Application], path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, path
    return await response.json()


async def test_version_is_a_version_info(client: TestClient[web.Request, web.Application]) -> None:
    info = await _json(client, "/version")
    assert await _json(client, "/version/") == info, "the trailing-slash spelling clients use"
    assert (info["major"], info["minor"]) == ("1", "32")
    assert info["gitVersion"] == "v1.32.0-rtbench-sim"
    assert set(info) >= {"gitCommit", "gitTreeState", "buildDate", "goVersion", "platform"}


async def test_aggregated_discovery_request_gets_plain_documents(
    client: TestClient[web.Request, web.Application],
) -> None:
    """client-go falls back to per-group discovery only if the Content-Type is
    not an aggregated one."""
    for path, kind in (("/api", "APIVersions"), ("/apis", "APIGroupList")):
        response = await client.get(path, headers={"Accept": AGGREGATED})
        assert response.status == 200
        assert response.headers["Content-Type"].split(";")[0] == "application/json"
        assert "as=" not in response.headers["Content-Type"]
        assert (await response.json())["kind"] == kind


async def test_group_list_names_every_group(
    client: TestClient[web.Request, web.Application],
) -> None:
    groups = await _json(client, "/apis")
    assert {g["name"]: g["preferredVersion"]["groupVersion"] for g in groups["groups"]} == {
        "apps": "apps/v1",
        "node.k8s.io": "node.k8s.io/v1",
    }
    assert (await _json(client, "/api"))["versions"] == ["v1"]
    assert (await _json(client, "/apis/apps"))["kind"] == "APIGroup"


async def test_resource_lists(client: TestClient[web.Request, web.Application]) -> None:
    core = {r["name"]: r for r in (await _json(client, "/api/v1"))["resources"]}
    apps = {r["name"]: r for r in (await _json(client, "/apis/apps/v1"))["resources"]}
    node = {r["name"]: r for r in (await _json(client, "/apis/node.k8s.io/v1"))["resources"]}

    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["categories"] == ["all"]
    assert core["pods"]["namespaced"] and core["pods"]["singularName"] == "pod"
    assert core["nodes"]["shortNames"] == ["no"] and not core["nodes"]["namespaced"]
    assert core["namespaces"]["shortNames"] == ["ns"]
    assert core["pods/log"]["verbs"] == ["get"] and core["pods/log"]["kind"] == "Pod"
    assert "pods/status" in core
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert apps["deployments"]["categories"] == ["all"]
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(
        apps["deployments"]["verbs"]
    )
    scale = apps["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert node["runtimeclasses"]["kind"] == "RuntimeClass"
    assert not node["runtimeclasses"]["namespaced"]


def test_every_discovered_resource_is_routed_with_its_verbs() -> None:
    """Discovery names nothing the server's router does not serve."""
    for r in discovery.RESOURCES:
        prefix = f"{r.root}/namespaces/ns" if r.namespaced else r.root
        collection = resources.resolve(f"{prefix}/{r.plural}")
        assert collection is not None and collection.name is None, r.plural
        assert set(r.verbs) == set(collection.rtype.verbs)
        assert collection.rtype.kind == r.kind and collection.rtype.namespaced == r.namespaced
        for sub in r.subresources:
            target = resources.resolve(f"{prefix}/{r.plural}/x/{sub.name}")
            assert target is not None and target.subresource == sub.name


def test_every_kind_has_a_schema_tagged_with_its_gvk() -> None:
    defs = openapi_schemas.definitions()
    for r in discovery.RESOURCES:
        name = openapi_schemas.definition_for(r.group, r.version, r.kind)
        schema = defs[name]
        assert {"apiVersion", "kind", "metadata"} <= set(schema["properties"])
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        assert gvk in schema[openapi_schemas.GVK]


def test_every_reference_resolves() -> None:
    v2 = v2_document(discovery.RESOURCES)
    names = set(v2["definitions"])
    assert openapi_schemas.references(v2) <= names
    for path, doc in v3_documents(discovery.RESOURCES).items():
        components = set(doc["components"]["schemas"])
        assert openapi_schemas.references(doc) <= components, path
        assert "#/definitions/" not in json.dumps(doc)


def test_patch_operations_make_kubectl_validate_client_side() -> None:
    """Each kind that can be patched has a PATCH operation tagged with its kind,
    which takes strategic merge patches and has no fieldValidation parameter:
    kubectl then validates manifests itself against the v2 schema."""
    docs = v3_documents(discovery.RESOURCES)
    for r in discovery.RESOURCES:
        doc = docs[r.root.lstrip("/")]
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        patches = [
            i["patch"]
            for i in doc["paths"].values()
            if i.get("patch", {}).get(openapi_schemas.GVK) == gvk
        ]
        assert len(patches) == ("patch" in r.verbs), r.kind
        for op in patches:
            assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
            assert "fieldValidation" not in {p["name"] for p in op["parameters"]}


def test_patch_strategies_follow_kubernetes() -> None:
    defs = openapi_schemas.definitions()
    containers = defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    ports = defs["io.k8s.api.core.v1.Container"]["properties"]["ports"]
    assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]


async def test_openapi_v3_root_lists_each_group_version(
    client: TestClient[web.Request, web.Application],
) -> None:
    root = await _json(client, "/openapi/v3")
    expected = {f"apis/{g}/{v}" if g else f"api/{v}" for g, v in discovery.group_versions()}
    assert set(root["paths"]) == expected
    for path, entry in root["paths"].items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{path}?hash=")
        response = await client.get(url)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, immutable"
        doc = await response.json()
        assert doc["openapi"].startswith("3.0")
        etag = response.headers["ETag"]
        again = await client.get(url, headers={"If-None-Match": etag})
        assert again.status == 304


async def test_openapi_v3_stale_hash_redirects(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/openapi/v3/apis/apps/v1?hash=STALE", allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"].startswith("/openapi/v3/apis/apps/v1?hash=")
    assert (await client.get("/openapi/v3/apis/nope/v1")).status == 404


async def test_openapi_v2_json_and_protobuf(
    client: TestClient[web.Request, web.Application],
) -> None:
    doc = await _json(client, "/openapi/v2")
    assert doc["swagger"] == "2.0"
    response = await client.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert response.status == 200
    # Go's mime.ParseMediaType must accept it: no "@" in the answer's media type.
    content_type = response.headers["Content-Type"]
    assert "@" not in content_type and content_type.startswith(
        "application/com.github.proto-openapi"
    )
    message = email.message.Message()
    message["Content-Type"] = content_type
    assert message.get_content_subtype().endswith("+protobuf")
    assert await response.read() == openapi.documents(discovery.RESOURCES).v2_proto


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value) pairs: varints and length-delimited only."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        if key & 7 == 0:
            out.append((key >> 3, varint()))
        else:
            assert key & 7 == 2, "only varint and length-delimited fields are written"
            size = varint()
            out.append((key >> 3, data[i : i + size]))
            i += size
    return out


def _messages(data: bytes, field: int) -> list[bytes]:
    """The length-delimited values of ``field`` in a message."""
    return [v for n, v in _fields(data) if n == field and isinstance(v, bytes)]


def test_protobuf_document_decodes_to_the_json_one() -> None:
    doc = v2_document(discovery.RESOURCES)
    encoded = openapi_proto.encode_document(doc)
    assert _messages(encoded, 1) == [b"2.0"]
    (definitions,) = _messages(encoded, 9)
    names = [_messages(named, 1)[0] for named in _messages(definitions, 1)]
    assert names == [name.encode() for name in doc["definitions"]]
    (paths,) = _messages(encoded, 8)
    assert [_messages(item, 1)[0] for item in _messages(paths, 2)] == [
        p.encode() for p in doc["paths"]
    ]


def test_protobuf_schema_carries_extensions_as_yaml() -> None:
    gvk = [{"group": "", "kind": "Pod", "version": "v1"}]
    encoded = openapi_proto.encode_schema({"type": "object", openapi_schemas.GVK: gvk})
    (extension,) = _messages(encoded, 31)
    assert _messages(extension, 1) == [openapi_schemas.GVK.encode()]
    (any_value,) = _messages(extension, 2)
    assert _messages(any_value, 2) == [b"- group: ''\n  kind: Pod\n  version: v1\n"]


async def test_the_server_answers_every_discovered_path(
    sim: SimCluster, http: ClientSession
) -> None:
    """Against the whole server: each discovered group-version and resource
    answers, collections list, and an object's subresources are routed (a missing
    object is a NotFound Status, not an unknown path)."""
    for group, version in discovery.group_versions():
        root = f"/apis/{group}/{version}" if group else f"/api/{version}"
        async with http.get(sim.url + root) as response:
            assert response.status == 200
            listed = {r["name"] for r in (await response.json())["resources"]}
        assert listed == {
            name
            for r in discovery.RESOURCES
            if (r.group, r.version) == (group, version)
            for name in (r.plural, *(f"{r.plural}/{s.name}" for s in r.subresources))
        }
    for r in discovery.RESOURCES:
        prefix = f"{sim.url}{r.root}/namespaces/default" if r.namespaced else sim.url + r.root
        async with http.get(f"{prefix}/{r.plural}") as response:
            assert response.status == 200, r.plural
            assert (await response.json())["kind"] == f"{r.kind}List"
        for sub in r.subresources:
            async with http.get(f"{prefix}/{r.plural}/no-such-object/{sub.name}") as response:
                status = await response.json()
                assert (response.status, status["reason"]) == (404, "NotFound"), sub.name
                assert "no-such-object" in status["message"]
    async with http.get(sim.url + "/openapi/v3") as response:
        assert response.status == 200

"""Malformed objects never crash the API server: seeded mutation fuzzing over HTTP.

Valid pods, deployments, namespaces and runtime classes are mutated at random
paths with values of the wrong type and shape, then created, replaced and
patched. Every answer must be a success or a 4xx Status, never a 500, and the
server must keep serving. RTBENCH_FUZZ_ROUNDS raises the number of rounds
for a longer hunt (the suite runs 120 per kind).
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from simcluster.cluster import SimCluster

from .test_watch import deployment, pod

ODD_VALUES: list[Any] = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x",
    "Not_A_Name",
    "16Mi",
    "-5",
    [],
    [1, "a"],
    [{}],
    {},
    {"a": {"b": []}},
    "9" * 400,
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def mutate(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        candidates = paths(result)
        if not candidates:
            break
        path = rng.choice(candidates)
        parent: Any = result
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return result


def with_probe_and_limits(base: dict[str, Any]) -> dict[str, Any]:
    base["spec"]["containers"][0].update(
        {
            "resources": {"limits": {"memory": "16Mi", "cpu": "100m"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        }
    )
    base["spec"]["nodeSelector"] = {"kubernetes.io/os": "linux"}
    base["spec"]["runtimeClassName"] = "crun"
    return base


def pod_body() -> dict[str, Any]:
    return with_probe_and_limits(pod("fuzz", {"a": "b"}))


def deployment_body() -> dict[str, Any]:
    return deployment("fuzz", 1)


def namespace_body() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fuzz"}}


def runtimeclass_body() -> dict[str, Any]:
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "fuzz"},
        "handler": "runc",
    }


KINDS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "pods": ("/api/v1/namespaces/default/pods", pod_body),
    "deployments": ("/apis/apps/v1/namespaces/default/deployments", deployment_body),
    "namespaces": ("/api/v1/namespaces", namespace_body),
    "runtimeclasses": ("/apis/node.k8s.io/v1/runtimeclasses", runtimeclass_body),
}
ROUNDS = int(os.environ.get("RTBENCH_FUZZ_ROUNDS", "120"))
PATCH_TYPES = ["application/merge-patch+json", "application/strategic-merge-patch+json"]


async def send(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, ctype: str
) -> tuple[int, Any]:
    data = io.BytesIO(json.dumps(body).encode())
    async with http.request(method, url, data=data, headers={"Content-Type": ctype}) as response:
        answer = await response.json()
        return response.status, answer


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_mutated_objects_get_4xx_never_500(
    sim: SimCluster, http: aiohttp.ClientSession, kind: str
) -> None:
    path, make = KINDS[kind]
    url = sim.url + path
    rng = random.Random(f"fuzz-{kind}")
    status, created = await send(http, "POST", url, make(), "application/json")
    assert status == 201, created
    codes: set[int] = set()
    for round_number in range(ROUNDS):
        body = mutate(make(), rng)
        if isinstance(body.get("metadata"), dict) and isinstance(body["metadata"].get("name"), str):
            body["metadata"]["name"] = f"fuzz-{round_number}"
        for method, target, payload, ctype in [
            ("POST", url, body, "application/json"),
            (
                "PUT",
                f"{url}/fuzz",
                {**body, "metadata": {**(body.get("metadata") or {}), "name": "fuzz"}}
                if isinstance(body.get("metadata"), dict)
                else body,
                "application/json",
            ),
            (
                "PATCH",
                f"{url}/fuzz",
                mutate({"metadata": {"labels": {"x": "y"}}, "spec": make().get("spec", {})}, rng),
                rng.choice(PATCH_TYPES),
            ),
        ]:
            status, answer = await send(http, method, target, payload, ctype)
            codes.add(status)
            assert status < 500, (method, payload, answer)
            if status >= 400:
                assert answer["kind"] == "Status" and answer["code"] == status
    assert codes & {200, 201} and codes & {400, 422}
    async with http.get(sim.url + "/readyz") as response:
        assert response.status == 200
    assert sim.problem is None

"""PATCH semantics: merge patch, the strategic-merge approximation, JSON patch."""

from __future__ import annotations

from typing import Any

import pytest

from simcluster.errors import ApiError, BadRequest, Invalid
from simcluster.patching import json_patch, merge_patch, strategic_merge_patch

POD: dict[str, Any] = {
    "metadata": {"labels": {"a": "1", "b": "2"}},
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "v1",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "X", "value": "1"}],
            },
            {"name": "side", "image": "s1"},
        ],
        "nodeSelector": {"disk": "ssd"},
    },
}


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    result = merge_patch(
        POD, {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"containers": []}}
    )
    assert result["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert result["spec"]["containers"] == []
    assert POD["metadata"]["labels"] == {"a": "1", "b": "2"}  # the input is untouched


def test_strategic_merge_merges_keyed_lists_and_honours_directives() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [
                {"name": "web", "image": "v2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n1"},
            ],
            "nodeSelector": {"$patch": "replace", "zone": "a"},
        }
    }
    result = strategic_merge_patch(POD, patch)
    containers = result["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "new"]
    assert containers[0]["image"] == "v2" and containers[0]["ports"] == [{"containerPort": 80}]
    assert containers[0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert result["spec"]["nodeSelector"] == {"zone": "a"}
    assert "$setElementOrder/containers" not in result["spec"]


def test_json_patch_operations() -> None:
    ops = [
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "v3"},
        {"op": "copy", "from": "/spec/containers/0/image", "path": "/metadata/labels/img"},
        {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/moved"},
        {"op": "test", "path": "/spec/nodeSelector/disk", "value": "ssd"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "last"}},
    ]
    result = json_patch(POD, ops)
    assert result["metadata"]["labels"] == {"c": "3", "img": "v3", "moved": "2"}
    assert result["spec"]["containers"][-1] == {"name": "last"}


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ({"op": "add"}, BadRequest),
        ([{"op": "frob", "path": "/a"}], BadRequest),
        ([{"op": "remove", "path": "/nope"}], Invalid),
        ([{"op": "test", "path": "/spec/nodeSelector/disk", "value": "hdd"}], Invalid),
        ([{"op": "add", "path": "/spec/containers/9", "value": 1}], Invalid),
    ],
)
def test_json_patch_errors(ops: Any, error: type[ApiError]) -> None:
    with pytest.raises(error):
        json_patch(POD, ops)

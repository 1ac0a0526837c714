"""The operations of the OpenAPI documents, and the v2 and v3 documents themselves.

The operations are generated from discovery's resource table, one per verb the
server implements, and tagged with ``x-kubernetes-group-version-kind`` the way
kube-apiserver tags them, because kubectl finds an operation by that tag: the
PATCH operation of a kind tells kubectl whether the server validates fields
itself (a ``fieldValidation`` query parameter, deliberately absent, see
openapi.py) and, through its request content types, whether ``kubectl apply``
may compute a strategic merge patch from the v3 schema.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from simcluster.openapi_schemas import (
    GVK,
    Schema,
    closure,
    definition_for,
    definitions,
    list_definition,
    references,
    v3_schema,
)

if TYPE_CHECKING:
    from simcluster.discovery import Resource


@dataclass(frozen=True)
class _Operation:
    """One operation, before it is written out in v2 or v3 form."""

    method: str
    action: str
    operation_id: str
    description: str
    gvk: dict[str, str]
    query: tuple[str, ...]
    body: str | None
    """Definition name of the request body; "meta.Patch" bodies get patch types."""
    response: str | None
    """Definition name of the 200 response; None for plain text (logs)."""


# Query parameters the server reads. fieldValidation is left out on purpose (see
# the module docstring), and so is dryRun: kubectl checks for it the same way
# before `--dry-run=server`, and a server that ignored it would really write.
_QUERY: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "Ask for BOOKMARK events on a watch."),
    "container": ("string", "The container whose log to return."),
    "continue": ("string", "Token of the next page of a paged list."),
    "fieldManager": ("string", "Name of the actor making the change."),
    "fieldSelector": ("string", "Select objects by fields (metadata.name, spec.nodeName)."),
    "follow": ("boolean", "Stream the log."),
    "gracePeriodSeconds": ("integer", "Seconds before the object is deleted."),
    "labelSelector": ("string", "Select objects by labels."),
    "limit": ("integer", "Maximum number of objects in one page."),
    "propagationPolicy": ("string", "Orphan, Background or Foreground deletion of dependents."),
    "resourceVersion": ("string", "List from, or watch after, this version."),
    "tailLines": ("integer", "Number of lines from the end of the log."),
    "timeoutSeconds": ("integer", "End the list or watch call after this long."),
    "watch": ("boolean", "Watch for changes instead of listing."),
}
_LIST_QUERY = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "timeoutSeconds",
    "watch",
)
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_VERB_WORDS = {
    "list": "list",
    "create": "create",
    "deletecollection": "deleteCollection",
    "get": "read",
    "update": "replace",
    "patch": "patch",
    "delete": "delete",
}
"""How kube-apiserver's operation ids name each verb (readCoreV1NamespacedPod)."""


def _group_word(group: str) -> str:
    return "Core" if not group else group.split(".")[0].capitalize()


def _paths(r: Resource) -> dict[str, list[_Operation]]:
    """Every path of one resource and its operations, named as kube-apiserver names them."""
    gvk = {"group": r.group, "kind": r.kind, "version": r.version}
    word = _group_word(r.group) + r.version.capitalize() + ("Namespaced" if r.namespaced else "")
    base = f"{r.root}/namespaces/{{namespace}}" if r.namespaced else r.root
    model = definition_for(r.group, r.version, r.kind)
    listed = f"{model}List"
    status = f"{_META}.Status"
    delete_options = f"{_META}.DeleteOptions"
    collection, item = f"{base}/{r.plural}", f"{base}/{r.plural}/{{name}}"
    paths: dict[str, list[_Operation]] = {collection: [], item: []}

    def add(path: str, verb: str, name: str, doc: str, **how: Any) -> None:
        method, action, query, body, response = {
            "list": ("get", "list", _LIST_QUERY, None, listed),
            "create": ("post", "post", ("fieldManager",), model, model),
            "deletecollection": (
                "delete",
                "deletecollection",
                ("fieldSelector", "labelSelector"),
                delete_options,
                status,
            ),
            "get": ("get", "get", (), None, model),
            "update": ("put", "put", ("fieldManager",), model, model),
            "patch": ("patch", "patch", ("fieldManager",), f"{_META}.Patch", model),
            "delete": (
                "delete",
                "delete",
                ("gracePeriodSeconds", "propagationPolicy"),
                delete_options,
                status,
            ),
        }[verb]
        op = _Operation(method, action, name, doc, gvk, query, body, response)
        paths.setdefault(path, []).append(replace(op, **how))

    for verb in ("list", "create", "deletecollection"):
        if verb in r.verbs:
            add(collection, verb, f"{_VERB_WORDS[verb]}{word}{r.kind}", f"{verb} {r.kind} objects")
    if "list" in r.verbs and r.namespaced:
        add(
            f"{r.root}/{r.plural}",
            "list",
            f"list{word.removesuffix('Namespaced')}{r.kind}ForAllNamespaces",
            f"list or watch objects of kind {r.kind} in all namespaces",
        )
    for verb in ("get", "update", "patch", "delete"):
        if verb in r.verbs:
            add(item, verb, f"{_VERB_WORDS[verb]}{word}{r.kind}", f"{verb} the specified {r.kind}")
    for sub in r.subresources:
        path = f"{item}/{sub.name}"
        if sub.name == "log":
            add(
                path,
                "get",
                f"read{word}{r.kind}Log",
                f"read log of the specified {r.kind}",
                query=("container", "follow", "tailLines"),
                response=None,
            )
            continue
        sub_gvk = {
            "group": r.group if sub.group is None else sub.group,
            "kind": sub.kind,
            "version": r.version if sub.version is None else sub.version,
        }
        sub_model = definition_for(sub_gvk["group"], sub_gvk["version"], sub.kind)
        for verb in ("get", "update", "patch"):
            if verb in sub.verbs:
                body = {"get": None, "update": sub_model, "patch": f"{_META}.Patch"}[verb]
                add(
                    path,
                    verb,
                    f"{_VERB_WORDS[verb]}{word}{r.kind}{sub.name.capitalize()}",
                    f"{verb} {sub.name} of the specified {r.kind}",
                    gvk=sub_gvk,
                    body=body,
                    response=sub_model,
                )
    return {path: ops for path, ops in paths.items() if ops}


def _path_parameters(path: str) -> list[tuple[str, str]]:
    found = []
    if "{name}" in path:
        found.append(("name", "name of the object"))
    if "{namespace}" in path:
        found.append(("namespace", "object name and auth scope, such as for teams and projects"))
    return found


def _v2_operation(op: _Operation) -> Schema:
    params: list[Schema] = []
    if op.body is not None:
        params.append(
            {
                "in": "body",
                "name": "body",
                "required": True,
                "schema": {"$ref": f"#/definitions/{op.body}"},
            }
        )
    for name in op.query:
        type_, doc = _QUERY[name]
        params.append(
            {"in": "query", "name": name, "type": type_, "description": doc, "uniqueItems": True}
        )
    ok: Schema = {"description": "OK"}
    ok["schema"] = {"$ref": f"#/definitions/{op.response}"} if op.response else {"type": "string"}
    responses: Schema = {"200": ok, "401": {"description": "Unauthorized"}}
    if op.method == "post":
        responses["201"] = {"description": "Created", "schema": ok["schema"]}
    produces = (
        ["application/json", "application/yaml"]
        if op.response
        else ["text/plain", "application/json"]
    )
    if op.action == "list":
        produces.append("application/json;stream=watch")
    return {
        "description": op.description,
        "operationId": op.operation_id,
        "consumes": list(_PATCH_TYPES) if op.method == "patch" else ["*/*"],
        "produces": produces,
        "schemes": ["https"],
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        GVK: op.gvk,
    }


def v2_document(resources: tuple[Resource, ...]) -> Schema:
    """The Swagger 2.0 document of ``/openapi/v2``."""
    defs = dict(definitions())
    paths: Schema = {}
    for r in resources:
        name = definition_for(r.group, r.version, r.kind)
        defs[f"{name}List"] = list_definition(name, r.group, r.version, r.kind)
        for path, ops in _paths(r).items():
            item: Schema = {op.method: _v2_operation(op) for op in ops}
            item["parameters"] = [
                {
                    "in": "path",
                    "name": p,
                    "description": doc,
                    "required": True,
                    "type": "string",
                    "uniqueItems": True,
                }
                for p, doc in _path_parameters(path)
            ]
            paths[path] = item
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(defs.items())),
    }


def _v3_operation(op: _Operation) -> Schema:
    v2 = _v2_operation(op)
    content_types = ["application/json", "application/yaml"] if op.response else ["text/plain"]
    result = {"$ref": f"#/components/schemas/{op.response}"} if op.response else {"type": "string"}
    responses: Schema = {
        code: (
            {
                "description": r["description"],
                "content": {t: {"schema": result} for t in content_types},
            }
            if "schema" in r
            else {"description": r["description"]}
        )
        for code, r in v2["responses"].items()
    }
    doc: Schema = {
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": [
            {
                "name": p["name"],
                "in": "query",
                "description": p["description"],
                "schema": {"type": p["type"], "uniqueItems": True},
            }
            for p in v2["parameters"]
            if p["in"] == "query"
        ],
        "responses": responses,
        "x-kubernetes-action": op.action,
        GVK: op.gvk,
    }
    if op.body is not None:
        body = {"schema": {"$ref": f"#/components/schemas/{op.body}"}}
        types = _PATCH_TYPES if op.method == "patch" else ("*/*",)
        doc["requestBody"] = {"content": {t: body for t in types}, "required": True}
    return doc


def v3_documents(resources: tuple[Resource, ...]) -> dict[str, Schema]:
    """One OpenAPI 3.0 document per group-version, keyed by its path under /openapi/v3."""
    v2 = v2_document(resources)
    by_path: dict[str, dict[str, Schema]] = {}
    for r in resources:
        key = r.root.lstrip("/")
        for path, ops in _paths(r).items():
            item: Schema = {op.method: _v3_operation(op) for op in ops}
            item["parameters"] = [
                {
                    "name": p,
                    "in": "path",
                    "description": doc,
                    "required": True,
                    "schema": {"type": "string", "uniqueItems": True},
                }
                for p, doc in _path_parameters(path)
            ]
            by_path.setdefault(key, {})[path] = item
    docs: dict[str, Schema] = {}
    for key, paths in by_path.items():
        schemas = closure(references(paths), v2["definitions"])
        docs[key] = {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": {n: v3_schema(s) for n, s in schemas.items()}},
        }
    return docs

"""The schemas of the kinds the simulated cluster accepts, as OpenAPI definitions.

kubectl validates manifests against these (a field missing here makes it refuse
manifests that use the field), takes the patch strategies of ``kubectl apply``
from them and prints them with ``kubectl explain``. They are authored in the
compact notation of ``openapi_schemas.yaml`` (real Kubernetes 1.32 field names,
types, required fields and patch strategies; short descriptions), which this
module expands into OpenAPI v2 definitions, and converts to v3 component schemas.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]

SCHEMAS_FILE = Path(__file__).with_name("openapi_schemas.yaml")
_PRIMITIVES: dict[str, Schema] = {
    "string": {"type": "string"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "number": {"type": "number", "format": "double"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
}
_EXTENSIONS = {
    "merge": "x-kubernetes-patch-merge-key",
    "strategy": "x-kubernetes-patch-strategy",
    "list": "x-kubernetes-list-type",
    "keys": "x-kubernetes-list-map-keys",
}
GVK = "x-kubernetes-group-version-kind"
"""The extension that tags schemas (a list) and operations (one) with their kind."""
_API_VERSION = "APIVersion defines the versioned schema of this representation of an object."
_KIND = "Kind is a string value representing the REST resource this object represents."


def parse_gvk(text: str) -> dict[str, str]:
    """``"apps/v1 Deployment"`` → {"group": "apps", "kind": ..., "version": "v1"}."""
    group_version, kind = text.split()
    group, _, version = group_version.rpartition("/")
    return {"group": group, "kind": kind, "version": version}


class _Expander:
    """Turns the compact notation of openapi_schemas.yaml into OpenAPI v2 schemas."""

    def __init__(self, prefixes: dict[str, str]) -> None:
        self.prefixes = prefixes

    def name(self, short: str) -> str:
        prefix, _, rest = short.partition(".")
        return f"{self.prefixes[prefix]}.{rest}"

    def type_(self, text: str) -> Schema:
        text = text.strip()
        if text.startswith("[") and text.endswith("]"):
            return {"type": "array", "items": self.type_(text[1:-1])}
        if text.startswith("{") and text.endswith("}"):
            return {"type": "object", "additionalProperties": self.type_(text[1:-1])}
        if text in _PRIMITIVES:
            return dict(_PRIMITIVES[text])
        return {"$ref": f"#/definitions/{self.name(text)}"}

    def property(self, spec: str | dict[str, Any]) -> Schema:
        if isinstance(spec, str):
            type_text, _, doc = spec.partition("|")
            spec = {"type": type_text, "doc": doc.strip()}
        schema = self.type_(spec["type"])
        if spec.get("doc"):
            schema["description"] = spec["doc"]
        for key, extension in _EXTENSIONS.items():
            if key in spec:
                schema[extension] = spec[key]
        return schema

    def definition(self, spec: dict[str, Any]) -> Schema:
        if "properties" not in spec:
            schema: Schema = {"type": spec["type"], "description": spec["doc"]}
            if "format" in spec:
                schema["format"] = spec["format"]
            return schema
        properties = {name: self.property(p) for name, p in spec["properties"].items()}
        gvks = spec.get("gvk")
        if gvks:
            properties["apiVersion"] = {"type": "string", "description": _API_VERSION}
            properties["kind"] = {"type": "string", "description": _KIND}
        schema = {
            "description": spec["doc"],
            "type": "object",
            "properties": dict(sorted(properties.items())),
        }
        if spec.get("required"):
            schema["required"] = list(spec["required"])
        if gvks:
            gvk_list = [gvks] if isinstance(gvks, str) else gvks
            schema[GVK] = [parse_gvk(g) for g in gvk_list]
        return schema


@functools.cache
def definitions() -> dict[str, Schema]:
    """Every schema from openapi_schemas.yaml, as OpenAPI v2 definitions."""
    raw = yaml.safe_load(SCHEMAS_FILE.read_text(encoding="utf-8"))
    expander = _Expander(raw["prefixes"])
    return {
        expander.name(short): expander.definition(spec)
        for short, spec in raw["definitions"].items()
    }


def definition_for(group: str, version: str, kind: str) -> str:
    """The name of the definition tagged with this group-version-kind."""
    wanted = {"group": group, "kind": kind, "version": version}
    for name, schema in definitions().items():
        if wanted in schema.get(GVK, []):
            return name
    raise KeyError(f"no schema for {group}/{version} {kind}")


def list_definition(name: str, group: str, version: str, kind: str) -> Schema:
    """The <Kind>List definition for the definition ``name``."""
    return {
        "description": f"A list of {kind} objects.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION},
            "items": {"type": "array", "items": {"$ref": f"#/definitions/{name}"}},
            "kind": {"type": "string", "description": _KIND},
            "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
        },
        GVK: [{"group": group, "kind": f"{kind}List", "version": version}],
    }


def references(schema: Any) -> set[str]:
    """Names of the definitions ``schema`` refers to directly."""
    found: set[str] = set()
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[1])
        for value in schema.values():
            found |= references(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= references(value)
    return found


def closure(roots: set[str], defs: dict[str, Schema]) -> dict[str, Schema]:
    """The definitions in ``roots`` and every definition they refer to, sorted."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(references(defs[name]) - seen)
    return {name: defs[name] for name in sorted(seen)}


def v3_schema(schema: Any) -> Any:
    """A v2 schema in v3 form: references into components, and a reference with
    siblings (a description, a patch strategy) wrapped in allOf as kube-apiserver does."""
    if isinstance(schema, list):
        return [v3_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: v3_schema(value) for key, value in schema.items() if key != "$ref"}
    if "$ref" in schema:
        ref = {"$ref": schema["$ref"].replace("#/definitions/", "#/components/schemas/")}
        if not out:
            return ref
        out["allOf"] = [ref]
    return out

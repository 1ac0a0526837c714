"""Discovery and OpenAPI documents, so that kubectl and client libraries can find
the resources the simulated cluster serves.

Before any request about a resource, kubectl maps what the user typed (``po``,
``deploy``, ``runtimeclasses``) to a group, version and URL by reading
``/api``, ``/apis`` and each group-version's resource list; ``kubectl get all``
reads the categories; ``kubectl version`` reads ``/version``. ``RESOURCES`` is
generated from the server's routing table (simcluster.resources), and
openapi_paths.py generates the OpenAPI operations from it, so discovery, OpenAPI and routing cannot
disagree about what the server serves.

kubectl 1.32 first asks for *aggregated* discovery (one document for all groups,
requested through the Accept header). We answer every discovery request with the
plain documents and ``Content-Type: application/json``; client-go sees that the
answer is not an ``APIGroupDiscoveryList`` and falls back to the per-group
documents, which is what it does against any server older than 1.26.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simcluster import openapi, resources

SERVER_VERSION = "v1.32.0-rtbench-sim"
"""What ``kubectl version`` shows. 1.32 because that is the API the server follows
(and the kubectl it is tested with); the suffix says it is not a real cluster."""


@dataclass(frozen=True)
class Subresource:
    """A subresource such as ``pods/log`` or ``deployments/scale``."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    """Set when the subresource's kind belongs to another group (Scale)."""
    version: str | None = None


@dataclass(frozen=True)
class Resource:
    """One resource the server serves, as discovery and OpenAPI describe it."""

    group: str
    """API group; "" for the core group (served under /api)."""
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()

    @property
    def group_version(self) -> str:
        """``v1`` or ``apps/v1``: the apiVersion of this resource's objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def root(self) -> str:
        """URL prefix of this resource's group-version: /api/v1 or /apis/apps/v1."""
        return f"/apis/{self.group_version}" if self.group else f"/api/{self.version}"


# Short names and categories as a real cluster has them: `kubectl get po`,
# `kubectl get all`.
_SHORT_NAMES = {"Namespace": ("ns",), "Node": ("no",), "Pod": ("po",), "Deployment": ("deploy",)}
_CATEGORIES = {"Pod": ("all",), "Deployment": ("all",)}
# Subresource kinds and verbs. Scale belongs to autoscaling/v1 wherever it is served.
_SUBRESOURCES = {
    ("Pod", "log"): Subresource("log", "Pod", ("get",)),
    ("Pod", "status"): Subresource("status", "Pod", ("get",)),
    ("Deployment", "scale"): Subresource(
        "scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"
    ),
    ("Deployment", "status"): Subresource("status", "Deployment", ("get",)),
}


def _resource(rtype: resources.ResourceType) -> Resource:
    return Resource(
        group=rtype.group,
        version=rtype.version,
        plural=rtype.plural,
        singular=rtype.kind.lower(),
        kind=rtype.kind,
        namespaced=rtype.namespaced,
        # The server's own verbs: kubectl checks them (`get` needs list, `apply`
        # patch, `delete` delete), so claiming more would turn a clear "not
        # supported" into a 405, and fewer would hide what works.
        verbs=tuple(sorted(rtype.verbs)),
        short_names=_SHORT_NAMES.get(rtype.kind, ()),
        categories=_CATEGORIES.get(rtype.kind, ()),
        subresources=tuple(
            _SUBRESOURCES.get((rtype.kind, name), Subresource(name, rtype.kind, ("get",)))
            for name in sorted(rtype.subresources)
        ),
    )


RESOURCES: tuple[Resource, ...] = tuple(_resource(t) for t in resources.ALL_TYPES)
"""What discovery and OpenAPI describe: the server's routing table
(simcluster.resources) plus what only clients need (short names, categories)."""


def group_versions() -> list[tuple[str, str]]:
    """(group, version) pairs served, core first, each once, in table order."""
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen


def version_info() -> dict[str, str]:
    """The version.Info of ``GET /version``."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": SERVER_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        # There is no Go here; say honestly what runs the server.
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"{sys.platform}/{arch}",
    }


def api_versions() -> dict[str, Any]:
    """The APIVersions of ``GET /api`` (the core group)."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        # Clients use this to pick an address per client CIDR; any local one works.
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group_list() -> dict[str, Any]:
    """The APIGroupList of ``GET /apis`` (every named group)."""
    groups = []
    for group, version in group_versions():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any]:
    """The APIGroup of ``GET /apis/<group>``."""
    for entry in api_group_list()["groups"]:
        if entry["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **entry}
    raise KeyError(group)


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    """The APIResourceList of one group-version, subresources included."""
    entries: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub.name}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group is not None:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            entries.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def _json(doc: dict[str, Any]) -> web.Response:
    # Plain application/json, never an aggregated-discovery media type: that is
    # what makes client-go fall back to the per-group documents.
    return web.json_response(doc)


async def _version(request: web.Request) -> web.Response:
    return _json(version_info())


async def _api(request: web.Request) -> web.Response:
    return _json(api_versions())


async def _apis(request: web.Request) -> web.Response:
    return _json(api_group_list())


def _static(doc: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return _json(doc)

    return handler


def routes() -> list[web.RouteDef]:
    """Routes for /version, /api, /apis, the group-version resource lists and
    /openapi/v2, /openapi/v3. Registered before the resource routes."""
    table = [
        web.get("/version", _version),
        # kubernetes-asyncio's VersionApi asks for /version/; the real API server
        # answers both spellings.
        web.get("/version/", _version),
        web.get("/api", _api),
        web.get("/apis", _apis),
    ]
    for group, version in group_versions():
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        table.append(web.get(path, _static(api_resource_list(group, version))))
        if group:
            table.append(web.get(f"/apis/{group}", _static(api_group(group))))
    return table + openapi.routes(RESOURCES)

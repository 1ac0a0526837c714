"""Serves the OpenAPI v2 and v3 documents of the simulated cluster.

kubectl will not ``apply`` or ``create -f`` a manifest to a server that serves no
OpenAPI schema ("failed to download openapi"); it also computes ``kubectl
apply``'s strategic merge patches from the schema and prints it with ``kubectl
explain``. The schemas come from openapi_schemas.py, the operations and the
documents from openapi_paths.py; this module encodes them once and serves them
the way kube-apiserver does (content types, hashes, ETags).

Where kubectl 1.32 validates a manifest (cli-runtime's QueryParamVerifierV3): it
looks in the v3 document of the manifest's group-version for the PATCH
operation tagged with the manifest's kind. Had that operation a ``fieldValidation``
query parameter, kubectl would skip its own check and rely on the server to
reject unknown fields. Ours never have one, so kubectl validates client-side,
against ``/openapi/v2``, and refuses a manifest with an unknown field before
sending anything (``ValidationError(Deployment.spec): unknown field "replicaz"``).
A kind without a PATCH operation ends the same way through the v2 fallback.
kubectl still appends ``fieldValidation=Strict`` to its create and patch
requests; the server ignores it, as kube-apiservers without server-side field
validation did.

kubectl reads ``/openapi/v2`` only as protobuf, see openapi_proto.py;
``/openapi/v3`` it reads as JSON: the root lists each group-version's document
under ``paths`` with a ``serverRelativeURL`` that carries a hash of the document,
so clients can cache it for good.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simcluster import openapi_proto
from simcluster.openapi_paths import v2_document, v3_documents

if TYPE_CHECKING:
    from simcluster.discovery import Resource

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
"""Content-Type of the protobuf v2 document. Clients ask for the older
``...spec.v2@v1.0+protobuf``, but Go's mime parser rejects the "@" in a response
Content-Type, so kube-apiserver answers with this spelling, and so do we."""


@dataclass(frozen=True)
class Documents:
    """Every OpenAPI document the server serves, encoded once."""

    v2_json: bytes
    v2_proto: bytes
    v3_root: bytes
    v3: dict[str, tuple[bytes, str]]
    """Group-version path ("api/v1", "apis/apps/v1") → (document, hash)."""


@functools.cache
def documents(resources: tuple[Resource, ...]) -> Documents:
    """Builds (once per resource table) the v2 and v3 documents."""
    v2 = v2_document(resources)
    v3: dict[str, tuple[bytes, str]] = {}
    for path, doc in v3_documents(resources).items():
        body = json.dumps(doc, sort_keys=True).encode()
        v3[path] = (body, hashlib.sha512(body).hexdigest().upper())
    root = {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            for path, (_, digest) in v3.items()
        }
    }
    return Documents(
        v2_json=json.dumps(v2).encode(),
        v2_proto=openapi_proto.encode_document(v2),
        v3_root=json.dumps(root).encode(),
        v3=v3,
    )


def _cached(request: web.Request, body: bytes, content_type: str, etag: str) -> web.Response:
    if request.headers.get("If-None-Match", "").strip('"') == etag:
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})
    return web.Response(body=body, content_type=content_type, headers={"ETag": f'"{etag}"'})


def routes(resources: tuple[Resource, ...]) -> list[web.RouteDef]:
    """/openapi/v2, /openapi/v3 and /openapi/v3/<group-version path>."""

    async def v2(request: web.Request) -> web.Response:
        docs = documents(resources)
        if "protobuf" in request.headers.get("Accept", ""):
            body, content_type = docs.v2_proto, V2_PROTOBUF
        else:
            body, content_type = docs.v2_json, "application/json"
        response = _cached(request, body, content_type, hashlib.sha256(body).hexdigest())
        response.headers["Vary"] = "Accept"
        return response

    async def v3_root(request: web.Request) -> web.Response:
        body = documents(resources).v3_root
        return _cached(request, body, "application/json", hashlib.sha256(body).hexdigest())

    async def v3_group_version(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        entry = documents(resources).v3.get(path)
        if entry is None:
            raise web.HTTPNotFound(text=f"no OpenAPI v3 document for {path}")
        body, digest = entry
        asked = request.query.get("hash")
        if asked is not None and asked != digest:
            # As kube-apiserver does: send a client with a stale hash to the current one.
            raise web.HTTPMovedPermanently(f"/openapi/v3/{path}?hash={digest}")
        response = _cached(request, body, "application/json", digest)
        # Immutable only when the URL names the content, exactly like kube-apiserver.
        response.headers["Cache-Control"] = (
            "public, immutable" if asked is not None else "no-cache, private"
        )
        return response

    return [
        web.get("/openapi/v2", v2),
        web.get("/openapi/v3", v3_root),
        web.get("/openapi/v3/{path:.+}", v3_group_version),
    ]

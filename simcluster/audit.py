"""A record of the API requests each client makes, for proving RBAC rules against real calls.

A ClusterRole is least privilege only if it grants exactly what the client
asks for. The real apiserver knows what that is: its authorizer sees every
request as attributes (user, verb, API group, resource, subresource,
namespace, name) and the audit log records them. This module gives the
simulated cluster the same view, so a test can run a client (the agent)
through a workload run and compare the set of (verb, group, resource) it used
with the rules of its chart.

Requests are mapped to attributes the way the apiserver's request-info
resolver does it (k8s.io/apiserver ``RequestInfoFactory``):

- ``/api/v1/...`` is the core group ``""``, ``/apis/<group>/<version>/...`` a
  named group; ``namespaces/<ns>/<resource>`` sets the namespace (a request for
  ``namespaces/<ns>`` itself is the resource ``namespaces``);
- POST is ``create``, PUT ``update``, PATCH ``patch``; GET and HEAD are ``get``
  on an object, ``list`` on a collection, and ``watch`` on a collection with
  ``watch=true`` (or under the legacy ``/watch/`` prefix); DELETE is ``delete``
  on an object and ``deletecollection`` on a collection;
- every other path (``/version``, ``/openapi/v3``, ``/healthz``, ...) is a
  non-resource request: the verb is the lower-cased method and ``path`` is set.

Who asked: the bearer token, if any, as ``token:<12 hex of its sha256>`` (so a
record never holds a credential), else ``anonymous``; the User-Agent is kept
beside it. The simulated cluster authenticates nobody: a test gives each
client its own token in its kubeconfig to tell them apart.

Recording is off until ``enable()``; while off, the middleware costs one
attribute check per request. Requests under ``/_sim/`` (the cluster's own
admin endpoints) are never recorded. The record is bounded (``limit``); what
falls off the end is counted in ``dropped``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = [
    "ApiRequest",
    "RequestLog",
    "request_attributes",
    "token_identity",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANONYMOUS = "anonymous"
_OBJECT_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def token_identity(token: str) -> str:
    """How a bearer token is named in the record: a fingerprint, never the token."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiRequest:
    """One request as the authorizer sees it."""

    user: str
    """``token:<fingerprint>`` or ``anonymous``."""
    user_agent: str
    verb: str
    """get, list, watch, create, update, patch, delete, deletecollection; for a
    non-resource request the lower-cased HTTP method."""
    group: str = ""
    """API group; ``""`` is the core group (and non-resource requests)."""
    resource: str = ""
    """Plural resource name; ``""`` for a non-resource request."""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    """Set for non-resource requests only."""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def request_attributes(
    method: str, path: str, query: Mapping[str, str]
) -> tuple[str, str, str, str, str, str, str]:
    """(verb, group, resource, subresource, namespace, name, path) of one request.

    ``path`` in the result is empty for resource requests and the request path otherwise.
    """
    method = method.upper()
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        rest = []
        group = ""
    if not rest:
        # /version, /api, /apis/<group>/<version> (discovery), /openapi/..., /healthz ...
        return method.lower(), "", "", "", "", "", path
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":
        # A namespace object itself: its namespace attribute is its own name.
        namespace = rest[1]
    if not rest:
        return method.lower(), "", "", "", "", "", path
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if method in _OBJECT_VERBS:
        verb = _OBJECT_VERBS[method]
    elif method in ("GET", "HEAD"):
        if watch_prefix:
            verb = "watch"
        elif name:
            verb = "get"
        else:
            verb = "watch" if _truthy(query.get("watch")) else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    return verb, group, resource, subresource, namespace, name, ""


def _user(request: web.Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return token_identity(credentials.strip())
    return ANONYMOUS


class RequestLog:
    """The bounded, switchable record of API requests (see the module docstring)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.enabled = False
        self.dropped = 0
        """Records that fell off the front once ``limit`` was reached."""
        self._records: deque[ApiRequest] = deque(maxlen=limit)

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def clear(self) -> None:
        self._records.clear()
        self.dropped = 0

    def record(self, request: web.Request) -> None:
        if request.path.startswith("/_sim/"):
            return
        verb, group, resource, subresource, namespace, name, path = request_attributes(
            request.method, request.path, request.query
        )
        if len(self._records) == self._records.maxlen:
            self.dropped += 1
        self._records.append(
            ApiRequest(
                user=_user(request),
                user_agent=request.headers.get("User-Agent", ""),
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource,
                namespace=namespace,
                name=name,
                path=path,
            )
        )

    def records(self, user: str | None = None) -> list[ApiRequest]:
        """Every record kept, oldest first; only ``user``'s when given."""
        return [r for r in self._records if user is None or r.user == user]

    @staticmethod
    def permissions(records: Iterable[ApiRequest]) -> set[tuple[str, str, str]]:
        """(verb, group, resource[/subresource]) of the resource requests, as RBAC rules
        name them."""
        return {
            (r.verb, r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource)
            for r in records
            if r.is_resource
        }

    def summary(self, user: str | None = None) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "dropped": self.dropped,
            "requests": [r.to_dict() for r in self.records(user)],
        }

    @property
    def middleware(self) -> Middleware:
        """The aiohttp middleware that records each request on arrival while enabled."""

        @web.middleware
        async def recording(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.enabled:
                self.record(request)
            return await handler(request)

        return recording

"""The HTTP face of the simulated cluster: Kubernetes API routes over aiohttp.

One catch-all route parses resource paths itself (resources.py), so every
request this server cannot serve still gets a Kubernetes Status: 404 NotFound
for unknown paths, 405 MethodNotAllowed for a wrong verb on a known path, 400
for malformed JSON, a wrong kind or a bad selector, 413 above the 3 MiB body
limit, 415 for an unknown patch type. Bad input never escapes as a traceback:
the error middleware turns anything unexpected into a 500 Status and logs it.

The discovery and OpenAPI routes (discovery.py) and kubectl's Table output
(tables.py) belong to their own modules; this one registers discovery first and
asks tables.render for every object or list it answers a GET with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import discovery, tables
from .audit import RequestLog
from .errors import (
    ApiError,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    UnsupportedMediaType,
)
from .faults import Faults
from .objects import Obj
from .podlogs import LogOptions, LogSource, serve_log
from .registry import DeleteOptions, Registry
from .resources import DEPLOYMENTS, PODS, Target, resolve
from .selectors import parse_field_selector, parse_label_selector
from .settings import SimSettings
from .watching import WatchRequest, WatchStream

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DISCOVERY_PATHS = frozenset(
    {"/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/apis/node.k8s.io/v1"}
)
ADMIN_PREFIXES = ("/_sim/", "/healthz", "/readyz", "/livez")
JSON = "application/json"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type=JSON)


def status_response(error: ApiError) -> web.Response:
    response = json_response(error.status(), error.status_code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a Kubernetes Status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return status_response(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return status_response(
            RequestTooLarge(f"Request entity too large: {exc.text or ''}".strip())
        )
    except web.HTTPMethodNotAllowed:
        return status_response(
            MethodNotAllowed("the server does not allow this method on the requested resource")
        )
    except web.HTTPNotFound:
        return status_response(NotFound("the server could not find the requested resource"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return status_response(
            ApiError(exc.reason, code=exc.status, reason=exc.reason.replace(" ", ""))
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.exception("internal error serving %s %s", request.method, request.path)
        return status_response(InternalError(f"internal error: {type(exc).__name__}: {exc}"))


def fault_middleware(faults: Faults) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(ADMIN_PREFIXES):
            delay = faults.delay_for(request.path)
            if delay > 0:
                await asyncio.sleep(delay)
            error = faults.error_for(request.method, request.path)
            if error is not None:
                raise error
        return await handler(request)

    return middleware


def _bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(f"invalid value for {name}: {raw!r} (want true or false)")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid value for {name}: {raw!r} (want an integer)") from None
    if value < 0:
        raise BadRequest(f"invalid value for {name}: {raw!r} (must not be negative)")
    return value


MAX_BODY_DEPTH = 100
"""Nesting levels a request body may have. A Kubernetes object is a dozen deep; a body
nested hundreds deep is an attack on the recursive code that validates and copies
objects (Python's recursion limit), refused here before it gets there."""


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests deeper than MAX_BODY_DEPTH (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


class ApiServer:
    """The resource handlers; ``build_app`` wires them into an aiohttp app."""

    def __init__(self, registry: Registry, settings: SimSettings, logs: LogSource) -> None:
        self.registry = registry
        self.store = registry.store
        self.settings = settings
        self.logs = logs
        self._jitter = random.Random()

    # -- request helpers ---------------------------------------------------------------

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestTooLarge(
                f"Request entity too large: limit is {self.settings.max_body_bytes}"
            ) from None
        if not raw.strip():
            if optional:
                return None
            raise BadRequest("the body of the request was empty")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"the body of the request is not valid JSON: {exc}") from None
        if _too_deep(body):
            raise BadRequest(
                f"the body of the request is nested deeper than {MAX_BODY_DEPTH} levels"
            )
        return body

    @staticmethod
    def _require_json(request: web.Request) -> None:
        ctype = request.headers.get("Content-Type", "")
        media = ctype.split(";")[0].strip().lower()
        if media not in ("", JSON, "*/*"):
            raise UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSON} (got {media})"
            )

    def _answer(
        self, request: web.Request, kind: str, body: Obj, status: int = 200
    ) -> web.Response:
        if request.method == "GET":
            table = tables.render(request, kind, body)
            if table is not None:
                return json_response(table, status)
        return json_response(body, status)

    @staticmethod
    def _dry_run(request: web.Request) -> None:
        if request.query.get("dryRun"):
            raise BadRequest("dryRun is not supported by the simulated cluster")

    # -- dispatch ----------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        target = resolve(request.path)
        if target is None:
            path = request.path.rstrip("/") or "/"
            if (
                path in DISCOVERY_PATHS or path.startswith("/openapi/")
            ) and request.method != "GET":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            raise NotFound("the server could not find the requested resource")
        method = request.method
        if target.name is None:
            if method == "GET":
                return await self._list_or_watch(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return await self._delete_collection(request, target)
        elif target.subresource is None:
            if method == "GET":
                obj = self.registry.get(target.rtype, target.namespace, target.name)
                return self._answer(request, target.rtype.kind, obj)
            if method == "PUT":
                return await self._update(request, target)
            if method == "PATCH":
                return await self._patch(request, target)
            if method == "DELETE":
                return await self._delete(request, target)
        elif target.subresource == "status" and method == "GET":
            obj = self.registry.get(target.rtype, target.namespace, target.name)
            return self._answer(request, target.rtype.kind, obj)
        elif target.subresource == "scale" and target.rtype is DEPLOYMENTS:
            return await self._scale(request, target)
        elif target.subresource == "log" and method == "GET":
            return await self._log(request, target)
        raise MethodNotAllowed("the server does not allow this method on the requested resource")

    # -- verbs -------------------------------------------------------------------------

    async def _list_or_watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rtype = target.rtype
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), rtype)
        # A list serves the latest state whatever version it names, but a version
        # that is not one is refused for lists too, as the real API server does.
        raw_rv = request.query.get("resourceVersion", "")
        if raw_rv in ("", "0"):
            since = None
        elif raw_rv.isascii() and raw_rv.isdigit() and len(raw_rv) <= 19:
            since = int(raw_rv)
        else:
            raise BadRequest(
                f'resourceVersion: Invalid value: "{raw_rv[:64]}": must be a non-negative integer'
            )
        if not _bool(request, "watch"):
            self.registry.allow(rtype, "list")
            body = self.registry.list(rtype, target.namespace, labels, fields)
            return self._answer(request, rtype.kind, body)
        self.registry.allow(rtype, "watch")
        timeout = _int(request, "timeoutSeconds")
        if timeout is None:
            timeout_s = self.settings.watch_timeout * (1 + self._jitter.random())
        else:
            timeout_s = float(timeout)
        render = None
        if "as=Table" in request.headers.get("Accept", ""):

            def render(obj: Obj) -> Obj:
                return tables.render(request, rtype.kind, obj) or obj

        stream = WatchStream(
            request,
            self.store,
            WatchRequest(
                rtype=rtype,
                namespace=target.namespace,
                labels=labels,
                fields=fields,
                since=since,
                timeout=timeout_s,
                bookmarks=_bool(request, "allowWatchBookmarks"),
                initial_events_end=_bool(request, "sendInitialEvents"),
            ),
            bookmark_interval=self.settings.bookmark_interval,
            queue_limit=max(1000, self.settings.history_size),
            render=render,
        )
        return await stream.serve()

    async def _create(self, request: web.Request, target: Target) -> web.Response:
        self._dry_run(request)
        self._require_json(request)
        body = await self._body(request)
        obj = self.registry.create(target.rtype, target.namespace, body)
        return json_response(obj, 201)

    async def _update(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None
        self._dry_run(request)
        self._require_json(request)
        body = await self._body(request)
        obj = self.registry.update(target.rtype, target.namespace, target.name, body)
        return json_response(obj)

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None
        self._dry_run(request)
        ctype = request.headers.get("Content-Type", "")
        body = await self._body(request)
        obj = self.registry.patch(target.rtype, target.namespace, target.name, ctype, body)
        return json_response(obj)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        self._dry_run(request)
        body = await self._body(request, optional=True)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("DeleteOptions must be a JSON object")
        body = body or {}
        if body.get("dryRun"):
            raise BadRequest("dryRun is not supported by the simulated cluster")
        grace = _int(request, "gracePeriodSeconds")
        if grace is None and body.get("gracePeriodSeconds") is not None:
            value = body["gracePeriodSeconds"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadRequest(
                    f"gracePeriodSeconds must be a non-negative integer, got {value!r}"
                )
            grace = value
        policy = request.query.get("propagationPolicy") or body.get("propagationPolicy")
        if policy is None and body.get("orphanDependents") is True:
            policy = "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise BadRequest(
                f"propagationPolicy must be Background, Foreground or Orphan, got {policy!r}"
            )
        pre = body.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise BadRequest("preconditions must be a JSON object")
        return DeleteOptions(
            grace_period=grace,
            propagation=policy,
            uid=pre.get("uid"),
            resource_version=pre.get("resourceVersion"),
        )

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None
        options = await self._delete_options(request)
        result = self.registry.delete(target.rtype, target.namespace, target.name, options)
        return json_response(result)

    async def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), target.rtype)
        options = await self._delete_options(request)
        body = self.registry.delete_collection(
            target.rtype, target.namespace, labels, fields, options
        )
        return json_response(body)

    async def _scale(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None and target.namespace is not None
        if request.method == "GET":
            return json_response(self.registry.get_scale(target.namespace, target.name))
        if request.method == "PUT":
            self._dry_run(request)
            self._require_json(request)
            body = await self._body(request)
            return json_response(self.registry.update_scale(target.namespace, target.name, body))
        if request.method == "PATCH":
            self._dry_run(request)
            body = await self._body(request)
            ctype = request.headers.get("Content-Type", "")
            return json_response(
                self.registry.patch_scale(target.namespace, target.name, ctype, body)
            )
        raise MethodNotAllowed("the server does not allow this method on the requested resource")

    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        assert target.name is not None
        pod = self.registry.get(PODS, target.namespace, target.name)
        options = LogOptions(
            container=request.query.get("container") or None,
            follow=_bool(request, "follow"),
            previous=_bool(request, "previous"),
            tail_lines=_int(request, "tailLines"),
            limit_bytes=_int(request, "limitBytes"),
        )
        return await serve_log(request, pod, self.logs, options)


def build_app(
    api: ApiServer,
    faults: Faults,
    admin_routes: list[web.RouteDef],
    settings: SimSettings,
    requests: RequestLog | None = None,
) -> web.Application:
    middlewares: list[Middleware] = [error_middleware, fault_middleware(faults)]
    if requests is not None:
        # Outermost: a request that a fault or an error answers was still made (audit.py).
        middlewares.insert(0, requests.middleware)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app.add_routes(discovery.routes())
    app.add_routes(admin_routes)
    app.router.add_route("*", "/{path:.*}", api.dispatch)
    return app

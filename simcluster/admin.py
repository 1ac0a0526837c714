"""Admin endpoints under ``/_sim/`` and the health checks.

Tests in other processes (kubectl tests, the agent's and rtctl's tests) drive
fault injection over HTTP with these, and read a summary of the cluster::

    GET    /_sim/state                      resourceVersions, nodes, pods, processes, faults
    GET    /_sim/faults                     the active error and slowness faults
    DELETE /_sim/faults                     clear them
    POST   /_sim/faults/drop-watches        cut every open watch connection
    POST   /_sim/faults/expire              compact the history: older RVs get 410
    POST   /_sim/faults/errors              {"status": 503, "seconds": 5, "count": 3,
                                             "path_prefix": "/apis/apps", "methods": ["POST"]}
    POST   /_sim/faults/slow                {"delay_ms": 200, "seconds": 5, "path_prefix": "/"}
    POST   /_sim/faults/kill-container      {"namespace": "default", "pod": "x", "container": "c",
                                             "signal": 9}
    GET    /_sim/runtime-events?since=N&node=X   sandbox/container events with ns times
    GET    /_sim/nodes/{node}/meminfo       the node's simulated /proc/meminfo
    GET    /_sim/requests?user=U            the API requests recorded (audit.py), U's only
    POST   /_sim/requests                   {"enabled": true} starts recording, false stops
    DELETE /_sim/requests                   forget what was recorded
    GET    /healthz, /livez, /readyz        "ok" (500 once a cluster task has failed)
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from .audit import RequestLog
from .errors import BadRequest, MethodNotAllowed
from .faults import Faults

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimControl(Protocol):
    @property
    def faults(self) -> Faults: ...

    @property
    def requests(self) -> RequestLog: ...

    @property
    def problem(self) -> str | None:
        """Why the cluster is unhealthy, or None."""

    def state(self) -> dict[str, Any]: ...

    def drop_watches(self) -> int: ...

    def expire_history(self) -> int: ...

    def kill_container(
        self, namespace: str, pod: str, container: str | None = None, sig: int = signal.SIGKILL
    ) -> int: ...

    def runtime_events_json(self, since: int, node: str | None) -> list[dict[str, Any]]: ...

    def node_meminfo(self, node: str) -> str: ...


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


async def _object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body of the request is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number, got {value!r}")
    return float(value)


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {value!r}")
    return value


def routes(control: SimControl) -> list[web.RouteDef]:
    def only(method: str, handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            return await handler(request)

        return checked

    async def health(request: web.Request) -> web.StreamResponse:
        problem = control.problem
        if problem is None:
            return web.Response(text="ok", content_type="text/plain")
        return web.Response(
            text=f"[-]simcluster failed: {problem}\n", status=500, content_type="text/plain"
        )

    async def state(request: web.Request) -> web.StreamResponse:
        return _json(control.state())

    async def faults(request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            control.faults.clear()
        elif request.method != "GET":
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        return _json(control.faults.summary())

    async def drop(request: web.Request) -> web.StreamResponse:
        return _json({"dropped": control.drop_watches()})

    async def expire(request: web.Request) -> web.StreamResponse:
        return _json({"compactedResourceVersion": str(control.expire_history())})

    async def errors(request: web.Request) -> web.StreamResponse:
        body = await _object(request)
        methods = body.get("methods")
        if methods is not None and not (
            isinstance(methods, list) and all(isinstance(m, str) for m in methods)
        ):
            raise BadRequest("methods must be a list of strings")
        count = body.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise BadRequest(f"count must be an integer, got {count!r}")
        control.faults.inject_errors(
            int(_number(body, "status")),
            _number(body, "seconds", 5.0),
            path_prefix=_text(body, "path_prefix", "/") or "/",
            methods=methods,
            count=count,
        )
        return _json(control.faults.summary())

    async def slow(request: web.Request) -> web.StreamResponse:
        body = await _object(request)
        control.faults.slow_down(
            _number(body, "delay_ms"),
            _number(body, "seconds", 5.0),
            path_prefix=_text(body, "path_prefix", "/") or "/",
        )
        return _json(control.faults.summary())

    async def kill(request: web.Request) -> web.StreamResponse:
        body = await _object(request)
        pod = _text(body, "pod")
        if not pod:
            raise BadRequest("pod is required")
        sig = int(_number(body, "signal", float(signal.SIGKILL)))
        if sig not in {s.value for s in signal.Signals}:
            raise BadRequest(f"signal must be a signal number, got {sig}")
        pid = control.kill_container(
            _text(body, "namespace", "default") or "default", pod, _text(body, "container"), sig
        )
        return _json({"pid": pid, "signal": sig})

    async def runtime_events(request: web.Request) -> web.StreamResponse:
        raw = request.query.get("since", "0")
        if not raw.isdigit():
            raise BadRequest(f"since must be a non-negative integer, got {raw!r}")
        return _json({"events": control.runtime_events_json(int(raw), request.query.get("node"))})

    async def meminfo(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=control.node_meminfo(request.match_info["node"]), content_type="text/plain"
        )

    async def requests(request: web.Request) -> web.StreamResponse:
        log = control.requests
        if request.method == "POST":
            enabled = (await _object(request)).get("enabled")
            if not isinstance(enabled, bool):
                raise BadRequest(f"enabled must be true or false, got {enabled!r}")
            if enabled:
                log.enable()
            else:
                log.disable()
        elif request.method == "DELETE":
            log.clear()
        elif request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        return _json(log.summary(request.query.get("user") or None))

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/healthz", health),
        ("GET", "/livez", health),
        ("GET", "/readyz", health),
        ("GET", "/_sim/state", state),
        ("POST", "/_sim/faults/drop-watches", drop),
        ("POST", "/_sim/faults/expire", expire),
        ("POST", "/_sim/faults/errors", errors),
        ("POST", "/_sim/faults/slow", slow),
        ("POST", "/_sim/faults/kill-container", kill),
        ("GET", "/_sim/runtime-events", runtime_events),
        ("GET", "/_sim/nodes/{node}/meminfo", meminfo),
    ]
    defs = [web.route("*", path, only(method, handler)) for method, path, handler in table]
    defs.append(web.route("*", "/_sim/faults", faults))
    defs.append(web.route("*", "/_sim/requests", requests))
    return defs

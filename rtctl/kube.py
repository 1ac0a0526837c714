"""rtctl's Kubernetes client: kubernetes-asyncio from a kubeconfig and context.

``Cluster`` owns one ``ApiClient`` for the duration of a command and turns the
API's failures into ``ClusterError`` with one line (which request, which
status, the API's own message, or why nothing answered: "connection
refused"). The kubeconfig is found as kubectl finds it: ``--kubeconfig``, else
every existing file ``$KUBECONFIG`` lists, merged, else ~/.kube/config; a
missing one, or a context it does not have, is a usage error (exit 2) said in
one line. Responses are read as plain JSON dicts (``_preload_content=False``):
rtctl needs a handful of fields, and dicts keep them exactly as the API sent
them.

The workload helpers live here so that start-run and run-plan drive the cluster
the same way: create and delete the Deployment with the wall-clock times around
each request (the API latency shown to the user, the created time sent to the
collector), and ``wait_pods_gone``: list the run's pods, then watch from the
list's resourceVersion until none is left. No fixed sleep: the next run starts
the moment the last pod is deleted from the API, and a watch that ends or
expires (410) is answered by listing again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rtbench.clock import wall_ns

from .errors import ClusterError, UsageError
from .settings import ConnectionSettings
from .workload import RUN_ID_LABEL

__all__ = ["Cluster", "Timed", "kubeconfig_paths"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]

WATCH_TIMEOUT_S = 30
"""Server-side timeout of one watch request; a quiet watch is renewed this often."""
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""Any single non-watch request: far above a healthy API server's answer time."""
WRITE_RETRY_S = 30.0
"""How long the Deployment's create and delete are retried on 5xx, 429 or no answer: an
API server restarting or shedding load recovers within seconds; a run must not fail for
it, nor leave its Deployment behind, and 30 s still fails clearly when it is down."""
RETRY_PAUSE_MAX_S = 2.0
"""Longest pause between two attempts of a retried request."""


@dataclass(frozen=True)
class Timed:
    """A request's wall-clock send and answer times (rtctl's clock, ns)."""

    sent_ns: int
    received_ns: int

    @property
    def latency_ns(self) -> int:
        return self.received_ns - self.sent_ns


def kubeconfig_paths(
    settings: ConnectionSettings, environ: Mapping[str, str]
) -> tuple[list[Path], list[Path]]:
    """(existing, missing) kubeconfig files, as kubectl finds them: --kubeconfig, else every
    entry of $KUBECONFIG (merged, the first to set a value wins), else ~/.kube/config."""
    if settings.kubeconfig is not None:
        candidates = [settings.kubeconfig]
    else:
        listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        candidates = [Path(p).expanduser() for p in listed] or [Path.home() / ".kube" / "config"]
    existing = [p for p in candidates if p.is_file()]
    return existing, [p for p in candidates if p not in existing]


def _connect_reason(exc: BaseException) -> str:
    """Why a request got no answer, in a few words ("connection refused")."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"host name not found ({exc.host})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS handshake failed ({getattr(exc, 'certificate_error', exc)})"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    cause: BaseException | None = exc
    while cause is not None:
        number = getattr(cause, "errno", None)
        if isinstance(number, int) and number > 0:
            return os.strerror(number).lower()
        cause = getattr(cause, "os_error", None) or cause.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _message(body: bytes) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:200]
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return str(status)[:200]


class Cluster:
    """A connection to the Kubernetes API (an async context manager)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.kubeconfig: list[Path] = []
        """The kubeconfig files loaded (merged when $KUBECONFIG lists several)."""
        self.missing_kubeconfig: list[Path] = []
        """$KUBECONFIG entries that do not exist (kubectl skips them too)."""
        self.host = ""
        self._api: k8s.ApiClient | None = None

    @classmethod
    def connect(cls, settings: ConnectionSettings) -> Cluster:
        """``async with Cluster.connect(settings) as cluster``: loads the kubeconfig on enter."""
        return cls(settings)

    @property
    def kubeconfig_note(self) -> str | None:
        """Which files were used, when that is not obvious (several, or some missing)."""
        if len(self.kubeconfig) < 2 and not self.missing_kubeconfig:
            return None
        used = ", ".join(map(str, self.kubeconfig))
        missing = ", ".join(map(str, self.missing_kubeconfig))
        return f"kubeconfig: {used}" + (f" (not found, skipped: {missing})" if missing else "")

    async def __aenter__(self) -> Cluster:
        existing, missing = kubeconfig_paths(self.settings, os.environ)
        if not existing:
            where = " nor ".join(map(str, missing))
            raise UsageError(
                f"kubeconfig {where} does not exist (give --kubeconfig or set $KUBECONFIG)"
            )
        self.kubeconfig, self.missing_kubeconfig = existing, missing
        # It warns "Config not found" for paths we already checked and reported ourselves.
        logging.getLogger("kubernetes_asyncio.config.kube_config").setLevel(logging.ERROR)
        configuration = k8s.Configuration()
        shown = os.pathsep.join(map(str, existing))
        try:
            await k8s_config.load_kube_config(
                config_file=shown,
                context=self.settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ValueError, k8s_config.ConfigException) as exc:
            # A context it lacks or content it cannot use: configuration (exit 2).
            raise UsageError(f"kubeconfig {shown}: {exc}") from exc
        except OSError as exc:
            raise ClusterError(f"kubeconfig {shown}: {exc}") from exc
        self.host = str(configuration.host)
        self._api = k8s.ApiClient(configuration)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._api is not None:
            api, self._api = self._api, None
            await api.close()

    @property
    def api(self) -> Any:
        """The kubernetes-asyncio ApiClient (untyped library: Any)."""
        if self._api is None:
            raise ClusterError("the cluster connection is not open (use `async with`)")
        return self._api

    @property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return k8s.AppsV1Api(self.api)

    # -- plumbing -------------------------------------------------------------------------

    async def _call(
        self,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        ok: tuple[int, ...] = (),
        retry_s: float = 0.0,
        **kw: Any,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request; statuses in ``ok`` besides 2xx are
        returned, every other one raises ClusterError naming ``what``.

        ``retry_s``: for that long, a request that got no answer or a 5xx/429 is sent
        again after a growing pause (0.2 s doubling up to 2 s, or the server's
        Retry-After up to that), so that an API server restarting or shedding load for
        a few seconds does not fail the run; the error says how long it was retried."""
        deadline = asyncio.get_running_loop().time() + retry_s
        for attempt in itertools.count():
            try:
                status, raw, retry_after = await self._once(method, *args, **kw)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problem = f"Kubernetes API at {self.host} did not answer {what}: "
                problem += _connect_reason(exc)
                cause: BaseException | None = exc
                status, raw, retry_after = 0, b"", None
            else:
                if 200 <= status <= 299 or status in ok:
                    break
                problem = f"Kubernetes API refused {what}: {status} {_message(raw)}"
                cause = None
            pause = min(0.2 * 2**attempt, RETRY_PAUSE_MAX_S)
            if retry_after is not None:
                pause = min(max(retry_after, pause), RETRY_PAUSE_MAX_S)
            retryable = status == 0 or status >= 500 or status == 429
            if not retryable or asyncio.get_running_loop().time() + pause > deadline:
                if attempt:
                    problem += f" (retried for {retry_s:g} s)"
                raise ClusterError(problem) from cause
            log.info("%s; retrying in %.1f s", problem, pause)
            await asyncio.sleep(pause)
        try:
            return status, json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ClusterError(f"Kubernetes API answered {what} with no JSON") from exc

    async def _once(
        self, method: Callable[..., Any], *args: Any, **kw: Any
    ) -> tuple[int, bytes, float | None]:
        """One request: (status, body, Retry-After seconds or None)."""
        response = await method(
            *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kw
        )
        try:
            raw = await response.read()
        finally:
            response.release()
        try:
            retry_after: float | None = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
        return int(response.status), raw, retry_after

    # -- reads ----------------------------------------------------------------------------

    async def version(self) -> Obj:
        """``GET /version``: gitVersion, platform, ...

        Asked for directly, at the path kubectl uses, rather than through
        ``VersionApi.get_code``, which requests ``/version/`` with a trailing slash that
        proxies in front of an API server do not always pass on.
        """

        def get(**kw: Any) -> Any:
            return self.api.call_api(
                "/version",
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                **kw,
            )

        _, body = await self._call("GET /version", get)
        return dict(body)

    async def nodes(self) -> list[Obj]:
        _, body = await self._call("list nodes", self.core.list_node)
        return list(body.get("items") or [])

    async def runtime_classes(self) -> list[Obj]:
        node_api = k8s.NodeV1Api(self.api)
        _, body = await self._call("list runtimeclasses", node_api.list_runtime_class)
        return list(body.get("items") or [])

    async def all_pods(self) -> list[Obj]:
        _, body = await self._call("list pods", self.core.list_pod_for_all_namespaces)
        return list(body.get("items") or [])

    async def pods(self, namespace: str, label_selector: str) -> list[Obj]:
        _, body = await self._call(
            f"list pods -l {label_selector} in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        return list(body.get("items") or [])

    async def namespace_exists(self, namespace: str) -> bool:
        status, _ = await self._call(
            f"get namespace {namespace}", self.core.read_namespace, namespace, ok=(404,)
        )
        return status != 404

    async def deployment(self, namespace: str, name: str) -> Obj | None:
        """The Deployment, or None when there is none by that name."""
        status, body = await self._call(
            f"get deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment,
            name,
            namespace,
            ok=(404,),
        )
        return None if status == 404 else dict(body)

    # -- the workload ---------------------------------------------------------------------

    async def create_deployment(self, deployment: Mapping[str, Any]) -> Timed:
        """Create the Deployment; wall times just before the request and after the answer.

        Retried on 5xx/429/no answer for ``WRITE_RETRY_S``. The times are those of the
        attempt that created it, so the retries' pauses do not count as start-up time. A
        retry answered 409 means an earlier attempt was applied though its answer was
        lost: when the Deployment by that name carries this run's id it is ours, created
        somewhere between the first attempt's send and now (the times returned)."""
        md = deployment["metadata"]
        what = f"create deployment {md['namespace']}/{md['name']}"
        first_sent = sent = 0
        attempts = 0

        def create(*args: Any, **kw: Any) -> Any:
            nonlocal attempts, first_sent, sent
            attempts += 1
            sent = wall_ns()
            first_sent = first_sent or sent
            return self.apps.create_namespaced_deployment(*args, **kw)

        status, _ = await self._call(
            what, create, md["namespace"], dict(deployment), ok=(409,), retry_s=WRITE_RETRY_S
        )
        if status == 409:
            existing = await self.deployment(md["namespace"], md["name"]) if attempts > 1 else None
            mine = str((md.get("labels") or {}).get(RUN_ID_LABEL, ""))
            theirs = str((((existing or {}).get("metadata") or {}).get("labels") or {}).get(
                RUN_ID_LABEL, ""
            ))  # fmt: skip
            if existing is None or not mine or theirs != mine:
                raise ClusterError(
                    f"Kubernetes API refused {what}: 409 deployment {md['name']} already exists"
                )
            sent = first_sent
        return Timed(sent, wall_ns())

    async def delete_deployment(self, namespace: str, name: str) -> Timed | None:
        """Delete the Deployment (its pods go in the background); None when it was gone.
        Retried on 5xx/429/no answer for ``WRITE_RETRY_S``, so it is not left behind."""
        sent = wall_ns()
        status, _ = await self._call(
            f"delete deployment {namespace}/{name}",
            self.apps.delete_namespaced_deployment,
            name,
            namespace,
            propagation_policy="Background",
            ok=(404,),
            retry_s=WRITE_RETRY_S,
        )
        received = wall_ns()
        return None if status == 404 else Timed(sent, received)

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete one pod (gracefully); nothing when it was gone."""
        await self._call(
            f"delete pod {namespace}/{name}",
            self.core.delete_namespaced_pod,
            name,
            namespace,
            ok=(404,),
            retry_s=WRITE_RETRY_S,
        )

    async def deployments(self, namespace: str, label_selector: str) -> list[Obj]:
        """The Deployments in ``namespace`` matching ``label_selector``."""
        _, body = await self._call(
            f"list deployments -l {label_selector} in {namespace}",
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=label_selector,
        )
        return list(body.get("items") or [])

    async def wait_pods_gone(
        self, namespace: str, label_selector: str, on_remaining: Callable[[int], None]
    ) -> None:
        """Return once no pod matches ``label_selector``: list, then watch from the list's
        resourceVersion, listing again when a watch ends or expires."""
        for attempt in itertools.count():
            if attempt:
                # Only after a watch that broke: a short, growing pause before listing again.
                await asyncio.sleep(min(0.05 * 2 ** min(attempt, 6), 2.0))
            _, body = await self._call(
                f"list pods -l {label_selector} in {namespace}",
                self.core.list_namespaced_pod,
                namespace,
                label_selector=label_selector,
            )
            left = {str(p["metadata"]["uid"]) for p in body.get("items") or []}
            on_remaining(len(left))
            if not left:
                return
            version = str((body.get("metadata") or {}).get("resourceVersion") or "")
            if await self._watch_until_empty(
                namespace, label_selector, version, left, on_remaining
            ):
                return
        raise AssertionError("unreachable")  # pragma: no cover

    async def _watch_until_empty(
        self,
        namespace: str,
        label_selector: str,
        version: str,
        left: set[str],
        on_remaining: Callable[[int], None],
    ) -> bool:
        """Follow one watch; True when ``left`` became empty, False to list again."""
        try:
            response = await self.core.list_namespaced_pod(
                namespace,
                label_selector=label_selector,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT_S,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=WATCH_TIMEOUT_S + 30
                ),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ClusterError(
                f"Kubernetes API at {self.host} did not answer the pod watch: "
                f"{_connect_reason(exc)}"
            ) from exc
        try:
            if response.status == 410:
                return False
            if response.status != 200:
                raise ClusterError(
                    f"Kubernetes API refused the pod watch: {response.status} "
                    f"{_message(await response.read())}"
                )
            while line := await response.content.readline():
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return False  # 410 Gone inside the stream, mostly: list again
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                if kind == "DELETED":
                    left.discard(uid)
                elif kind in ("ADDED", "MODIFIED"):
                    left.add(uid)
                else:
                    continue
                on_remaining(len(left))
                if not left:
                    return True
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False  # a broken or garbled watch: the list tells the truth again
        finally:
            response.close()
        return False

"""Server-side printing: the meta.k8s.io Table form kubectl asks for.

``kubectl get`` does not know how to print a Pod: it asks the server for a Table
(``Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...``) and prints the
cells it gets. A server that answers with plain objects gets only NAME and AGE
columns, so the columns and the cell values here follow kube-apiserver's
printers (pkg/printers/internalversion) for the kinds we serve: the STATUS of a
pod is computed the same way (ContainerCreating, CrashLoopBackOff, OOMKilled,
Completed, Terminating, ...), ages use the same rounding, and the wide columns
(``-o wide``) carry priority 1. ``kubectl get -w`` asks for the same form on the
watch; each event's object is then a one-row Table (render_watch_event).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from simcluster import discovery
from simcluster.errors import BadRequest

Obj = dict[str, Any]
Column = tuple[str, str, int]
"""(name, description, priority); priority 1 columns show only with ``-o wide``."""

_NAME: Column = ("Name", "Name must be unique within a namespace.", 0)
_AGE: Column = ("Age", "CreationTimestamp is the time the object was created.", 0)
_TABLE_GROUP = "meta.k8s.io"
_ROLE_PREFIX = "node-role.kubernetes.io/"
_API_VERSIONS = {r.kind: r.group_version for r in discovery.RESOURCES}


def table_version(request: web.Request) -> str | None:
    """The Table apiVersion the Accept header asks for, in the client's order of
    preference (kubectl asks for v1, then v1beta1, then plain JSON); None when it
    asks for no Table."""
    for media_range in request.headers.get("Accept", "").split(","):
        media_type, *raw = (part.strip() for part in media_range.split(";"))
        params = dict(p.split("=", 1) for p in raw if "=" in p)
        if media_type not in ("application/json", "*/*") or params.get("as") != "Table":
            continue
        if params.get("g") == _TABLE_GROUP and params.get("v") in ("v1", "v1beta1"):
            return f"{_TABLE_GROUP}/{params['v']}"
    return None


def render(request: web.Request, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The Table for ``body`` (an object or a list of ``kind``) when the request's
    Accept header asks for one and the kind has columns; otherwise None, and the
    caller answers with the plain object."""
    api_version = table_version(request)
    if api_version is None or kind not in _PRINTERS:
        return None
    return table(kind, body, api_version=api_version, include=_include(request))


def render_watch_event(
    request: web.Request, kind: str, obj: dict[str, Any]
) -> dict[str, Any] | None:
    """The object to put in a watch event for ``obj`` when the watch request asks
    for Tables: a one-row Table. None when it does not, or when ``obj`` is not of
    ``kind`` (an ERROR event's Status) or is a BOOKMARK's bare resourceVersion,
    which then go out as they are."""
    if obj.get("kind") not in (None, kind) or not (obj.get("metadata") or {}).get("name"):
        return None
    return render(request, kind, obj)


def _include(request: web.Request) -> str:
    include = request.query.get("includeObject", "Metadata") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise BadRequest(f'unrecognized includeObject value: "{include}"')
    return include


def table(
    kind: str,
    body: Obj,
    *,
    api_version: str = "meta.k8s.io/v1",
    include: str = "Metadata",
    now: float | None = None,
) -> Obj:
    """The Table of ``body``, a single object or a list, of ``kind``."""
    columns, printer = _PRINTERS[kind]
    now = time.time() if now is None else now
    items = body.get("items")
    objects: list[Obj] = items if isinstance(items, list) else [body]
    meta = body.get("metadata") or {}
    list_meta = {key: meta[key] for key in ("resourceVersion", "continue") if meta.get(key)}
    if isinstance(items, list) and meta.get("remainingItemCount") is not None:
        list_meta["remainingItemCount"] = meta["remainingItemCount"]
    rows = []
    for obj in objects:
        row: Obj = {"cells": printer(obj, now)}
        conditions = _row_conditions(obj) if kind == "Pod" else []
        if conditions:
            row["conditions"] = conditions
        if include == "Object":
            row["object"] = {"kind": kind, "apiVersion": _API_VERSIONS[kind], **obj}
        elif include == "Metadata":
            partial = {"kind": "PartialObjectMetadata", "apiVersion": api_version}
            row["object"] = {**partial, "metadata": obj.get("metadata") or {}}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": list_meta,
        "columnDefinitions": [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": description,
                "priority": priority,
            }
            for name, description, priority in columns
        ],
        "rows": rows,
    }


def human_duration(seconds: float) -> str:
    """An age as kubectl prints one (apimachinery's duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def _epoch(timestamp: Any) -> float | None:
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _since(timestamp: Any, now: float) -> str:
    epoch = _epoch(timestamp)
    return "<unknown>" if epoch is None else human_duration(now - epoch)


def _age(obj: Obj, now: float) -> str:
    return _since(obj.get("metadata", {}).get("creationTimestamp"), now)


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


# --- pods -------------------------------------------------------------------


def pod_status(pod: Obj) -> tuple[str, int, int, int, float | None]:
    """(STATUS, ready containers, containers, restarts, last restart epoch), as
    kubectl shows a pod: the waiting or terminated reason of the containers
    (ContainerCreating, CrashLoopBackOff, OOMKilled, Completed, Error), the init
    container progress (Init:0/1), Terminating once deletion started, else the
    phase."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    containers = spec.get("containers") or []
    reason = status.get("reason") or status.get("phase") or "Pending"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    restarts, ready, last_restart = 0, 0, None

    def count_restart(container: Obj) -> None:
        nonlocal restarts, last_restart
        restarts += int(container.get("restartCount") or 0)
        finished = _epoch(
            ((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        )
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, container in enumerate(init_statuses):
        count_restart(container)
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode") == 0:
            continue
        if terminated is not None:
            reason = "Init:" + _terminated_reason(terminated)
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    if not initializing or _condition_true(status, "Initialized"):
        restarts, last_restart, has_running = 0, None, False
        for container in reversed(status.get("containerStatuses") or []):
            count_restart(container)
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None:
                reason = _terminated_reason(terminated)
            elif container.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    deleting = pod.get("metadata", {}).get("deletionTimestamp")
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return reason, ready, len(containers), restarts, last_restart


def _terminated_reason(terminated: Obj) -> str:
    if terminated.get("reason"):
        return str(terminated["reason"])
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', 0)}"


def _condition_true(status: Obj, ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _row_conditions(pod: Obj) -> list[Obj]:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded", "message": ""}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": ""}]
    return []


def _pod_cells(pod: Obj, now: float) -> list[Any]:
    reason, ready, total, restarts, last_restart = pod_status(pod)
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration(now - last_restart)} ago)"
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    pod_ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    gates_cell = "<none>"
    if gates:
        done = sum(_condition_true(status, g.get("conditionType", "")) for g in gates)
        gates_cell = f"{done}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        _age(pod, now),
        pod_ips[0]["ip"] if pod_ips else "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# --- nodes, deployments, namespaces, runtime classes -------------------------


def _node_cells(node: Obj, now: float) -> list[Any]:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    states = [
        "Ready" if c.get("status") == "True" else "NotReady"
        for c in status.get("conditions") or []
        if c.get("type") == "Ready"
    ][:1] or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = node.get("metadata", {}).get("labels") or {}
    roles = {key.removeprefix(_ROLE_PREFIX) for key in labels if key.startswith(_ROLE_PREFIX)}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    roles.discard("")
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        found = [a["address"] for a in status.get("addresses") or [] if a.get("type") == kind]
        return found[0] if found else "<none>"

    return [
        _name(node),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        _age(node, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector in kubectl's string form (``app=x,tier in (a,b)``)."""
    if not selector:
        return "<none>"
    parts = [(key, f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()]
    for requirement in selector.get("matchExpressions") or []:
        key, op = requirement.get("key", ""), requirement.get("operator", "")
        values = ",".join(sorted(requirement.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}
        parts.append((key, text.get(op, f"!{key}")))
    return ",".join(text for _, text in sorted(parts)) or "<none>"


def _deployment_cells(deployment: Obj, now: float) -> list[Any]:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        _name(deployment),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        _age(deployment, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        selector_string(spec.get("selector")),
    ]


def _namespace_cells(namespace: Obj, now: float) -> list[Any]:
    phase = (namespace.get("status") or {}).get("phase", "")
    return [_name(namespace), phase, _age(namespace, now)]


def _runtimeclass_cells(runtimeclass: Obj, now: float) -> list[Any]:
    return [_name(runtimeclass), runtimeclass.get("handler", ""), _age(runtimeclass, now)]


_PRINTERS: dict[str, tuple[list[Column], Callable[[Obj, float], list[Any]]]] = {
    "Pod": (
        [
            _NAME,
            ("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
            ("Status", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "The number of times the containers in this pod have been restarted.", 0),
            _AGE,
            ("IP", "IP address allocated to the pod.", 1),
            ("Node", "The node the pod is bound to.", 1),
            ("Nominated Node", "The node the scheduler nominated for preemption.", 1),
            ("Readiness Gates", "Extra conditions evaluated for pod readiness.", 1),
        ],
        _pod_cells,
    ),
    "Node": (
        [
            _NAME,
            ("Status", "The status of the node", 0),
            ("Roles", "The roles of the node", 0),
            _AGE,
            ("Version", "Kubelet Version reported by the node.", 0),
            ("Internal-IP", "List of addresses reachable to the node.", 1),
            ("External-IP", "List of addresses reachable to the node.", 1),
            ("OS-Image", "OS Image reported by the node.", 1),
            ("Kernel-Version", "Kernel Version reported by the node.", 1),
            ("Container-Runtime", "ContainerRuntime Version reported by the node.", 1),
        ],
        _node_cells,
    ),
    "Deployment": (
        [
            _NAME,
            ("Ready", "Number of the pod with ready state", 0),
            ("Up-to-date", "Total number of non-terminated pods with the desired template.", 0),
            ("Available", "Total number of available pods.", 0),
            _AGE,
            ("Containers", "Names of each container in the template.", 1),
            ("Images", "Images referenced by each container in the template.", 1),
            ("Selector", "Label selector for pods.", 1),
        ],
        _deployment_cells,
    ),
    "Namespace": (
        [_NAME, ("Status", "The status of the namespace", 0), _AGE],
        _namespace_cells,
    ),
    "RuntimeClass": (
        [_NAME, ("Handler", "The CRI handler of the runtime class.", 0), _AGE],
        _runtimeclass_cells,
    ),
}

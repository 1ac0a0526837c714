"""JSON shape checks: the types of every field the simulator reads.

A real API server decodes a body into Go structs, so a string where an integer
belongs is refused with 400 before any validation runs ("json: cannot unmarshal
string into Go struct field DeploymentSpec.spec.replicas of type int32"). The
simulator works on plain dicts, so it checks the same thing here, once, for the
fields its code reads; everything after this point may trust the types. Unknown
fields pass (the server is not in strict mode) and JSON null counts as absent,
as Go's decoder treats it.

A shape is a type (or tuple of types), a dict of field shapes, ``{str: shape}``
for a map, ``[shape]`` for a list, or ``dict`` for any object.
"""

from __future__ import annotations

from typing import Any

from .errors import BadRequest

Shape = Any

_QUANTITY = (str, int, float)
_INT_OR_STRING = (int, str)

_OWNER_REFERENCE = {
    "apiVersion": str,
    "kind": str,
    "name": str,
    "uid": str,
    "controller": bool,
    "blockOwnerDeletion": bool,
}
METADATA: Shape = {
    "name": str,
    "generateName": str,
    "namespace": str,
    "uid": str,
    "resourceVersion": str,
    "generation": int,
    "creationTimestamp": str,
    "deletionTimestamp": str,
    "deletionGracePeriodSeconds": int,
    "labels": {str: str},
    "annotations": {str: str},
    "ownerReferences": [_OWNER_REFERENCE],
    "finalizers": [str],
}
_PROBE = {
    "httpGet": {"path": str, "port": _INT_OR_STRING, "host": str, "scheme": str},
    "tcpSocket": {"port": _INT_OR_STRING, "host": str},
    "exec": {"command": [str]},
    "initialDelaySeconds": int,
    "periodSeconds": int,
    "timeoutSeconds": int,
    "successThreshold": int,
    "failureThreshold": int,
}
_CONTAINER = {
    "name": str,
    "image": str,
    "imagePullPolicy": str,
    "command": [str],
    "args": [str],
    "ports": [{"name": str, "containerPort": int, "protocol": str, "hostPort": int}],
    "env": [{"name": str, "value": str, "valueFrom": {"fieldRef": {"fieldPath": str}}}],
    "resources": {"limits": {str: _QUANTITY}, "requests": {str: _QUANTITY}},
    "readinessProbe": _PROBE,
    "livenessProbe": _PROBE,
    "startupProbe": _PROBE,
}
_NODE_SELECTOR_TERM = {"matchExpressions": [{"key": str, "operator": str, "values": [str]}]}
POD_SPEC: Shape = {
    "containers": [_CONTAINER],
    "initContainers": [_CONTAINER],
    "restartPolicy": str,
    "terminationGracePeriodSeconds": int,
    "activeDeadlineSeconds": int,
    "dnsPolicy": str,
    "nodeSelector": {str: str},
    "nodeName": str,
    "runtimeClassName": str,
    "schedulerName": str,
    "serviceAccountName": str,
    "hostNetwork": bool,
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [_NODE_SELECTOR_TERM]
            }
        }
    },
    "tolerations": [dict],
    "overhead": {str: _QUANTITY},
}
_LABEL_SELECTOR = {
    "matchLabels": {str: str},
    "matchExpressions": [{"key": str, "operator": str, "values": [str]}],
}

KIND_SHAPES: dict[str, Shape] = {
    "Pod": {"metadata": METADATA, "spec": POD_SPEC},
    "Deployment": {
        "metadata": METADATA,
        "spec": {
            "replicas": int,
            "selector": _LABEL_SELECTOR,
            "template": {"metadata": METADATA, "spec": POD_SPEC},
            "strategy": {
                "type": str,
                "rollingUpdate": {"maxSurge": _INT_OR_STRING, "maxUnavailable": _INT_OR_STRING},
            },
            "minReadySeconds": int,
            "revisionHistoryLimit": int,
            "progressDeadlineSeconds": int,
            "paused": bool,
        },
    },
    "Namespace": {"metadata": METADATA, "spec": {"finalizers": [str]}},
    "RuntimeClass": {
        "metadata": METADATA,
        "handler": str,
        "overhead": {"podFixed": {str: _QUANTITY}},
        "scheduling": {"nodeSelector": {str: str}, "tolerations": [dict]},
    },
    "Node": {
        "metadata": METADATA,
        "spec": {"unschedulable": bool, "podCIDR": str, "taints": [dict]},
    },
    "Scale": {"metadata": METADATA, "spec": {"replicas": int}},
}


def drop_nulls(value: Any) -> Any:
    """``value`` without null object members, recursively (null means absent)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _type_name(shape: Shape) -> str:
    if isinstance(shape, tuple):
        return " or ".join(_type_name(s) for s in shape)
    if isinstance(shape, list):
        return "array"
    if isinstance(shape, dict) or shape is dict:
        return "object"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(shape, getattr(shape, "__name__", str(shape)))


def _leaf_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def problem(value: Any, shape: Shape, path: str) -> str | None:
    """The first place where ``value`` does not have ``shape``, or None."""
    if value is None:
        return None
    if shape is dict:
        return (
            None if isinstance(value, dict) else f"{path}: expected object, got {_json_type(value)}"
        )
    if isinstance(shape, type | tuple):
        types = shape if isinstance(shape, tuple) else (shape,)
        if _leaf_ok(value, types):
            return None
        return f"{path}: expected {_type_name(shape)}, got {_json_type(value)}"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{path}: expected array, got {_json_type(value)}"
        for index, item in enumerate(value):
            if item is None:
                return f"{path}[{index}]: expected {_type_name(shape[0])}, got null"
            found = problem(item, shape[0], f"{path}[{index}]")
            if found:
                return found
        return None
    if not isinstance(value, dict):
        return f"{path}: expected object, got {_json_type(value)}"
    if set(shape) == {str}:
        for key, item in value.items():
            found = problem(item, shape[str], f"{path}[{key}]")
            if found:
                return found
        return None
    for key, sub in shape.items():
        if key in value:
            found = problem(value[key], sub, f"{path}.{key}" if path else key)
            if found:
                return found
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def check(kind: str, version: str, obj: Any) -> None:
    """Raise 400 BadRequest when ``obj`` does not have the shape of ``kind``."""
    found = problem(obj, KIND_SHAPES[kind], "")
    if found:
        raise BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {found}')

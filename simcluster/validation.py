"""Defaulting and validation of the objects clients send, per kind.

The API server fills in the same defaults a real one does (restartPolicy Always,
terminationGracePeriodSeconds 30, RollingUpdate 25%/25%, ...), because rtbench
and kubectl read them back, and refuses malformed objects with 422 Invalid and a
cause per field, in the real message format (``Pod "x" is invalid:
spec.containers[0].image: Required value``). Pure functions: no store access;
admission that needs other objects (RuntimeClass, namespaces) is the registry's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from .errors import Invalid
from .objects import Obj, dns_label_problem, dns_subdomain_problem, parse_quantity
from .resources import ResourceType
from .selectors import selector_from_match_labels


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"


def required(field: str) -> Cause:
    return Cause(field, "Required value", "FieldValueRequired")


def invalid(field: str, value: Any, why: str) -> Cause:
    return Cause(field, f"Invalid value: {_go_repr(value)}: {why}")


def _go_repr(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def raise_invalid(rtype: ResourceType, name: str, causes: list[Cause]) -> None:
    """Raise 422 Invalid for ``causes`` (no-op when empty)."""
    if not causes:
        return
    texts = [f"{c.field}: {c.message}" for c in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    raise Invalid(
        f'{kind} "{name}" is invalid: {summary}',
        name=name,
        kind=rtype.kind,
        group=rtype.group,
        causes=[{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
    )


def name_causes(rtype: ResourceType, name: str) -> list[Cause]:
    problem = dns_label_problem(name) if rtype.kind == "Namespace" else dns_subdomain_problem(name)
    return [invalid("metadata.name", name, problem)] if problem else []


INT32_MAX = 2**31 - 1


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- pods ---------------------------------------------------------------------


def default_pod_spec(spec: Obj) -> None:
    """Fill the defaults a real API server adds to a pod spec (in place)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        image = container.get("image")
        if isinstance(image, str):
            tag = image.rsplit("/", 1)[-1]
            latest = ":" not in tag or tag.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if isinstance(probe, dict):
                probe.setdefault("timeoutSeconds", 1)
                probe.setdefault("periodSeconds", 10)
                probe.setdefault("successThreshold", 1)
                probe.setdefault("failureThreshold", 3)
                if isinstance(probe.get("httpGet"), dict):
                    probe["httpGet"].setdefault("path", "/")
                    probe["httpGet"].setdefault("scheme", "HTTP")


def pod_spec_causes(spec: Any, path: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required(path)]
    causes: list[Cause] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [required(f"{path}.containers")]
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not isinstance(container, dict):
            causes.append(invalid(where, container, "must be an object"))
            continue
        name = container.get("name")
        if not isinstance(name, str) or not name:
            causes.append(required(f"{where}.name"))
        elif dns_label_problem(name):
            causes.append(invalid(f"{where}.name", name, str(dns_label_problem(name))))
        elif name in seen:
            causes.append(
                Cause(f"{where}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
            )
        else:
            seen.add(name)
        image = container.get("image")
        if not isinstance(image, str) or not image.strip():
            causes.append(required(f"{where}.image"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort") if isinstance(port, dict) else None
            if not _is_int(number) or not 1 <= number <= 65535:
                causes.append(
                    invalid(
                        f"{where}.ports[{j}].containerPort", number, "must be between 1 and 65535"
                    )
                )
        limits = (container.get("resources") or {}).get("limits") or {}
        for resource in ("memory", "cpu"):
            if resource in limits:
                try:
                    parse_quantity(limits[resource])
                except ValueError as exc:
                    causes.append(
                        invalid(f"{where}.resources.limits.{resource}", limits[resource], str(exc))
                    )
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        causes.append(
            Cause(
                f"{path}.restartPolicy",
                f"Unsupported value: {_go_repr(policy)}: "
                'supported values: "Always", "OnFailure", "Never"',
                "FieldValueNotSupported",
            )
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if not _is_int(grace) or not 0 <= grace < 2**63:
        causes.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be >= 0"))
    selector = spec.get("nodeSelector")
    if selector is not None and not (
        isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())
    ):
        causes.append(invalid(f"{path}.nodeSelector", selector, "must be a map of strings"))
    rc = spec.get("runtimeClassName")
    if rc is not None and (not isinstance(rc, str) or dns_subdomain_problem(rc)):
        causes.append(invalid(f"{path}.runtimeClassName", rc, "must be a DNS subdomain"))
    return causes


def qos_class(spec: Obj) -> str:
    """The pod's QoS class, as the API server computes it at creation."""
    requests: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        requests.append(resources.get("requests") or {})
        limits.append(resources.get("limits") or {})
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") is not None
        and lim.get("memory") is not None
        and req.get("cpu", lim["cpu"]) == lim["cpu"]
        and req.get("memory", lim["memory"]) == lim["memory"]
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


# -- deployments ----------------------------------------------------------------


def default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        if isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"])


def deployment_causes(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    replicas = spec.get("replicas")
    if not _is_int(replicas) or replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    elif replicas > INT32_MAX:
        # An int32 in Kubernetes: a larger one would reach the scheduler as is.
        causes.append(invalid("spec.replicas", replicas, "must fit in a 32-bit integer"))
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(required("spec.selector"))
        selector = None
    template = spec.get("template")
    if not isinstance(template, dict):
        return [*causes, required("spec.template")]
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector is not None:
        try:
            matches = selector_from_match_labels(selector).matches(labels)
        except ValueError as exc:
            causes.append(invalid("spec.selector", selector, str(exc)))
        else:
            if not matches:
                causes.append(
                    invalid(
                        "spec.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    )
                )
    causes.extend(pod_spec_causes(template.get("spec"), "spec.template.spec"))
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy not in (None, "Always"):
        causes.append(
            Cause(
                "spec.template.spec.restartPolicy",
                f'Unsupported value: {_go_repr(policy)}: supported values: "Always"',
                "FieldValueNotSupported",
            )
        )
    strategy = spec.get("strategy") or {}
    if isinstance(strategy, dict) and strategy.get("type") not in ("RollingUpdate", "Recreate"):
        causes.append(
            Cause(
                "spec.strategy.type",
                f"Unsupported value: {_go_repr(strategy.get('type'))}: "
                'supported values: "Recreate", "RollingUpdate"',
                "FieldValueNotSupported",
            )
        )
    return causes


def scaled_int(value: Any, total: int, *, round_up: bool) -> int:
    """A maxSurge/maxUnavailable int-or-percent against ``total`` replicas."""
    if _is_int(value):
        return max(0, int(value))
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        exact = int(value[:-1]) * total
        return -(-exact // 100) if round_up else exact // 100
    return 0


# -- runtime classes and namespaces -------------------------------------------------


def runtimeclass_causes(obj: Obj) -> list[Cause]:
    handler = obj.get("handler")
    if not isinstance(handler, str) or not handler:
        return [required("handler")]
    problem = dns_label_problem(handler)
    return [invalid("handler", handler, problem)] if problem else []


def default_namespace(obj: Obj) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}

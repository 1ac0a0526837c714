"""The resource types the simulated cluster serves, and how URL paths map to them.

One table drives routing, Status messages (``pods "x" not found``,
``deployments.apps "x" already exists``), the verbs each type allows (so a wrong
method gets 405, not 404) and the field labels a field selector may use (so an
unsupported one gets the real 400). The discovery documents are built by another
module; keep the two in step when a type is added.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    kind: str
    plural: str
    group: str
    version: str
    namespaced: bool
    verbs: frozenset[str]
    """Of get, list, watch, create, update, patch, delete, deletecollection."""
    subresources: frozenset[str] = frozenset()
    field_labels: frozenset[str] = frozenset()
    """Field selector labels beyond metadata.name and metadata.namespace."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``pods`` or ``deployments.apps``, as Status messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def supports_field(self, label: str) -> bool:
        return label in ("metadata.name", "metadata.namespace") or label in self.field_labels


_ALL = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)

NAMESPACES = ResourceType(
    kind="Namespace",
    plural="namespaces",
    group="",
    version="v1",
    namespaced=False,
    verbs=_ALL - {"deletecollection"},
    field_labels=frozenset({"status.phase"}),
)
NODES = ResourceType(
    kind="Node",
    plural="nodes",
    group="",
    version="v1",
    namespaced=False,
    # Nodes are the kubelets' own objects: clients may label or cordon them.
    verbs=frozenset({"get", "list", "watch", "update", "patch"}),
    field_labels=frozenset({"spec.unschedulable"}),
)
PODS = ResourceType(
    kind="Pod",
    plural="pods",
    group="",
    version="v1",
    namespaced=True,
    verbs=_ALL,
    subresources=frozenset({"status", "log"}),
    field_labels=frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
)
DEPLOYMENTS = ResourceType(
    kind="Deployment",
    plural="deployments",
    group="apps",
    version="v1",
    namespaced=True,
    verbs=_ALL,
    subresources=frozenset({"scale", "status"}),
)
RUNTIMECLASSES = ResourceType(
    kind="RuntimeClass",
    plural="runtimeclasses",
    group="node.k8s.io",
    version="v1",
    namespaced=False,
    verbs=_ALL - {"deletecollection"},
)

ALL_TYPES: tuple[ResourceType, ...] = (NAMESPACES, NODES, PODS, DEPLOYMENTS, RUNTIMECLASSES)
BY_KIND: dict[str, ResourceType] = {t.kind: t for t in ALL_TYPES}
_BY_GROUP_VERSION: dict[tuple[str, str], dict[str, ResourceType]] = {}
for _t in ALL_TYPES:
    _BY_GROUP_VERSION.setdefault((_t.group, _t.version), {})[_t.plural] = _t


@dataclass(frozen=True)
class Target:
    """What a resource URL addresses."""

    rtype: ResourceType
    namespace: str | None
    """The namespace in the path; None for cluster-scoped types and all-namespace lists."""
    name: str | None
    """None for a collection."""
    subresource: str | None = None


def resolve(path: str) -> Target | None:
    """The target of an API path such as ``/apis/apps/v1/namespaces/x/deployments/y/scale``.

    None when the path names nothing this server serves (answered 404).
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    types = _BY_GROUP_VERSION.get((group, version))
    if types is None or not rest:
        return None
    # /namespaces/{ns}/{plural}[/{name}[/{sub}]] addresses namespaced types.
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in types:
        rtype = types[rest[2]]
        if not rtype.namespaced:
            return None
        return _item(rtype, rest[1], rest[3:])
    rtype_or_none = types.get(rest[0])
    if rtype_or_none is None:
        return None
    if rtype_or_none.namespaced:
        # Only the all-namespaces collection exists without /namespaces/{ns}.
        return Target(rtype_or_none, None, None) if len(rest) == 1 else None
    return _item(rtype_or_none, None, rest[1:])


def _item(rtype: ResourceType, namespace: str | None, rest: list[str]) -> Target | None:
    if not rest:
        return Target(rtype, namespace, None)
    if len(rest) == 1:
        return Target(rtype, namespace, rest[0])
    if len(rest) == 2 and rest[1] in rtype.subresources:
        return Target(rtype, namespace, rest[0], rest[1])
    return None

"""Checks before a run that decide whether its numbers will mean anything.

A run that cannot fit its replicas, has no agent on a node, or starts next to a
previous run's leftover pods still produces numbers, just wrong ones; a study
lost its scalability experiment to the default 110 pods per node that way.
``preflight`` looks at everything first and raises one ``PreflightError``
listing every problem, so a user fixes them in one go, not one per attempt:

- the RuntimeClass exists (else: the ones that do); ``default`` needs none;
- the namespace exists;
- capacity: free pod slots on the schedulable nodes (allocatable pods minus the
  pods already there) against the replicas; refused above, warned above 90 %;
- an agent is connected for every schedulable node, with a clock estimate;
- no pods of an earlier run (``app=c-http-server`` or any ``rtbench.io/run-id``)
  are left in the namespace.

Schedulable means what the scheduler would accept for the workload's pods:
Ready, not cordoned, labels matching the pod's node selector
(``kubernetes.io/os=linux``) merged with the RuntimeClass's
``scheduling.nodeSelector``, and every NoSchedule or NoExecute taint tolerated
by the pod's tolerations (only the control-plane taint's NoSchedule) or the
RuntimeClass's ``scheduling.tolerations``.

It also records the environment into ``RunSpec.environment``: DESIGN.md asks
that runs never be compared across environments without saying so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rtbench import __version__
from rtbench.v1 import control_pb2

from .control import Collector
from .errors import PreflightError
from .kube import Cluster
from .startrun import RunRequest
from .workload import (
    APP,
    APP_LABEL,
    DEFAULT_RUNTIME_CLASS,
    NODE_SELECTOR,
    RUN_ID_LABEL,
    TOLERATIONS,
)

__all__ = ["NEAR_FULL", "PreflightReport", "pod_placement", "preflight", "tolerates", "usable_node"]

NEAR_FULL = 0.9
"""Above this share of the free pod slots a run is warned about: a node that is nearly
full schedules the last pods late or not at all when anything else starts."""
_DONE_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PreflightReport:
    """What preflight found when it let the run go."""

    nodes: tuple[str, ...]
    """Schedulable nodes (each with a connected agent and a known clock offset)."""
    capacity: int
    """Free pod slots on those nodes (allocatable pods minus pods already there)."""
    warnings: tuple[str, ...] = ()
    """Worth saying, not worth refusing (capacity nearly used up, say)."""
    notes: tuple[str, ...] = ()
    """Facts about the run's setup worth a line (the cluster default handler is used)."""
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Cluster type, versions and settings, for RunSpec.environment."""


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint``, by Kubernetes' matching rules
    (an empty effect matches every effect, Exists with no key matches every taint)."""
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        if (toleration.get("operator") or "Equal") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def usable_node(
    node: Mapping[str, Any],
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> bool:
    """Whether the scheduler could place a pod with this node selector and these
    tolerations on ``node``: Ready, not cordoned, labels matching, and every NoSchedule
    or NoExecute taint tolerated (PreferNoSchedule only steers)."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return False
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if not ready:
        return False
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return all(labels.get(k) == v for k, v in node_selector.items())


def pod_placement(
    runtime_class: Mapping[str, Any] | None,
) -> tuple[dict[str, str], list[Mapping[str, Any]]]:
    """The node selector and tolerations the workload's pods end up with: the Deployment's
    own, plus the RuntimeClass's scheduling (admission merges both into the pod)."""
    scheduling = (runtime_class or {}).get("scheduling") or {}
    selector = {**NODE_SELECTOR, **(scheduling.get("nodeSelector") or {})}
    return selector, [*TOLERATIONS, *(scheduling.get("tolerations") or [])]


def _allocatable_pods(node: dict[str, Any]) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get("pods", "0")
    try:
        return int(str(value))
    except ValueError:
        return 0


def _cluster_type(version: Mapping[str, Any], nodes: list[dict[str, Any]]) -> str:
    infos = [(n.get("status") or {}).get("nodeInfo") or {} for n in nodes]
    runtimes = " ".join(str(i.get("containerRuntimeVersion", "")) for i in infos)
    kubelets = " ".join(str(i.get("kubeletVersion", "")) for i in infos)
    git = str(version.get("gitVersion", ""))
    if "rtbench-sim" in runtimes or "rtbench-sim" in git:
        return "rtbench-sim"
    for marker in ("k3s", "rke2", "k0s", "eks", "gke", "aks"):
        if marker in git or marker in kubelets:
            return marker
    if any(n.get("metadata", {}).get("name", "").startswith("kind-") for n in nodes):
        return "kind"
    return "kubernetes"


def _environment(
    version: Mapping[str, Any],
    nodes: list[dict[str, Any]],
    agents: list[control_pb2.AgentInfo],
    used: list[str],
) -> dict[str, str]:
    env = {
        "cluster_type": _cluster_type(version, nodes),
        "kubernetes_version": str(version.get("gitVersion", "")),
        "rtctl_version": __version__,
        "nodes": str(len(used)),
    }
    by_name = {str(n["metadata"]["name"]): n for n in nodes}
    for name in used:
        info = (by_name[name].get("status") or {}).get("nodeInfo") or {}
        for key, field_name in (
            ("os_image", "osImage"),
            ("kernel", "kernelVersion"),
            ("container_runtime", "containerRuntimeVersion"),
            ("kubelet", "kubeletVersion"),
            ("architecture", "architecture"),
        ):
            if info.get(field_name):
                env[f"node.{name}.{key}"] = str(info[field_name])
        env[f"node.{name}.allocatable_pods"] = str(_allocatable_pods(by_name[name]))
    for agent in agents:
        if agent.node in used and agent.connected:
            env[f"agent.{agent.node}.version"] = agent.agent_version
    return env


def _names(pods: list[dict[str, Any]]) -> set[str]:
    # Every pod counts, terminating or finished too: it still holds a slot or a process.
    return {str(p["metadata"]["name"]) for p in pods}


async def preflight(request: RunRequest, collector: Collector, cluster: Cluster) -> PreflightReport:
    """Check the cluster and the collector for ``request``; raises PreflightError with every
    problem found, CollectorError/ClusterError when one of them cannot be asked at all."""
    problems: list[str] = []
    warnings: list[str] = []
    version = await cluster.version()
    notes: list[str] = []
    runtime_class: Mapping[str, Any] | None = None
    if request.runtime_class == DEFAULT_RUNTIME_CLASS:
        notes.append("runtime class: the cluster default handler (no runtimeClassName)")
    else:
        classes = {str(rc["metadata"]["name"]): rc for rc in await cluster.runtime_classes()}
        runtime_class = classes.get(request.runtime_class)
        if runtime_class is None:
            existing = ", ".join(sorted(classes)) or "none"
            problems.append(
                f"RuntimeClass {request.runtime_class!r} does not exist; existing: {existing} "
                f"(or {DEFAULT_RUNTIME_CLASS!r} for the cluster default handler)"
            )
    selector, tolerations = pod_placement(runtime_class)
    if not await cluster.namespace_exists(request.namespace):
        problems.append(f"namespace {request.namespace!r} does not exist")

    nodes = await cluster.nodes()
    usable = [n for n in nodes if usable_node(n, selector, tolerations)]
    names = sorted(str(n["metadata"]["name"]) for n in usable)
    busy: Counter[str] = Counter(
        str((p.get("spec") or {}).get("nodeName"))
        for p in await cluster.all_pods()
        if (p.get("spec") or {}).get("nodeName")
        and (p.get("status") or {}).get("phase") not in _DONE_PHASES
    )
    allocatable = {str(n["metadata"]["name"]): _allocatable_pods(n) for n in usable}
    free = sum(max(allocatable[n] - busy[n], 0) for n in names)
    if not names:
        problems.append(
            f"no schedulable node for RuntimeClass {request.runtime_class!r} "
            f"({len(nodes)} nodes, none Ready, uncordoned, with every NoSchedule/NoExecute "
            "taint tolerated and matching the node selector "
            f"{', '.join(f'{k}={v}' for k, v in sorted(selector.items()))})"
        )
    elif request.replicas > free:
        per_node = ", ".join(f"{n} {allocatable[n]}-{busy[n]}" for n in names)
        problems.append(
            f"{request.replicas} replicas do not fit: the {len(names)} schedulable nodes have "
            f"{free} free pod slots (allocatable minus pods present: {per_node}); Kubernetes "
            "allows 110 pods per node by default (kubelet maxPods): raise it, add nodes or "
            "run fewer replicas"
        )
    elif request.replicas > NEAR_FULL * free:
        warnings.append(
            f"{request.replicas} replicas use {request.replicas / free:.0%} of the {free} free pod "
            f"slots on {len(names)} nodes: the last pods may wait for room"
        )

    agents = await collector.agents()
    ready_agents = {
        a.node for a in agents if a.connected and a.HasField("clock") and a.clock.samples > 0
    }
    connected = {a.node for a in agents if a.connected}
    missing = [n for n in names if n not in connected]
    unsynced = [n for n in names if n in connected and n not in ready_agents]
    if missing:
        problems.append(
            f"no agent connected to collector {collector.target} for node(s) "
            f"{', '.join(missing)}: start `agent run --node NODE --collector "
            f"{collector.target}` there (the DaemonSet does)"
        )
    if unsynced:
        problems.append(
            f"agent(s) on {', '.join(unsynced)} have no clock offset yet; wait a few seconds"
        )

    selector_app = f"{APP_LABEL}={APP}"
    leftover = _names(await cluster.pods(request.namespace, selector_app))
    leftover |= _names(await cluster.pods(request.namespace, RUN_ID_LABEL))
    if leftover:
        shown = ", ".join(sorted(leftover)[:5]) + (" ..." if len(leftover) > 5 else "")
        problems.append(
            f"{len(leftover)} pod(s) of an earlier run left in namespace {request.namespace}: "
            f"{shown}; clean up with `kubectl -n {request.namespace} delete deployment,pod "
            f"-l {selector_app}` (and -l {RUN_ID_LABEL})"
        )
    if problems:
        raise PreflightError(problems, warnings)
    return PreflightReport(
        nodes=tuple(names),
        capacity=free,
        warnings=tuple(warnings),
        notes=tuple(notes),
        environment=MappingProxyType(_environment(version, nodes, agents, names)),
    )

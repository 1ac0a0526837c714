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
- an agent is connected for every schedulable node, heard from within its
  silence bound (3 x its clock-sync interval: a SIGSTOPped or hung agent keeps
  its connection open but says nothing), with a clock estimate;
- no pods of an earlier run (``app=c-http-server`` or any ``rtbench.io/run-id``)
  are left in the namespace. An rtctl killed mid-run leaves its Deployment, its
  pods and a run still RUNNING in the collector: ``find_leftovers`` names them and
  ``clean_leftovers`` (``start-run --clean-leftovers``) deletes the Deployments and
  any unowned pods, waits until the pods are gone and marks those runs ABORTED.

Schedulable means what the scheduler would accept for the workload's pods:
Ready, not cordoned, labels matching the pod's node selector
(``kubernetes.io/os=linux``) merged with the RuntimeClass's
``scheduling.nodeSelector``, and every NoSchedule or NoExecute taint tolerated
by the pod's tolerations (only the control-plane taint's NoSchedule) or the
RuntimeClass's ``scheduling.tolerations``.

It also records the environment into ``RunSpec.environment``: DESIGN.md asks
that runs never be compared across environments without saying so; and whether the
runtime is real or simulated (rtctl/runtimemode.py), read from the RuntimeClass and
the usable nodes, into ``RunSpec.runtime_mode``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rtbench import __version__
from rtbench.v1 import control_pb2

from .control import Collector, describe_silence
from .errors import ClusterError, PreflightError
from .kube import Cluster
from .runtimemode import NOT_READ, RuntimeMode, detect
from .startrun import RunRequest
from .workload import (
    APP,
    APP_LABEL,
    DEFAULT_RUNTIME_CLASS,
    NODE_SELECTOR,
    RUN_ID_LABEL,
    TOLERATIONS,
)

__all__ = [
    "CLEAN_FLAG",
    "NEAR_FULL",
    "Leftovers",
    "PreflightReport",
    "clean_leftovers",
    "find_leftovers",
    "pod_placement",
    "preflight",
    "tolerates",
    "usable_node",
]

CLEAN_FLAG = "--clean-leftovers"

NEAR_FULL = 0.9
"""Above this share of the free pod slots a run is warned about: a node that is nearly
full schedules the last pods late or not at all when anything else starts."""
_DONE_PHASES = ("Succeeded", "Failed")
AGENT_RETURN_S = 20.0
"""How long after a collector outage preflight waits for the agents to reconnect: an agent's
reconnect backoff is capped at 5 s by default, and a clock estimate follows at once."""


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
    runtime_mode: RuntimeMode = NOT_READ
    """Real or simulated runtime, for RunSpec.runtime_mode."""


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


def _ready_nodes(agents: Sequence[control_pb2.AgentInfo]) -> set[str]:
    return {
        a.node
        for a in agents
        if a.connected and not a.stale and a.HasField("clock") and a.clock.samples > 0
    }


async def _agents(collector: Collector, nodes: Sequence[str]) -> list[control_pb2.AgentInfo]:
    """The collector's agents; right after a collector outage, waited for (up to
    AGENT_RETURN_S after the collector's return) until every node's agent is back: a
    restarted collector knows no connected agent until each has reconnected."""
    agents = await collector.agents()
    while (back := collector.back_for) is not None and back < AGENT_RETURN_S:
        if not set(nodes) - _ready_nodes(agents):
            break
        await asyncio.sleep(0.5)
        agents = await collector.agents()
    return agents


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
    classes = {str(rc["metadata"]["name"]): rc for rc in await cluster.runtime_classes()}
    if request.runtime_class == DEFAULT_RUNTIME_CLASS:
        notes.append("runtime class: the cluster default handler (no runtimeClassName)")
    else:
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

    agents = await _agents(collector, names)
    live = [a for a in agents if a.connected and not a.stale]
    ready_agents = {a.node for a in live if a.HasField("clock") and a.clock.samples > 0}
    connected = {a.node for a in agents if a.connected}
    missing = [n for n in names if n not in connected]
    silent = [n for n in names if n in connected and n not in {a.node for a in live}]
    unsynced = [n for n in names if n in connected and n not in silent and n not in ready_agents]
    if missing:
        problems.append(
            f"no agent connected to collector {collector.target} for node(s) "
            f"{', '.join(missing)}: start `agent run --node NODE --collector "
            f"{collector.target}` there (the DaemonSet does)"
        )
    if silent:
        problems.append(
            "agent(s) on "
            + ", ".join(describe_silence(n, agents) for n in silent)
            + ": connected but not heard from within their bound (3 x the clock-sync "
            "interval): stopped, hung or cut off? (rtctl agents shows them stale)"
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
            f"{shown}; run again with `start-run {CLEAN_FLAG}` to delete them (and mark "
            f"their run aborted), or clean up with `kubectl -n {request.namespace} delete "
            f"deployment,pod -l {selector_app}` (and -l {RUN_ID_LABEL})"
        )
    if problems:
        raise PreflightError(problems, warnings)
    mode = detect(request.runtime_class, runtime_class, usable, classes)
    notes.append(f"runtime mode: {mode.mode} ({mode.basis})")
    return PreflightReport(
        nodes=tuple(names),
        capacity=free,
        warnings=tuple(warnings),
        notes=tuple(notes),
        environment=MappingProxyType(_environment(version, nodes, agents, names)),
        runtime_mode=mode,
    )


# -- leftovers of an earlier run ----------------------------------------------------------


@dataclass(frozen=True)
class Leftovers:
    """What an earlier run left in a namespace (by ``app=c-http-server`` or any run id)."""

    namespace: str
    deployments: tuple[str, ...]
    pods: tuple[str, ...]
    unowned_pods: tuple[str, ...]
    """Pods no controller owns: deleting the Deployments would not remove them."""
    run_ids: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.deployments or self.pods)

    def describe(self) -> str:
        runs = ", ".join(self.run_ids) or "no run id"
        return (
            f"{len(self.deployments)} Deployment(s) and {len(self.pods)} pod(s) of an earlier "
            f"run in namespace {self.namespace} (run {runs})"
        )


def _run_ids(objects: list[dict[str, Any]]) -> set[str]:
    return {
        str(labels[RUN_ID_LABEL])
        for o in objects
        if RUN_ID_LABEL in (labels := (o.get("metadata") or {}).get("labels") or {})
    }


async def find_leftovers(cluster: Cluster, namespace: str) -> Leftovers:
    """The earlier runs' Deployments and pods in ``namespace``."""
    by_name: dict[str, dict[str, Any]] = {}
    pods: dict[str, dict[str, Any]] = {}
    for selector in (f"{APP_LABEL}={APP}", RUN_ID_LABEL):
        for deployment in await cluster.deployments(namespace, selector):
            by_name[str(deployment["metadata"]["name"])] = deployment
        for pod in await cluster.pods(namespace, selector):
            pods[str(pod["metadata"]["name"])] = pod
    unowned = [n for n, p in pods.items() if not (p.get("metadata") or {}).get("ownerReferences")]
    return Leftovers(
        namespace=namespace,
        deployments=tuple(sorted(by_name)),
        pods=tuple(sorted(pods)),
        unowned_pods=tuple(sorted(unowned)),
        run_ids=tuple(sorted(_run_ids([*by_name.values(), *pods.values()]))),
    )


async def clean_leftovers(
    cluster: Cluster,
    collector: Collector,
    leftovers: Leftovers,
    *,
    within: float,
    note: Callable[[str], None] = lambda text: None,
) -> None:
    """Delete ``leftovers`` (Deployments, then unowned pods), wait up to ``within`` seconds
    until no pod of theirs is left, and finish their runs that are still going as ABORTED.
    Raises ClusterError (pods still there) or CollectorError."""
    namespace = leftovers.namespace
    for name in leftovers.deployments:
        await cluster.delete_deployment(namespace, name)
        note(f"deleted leftover Deployment {namespace}/{name}")
    for name in leftovers.unowned_pods:
        await cluster.delete_pod(namespace, name)
        note(f"deleted leftover pod {namespace}/{name}")
    try:
        async with asyncio.timeout(within):
            for selector in (f"{APP_LABEL}={APP}", RUN_ID_LABEL):
                await cluster.wait_pods_gone(namespace, selector, lambda left: None)
    except TimeoutError:
        raise ClusterError(
            f"leftover pods in namespace {namespace} still present {within:g} s after their "
            f"Deployments were deleted (kubectl -n {namespace} get pods -l {RUN_ID_LABEL})"
        ) from None
    going = (control_pb2.RUN_STATE_REGISTERED, control_pb2.RUN_STATE_RUNNING)
    for info in await collector.runs():
        if info.spec.run_id in leftovers.run_ids and info.state in going:
            await collector.finish_run(
                info.spec.run_id,
                control_pb2.RUN_STATE_ABORTED,
                "abandoned: its Deployment was left behind and deleted by start-run " + CLEAN_FLAG,
            )
            note(f"run {info.spec.run_id} marked aborted")

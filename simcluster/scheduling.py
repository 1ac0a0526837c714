"""The scheduler: binds each unscheduled pod to the least-loaded node that fits.

A node fits when it is Ready and schedulable, its labels satisfy the pod's
nodeSelector and required node affinity, and it has fewer pods than its
allocatable ``pods`` (counting pods that are terminating but not yet gone, as the
real scheduler does; this is the 110-pod cap a study once ran into). Binding sets
spec.nodeName and PodScheduled=True in one write. A pod that fits nowhere gets
PodScheduled=False, reason Unschedulable, with the real message
("0/2 nodes are available: 2 Too many pods. ...") and is retried whenever a pod
goes away or a node changes.
"""

from __future__ import annotations

import logging
from collections import Counter

from .nodes import allocatable_pods, node_ready
from .objects import Obj, condition, set_condition
from .registry import Registry
from .selectors import LabelSelector, Requirement
from .store import Event, EventType, Store

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
_TOO_MANY = "Too many pods"
_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
_UNSCHEDULABLE = "node(s) were unschedulable"
_NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"


def _affinity_terms(pod: Obj) -> list[LabelSelector]:
    """Required node affinity as label selectors; a node must match one of them."""
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    ops = {
        "In": "in",
        "NotIn": "notin",
        "Exists": "exists",
        "DoesNotExist": "!",
        "Gt": "gt",
        "Lt": "lt",
    }
    terms = []
    for term in required.get("nodeSelectorTerms") or []:
        reqs = []
        for expr in term.get("matchExpressions") or []:
            op = ops.get(str(expr.get("operator")))
            if op is not None:
                reqs.append(
                    Requirement(str(expr.get("key")), op, tuple(map(str, expr.get("values") or ())))
                )
        terms.append(LabelSelector(tuple(reqs)))
    return terms


def _wants_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
    )


class Scheduler:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self._watcher = store.subscribe(["Pod", "Node"])

    async def run(self) -> None:
        self.schedule_pending()
        while True:
            batch = await self._watcher.next_batch()
            if self._watcher.closed is not None:
                return
            if any(self._relevant(e) for e in batch):
                self.schedule_pending()

    @staticmethod
    def _relevant(event: Event) -> bool:
        if event.kind == "Node" or event.type is EventType.DELETED:
            return True
        if event.type is EventType.ADDED:
            return _wants_scheduling(event.object)
        # A bound pod that reached a terminal phase frees its slot.
        phase = (event.object.get("status") or {}).get("phase")
        return phase in ("Succeeded", "Failed")

    def schedule_pending(self) -> None:
        """Try every unscheduled pod once, oldest first."""
        pods = self.store.items("Pod")
        pending = sorted(
            (p for p in pods if _wants_scheduling(p)),
            key=lambda p: (
                p["metadata"].get("creationTimestamp", ""),
                int(p["metadata"]["resourceVersion"]),
            ),
        )
        if not pending:
            return
        nodes = self.store.items("Node")
        load: Counter[str] = Counter(
            p["spec"]["nodeName"]
            for p in pods
            if (p.get("spec") or {}).get("nodeName")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        for pod in pending:
            reasons: Counter[str] = Counter()
            candidates = []
            for node in nodes:
                why = self._misfit(pod, node, load)
                if why is None:
                    candidates.append(node)
                else:
                    reasons[why] += 1
            if candidates:
                best = min(
                    candidates, key=lambda n: (load[n["metadata"]["name"]], n["metadata"]["name"])
                )
                name = best["metadata"]["name"]
                self._bind(pod, name)
                load[name] += 1
            else:
                self._unschedulable(pod, len(nodes), reasons)

    @staticmethod
    def _misfit(pod: Obj, node: Obj, load: Counter[str]) -> str | None:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        if (node.get("spec") or {}).get("unschedulable"):
            return _UNSCHEDULABLE
        if not node_ready(node):
            return _NOT_READY
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            return _SELECTOR
        terms = _affinity_terms(pod)
        if terms and not any(t.matches(labels) for t in terms):
            return _SELECTOR
        if load[name] >= allocatable_pods(node):
            return _TOO_MANY
        return None

    def _bind(self, pod: Obj, node: str) -> None:
        md = pod["metadata"]

        def bind(obj: Obj) -> None:
            obj["spec"]["nodeName"] = node
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            set_condition(conditions, "PodScheduled", "True", probe_time=True)
            obj["status"].pop("nominatedNodeName", None)

        self.registry.mutate("Pod", md["namespace"], md["name"], bind, uid=md["uid"])
        log.debug("bound %s/%s to %s", md["namespace"], md["name"], node)

    def _unschedulable(self, pod: Obj, total: int, reasons: Counter[str]) -> None:
        md = pod["metadata"]
        detail = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
        message = (
            f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are "
            f"available: {total} Preemption is not helpful for scheduling."
        )
        current = condition(pod, "PodScheduled")
        if current is not None and current.get("message") == message:
            return

        def mark(obj: Obj) -> None:
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            set_condition(
                conditions,
                "PodScheduled",
                "False",
                reason="Unschedulable",
                message=message,
                probe_time=True,
            )

        self.registry.mutate("Pod", md["namespace"], md["name"], mark, uid=md["uid"])

    def close(self) -> None:
        self.store.unwatch(self._watcher)

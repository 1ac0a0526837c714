"""The deployment controller: keeps each Deployment's pods and status in line.

It does the work of the real Deployment and ReplicaSet controllers in one step,
without ReplicaSet objects: pods are named ``<deploy>-<pod-template-hash>-<5>``,
carry the template's labels plus ``pod-template-hash`` and a controller
ownerReference to the Deployment, and are created through the registry, so the
admission that refuses a client's pod (an unknown RuntimeClass, 403) refuses
the controller's too; the refusal is recorded as a ReplicaFailure condition and
retried with backoff. Scaling up and down, rolling updates within
maxSurge/maxUnavailable (or Recreate) and the status counts (replicas,
updatedReplicas, readyReplicas, availableReplicas, observedGeneration, and the
Available/Progressing conditions) follow the real controller.
"""

from __future__ import annotations

import copy
import logging
import random
import time

from .errors import ApiError
from .objects import (
    Obj,
    controller_uid,
    is_pod_ready,
    rfc3339,
    set_condition,
    template_hash,
)
from .registry import DeleteOptions, Registry
from .resources import PODS
from .store import Store
from .validation import scaled_int

log = logging.getLogger(__name__)

RETRY_MIN = 1.0
RETRY_MAX = 30.0


def _rank_for_deletion(pod: Obj) -> tuple[int, int, str]:
    """Unscheduled first, then not ready, then newest: the real controller's order."""
    scheduled = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    return (
        scheduled,
        1 if is_pod_ready(pod) else 0,
        _negate(pod["metadata"].get("creationTimestamp", "")),
    )


def _negate(stamp: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in stamp)


class DeploymentController:
    def __init__(self, registry: Registry, store: Store, rng: random.Random) -> None:
        self.registry = registry
        self.store = store
        self.rng = rng
        self._watcher = store.subscribe(["Deployment", "Pod", "RuntimeClass"])
        self._retry_at: dict[tuple[str, str], float] = {}
        self._retry_delay: dict[tuple[str, str], float] = {}

    async def run(self) -> None:
        dirty = {
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in self.store.items("Deployment")
        }
        while True:
            for key in sorted(dirty):
                self.reconcile(*key)
            timeout = None
            if self._retry_at:
                timeout = max(0.0, min(self._retry_at.values()) - time.monotonic())
            batch = await self._watcher.next_batch(timeout)
            if self._watcher.closed is not None:
                return
            dirty = set()
            now = time.monotonic()
            for key, when in list(self._retry_at.items()):
                if when <= now:
                    dirty.add(key)
                    del self._retry_at[key]
            for event in batch:
                obj = event.object
                md = obj["metadata"]
                if event.kind == "Deployment":
                    dirty.add((md["namespace"], md["name"]))
                elif event.kind == "RuntimeClass":
                    dirty.update(self._retry_at)  # a missing class may exist now
                else:
                    owner = self._owner_name(obj)
                    if owner is not None:
                        dirty.add((md["namespace"], owner))

    @staticmethod
    def _owner_name(pod: Obj) -> str | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Deployment" and ref.get("controller"):
                name = ref.get("name")
                return name if isinstance(name, str) else None
        return None

    def reconcile(self, namespace: str, name: str) -> None:
        dep = self.store.peek("Deployment", namespace, name)
        if dep is None:
            self._retry_at.pop((namespace, name), None)
            self._retry_delay.pop((namespace, name), None)
            return
        uid = dep["metadata"]["uid"]
        pods = [p for p in self.store.items("Pod", namespace) if controller_uid(p) == uid]
        active = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        failure: str | None = None
        if not dep["metadata"].get("deletionTimestamp"):
            failure = self._scale(dep, active)
            if failure is None:
                self._retry_delay.pop((namespace, name), None)
            else:
                self._schedule_retry((namespace, name))
            pods = [p for p in self.store.items("Pod", namespace) if controller_uid(p) == uid]
            active = [
                p
                for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
        self._update_status(dep, active, failure)

    def _schedule_retry(self, key: tuple[str, str]) -> None:
        delay = min(RETRY_MAX, self._retry_delay.get(key, RETRY_MIN / 2) * 2)
        self._retry_delay[key] = delay
        self._retry_at[key] = time.monotonic() + delay

    def _scale(self, dep: Obj, active: list[Obj]) -> str | None:
        """Create and delete pods toward the spec; the create failure message, if any."""
        spec = dep["spec"]
        replicas = int(spec.get("replicas", 1))
        current_hash = template_hash(spec["template"])
        # One pass: ``p not in new`` compared whole pod dicts, O(n²), and at 1,100 pods
        # held the event loop for seconds on every reconcile.
        new: list[Obj] = []
        old: list[Obj] = []
        for p in active:
            same = p["metadata"].get("labels", {}).get("pod-template-hash") == current_hash
            (new if same else old).append(p)
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            self._delete(old, len(old))
            if old:
                return None  # new pods only once the old ones are gone
            surge, unavailable = 0, replicas
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = scaled_int(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = scaled_int(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1
        if len(new) > replicas:
            self._delete(new, len(new) - replicas)
            new = sorted(new, key=_rank_for_deletion)[len(new) - replicas :]
        room = replicas + surge - len(old) - len(new) if old else replicas - len(new)
        failure = self._create(dep, current_hash, max(0, min(room, replicas - len(new))))
        if old:
            ready = sum(1 for p in old + new if is_pod_ready(p))
            removable = max(0, ready - (replicas - unavailable))
            excess = max(0, len(old) + len(new) - (replicas + surge))
            self._delete(old, min(len(old), max(removable, excess)))
        return failure

    def _create(self, dep: Obj, pod_hash: str, count: int) -> str | None:
        md, template = dep["metadata"], dep["spec"]["template"]
        for _ in range(count):
            pod_md = copy.deepcopy(template.get("metadata") or {})
            labels = pod_md.setdefault("labels", {})
            labels["pod-template-hash"] = pod_hash
            pod_md.pop("name", None)
            pod_md["generateName"] = f"{md['name'][:46]}-{pod_hash}-"
            pod_md.pop("namespace", None)
            pod_md["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": md["name"],
                    "uid": md["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            pod = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": pod_md,
                "spec": copy.deepcopy(template["spec"]),
            }
            try:
                self.registry.create(PODS, md["namespace"], pod)
            except ApiError as exc:
                log.info(
                    "deployment %s/%s: pod create refused: %s",
                    md["namespace"],
                    md["name"],
                    exc.message,
                )
                return exc.message
        return None

    def _delete(self, pods: list[Obj], count: int) -> None:
        for pod in sorted(pods, key=_rank_for_deletion)[:count]:
            md = pod["metadata"]
            try:
                self.registry.delete(PODS, md["namespace"], md["name"], DeleteOptions())
            except ApiError:
                continue

    def _update_status(self, dep: Obj, active: list[Obj], failure: str | None) -> None:
        md, spec = dep["metadata"], dep["spec"]
        replicas = int(spec.get("replicas", 1))
        current_hash = template_hash(spec["template"])
        updated = [
            p
            for p in active
            if p["metadata"].get("labels", {}).get("pod-template-hash") == current_hash
        ]
        ready = sum(1 for p in active if is_pod_ready(p))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = scaled_int(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        rs_name = f"{md['name']}-{current_hash}"
        now = rfc3339()

        def change(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            status["replicas"] = len(active)
            status["updatedReplicas"] = len(updated)
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
            unavailable = max(0, replicas - ready)
            if unavailable:
                status["unavailableReplicas"] = unavailable
            else:
                status.pop("unavailableReplicas", None)
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                if status[key] == 0:
                    del status[key]  # omitempty, as the real API server serialises
            conditions = status.setdefault("conditions", [])
            available = ready >= replicas - max_unavailable
            set_condition(
                conditions,
                "Available",
                "True" if available else "False",
                reason="MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                message="Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                now=now,
                update_time=True,
            )
            complete = len(updated) == replicas == ready == len(active)
            set_condition(
                conditions,
                "Progressing",
                "True",
                reason="NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                message=f'ReplicaSet "{rs_name}" has successfully progressed.'
                if complete
                else f'ReplicaSet "{rs_name}" is progressing.',
                now=now,
                update_time=True,
            )
            if failure is not None:
                set_condition(
                    conditions,
                    "ReplicaFailure",
                    "True",
                    reason="FailedCreate",
                    message=failure,
                    now=now,
                )
            elif failure is None and any(c.get("type") == "ReplicaFailure" for c in conditions):
                conditions[:] = [c for c in conditions if c.get("type") != "ReplicaFailure"]

        self.registry.mutate("Deployment", md["namespace"], md["name"], change, uid=md["uid"])

    def close(self) -> None:
        self.store.unwatch(self._watcher)

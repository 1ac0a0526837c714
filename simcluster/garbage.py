"""Cascading deletion: the garbage collector and the namespace finalizer.

When a Deployment is deleted its pods are deleted gracefully (the pods' own
grace period), so rtctl can wait for "really gone" exactly as on a real cluster.
With propagationPolicy Foreground the Deployment stays, with a deletionTimestamp
and the ``foregroundDeletion`` finalizer, until its last pod is gone. A
namespace being deleted stays Terminating until everything in it is gone.
"""

from __future__ import annotations

import logging

from .errors import ApiError
from .objects import Obj, controller_uid
from .registry import FOREGROUND, DeleteOptions, Registry
from .resources import DEPLOYMENTS, PODS
from .store import EventType, Store

log = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self._watcher = store.subscribe(["Deployment", "Pod", "Namespace"])

    async def run(self) -> None:
        while True:
            batch = await self._watcher.next_batch()
            if self._watcher.closed is not None:
                return
            namespaces: set[str] = set()
            for event in batch:
                obj = event.object
                md = obj["metadata"]
                if event.kind == "Deployment":
                    if event.type is EventType.DELETED:
                        self._delete_dependents(md["namespace"], md["uid"])
                    elif md.get("deletionTimestamp"):
                        self._foreground(obj)
                    namespaces.add(md["namespace"])
                elif event.kind == "Pod":
                    if event.type is EventType.DELETED:
                        owner = controller_uid(obj)
                        if owner is not None:
                            self._finish_foreground(md["namespace"], owner)
                        namespaces.add(md["namespace"])
                else:
                    namespaces.add(md["name"])
            for name in sorted(namespaces):
                self._namespace(name)

    def _delete_dependents(self, namespace: str, owner_uid: str) -> int:
        """Gracefully delete every pod controlled by ``owner_uid``; how many remain."""
        remaining = 0
        for pod in self.store.items("Pod", namespace):
            if controller_uid(pod) != owner_uid:
                continue
            remaining += 1
            if pod["metadata"].get("deletionTimestamp"):
                continue
            try:
                self.registry.delete(PODS, namespace, pod["metadata"]["name"], DeleteOptions())
            except ApiError as exc:
                log.debug("garbage collection of a pod: %s", exc.message)
        return remaining

    def _foreground(self, dep: Obj) -> None:
        md = dep["metadata"]
        if FOREGROUND not in (md.get("finalizers") or []):
            return
        if self._delete_dependents(md["namespace"], md["uid"]) == 0:
            self.registry.remove("Deployment", md["namespace"], md["name"], uid=md["uid"])

    def _finish_foreground(self, namespace: str, owner_uid: str) -> None:
        for dep in self.store.items("Deployment", namespace):
            md = dep["metadata"]
            if md["uid"] == owner_uid and md.get("deletionTimestamp"):
                self._foreground(dep)

    def _namespace(self, name: str) -> None:
        ns = self.store.peek("Namespace", "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for dep in self.store.items("Deployment", name):
            try:
                self.registry.delete(DEPLOYMENTS, name, dep["metadata"]["name"], DeleteOptions())
            except ApiError as exc:
                log.debug("namespace cleanup of a deployment: %s", exc.message)
        for pod in self.store.items("Pod", name):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            try:
                self.registry.delete(PODS, name, pod["metadata"]["name"], DeleteOptions())
            except ApiError as exc:
                log.debug("namespace cleanup of a pod: %s", exc.message)
        if not self.store.items("Pod", name) and not self.store.items("Deployment", name):
            self.registry.remove("Namespace", "", name, uid=ns["metadata"]["uid"])

    def close(self) -> None:
        self.store.unwatch(self._watcher)

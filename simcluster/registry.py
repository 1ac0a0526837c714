"""The verbs of the API: create, get, list, update, patch, delete, scale.

Both the HTTP handlers and the in-process controllers go through this one
registry, so a pod the deployment controller creates passes the same defaulting,
validation and admission (an unknown RuntimeClass is refused with 403) as one a
client posts, and every write lands in the store as exactly one event.

Deletion follows the real API server: pods are deleted gracefully (deletionTimestamp
and deletionGracePeriodSeconds set, a MODIFIED event; the kubelet stops the
containers and then removes the object) unless the grace period is 0, the pod is
not bound to a node or it has already finished. Namespaces go Terminating until
their content is gone. Deployments go at once (Background; Orphan is treated the
same, so pods never outlive their deployment here) or, with Foreground, after
their pods.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import shapes
from . import validation as v
from .errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
)
from .objects import Obj, meta, new_uid, random_suffix, rfc3339
from .patching import apply_patch
from .resources import DEPLOYMENTS, NAMESPACES, PODS, RUNTIMECLASSES, ResourceType
from .selectors import FieldSelector, LabelSelector, field_value, format_label_selector
from .store import Store

PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
FOREGROUND = "foregroundDeletion"
_SYSTEM_METADATA = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
)


@dataclass(frozen=True)
class DeleteOptions:
    grace_period: int | None = None
    propagation: str | None = None
    """Background (default), Foreground or Orphan."""
    uid: str | None = None
    resource_version: str | None = None


def matcher(
    rtype: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
) -> Callable[[Obj], bool]:
    """A predicate for objects of ``rtype`` in ``namespace`` matching both selectors."""

    def matches(obj: Obj) -> bool:
        md = obj.get("metadata") or {}
        if namespace is not None and md.get("namespace") != namespace:
            return False
        return labels.matches(md.get("labels") or {}) and fields.matches(
            lambda f: field_value(obj, f)
        )

    return matches


def success_status(rtype: ResourceType, obj: Obj) -> Obj:
    md = obj.get("metadata") or {}
    details: Obj = {"name": md.get("name"), "kind": rtype.plural, "uid": md.get("uid")}
    if rtype.group:
        details["group"] = rtype.group
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


class Registry:
    def __init__(self, store: Store, rng: random.Random) -> None:
        self.store = store
        self._rng = rng

    # -- reads -----------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rtype.kind, namespace or "", name)
        if obj is None:
            raise self.not_found(rtype, name)
        return obj

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> Obj:
        match = matcher(rtype, namespace, labels or LabelSelector(), fields or FieldSelector())
        items = [copy.deepcopy(o) for o in self.store.items(rtype.kind, namespace) if match(o)]
        return {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": items,
        }

    # -- create ----------------------------------------------------------------

    def create(self, rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
        self.allow(rtype, "create")
        obj = self._decode(rtype, body)
        md = meta(obj)
        ns = self._namespace(rtype, namespace, md)
        name = md.get("name")
        shown = name  # admission errors name a generated object by its prefix, as real ones do
        if not name:
            name = self._generate_name(rtype, ns, md.get("generateName"))
            shown = md.get("generateName")
        if not isinstance(name, str):
            v.raise_invalid(
                rtype, str(name), [v.invalid("metadata.name", name, "must be a string")]
            )
        v.raise_invalid(rtype, name, v.name_causes(rtype, name))
        md["name"] = name
        if rtype.namespaced:
            self._check_namespace_open(rtype, ns, name)
        for key in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            md.pop(key, None)
        md.pop("selfLink", None)
        md.pop("managedFields", None)
        md["uid"] = new_uid()
        md["creationTimestamp"] = rfc3339()
        self._prepare_create(rtype, obj, str(shown))
        if self.store.peek(rtype.kind, ns, name) is not None:
            raise AlreadyExists(
                f'{rtype.qualified} "{name}" already exists',
                name=name,
                kind=rtype.plural,
                group=rtype.group,
            )
        return self.store.create(rtype.kind, obj)

    def _generate_name(self, rtype: ResourceType, ns: str, prefix: Any) -> str:
        if not isinstance(prefix, str) or not prefix:
            v.raise_invalid(
                rtype,
                "",
                [
                    v.Cause(
                        "metadata.name",
                        "Required value: name or generateName is required",
                        "FieldValueRequired",
                    )
                ],
            )
            raise AssertionError  # pragma: no cover - raise_invalid raised
        for _ in range(8):
            name = prefix[:58] + random_suffix(self._rng)
            if self.store.peek(rtype.kind, ns, name) is None:
                return name
        raise AlreadyExists(f'{rtype.qualified} "{prefix}" already exists', name=prefix)

    def _prepare_create(self, rtype: ResourceType, obj: Obj, name: str) -> None:
        if rtype is PODS:
            spec = obj.get("spec")
            if isinstance(spec, dict):
                v.default_pod_spec(spec)
            v.raise_invalid(rtype, name, v.pod_spec_causes(spec, "spec"))
            self._admit_pod(obj, name)
            obj["status"] = {"phase": "Pending", "qosClass": v.qos_class(obj["spec"])}
        elif rtype is DEPLOYMENTS:
            v.default_deployment(obj)
            v.raise_invalid(rtype, name, v.deployment_causes(obj))
            obj["metadata"]["generation"] = 1
            obj["status"] = {}
        elif rtype is RUNTIMECLASSES:
            v.raise_invalid(rtype, name, v.runtimeclass_causes(obj))
        elif rtype is NAMESPACES:
            v.default_namespace(obj)

    def _admit_pod(self, pod: Obj, name: str) -> None:
        rc_name = pod["spec"].get("runtimeClassName")
        if rc_name is None:
            return
        rc = self.store.peek("RuntimeClass", "", rc_name)
        if rc is None:
            raise Forbidden(
                f'pods "{name}" is forbidden: pod rejected: RuntimeClass "{rc_name}" not found',
                name=name,
                kind="pods",
            )
        overhead = rc.get("overhead", {}).get("podFixed")
        if overhead:
            pod["spec"]["overhead"] = copy.deepcopy(overhead)

    # -- update and patch --------------------------------------------------------

    def update(self, rtype: ResourceType, namespace: str | None, name: str, body: Any) -> Obj:
        self.allow(rtype, "update")
        new = self._decode(rtype, body)
        md = meta(new)
        if md.get("name") not in (None, name):
            raise BadRequest(
                f"the name of the object ({md.get('name')}) does not match the name on the URL "
                f"({name})"
            )
        self._namespace(rtype, namespace, md)
        old = self.get(rtype, namespace, name)
        return self._replace(rtype, old, new, md.get("resourceVersion") or None)

    def patch(
        self, rtype: ResourceType, namespace: str | None, name: str, content_type: str, patch: Any
    ) -> Obj:
        self.allow(rtype, "patch")
        old = self.get(rtype, namespace, name)
        new = shapes.drop_nulls(apply_patch(content_type, old, patch))
        shapes.check(rtype.kind, rtype.version, new)
        md = meta(new)
        if new.get("kind") != rtype.kind or new.get("apiVersion") != rtype.api_version:
            raise BadRequest("a patch may not change the kind or apiVersion of an object")
        if md.get("name") != name:
            raise BadRequest("a patch may not change the name of an object")
        wanted = (
            (patch.get("metadata") or {}).get("resourceVersion")
            if isinstance(patch, dict)
            else None
        )
        return self._replace(rtype, old, new, str(wanted) if wanted else None)

    def _replace(self, rtype: ResourceType, old: Obj, new: Obj, expect_rv: str | None) -> Obj:
        omd, md = old["metadata"], meta(new)
        name = omd["name"]
        if expect_rv is not None and expect_rv != omd["resourceVersion"]:
            raise self.conflict(rtype, name)
        for key in _SYSTEM_METADATA:
            if key in omd:
                md[key] = omd[key]
            else:
                md.pop(key, None)
        if "status" in old or rtype in (PODS, DEPLOYMENTS):
            new["status"] = copy.deepcopy(old.get("status", {}))
        if rtype is PODS:
            spec = new.get("spec")
            if isinstance(spec, dict):
                v.default_pod_spec(spec)
            if spec != old.get("spec"):
                v.raise_invalid(
                    rtype,
                    name,
                    [
                        v.Cause(
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "metadata (this simulated cluster does not update running containers)",
                            "FieldValueForbidden",
                        )
                    ],
                )
        elif rtype is DEPLOYMENTS:
            v.default_deployment(new)
            causes = v.deployment_causes(new)
            if (new.get("spec") or {}).get("selector") != old["spec"].get("selector"):
                causes.append(v.invalid("spec.selector", "", "field is immutable"))
            v.raise_invalid(rtype, name, causes)
            if new["spec"] != old["spec"]:
                md["generation"] = int(omd.get("generation", 1)) + 1
        elif rtype is RUNTIMECLASSES:
            causes = v.runtimeclass_causes(new)
            if new.get("handler") != old.get("handler"):
                causes.append(v.invalid("handler", new.get("handler"), "field is immutable"))
            v.raise_invalid(rtype, name, causes)
        elif rtype is NAMESPACES:
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        if new == old:
            return old  # a no-op write does not move the resourceVersion
        if md.get("deletionTimestamp") and omd.get("finalizers") and not md.get("finalizers"):
            return self.store.delete(rtype.kind, omd.get("namespace", ""), name)
        return self.store.update(rtype.kind, new)

    # -- scale -------------------------------------------------------------------

    def get_scale(self, namespace: str, name: str) -> Obj:
        dep = self.get(DEPLOYMENTS, namespace, name)
        md = dep["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: md[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in md
            },
            "spec": {"replicas": dep["spec"].get("replicas", 1)},
            "status": {
                "replicas": dep.get("status", {}).get("replicas", 0),
                "selector": format_label_selector(dep["spec"].get("selector") or {}),
            },
        }

    def update_scale(self, namespace: str, name: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise BadRequest("the body of a Scale must be a JSON object")
        body = shapes.drop_nulls(body)
        shapes.check("Scale", "v1", body)
        if body.get("kind") not in (None, "Scale") or body.get("apiVersion") not in (
            None,
            "autoscaling/v1",
        ):
            raise BadRequest("the body must be a Scale of autoscaling/v1")
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise Invalid(
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas}: '
                "must be greater than or equal to 0",
                name=name,
                kind="Scale",
                group="autoscaling",
            )
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        dep = self.get(DEPLOYMENTS, namespace, name)
        if wanted and str(wanted) != dep["metadata"]["resourceVersion"]:
            raise self.conflict(DEPLOYMENTS, name)
        dep["spec"]["replicas"] = replicas
        self._replace(DEPLOYMENTS, self.get(DEPLOYMENTS, namespace, name), dep, None)
        return self.get_scale(namespace, name)

    def patch_scale(self, namespace: str, name: str, content_type: str, patch: Any) -> Obj:
        return self.update_scale(
            namespace, name, apply_patch(content_type, self.get_scale(namespace, name), patch)
        )

    # -- delete ------------------------------------------------------------------

    def delete(
        self, rtype: ResourceType, namespace: str | None, name: str, options: DeleteOptions
    ) -> Obj:
        """The deleted (or now terminating) object, or a Success Status."""
        self.allow(rtype, "delete")
        ns = namespace or ""
        obj = self.store.peek(rtype.kind, ns, name)
        if obj is None:
            raise self.not_found(rtype, name)
        md = obj["metadata"]
        if options.uid is not None and options.uid != md.get("uid"):
            raise Conflict(
                f"Precondition failed: UID in precondition: {options.uid}, "
                f"UID in object meta: {md.get('uid')}",
                name=name,
                kind=rtype.plural,
            )
        if (
            options.resource_version is not None
            and options.resource_version != md["resourceVersion"]
        ):
            raise self.conflict(rtype, name)
        if rtype is PODS:
            return self._delete_pod(obj, options.grace_period)
        if rtype is NAMESPACES:
            if name in PROTECTED_NAMESPACES:
                raise Forbidden(
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    name=name,
                    kind="namespaces",
                )
            return self._mark_deleting(
                rtype, ns, name, lambda o: o["status"].update(phase="Terminating")
            )
        if rtype is DEPLOYMENTS and options.propagation == "Foreground":
            return self._mark_deleting(rtype, ns, name, lambda o: _add_finalizer(o, FOREGROUND))
        return success_status(rtype, self.store.delete(rtype.kind, ns, name))

    def _delete_pod(self, pod: Obj, grace: int | None) -> Obj:
        md, spec = pod["metadata"], pod.get("spec") or {}
        ns, name = md["namespace"], md["name"]
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        grace = max(0, grace)
        phase = (pod.get("status") or {}).get("phase")
        if grace == 0 or not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return self.store.delete("Pod", ns, name)
        current = md.get("deletionGracePeriodSeconds")
        if md.get("deletionTimestamp") and current is not None and current <= grace:
            return copy.deepcopy(pod)

        def mark(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        result = self.mutate("Pod", ns, name, mark)
        assert result is not None
        return result

    def _mark_deleting(
        self, rtype: ResourceType, ns: str, name: str, change: Callable[[Obj], None]
    ) -> Obj:
        def mark(obj: Obj) -> None:
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
            change(obj)

        result = self.mutate(rtype.kind, ns, name, mark)
        assert result is not None
        return result

    def delete_collection(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        options: DeleteOptions,
    ) -> Obj:
        self.allow(rtype, "deletecollection")
        listing = self.list(rtype, namespace, labels, fields)
        for item in listing["items"]:
            md = item["metadata"]
            try:
                self.delete(rtype, md.get("namespace"), md["name"], options)
            except NotFound:
                continue
        return listing

    # -- in-process writers (controllers, kubelets) --------------------------------

    def mutate(
        self,
        kind: str,
        namespace: str,
        name: str,
        change: Callable[[Obj], None],
        *,
        uid: str | None = None,
    ) -> Obj | None:
        """Apply ``change`` to a copy and write it if anything changed.

        None when the object is gone (or ``uid`` names a predecessor).
        """
        current = self.store.peek(kind, namespace, name)
        if current is None or (uid is not None and current["metadata"].get("uid") != uid):
            return None
        new = copy.deepcopy(current)
        change(new)
        if new == current:
            return new
        return self.store.update(kind, new)

    def remove(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Remove the object now (the end of a graceful deletion)."""
        try:
            self.store.delete(kind, namespace, name, uid=uid)
        except NotFound:
            return False
        return True

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def not_found(rtype: ResourceType, name: str) -> NotFound:
        return NotFound(
            f'{rtype.qualified} "{name}" not found', name=name, kind=rtype.plural, group=rtype.group
        )

    @staticmethod
    def conflict(rtype: ResourceType, name: str) -> Conflict:
        return Conflict(
            f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            name=name,
            kind=rtype.plural,
            group=rtype.group,
        )

    @staticmethod
    def allow(rtype: ResourceType, verb: str) -> None:
        if verb not in rtype.verbs:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )

    @staticmethod
    def _decode(rtype: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise BadRequest(
                f"the object provided is unrecognized (must be of type {rtype.kind}): "
                "the body must be a JSON object"
            )
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind not in (None, rtype.kind) or api_version not in (None, rtype.api_version):
            raise BadRequest(
                f"the object provided is unrecognized (must be of type {rtype.kind} "
                f"{rtype.api_version}): got kind {kind!r}, apiVersion {api_version!r}"
            )
        obj: Obj = shapes.drop_nulls(body)
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
        shapes.check(rtype.kind, rtype.version, obj)
        return obj

    @staticmethod
    def _namespace(rtype: ResourceType, namespace: str | None, md: Obj) -> str:
        if not rtype.namespaced:
            md.pop("namespace", None)
            return ""
        if namespace is None:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        if md.get("namespace") not in (None, "", namespace):
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        md["namespace"] = namespace
        return namespace

    def _check_namespace_open(self, rtype: ResourceType, ns: str, name: str) -> None:
        namespace = self.store.peek("Namespace", "", ns)
        if namespace is None:
            raise NotFound(f'namespaces "{ns}" not found', name=ns, kind="namespaces")
        if namespace["metadata"].get("deletionTimestamp"):
            raise Forbidden(
                f'{rtype.qualified} "{name}" is forbidden: unable to create new content in '
                f"namespace {ns} because it is being terminated",
                name=name,
                kind=rtype.plural,
            )


def _add_finalizer(obj: Obj, finalizer: str) -> None:
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if finalizer not in finalizers:
        finalizers.append(finalizer)

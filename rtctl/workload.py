"""The workload Deployment of a run: the manifest rtctl creates, and the names it checks.

The shape is the one deploy/examples/http-server-bench.yaml shows and
charts/http-server-bench renders: the C HTTP server under one RuntimeClass,
labelled ``app=c-http-server``, ``test_id``, ``runtime_class`` and ``variant``
so that dashboards built for the Prometheus setups still select the pods, plus
``rtbench.io/run-id``, which is how the agent attributes every event to its run
(agent/transitions.py). The pod says which port to probe
(``rtbench.io/probe-port``) so the agent never has to guess.

``--runtime-class default`` (``DEFAULT_RUNTIME_CLASS``) leaves runtimeClassName
out of the pod spec: the node's default handler runs the pods, which is how
most clusters run runc, with no RuntimeClass object for it at all.

Run ids are label values (at most 63 characters); the Deployment is named after
the run id, and when the id had to be changed to make a name (upper case, ``_``
or ``.``, too long) a short hash of the id is appended, so ``A_b`` and ``a-b``
never share a Deployment.

Everything here is pure (no I/O): the Deployment is a plain dict, sent as is.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rtbench.protocol import WORKLOAD_IMAGE

__all__ = [
    "APP",
    "APP_LABEL",
    "DEFAULT_IMAGE",
    "DEFAULT_MEMORY",
    "DEFAULT_RUNTIME_CLASS",
    "NODE_SELECTOR",
    "PROBE_PORT_ANNOTATION",
    "RESERVED_LABELS",
    "RUN_ID_LABEL",
    "TOLERATIONS",
    "WORKLOAD_PORT",
    "deployment_name",
    "label_key_problem",
    "label_value_problem",
    "memory_problem",
    "name_problem",
    "namespace_problem",
    "new_run_id",
    "pod_labels",
    "run_id_problem",
    "run_selector",
    "workload_deployment",
]

APP_LABEL = "app"
APP = "c-http-server"
"""The label value existing Prometheus setups select benchmark pods by (DESIGN.md)."""
RUN_ID_LABEL = "rtbench.io/run-id"
"""The agent reads the run from this label (agent/transitions.py RUN_ID_LABEL)."""
PROBE_PORT_ANNOTATION = "rtbench.io/probe-port"
"""The agent probes this port (agent/transitions.py PROBE_PORT_ANNOTATION)."""
WORKLOAD_PORT = 8080
"""The workload's default port (workload/server.c) and the one the chart exposes."""
DEFAULT_IMAGE = WORKLOAD_IMAGE
"""The image deploy/examples and the chart use (rtbench.protocol.WORKLOAD_IMAGE). Pods on
simulated runtimes run the simulator's workload binary whatever the image says; real-pod
nodes hold their own build of it under this name."""
DEFAULT_MEMORY = "16Mi"
"""The limit most runtimes ran with on the Raspberry Pi 5 study (DESIGN.md)."""
DEFAULT_RUNTIME_CLASS = "default"
"""The runtime class that means "no runtimeClassName": the nodes' default handler."""
RESERVED_LABELS = (APP_LABEL, "test_id", "runtime_class", "variant", RUN_ID_LABEL)
"""Labels rtctl sets itself; extra labels must not override them."""

NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"kubernetes.io/os": "linux"})
"""The workload is a Linux binary; preflight counts only nodes that match this too."""
TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType(
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        }
    ),
)
"""Small clusters (kind, k3s, one Pi) run pods on the control-plane node too; only its
NoSchedule taint is tolerated, so preflight must not count a node tainted NoExecute."""

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


def label_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a label value, or None when it can."""
    if len(value) > 63:
        return f"{value!r} is longer than 63 characters"
    if not _LABEL_VALUE.match(value):
        return (
            f"{value!r} must be letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a label key (``[prefix/]name``), or None when it can."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        return f"label key {key!r}: the name must be 1-63 letters, digits, '-', '_' or '.'"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a RuntimeClass or namespace (DNS subdomain), or None."""
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return f"{name!r} is not a valid name (lower-case letters, digits, '-' and '.')"
    return None


def namespace_problem(name: str) -> str | None:
    """Why ``name`` cannot name a namespace (a DNS label: no dots, at most 63), or None."""
    if not name or len(name) > 63 or not _DNS_LABEL.match(name):
        return f"{name!r} is not a namespace name (lower-case letters, digits and '-')"
    return None


def run_id_problem(run_id: str) -> str | None:
    """Why ``run_id`` cannot be a run id (a non-empty label value), or None when it can."""
    if not run_id:
        return "must not be empty"
    return label_value_problem(run_id)


_RUN_ID_HEX = 12


def new_run_id(runtime_class: str) -> str:
    """A run id that says what ran and cannot collide: ``<class>-<12 hex>``, the class cut
    short where needed so the id stays a label value (RuntimeClass names may be longer)."""
    head = runtime_class[: 63 - _RUN_ID_HEX - 1].rstrip("-_.") or "run"
    return f"{head}-{uuid.uuid4().hex[:_RUN_ID_HEX]}"


def memory_problem(memory: str) -> str | None:
    """Why ``memory`` is not a Kubernetes memory quantity like 16Mi, or None."""
    if not _QUANTITY.match(memory) or float(re.sub(r"[A-Za-z]+$", "", memory)) <= 0:
        return f"{memory!r} is not a memory quantity like 16Mi, 512Ki or 1Gi"
    return None


def deployment_name(run_id: str) -> str:
    """``rtbench-<run id>`` within the 63 characters a pod name prefix may use; when the id
    had to be lower-cased, mapped (``_``/``.`` to ``-``) or cut, ``-<8 hex of the id>`` is
    appended so that distinct run ids never name the same Deployment."""
    plain = f"rtbench-{run_id}"
    name = plain.lower().replace("_", "-").replace(".", "-")
    if name == plain and len(name) <= 63:
        return name
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{name[: 63 - 9].rstrip('-')}-{digest}"


def pod_labels(
    *,
    run_id: str,
    test_id: str,
    runtime_class: str,
    variant: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The labels on the Deployment and its pods: the extra ones first, ours win."""
    labels = dict(extra or {})
    labels.update(
        {
            APP_LABEL: APP,
            "test_id": test_id,
            "runtime_class": runtime_class,
            "variant": variant,
            RUN_ID_LABEL: run_id,
        }
    )
    return labels


def run_selector(run_id: str) -> str:
    """The label selector of one run's pods."""
    return f"{RUN_ID_LABEL}={run_id}"


def workload_deployment(
    *,
    run_id: str,
    namespace: str,
    replicas: int,
    image: str,
    memory: str,
    runtime_class: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """The Deployment of one run (``labels`` from ``pod_labels``); ``runtime_class``
    DEFAULT_RUNTIME_CLASS leaves runtimeClassName out."""
    port = WORKLOAD_PORT
    class_name = (
        {} if runtime_class == DEFAULT_RUNTIME_CLASS else {"runtimeClassName": runtime_class}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(run_id),
            "namespace": namespace,
            "labels": dict(labels),
        },
        "spec": {
            "replicas": replicas,
            # The run id alone selects the pods; app keeps old selectors meaningful.
            "selector": {"matchLabels": {APP_LABEL: APP, RUN_ID_LABEL: run_id}},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {PROBE_PORT_ANNOTATION: str(port)},
                },
                "spec": {
                    **class_name,
                    # Benchmark pods must not linger: the workload exits at once on SIGTERM.
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"name": "http", "containerPort": port}],
                            "env": [{"name": "PORT", "value": str(port)}],
                            "resources": {
                                "requests": {"memory": memory},
                                "limits": {"memory": memory},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": port},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                    "nodeSelector": dict(NODE_SELECTOR),
                    "tolerations": [dict(t) for t in TOLERATIONS],
                },
            },
        },
    }

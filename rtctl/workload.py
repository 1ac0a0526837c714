"""The workload Deployment of a run: the manifest rtctl creates, and the names it checks.

The shape is the one deploy/examples/http-server-bench.yaml shows and
charts/http-server-bench renders: the C HTTP server under one RuntimeClass,
labelled ``app=c-http-server``, ``test_id``, ``runtime_class`` and ``variant``
so that dashboards built for the Prometheus setups still select the pods, plus
``rtbench.io/run-id``, which is how the agent attributes every event to its run
(agent/transitions.py). The pod says which port to probe
(``rtbench.io/probe-port``) so the agent never has to guess.

Everything here is pure (no I/O): the Deployment is a plain dict, sent as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "APP",
    "APP_LABEL",
    "DEFAULT_IMAGE",
    "DEFAULT_MEMORY",
    "PROBE_PORT_ANNOTATION",
    "RESERVED_LABELS",
    "RUN_ID_LABEL",
    "WORKLOAD_PORT",
    "deployment_name",
    "label_key_problem",
    "label_value_problem",
    "memory_problem",
    "name_problem",
    "pod_labels",
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
DEFAULT_IMAGE = "ghcr.io/rtbench/workload:latest"
"""The image deploy/examples uses: workload/Dockerfile's build. The simulated cluster runs
its own workload binary whatever the image says."""
DEFAULT_MEMORY = "16Mi"
"""The limit most runtimes ran with on the Raspberry Pi 5 study (DESIGN.md)."""
RESERVED_LABELS = (APP_LABEL, "test_id", "runtime_class", "variant", RUN_ID_LABEL)
"""Labels rtctl sets itself; extra labels must not override them."""

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
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


def memory_problem(memory: str) -> str | None:
    """Why ``memory`` is not a Kubernetes memory quantity like 16Mi, or None."""
    if not _QUANTITY.match(memory) or float(re.sub(r"[A-Za-z]+$", "", memory)) <= 0:
        return f"{memory!r} is not a memory quantity like 16Mi, 512Ki or 1Gi"
    return None


def deployment_name(run_id: str) -> str:
    """``rtbench-<run id>``, cut to the 63 characters a pod name prefix may use."""
    name = f"rtbench-{run_id}".lower().replace("_", "-").replace(".", "-")
    return name[:63].rstrip("-")


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
    """The Deployment of one run (``labels`` from ``pod_labels``)."""
    port = WORKLOAD_PORT
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
                    "runtimeClassName": runtime_class,
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
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {
                            "key": "node-role.kubernetes.io/control-plane",
                            "operator": "Exists",
                            "effect": "NoSchedule",
                        }
                    ],
                },
            },
        },
    }

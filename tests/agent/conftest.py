"""Fixtures for the agent's tests, against real parts only.

- ``sim``, ``api``, ``wait_for``, ``http``: the simulated cluster (2 nodes, fast
  PLEG, bookmarks every 0.3 s) with a kubernetes-asyncio client for it, as
  tests/simcluster/conftest.py builds them; ``sim_process`` and ``sim_process_api``
  the same cluster as an ``rtbench-sim`` process, for tests with agent processes.
- ``observe``: start a ``NodeObserver`` for a node of ``sim`` with a
  ``RecordingOutbox`` (``observe("sim-node-1", probe_rate=500)``); every observer
  started is stopped at teardown, and one that failed fails the test.
- ``workload_deployment``: a Deployment of the workload labelled as rtbench runs
  label their pods (app=c-http-server, test_id, runtime_class, variant, run id).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from agent.observing import NodeObserver, ObserveSettings
from agent.outbox import RecordingOutbox
from agent.transitions import RUN_ID_LABEL
from rtbench.v1 import events_pb2
from tests.simcluster.conftest import (
    WaitFor,
    api,
    as_body,
    http,
    sim,
    sim_process,
    sim_process_api,
    wait_for,
)

__all__ = [
    "LOG_LAG_NS",
    "LOG_TRUNCATION_NS",
    "RunningObserver",
    "WaitFor",
    "api",
    "as_body",
    "assert_midpoint",
    "http",
    "listen_in_bracket",
    "observe",
    "sim",
    "sim_process",
    "sim_process_api",
    "wait_for",
    "workload_deployment",
]


LOG_TRUNCATION_NS = 1000
"""The workload logs its listen time truncated to whole microseconds: up to 1 µs early."""
LOG_LAG_NS = 5_000_000
"""The workload reads the clock after listen() returns, so a probe can connect before the
logged instant if the workload is preempted in between (seen: 0.16 ms in a 100-pod
burst on 2 cores). 5 ms covers a scheduler wait on a loaded 2-core machine; the lower
end of the bracket, which the prober alone decides, gets no such allowance."""


def assert_midpoint(event: events_pb2.Event) -> None:
    """A first_response is its bracket's midpoint, ± half the bracket's width."""
    start = int(event.attributes["bracket_start_ns"])
    end = int(event.attributes["bracket_end_ns"])
    assert start <= end
    assert event.uncertainty_ns == (end - start + 1) // 2
    assert event.time_ns == end - event.uncertainty_ns
    assert event.time_ns - event.uncertainty_ns <= start + 1


def listen_in_bracket(listen_ns: int, start_ns: int, end_ns: int) -> bool:
    """Whether a workload's logged listen time is consistent with a probe bracket."""
    return start_ns - LOG_TRUNCATION_NS <= listen_ns <= end_ns + LOG_LAG_NS


@dataclass
class RunningObserver:
    observer: NodeObserver
    outbox: RecordingOutbox
    task: asyncio.Task[None]


Observe = Callable[..., RunningObserver]


@pytest.fixture
async def observe(api: k8s.ApiClient) -> AsyncIterator[Observe]:
    running: list[RunningObserver] = []

    def start(node: str, **overrides: Any) -> RunningObserver:
        outbox = RecordingOutbox()
        observer = NodeObserver(api, outbox, ObserveSettings(node=node, **overrides))
        task = asyncio.get_running_loop().create_task(observer.run(), name=f"observer {node}")
        running.append(RunningObserver(observer, outbox, task))
        return running[-1]

    yield start
    for one in running:
        one.task.cancel()
    outcomes = await asyncio.gather(*(one.task for one in running), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome


def workload_deployment(
    name: str, replicas: int, *, run_id: str = "", runtime_class: str = "runc"
) -> dict[str, Any]:
    """A Deployment of the workload with the labels rtbench and old dashboards select on."""
    labels = {
        "app": "c-http-server",
        "test_id": name,
        "runtime_class": runtime_class,
        "variant": runtime_class,
        RUN_ID_LABEL: run_id or name,
    }
    spec: dict[str, Any] = {
        "containers": [
            {"name": "web", "image": "rtbench/workload:1", "ports": [{"containerPort": 8080}]}
        ]
    }
    if runtime_class != "runc":
        spec["runtimeClassName"] = runtime_class
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {"app": "c-http-server", RUN_ID_LABEL: labels[RUN_ID_LABEL]}
            },
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }

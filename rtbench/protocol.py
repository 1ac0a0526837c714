"""Names and defaults the components must agree on beyond the .proto messages.

Agent, collector and rtctl never import each other, so the few strings of the
stream protocol that are not protobuf fields, and the defaults of the control
API that rtctl must be able to state without asking (its ``--help``, and the
bound it applies itself when an older collector applied none), live here, next
to the generated code they go with.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rtbench.v1 import events_pb2

__all__ = [
    "DEFAULT_MAX_UNCERTAINTY_NS",
    "PROTOCOL",
    "REJECTED_SEQUENCE_KEY",
    "RUNTIME_REPORT_LAG_NS",
    "WORKLOAD_IMAGE",
]

PROTOCOL = "v1"
"""``Hello.protocol``: the wire contract version, the folder name in proto/rtbench/."""

REJECTED_SEQUENCE_KEY = "rtbench-rejected-sequence"
"""Trailing metadata of an INVALID_ARGUMENT that refused one batch: its sequence.

The agent sets that batch aside instead of resending it forever; without the key
the refusal is about the stream as a whole (a bad Hello, say)."""

DEFAULT_MAX_UNCERTAINTY_NS: Mapping[int, int] = MappingProxyType(
    {events_pb2.PHASE_FIRST_RESPONSE: 10_000_000}
)
"""The uncertainty bounds a run summary applies unless asked otherwise
(``GetRunSummaryRequest.max_uncertainty``): phase -> largest total uncertainty, ns.

first_response is rtbench's headline number and the one whose uncertainty can
grow without anyone noticing: a probe that starts late, or waits its turn on a
busy node, has a bracket as wide as its delay (issue 14: ±307 ms reported as a
latency). 10 ms is several times the uncertainty of a probe that started in
time (bench/agent_probe.py, 100 pods on 2 simulated nodes at the 1 s relist, the
address from CRI: p50 ±1.4 ms, p99 ±2.8 ms, none over 10 ms; bench/scale.py, 1100
pods, 10 agents and the simulator starving one 2-core machine: 7 % over it) and
well below the start-up differences between runtimes a report compares. The
other phases have no default bound: their events come from containerd (exact to
the clock), the simulator, or the watch, whose uncertainty is its clock's except
for a relist's catch-up, whose bracket is kept and shown."""

RUNTIME_REPORT_LAG_NS = 50_000_000
"""How long after a step a container runtime's event may be stamped, for the order
check (collector/summaries.py): containerd stamps TaskStart when the shim
publishes it, after ``runc start`` returned (for Kata, after the agent in the VM
answered), and the simulator after the workload process was spawned. A fast app
can answer before that: the simulated stack on a loaded 2-core machine showed
first responses up to 4.2 ms before their container_started. 50 ms covers a Kata
VM's round trip and a loaded node, and is still far below the errors the check
is there to catch (a probe midpoint of watch lag, an answer from a stale address:
hundreds of ms)."""

WORKLOAD_IMAGE = "ghcr.io/rtbench/workload:0.1.0"
"""The workload image rtctl, the chart and deploy/examples name: deploy/images/
workload.Dockerfile's build with a fixed tag (runs record the image they ran, so never
``latest``). The embedded cluster's real-pod nodes hold their locally built workload
image under this name too, so rtctl's default runs there without a registry."""

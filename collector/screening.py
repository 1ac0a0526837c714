"""Which pod phases a run summary may count: uncertainty bounds and the lifecycle order.

A latency is only worth pooling if it is a measurement of its phase. Two things
make a chosen event (collector/summaries.py picks one per pod and phase) not
one, and both are decided here, for every pod, before any statistic is taken:

- Its uncertainty is wider than the phase's bound. The total uncertainty (the
  event's own bracket plus its agent's clock uncertainty) must be at most the
  bound; the defaults are ``rtbench.protocol.DEFAULT_MAX_UNCERTAINTY_NS``
  (10 ms for first_response, no bound for the other phases, whose events come
  from containerd, the simulator or the watch with the clock's uncertainty
  only, or a relist's catch-up whose bracket is shown). A request may set a
  phase's bound or lift it (``uncertainty_bounds``). Pooling a wider event
  would show its bracket's midpoint as a latency (issue 14: ±307 ms).
- It contradicts the pod's lifecycle: the numbers prove the phase happened
  before a phase that must precede it. Each phase must follow the phases in
  its row (``MUST_FOLLOW``):

  ===================  =====================================================
  phase                must follow
  ===================  =====================================================
  sandbox_created      scheduled
  sandbox_started      scheduled, sandbox_created
  container_created    scheduled, sandbox_created, sandbox_started
  container_started    scheduled, sandbox_created, sandbox_started,
                       container_created
  running              scheduled, sandbox_created, sandbox_started,
                       container_created, container_started
  first_response       scheduled, sandbox_created, sandbox_started,
                       container_created, container_started
  ready                scheduled, sandbox_created, sandbox_started,
                       container_created, container_started, running
  ===================  =====================================================

  first_response has no order against running and ready: the probe may reach
  the app before the kubelet publishes Running, and Ready without a readiness
  probe only means the containers started.

What the numbers prove: an event's true time lies in [time - u, time + u], u
its total uncertainty, with two exceptions:

- A watch event (SOURCE_WATCH) is stamped on arrival, late by the watch's
  delivery lag (up to a PLEG period and more): it bounds the truth only from
  above. As the phase that must come first it proves nothing against another
  source, only against a later watch event (one ordered stream, stamps
  compared as they are).
- A runtime event (SOURCE_CONTAINERD, SOURCE_SIMULATOR) is stamped when the
  runtime reports the step, after it happened, and a fast app answers before
  that: the simulated stack showed first responses up to 4.2 ms before their
  container_started. As the phase that must come first against another source
  its truth may lie up to ``RUNTIME_REPORT_LAG_NS`` (50 ms) before time - u;
  against its own source's events (one ordered stream) there is no allowance.

Phase L is out of order when its latest possible time (time + u) lies before
the earliest possible time of a phase E it must follow. When L contradicts
several phases, the one it misses by most beyond the uncertainties is named.

Of the pair, L (the phase seen too early) is left out of its statistics; E
still counts. The phases that must come first are the watch's scheduled
(against watch events only), the runtime's own sandbox and container events
(the most precise source) and the watch's running, and a phase seen too early
is what issue 14 found wrong: a probe's first_response placed before its
container started by a bracket of watch lag. A phase that is both out of
order and over its bound is counted as out of order (the stronger statement),
so reached = counted + out of order + over bound.

Pure functions over the chosen events, one look at each pod's phases: fast for
10 000 pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from collector.errors import InvalidRequest
from rtbench.protocol import DEFAULT_MAX_UNCERTAINTY_NS, RUNTIME_REPORT_LAG_NS
from rtbench.v1 import control_pb2, events_pb2

__all__ = ["KNOWN_PHASES", "MUST_FOLLOW", "Screened", "Violation", "screen", "uncertainty_bounds"]

KNOWN_PHASES = frozenset(events_pb2.Phase.values()) - {events_pb2.PHASE_UNSPECIFIED}

_SCHEDULED = events_pb2.PHASE_SCHEDULED
_SANDBOX_CREATED = events_pb2.PHASE_SANDBOX_CREATED
_SANDBOX_STARTED = events_pb2.PHASE_SANDBOX_STARTED
_CONTAINER_CREATED = events_pb2.PHASE_CONTAINER_CREATED
_CONTAINER_STARTED = events_pb2.PHASE_CONTAINER_STARTED
_RUNTIME_PHASES = (_SANDBOX_CREATED, _SANDBOX_STARTED, _CONTAINER_CREATED, _CONTAINER_STARTED)

MUST_FOLLOW: Mapping[int, tuple[int, ...]] = {
    _SANDBOX_CREATED: (_SCHEDULED,),
    _SANDBOX_STARTED: (_SCHEDULED, _SANDBOX_CREATED),
    _CONTAINER_CREATED: (_SCHEDULED, _SANDBOX_CREATED, _SANDBOX_STARTED),
    _CONTAINER_STARTED: (_SCHEDULED, _SANDBOX_CREATED, _SANDBOX_STARTED, _CONTAINER_CREATED),
    events_pb2.PHASE_RUNNING: (_SCHEDULED, *_RUNTIME_PHASES),
    events_pb2.PHASE_FIRST_RESPONSE: (_SCHEDULED, *_RUNTIME_PHASES),
    events_pb2.PHASE_READY: (_SCHEDULED, *_RUNTIME_PHASES, events_pb2.PHASE_RUNNING),
}
"""The module docstring's table: phase -> the phases it must follow."""

_WATCH = events_pb2.SOURCE_WATCH
_RUNTIMES = frozenset((events_pb2.SOURCE_CONTAINERD, events_pb2.SOURCE_SIMULATOR))


class Screened(Protocol):
    """A pod's chosen event of one phase, as screening reads and marks it."""

    source: int
    time_ns: int
    uncertainty_ns: int
    """Total: the event's own plus its clock's."""
    over_bound: bool
    out_of_order: bool


@dataclass(frozen=True)
class Violation:
    """Pod ``uid``'s ``phase`` seen ``early_by_ns`` before ``must_follow``."""

    uid: str
    phase: int
    must_follow: int
    early_by_ns: int
    beyond_ns: int
    """How much of early_by_ns lies beyond both uncertainties (and the runtime's lag)."""


def uncertainty_bounds(overrides: Iterable[control_pb2.UncertaintyBound] = ()) -> dict[int, int]:
    """The bounds in force: the defaults with ``overrides`` applied (a negative bound
    lifts the phase's), phase -> ns in phase order, phases without a bound left out.

    Raises InvalidRequest for a phase number no event can have."""
    bounds = dict(DEFAULT_MAX_UNCERTAINTY_NS)
    for bound in overrides:
        if bound.phase not in KNOWN_PHASES:
            raise InvalidRequest(f"max_uncertainty: unknown phase {bound.phase}")
        if bound.max_uncertainty_ns < 0:
            bounds.pop(bound.phase, None)
        else:
            bounds[bound.phase] = bound.max_uncertainty_ns
    return dict(sorted(bounds.items()))


def screen(
    chosen: Mapping[str, Mapping[int, Screened]], bounds: Mapping[int, int]
) -> list[Violation]:
    """Marks every pod's phases over their bound or out of order (the module docstring's
    rules) and returns the out-of-order ones, one per pod and phase."""
    violations = []
    for uid, phases in chosen.items():
        for phase, seen in phases.items():
            bound = bounds.get(phase)
            seen.over_bound = bound is not None and seen.uncertainty_ns > bound
            worst = _worst_violation(uid, phase, seen, phases)
            seen.out_of_order = worst is not None
            if worst is not None:
                violations.append(worst)
    return violations


def _worst_violation(
    uid: str, phase: int, seen: Screened, phases: Mapping[int, Screened]
) -> Violation | None:
    latest = seen.time_ns + seen.uncertainty_ns
    worst: Violation | None = None
    for first in MUST_FOLLOW.get(phase, ()):
        before = phases.get(first)
        if before is None:
            continue
        earliest = _earliest(before, seen)
        if earliest is None or earliest <= latest:
            continue
        if worst is None or earliest - latest > worst.beyond_ns:
            worst = Violation(uid, phase, first, before.time_ns - seen.time_ns, earliest - latest)
    return worst


def _earliest(first: Screened, then: Screened) -> int | None:
    """The earliest true time of ``first`` the numbers allow, as a phase ``then`` must
    follow; None when it has no lower bound there (the module docstring says why)."""
    if first.source == _WATCH:
        return first.time_ns - first.uncertainty_ns if then.source == _WATCH else None
    lag = RUNTIME_REPORT_LAG_NS if first.source in _RUNTIMES and then.source != first.source else 0
    return first.time_ns - first.uncertainty_ns - lag

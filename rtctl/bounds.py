"""``--max-uncertainty PHASE=DURATION``: the bounds a user sets on the numbers rtctl prints.

A latency statistic (a percentile, all-responded, a ratio against the
baseline) counts a pod's phase only if the event's total uncertainty (its own
bracket plus its clock's) is within the phase's bound; the collector applies
the bounds (collector/screening.py) and says which it applied. The defaults
are ``rtbench.protocol.DEFAULT_MAX_UNCERTAINTY_NS``: 10 ms for first_response,
no bound for the other phases. Every command that prints latency statistics
(``start-run``, ``run-plan``, ``report``) takes the same repeatable flag:

    --max-uncertainty first_response=5ms   a tighter bound
    --max-uncertainty ready=50ms           a bound on a phase that has none
    --max-uncertainty first_response=none  no bound (``off`` too)

The phase is a start-up phase's name (scheduled ... ready, as the tables name
them), the duration anything ``rtctl.cliargs.parse_duration`` takes (``0`` is a
bound too: only exact events count). The bounds travel in
``GetRunSummaryRequest.max_uncertainty`` as changes to the collector's
defaults, so a bound the user did not touch is whatever the collector applies
and the collector's echo (``RunSummary.max_uncertainty``) is what rtctl prints.
A bad value is a usage error (exit 2) naming the flag and the value, raised
before anything is contacted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtbench.protocol import DEFAULT_MAX_UNCERTAINTY_NS
from rtbench.v1 import control_pb2, events_pb2

from .cliargs import parse_duration
from .display import LIFECYCLE, phase_name
from .errors import UsageError

__all__ = [
    "FLAG",
    "NO_CHANGES",
    "UncertaintyBounds",
    "add_bound_option",
    "bounds_text",
    "format_bound",
    "parse_bounds",
]

FLAG = "--max-uncertainty"
_PHASES = {phase_name(p): p for p in LIFECYCLE if p != events_pb2.PHASE_CREATED}
_LIFTED = ("none", "off")


@dataclass(frozen=True)
class UncertaintyBounds:
    """The user's changes to the default bounds: (phase, ns or None for no bound)."""

    changes: tuple[tuple[int, int | None], ...] = ()

    @property
    def effective(self) -> dict[int, int]:
        """Phase -> bound in ns that a collector applying these changes uses (phases
        without a bound left out), in phase order."""
        bounds = dict(DEFAULT_MAX_UNCERTAINTY_NS)
        for phase, bound in self.changes:
            if bound is None:
                bounds.pop(phase, None)
            else:
                bounds[phase] = bound
        return dict(sorted(bounds.items()))

    def request(self) -> list[control_pb2.UncertaintyBound]:
        """The changes as ``GetRunSummaryRequest.max_uncertainty`` entries."""
        return [
            control_pb2.UncertaintyBound(
                phase=phase,  # type: ignore[arg-type]
                max_uncertainty_ns=-1 if bound is None else bound,
            )
            for phase, bound in self.changes
        ]


NO_CHANGES = UncertaintyBounds()
"""The collector's defaults as they are."""


def parse_bounds(values: Sequence[str]) -> UncertaintyBounds:
    """``PHASE=DURATION`` / ``PHASE=none`` values of the flag, later ones winning.

    Raises UsageError with one line naming the flag and the value."""
    changes: dict[int, int | None] = {}
    for value in values:
        name, sep, text = value.partition("=")
        name, text = name.strip().lower(), text.strip().lower()
        if not sep or not name or not text:
            raise UsageError(f"{FLAG} must be PHASE=DURATION or PHASE=none, got {value!r}")
        phase = _PHASES.get(name)
        if phase is None:
            raise UsageError(
                f"{FLAG} {value!r}: unknown phase {name!r}; phases: {', '.join(_PHASES)}"
            )
        if text in _LIFTED:
            changes[phase] = None
            continue
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise UsageError(f"{FLAG} {value!r}: {exc}") from None
        changes[phase] = round(seconds * 1e9)
    return UncertaintyBounds(tuple(changes.items()))


def add_bound_option(parser: Any) -> None:
    """The repeatable flag, kept as text: ``parse_bounds`` reads it (one line on error)."""
    parser.add_argument(
        FLAG,
        action="append",
        default=[],
        metavar="PHASE=DURATION",
        help=(
            "count a phase's event in the latency statistics only if its uncertainty (its"
            " bracket plus its clock's) is at most DURATION, e.g. first_response=5ms or"
            " ready=1s (a bare number is seconds); PHASE=none lifts a bound; repeatable"
            " (default: first_response=10ms, no bound on the other phases)"
        ),
    )


def format_bound(ns: int) -> str:
    """``10 ms``, ``0.5 ms``, ``2 s``: a bound as the tables print it."""
    if ns >= 10**9 and ns % 10**8 == 0:
        return f"{ns / 1e9:g} s"
    return f"{ns / 1e6:g} ms"


def bounds_text(bounds: Mapping[str, int]) -> str:
    """``first_response ≤ 10 ms; other phases unbounded`` (phase name -> ns), or
    ``no phase bounded``."""
    if not bounds:
        return "no phase bounded"
    listed = "; ".join(f"{phase} ≤ {format_bound(ns)}" for phase, ns in bounds.items())
    return f"{listed}; other phases unbounded"

"""Whether a run's figures come from a real container runtime or a simulated one.

The embedded cluster (``rtbench-sim``) simulates runtimes with profile delays, and can
also start real runc/crun/runsc pods through containerd; a real cluster (K3s) runs real
runtimes only. A simulated figure shown as a real one is the worst wrong number rtbench
could print, so preflight reads the mode from the cluster and the run records it
(``RunSpec.runtime_mode`` and ``runtime_mode_basis``), and every report and summary
shows it per runtime. The signals, strongest first:

- a RuntimeClass labelled ``rtbench.dev/simulated``: ``"true"`` simulated, ``"false"``
  real (the embedded cluster labels every class it creates, simulated or real);
- for the default handler (no runtimeClassName), the nodes' annotation
  ``rtbench.dev/simulated`` (the simulated cluster's nodes say ``"true"``): a pod may
  land on any usable node, so one simulated node makes the figures simulated; without
  an annotation, the ``runc`` RuntimeClass's label if it has one;
- a RuntimeClass without the label (a real cluster's, K3s's) on nodes that do not say
  they are simulated: real. The same class on simulated nodes is simulated: nothing
  claims a real runtime for it.

A label or annotation with another value is ``unknown``, as is a run registered by an
rtctl older than this (``RUNTIME_MODE_UNSPECIFIED``). ``basis`` says in words what the
mode was read from, and goes with the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtbench.v1 import control_pb2

__all__ = [
    "NOT_READ",
    "SIMULATED_KEY",
    "UNKNOWN",
    "RuntimeMode",
    "detect",
    "mode_name",
    "mode_of",
    "modes_text",
]

SIMULATED_KEY = "rtbench.dev/simulated"
"""RuntimeClass label and node annotation: ``"true"`` simulated, ``"false"`` real."""

REAL, SIMULATED, UNKNOWN = "real", "simulated", "unknown"
_NAMES: dict[int, str] = {
    control_pb2.RUNTIME_MODE_REAL: REAL,
    control_pb2.RUNTIME_MODE_SIMULATED: SIMULATED,
    control_pb2.RUNTIME_MODE_UNSPECIFIED: UNKNOWN,
}
_VALUES: dict[str, control_pb2.RuntimeMode] = {
    REAL: control_pb2.RUNTIME_MODE_REAL,
    SIMULATED: control_pb2.RUNTIME_MODE_SIMULATED,
    UNKNOWN: control_pb2.RUNTIME_MODE_UNSPECIFIED,
}


@dataclass(frozen=True)
class RuntimeMode:
    """A run's runtime mode and what it was read from."""

    mode: str
    """``real``, ``simulated`` or ``unknown``."""
    basis: str

    @property
    def value(self) -> control_pb2.RuntimeMode:
        """The RunSpec enum value."""
        return _VALUES[self.mode]


NOT_READ = RuntimeMode(UNKNOWN, "not read from the cluster")
"""A request's mode until preflight has read it."""


def mode_name(value: int) -> str:
    """``real``, ``simulated`` or ``unknown`` for a RunSpec.runtime_mode (unknown for values
    a newer collector may know and this rtctl does not)."""
    return _NAMES.get(value, UNKNOWN)


def mode_of(spec: control_pb2.RunSpec) -> RuntimeMode:
    """The mode a run recorded; ``unknown`` with that said for a run from before."""
    name = mode_name(spec.runtime_mode)
    basis = spec.runtime_mode_basis or ("not recorded (a run from an older rtctl)")
    return RuntimeMode(name, basis)


def _says(value: object) -> str | None:
    if value is None:
        return None
    return {"true": SIMULATED, "false": REAL}.get(str(value).strip().lower(), UNKNOWN)


def _labels(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    return ((obj or {}).get("metadata") or {}).get(kind) or {}


def _nodes_mode(nodes: Sequence[Mapping[str, Any]]) -> RuntimeMode | None:
    said = {
        str((n.get("metadata") or {}).get("name")): _says(
            _labels(n, "annotations").get(SIMULATED_KEY)
        )
        for n in nodes
    }
    where = f"annotation {SIMULATED_KEY}"
    for mode in (SIMULATED, UNKNOWN):
        names = sorted(n for n, m in said.items() if m == mode)
        if names:
            return RuntimeMode(mode, f"node(s) {', '.join(names)} carry {where}")
    if said and all(m == REAL for m in said.values()):
        return RuntimeMode(REAL, f"every node carries {where}=false")
    return None


def detect(
    runtime_class: str,
    class_object: Mapping[str, Any] | None,
    nodes: Sequence[Mapping[str, Any]],
    runtime_classes: Mapping[str, Mapping[str, Any]],
) -> RuntimeMode:
    """The mode of a run of ``runtime_class`` (``class_object`` its RuntimeClass, None for
    the default handler) on ``nodes`` (those its pods can use); ``runtime_classes`` by
    name, for the default handler's ``runc`` fallback."""
    if class_object is not None:
        said = _says(_labels(class_object, "labels").get(SIMULATED_KEY))
        if said is not None:
            value = _labels(class_object, "labels")[SIMULATED_KEY]
            return RuntimeMode(
                said, f"RuntimeClass {runtime_class} labelled {SIMULATED_KEY}={value}"
            )
        on_nodes = _nodes_mode(nodes)
        if on_nodes is not None and on_nodes.mode != REAL:
            return RuntimeMode(
                on_nodes.mode,
                f"RuntimeClass {runtime_class} has no {SIMULATED_KEY} label and {on_nodes.basis}",
            )
        return RuntimeMode(
            REAL, f"RuntimeClass {runtime_class} has no {SIMULATED_KEY} label (a real cluster's)"
        )
    on_nodes = _nodes_mode(nodes)
    if on_nodes is not None:
        return RuntimeMode(on_nodes.mode, f"default handler: {on_nodes.basis}")
    runc = runtime_classes.get("runc")
    said = _says(_labels(runc, "labels").get(SIMULATED_KEY))
    if said is not None:
        value = _labels(runc, "labels")[SIMULATED_KEY]
        return RuntimeMode(
            said, f"default handler: RuntimeClass runc labelled {SIMULATED_KEY}={value}"
        )
    return RuntimeMode(REAL, f"default handler on nodes without the {SIMULATED_KEY} annotation")


def modes_text(modes: Mapping[str, str]) -> str:
    """``runc real; runsc simulated`` for runtime -> mode, in the given order."""
    return "; ".join(f"{runtime} {mode}" for runtime, mode in modes.items())

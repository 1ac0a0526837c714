"""Runtime profiles: how long each container runtime takes, and what it costs.

A profile turns "runc" or "kata-fc" into numbers for the simulated kubelet: the
delay of each CRI stage (sandbox create, sandbox start, container create,
container start) as a clipped lognormal distribution, the memory a pod costs the
node beyond its processes, the smallest memory limit under which the container
survives (below it the kubelet reports OOMKilled), and how much slower each stage
gets per pod starting at the same time on the node.

The defaults follow the studies in DESIGN.md loosely: crun ~20% faster than runc
at container creation, runsc ~1.8x runc, Kata much slower with Firecracker
(devmapper) the slowest, memory overhead runc 10 MiB, kata-qemu 152 MiB, kata-fc
135 MiB. They are plausible, not measured; a YAML file (``--profiles``) overrides
any field or adds runtimes, and is validated with errors that name the field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .objects import dns_subdomain_problem, parse_bytes

MiB = 2**20

STAGES = ("sandbox_create", "sandbox_start", "container_create", "container_start")


@dataclass(frozen=True)
class Delay:
    """A stage delay: lognormal around ``median_ms`` with log-sd ``spread``, clipped."""

    median_ms: float
    spread: float = 0.25
    min_ms: float = 0.0
    max_ms: float | None = None

    def draw(self, rng: random.Random) -> float:
        """One delay in seconds."""
        value = self.median_ms
        if self.spread > 0:
            value *= math.exp(rng.gauss(0.0, self.spread))
        value = max(value, self.min_ms)
        if self.max_ms is not None:
            value = min(value, self.max_ms)
        return value / 1000.0


@dataclass(frozen=True)
class RuntimeProfile:
    name: str
    sandbox_create: Delay
    sandbox_start: Delay
    container_create: Delay
    container_start: Delay
    oom_kill: Delay = Delay(60.0, 0.3, 5.0, 2000.0)
    """From process start to the kernel's OOM kill when the limit is too small."""
    memory_overhead: int = 10 * MiB
    """Bytes the node loses per pod beyond the workload's own RSS (shim, VM, ...)."""
    min_memory: int = 6 * MiB
    """A memory limit below this gets the container OOMKilled."""
    contention: float = 0.03
    """Each other pod starting on the node at the same time adds this fraction."""
    vm_overhead: bool = False
    """Declare memory_overhead as the RuntimeClass's pod overhead (VM runtimes do)."""

    def stage(self, name: str) -> Delay:
        delay = getattr(self, name)
        assert isinstance(delay, Delay)
        return delay

    def draw(self, stage: str, rng: random.Random, concurrent: int = 1) -> float:
        """Seconds for ``stage`` while ``concurrent`` pods start on the node."""
        factor = 1.0 + self.contention * max(0, concurrent - 1)
        return self.stage(stage).draw(rng) * factor


def _p(
    name: str,
    stages: tuple[float, float, float, float],
    *,
    spread: float = 0.25,
    overhead_mib: float,
    min_mib: float,
    contention: float,
    vm: bool = False,
) -> RuntimeProfile:
    sc, ss, cc, cs = (
        Delay(median, spread, min_ms=median / 5, max_ms=median * 8) for median in stages
    )
    return RuntimeProfile(
        name=name,
        sandbox_create=sc,
        sandbox_start=ss,
        container_create=cc,
        container_start=cs,
        memory_overhead=int(overhead_mib * MiB),
        min_memory=int(min_mib * MiB),
        contention=contention,
        vm_overhead=vm,
    )


DEFAULT_PROFILES: dict[str, RuntimeProfile] = {
    p.name: p
    for p in (
        _p("runc", (180, 120, 60, 50), overhead_mib=10, min_mib=6, contention=0.03),
        _p("crun", (180, 120, 48, 40), overhead_mib=9, min_mib=4, contention=0.03),
        _p("youki", (180, 120, 50, 42), overhead_mib=9, min_mib=5, contention=0.03),
        _p("runsc", (300, 240, 110, 90), overhead_mib=35, min_mib=10, contention=0.05),
        _p(
            "kata-qemu",
            (400, 900, 120, 100),
            overhead_mib=152,
            min_mib=12,
            contention=0.08,
            vm=True,
        ),
        _p("kata-clh", (350, 700, 110, 90), overhead_mib=140, min_mib=12, contention=0.08, vm=True),
        _p("kata-fc", (600, 1100, 250, 120), overhead_mib=135, min_mib=12, contention=0.1, vm=True),
        _p("urunc", (200, 150, 150, 300), spread=0.3, overhead_mib=20, min_mib=12, contention=0.05),
        _p("wasmtime", (180, 120, 40, 30), overhead_mib=6, min_mib=4, contention=0.02),
    )
}
DEFAULT_RUNTIME = "runc"
"""The profile of pods without a runtimeClassName (containerd's default handler)."""

_DELAY_KEYS = {f.name for f in fields(Delay)}
_PROFILE_KEYS = {f.name for f in fields(RuntimeProfile)} - {"name"} | {"base"}


def load_profiles(path: Path) -> dict[str, RuntimeProfile]:
    """The default profiles with the overrides and additions of a YAML file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read profiles file {path}: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_profiles(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_profiles(doc: Any) -> dict[str, RuntimeProfile]:
    """Validate a decoded profiles document (``{"profiles": {name: {...}}}``)."""
    if not isinstance(doc, dict) or set(doc) != {"profiles"}:
        raise ConfigError("the document must be a mapping with exactly one key, 'profiles'")
    entries = doc["profiles"]
    if not isinstance(entries, dict):
        raise ConfigError("profiles: must be a mapping of runtime class name to profile")
    result = dict(DEFAULT_PROFILES)
    for name, spec in entries.items():
        where = f"profiles.{name}"
        if not isinstance(name, str) or dns_subdomain_problem(name):
            raise ConfigError(f"{where}: not a valid RuntimeClass name")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a mapping")
        unknown = sorted(set(spec) - _PROFILE_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown field")
        base_name = spec.get("base", name if name in result else DEFAULT_RUNTIME)
        if base_name not in result:
            raise ConfigError(f"{where}.base: no profile named {base_name!r}")
        result[name] = _apply(replace(result[base_name], name=name), spec, where)
    return result


def _apply(profile: RuntimeProfile, spec: Mapping[str, Any], where: str) -> RuntimeProfile:
    changes: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "base":
            continue
        field_where = f"{where}.{key}"
        if key in (*STAGES, "oom_kill"):
            changes[key] = _delay(getattr(profile, key), value, field_where)
        elif key in ("memory_overhead", "min_memory"):
            try:
                changes[key] = parse_bytes(value)
            except ValueError as exc:
                raise ConfigError(f"{field_where}: {exc}") from exc
        elif key == "contention":
            changes[key] = _number(value, field_where, minimum=0.0)
        elif key == "vm_overhead":
            if not isinstance(value, bool):
                raise ConfigError(f"{field_where}: must be true or false")
            changes[key] = value
    return replace(profile, **changes)


def _delay(current: Delay, value: Any, where: str) -> Delay:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A bare number is a fixed delay in milliseconds.
        ms = _number(value, where, minimum=0.0)
        return Delay(ms, 0.0, ms, ms)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a number of milliseconds or a mapping")
    unknown = sorted(set(value) - _DELAY_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field")
    median = _number(value.get("median_ms", current.median_ms), f"{where}.median_ms", minimum=0.0)
    spread = _number(value.get("spread", current.spread), f"{where}.spread", minimum=0.0)
    low = _number(value.get("min_ms", min(current.min_ms, median)), f"{where}.min_ms", minimum=0.0)
    high_raw = value.get("max_ms", current.max_ms if "median_ms" not in value else None)
    high = None if high_raw is None else _number(high_raw, f"{where}.max_ms", minimum=0.0)
    if high is not None and high < low:
        raise ConfigError(f"{where}.max_ms: must not be below min_ms ({low})")
    return Delay(median, spread, low, high)


def _number(value: Any, where: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {value!r}")
    return float(value)

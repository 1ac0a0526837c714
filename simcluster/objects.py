"""Small helpers for Kubernetes objects: timestamps, names, uids, quantities.

They live in one place so that every object the simulated cluster emits uses the
same conventions as a real API server: timestamps in RFC 3339 UTC with 1 s
resolution (what rtbench must cope with), names that pass the same DNS rules,
generated suffixes from the same alphabet, memory quantities parsed by the same
grammar (``16Mi``, ``1Gi``, ``500M``, ``1e3``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object or list as decoded JSON."""

# The alphabet Kubernetes uses for generated names: no vowels, no look-alikes.
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def rfc3339(epoch: float | None = None) -> str:
    """``epoch`` (default now) as Kubernetes writes it: UTC, whole seconds."""
    when = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    """A fresh object uid (uuid4, as the API server assigns)."""
    return str(uuid.uuid4())


def random_suffix(rng: random.Random, length: int = 5) -> str:
    """A generated-name suffix such as the ``x7k2q`` of ``web-6d4cf56db6-x7k2q``."""
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(length))


def template_hash(template: Obj) -> str:
    """A stable 10-character hash of a pod template (the ``pod-template-hash``).

    Real Kubernetes hashes the Go struct with FNV; any stable digest of the
    canonical JSON gives the property that matters: same template, same hash.
    """
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    digest = int.from_bytes(hashlib.sha256(canonical).digest()[:8], "big")
    chars = []
    for _ in range(10):
        digest, index = divmod(digest, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def dns_label_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label (namespace names), or None."""
    if len(name) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(name):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character"
        )
    return None


def dns_subdomain_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 subdomain (most object names), or None."""
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return None


_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|)$")


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity (``16Mi``, ``1Gi``, ``500M``, ``250m``, ``128``) as a number.

    Raises ValueError naming the bad text.
    """
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(f"quantity must be a string or number, not {type(value).__name__}")
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}"
        )
    number, suffix = match.groups()
    try:
        return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {value!r}") from exc


def parse_bytes(value: object) -> int:
    """A memory quantity in whole bytes (rounded up, as the kubelet does)."""
    amount = parse_quantity(value)
    whole = int(amount.to_integral_value(rounding="ROUND_CEILING"))
    if whole < 0:
        raise ValueError(f"memory quantity must not be negative: {value!r}")
    return whole


def format_mebibytes(size: int) -> str:
    """``size`` bytes as the shortest exact binary quantity (``16Mi``, ``1536Ki``)."""
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def meta(obj: Obj) -> Obj:
    """``obj["metadata"]``, created empty when absent."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def labels_of(obj: Obj) -> dict[str, str]:
    """The object's labels (empty when none)."""
    m = obj.get("metadata")
    if isinstance(m, dict):
        labels = m.get("labels")
        if isinstance(labels, dict):
            return labels
    return {}


def condition(obj: Obj, ctype: str) -> Obj | None:
    """The status condition of type ``ctype``, or None."""
    status = obj.get("status")
    if not isinstance(status, dict):
        return None
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(
    conditions: list[Obj],
    ctype: str,
    status: str,
    *,
    reason: str | None = None,
    message: str | None = None,
    now: str | None = None,
    probe_time: bool = False,
    update_time: bool = False,
) -> None:
    """Set a condition in place, moving lastTransitionTime only when the status flips."""
    stamp = now or rfc3339()
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = stamp
                if update_time:
                    cond["lastUpdateTime"] = stamp
            elif update_time and (cond.get("reason") != reason or cond.get("message") != message):
                cond["lastUpdateTime"] = stamp
            cond["status"] = status
            _set_or_drop(cond, "reason", reason)
            _set_or_drop(cond, "message", message)
            return
    new: Obj = {"type": ctype, "status": status}
    if probe_time:
        new["lastProbeTime"] = None
    if update_time:
        new["lastUpdateTime"] = stamp
    new["lastTransitionTime"] = stamp
    _set_or_drop(new, "reason", reason)
    _set_or_drop(new, "message", message)
    conditions.append(new)


def _set_or_drop(obj: Obj, key: str, value: str | None) -> None:
    if value is None:
        obj.pop(key, None)
    else:
        obj[key] = value


def is_pod_ready(pod: Obj) -> bool:
    """True when the pod's Ready condition is True."""
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def controller_uid(obj: Obj) -> str | None:
    """The uid of the object's controlling owner, or None."""
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None

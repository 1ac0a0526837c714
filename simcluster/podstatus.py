"""Pod status as the kubelet writes it: phase, conditions, container statuses.

Pure functions from the kubelet's view of the containers to the ``status`` of a
pod, following the kubelet's rules: a container that never ran keeps the pod
Pending; Running once one runs (or restarts under restartPolicy Always);
Succeeded/Failed when all have ended for good; Ready and ContainersReady only
when every container is ready. ``lastTransitionTime`` moves only when a
condition's status flips, with the 1 s resolution of real Kubernetes.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

from .objects import Obj, rfc3339, set_condition


@dataclass(frozen=True)
class ContainerView:
    """What the kubelet knows about one container at one relist."""

    name: str
    image: str
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    container_id: str | None = None
    started: bool = False

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> Obj | None:
        value = self.state.get("terminated")
        return value if isinstance(value, dict) else None

    @property
    def ever_ran(self) -> bool:
        return self.running or self.terminated is not None or self.restart_count > 0


def image_id(image: str) -> str:
    """A stable, honest-looking image digest reference for ``image``."""
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def container_status(view: ContainerView, ready: bool) -> Obj:
    status: Obj = {
        "name": view.name,
        "image": view.image,
        "imageID": image_id(view.image) if view.container_id else "",
        "ready": ready,
        "started": view.started,
        "restartCount": view.restart_count,
        "state": copy.deepcopy(view.state),
        "lastState": copy.deepcopy(view.last_state),
    }
    if view.container_id:
        status["containerID"] = view.container_id
    return status


def pod_phase(views: list[ContainerView], restart_policy: str) -> str:
    """The kubelet's getPhase, for pods without init containers."""
    if any(not v.ever_ran for v in views):
        return "Pending"
    if any(v.running for v in views):
        return "Running"
    codes = [int((v.terminated or {}).get("exitCode", 0)) for v in views]
    if restart_policy == "Always":
        return "Running"  # everything is restarting or backing off
    if any(v.terminated is None for v in views):
        return "Running"  # waiting to be restarted (OnFailure)
    if all(code == 0 for code in codes):
        return "Succeeded"
    return "Running" if restart_policy == "OnFailure" else "Failed"


def build_status(
    current: Obj,
    *,
    views: list[ContainerView],
    ready: dict[str, bool],
    restart_policy: str,
    host_ip: str,
    pod_ip: str | None,
    start_time: str,
    sandbox_ready: bool,
    final_phase: str | None = None,
) -> Obj:
    """The new pod status, keeping what others own (PodScheduled, qosClass)."""
    status = copy.deepcopy(current)
    now = rfc3339()
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    status["startTime"] = start_time
    if pod_ip is not None:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    statuses = [container_status(v, ready.get(v.name, False)) for v in views]
    status["containerStatuses"] = sorted(statuses, key=lambda s: str(s["name"]))
    phase = final_phase or pod_phase(views, restart_policy)
    status["phase"] = phase
    conditions: list[Obj] = status.setdefault("conditions", [])
    set_condition(
        conditions, "PodReadyToStartContainers", "True" if sandbox_ready else "False", now=now
    )
    set_condition(conditions, "Initialized", "True", now=now, probe_time=True)
    unready = sorted(v.name for v in views if not ready.get(v.name, False))
    if phase in ("Succeeded", "Failed"):
        reason: str | None = "PodCompleted"
        message: str | None = None
    elif unready:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    else:
        reason = message = None
    all_ready = not unready and phase not in ("Succeeded", "Failed")
    for ctype in ("Ready", "ContainersReady"):
        set_condition(
            conditions,
            ctype,
            "True" if all_ready else "False",
            reason=reason,
            message=message,
            now=now,
            probe_time=True,
        )
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    conditions.sort(key=lambda c: order.index(c["type"]) if c.get("type") in order else len(order))
    return status

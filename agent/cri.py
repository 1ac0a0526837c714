"""The CRI calls the agent makes: where a pod's sandbox can be reached, from the runtime.

A kubelet publishes a pod's IP in the pod's status only with the status update
that follows its PLEG relist (about 1 s with the generic PLEG), usually after
the application already listens; a prober that starts then measures watch lag.
The runtime knows the IP as soon as the sandbox's network is set up. containerd
(1.6+) and K3s serve the Kubernetes CRI (``runtime.v1.RuntimeService``) on the
same socket as containerd's own API, so the agent asks there, over the channel
the runtime-event reader already holds (agent/containerd.py), with three calls
(proto/rtbench/cri):

- ``Version``: whether CRI is served at all (a containerd with its CRI plugin
  disabled answers UNIMPLEMENTED) and by which runtime;
- ``PodSandboxStatus``: one sandbox's pod, state, IP and network namespace mode
  (NODE: a hostNetwork pod, which has no IP of its own). containerd adds a
  sandbox to its CRI store only when RunPodSandbox returns, a moment after the
  pause task's start event, so NOT_FOUND right after that event means "not
  yet", and is reported as ``None``;
- ``ListPodSandbox``: the sandboxes that are ready, after a (re)connect.

Errors are those of the containerd branch (agent/containerd.py), plus::

    ContainerdError
    └── CriUnavailable    the socket serves no CRI (UNIMPLEMENTED): addresses come
                          from the pod's status in the API instead
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc

from .containerd import CALL_TIMEOUT_S, ContainerdClient, ContainerdError, call_error
from .runtimephases import POD_UID_LABEL

__all__ = ["CriClient", "CriUnavailable", "SandboxNetwork", "runtime_description"]


class CriUnavailable(ContainerdError):
    """The runtime's socket does not serve the CRI RuntimeService."""


@dataclass(frozen=True)
class SandboxNetwork:
    """What CRI says of one pod sandbox's network."""

    sandbox_id: str
    pod_uid: str
    ready: bool
    ip: str
    """Empty for a sandbox in the node's network namespace (and after it stopped)."""
    host_network: bool


def runtime_description(version: Any) -> str:
    """``name version (CRI api)`` from a VersionResponse, for log lines."""
    api = version.runtime_api_version or version.version
    return f"{version.runtime_name} {version.runtime_version} (CRI {api})".strip()


class CriClient:
    """The CRI RuntimeService calls, on the channel of an open ContainerdClient."""

    def __init__(self, containerd: ContainerdClient) -> None:
        self._stub = cri_grpc.RuntimeServiceStub(containerd.channel)

    async def version(self) -> Any:
        """The runtime's VersionResponse; CriUnavailable when CRI is not served."""
        return await self._call("Version", self._stub.Version, cri.VersionRequest(version="v1"))

    async def sandbox(self, sandbox_id: str) -> SandboxNetwork | None:
        """The sandbox's network as CRI reports it; None while CRI does not know the id."""
        request = cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        try:
            reply = await self._call("PodSandboxStatus", self._stub.PodSandboxStatus, request)
        except _NotFound:
            return None
        status = reply.status
        return SandboxNetwork(
            sandbox_id=status.id or sandbox_id,
            pod_uid=status.metadata.uid or status.labels.get(POD_UID_LABEL, ""),
            ready=status.state == cri.SANDBOX_READY,
            ip=status.network.ip,
            host_network=status.linux.namespaces.options.network == cri.NODE,
        )

    async def ready_sandboxes(self) -> list[str]:
        """The ids of the sandboxes that are ready now."""
        request = cri.ListPodSandboxRequest()
        request.filter.state.state = cri.SANDBOX_READY
        reply = await self._call("ListPodSandbox", self._stub.ListPodSandbox, request)
        return [item.id for item in reply.items]

    async def _call(self, name: str, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise _NotFound from exc
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise CriUnavailable(
                    f"containerd serves no CRI runtime.v1.RuntimeService/{name} (UNIMPLEMENTED)"
                ) from exc
            raise call_error(f"CRI {name}", exc) from exc


class _NotFound(Exception):
    """NOT_FOUND from a CRI call (internal: becomes None)."""

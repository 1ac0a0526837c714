"""The CRI RuntimeService calls the agent makes, on each simulated node's containerd socket.

containerd (and K3s) serve the Kubernetes CRI on the same socket as their own
API, and the agent asks it for a pod's IP as soon as the sandbox exists
(``PodSandboxStatus``), long before a kubelet publishes it in the pod's status.
So every simulated node's socket (simcluster/containerd_api.py) also serves this
subset of ``runtime.v1.RuntimeService`` from the node's ``NodeRuntime``:

- ``Version``: runtime name ``rtbench-sim``, so logs say which runtime answered;
- ``PodSandboxStatus``: id, metadata, state, created_at, labels, handler, the
  network's IP and the network namespace mode (NODE for a hostNetwork pod,
  which has no IP of its own). NOT_FOUND until the sandbox started, as from
  containerd, which adds a sandbox to its CRI store only when RunPodSandbox
  returns; an empty id is INVALID_ARGUMENT;
- ``ListPodSandbox``: the sandboxes CRI knows, narrowed by the filter's id
  (prefix), state and labels (all must be equal).

Every other RuntimeService method is UNIMPLEMENTED (gRPC's answer for a method
the server does not register). CRI calls carry no namespace: containerd serves
them from its ``k8s.io`` namespace, and so does this.
"""

from __future__ import annotations

import grpc

from rtbench.cri import api_pb2 as cri

from .containerd_state import NodeRuntime
from .errors import NotFound

__all__ = ["RUNTIME_NAME", "RuntimeService"]

RUNTIME_NAME = "rtbench-sim"
CRI_VERSION = "v1"


class RuntimeService:
    """``runtime.v1.RuntimeService`` (Version, PodSandboxStatus, ListPodSandbox) for one node."""

    def __init__(self, runtime: NodeRuntime, version: str) -> None:
        self.runtime = runtime
        self.version = version

    async def Version(
        self, request: cri.VersionRequest, context: grpc.aio.ServicerContext
    ) -> cri.VersionResponse:
        return cri.VersionResponse(
            version="0.1.0",
            runtime_name=RUNTIME_NAME,
            runtime_version=self.version,
            runtime_api_version=CRI_VERSION,
        )

    async def PodSandboxStatus(
        self, request: cri.PodSandboxStatusRequest, context: grpc.aio.ServicerContext
    ) -> cri.PodSandboxStatusResponse:
        if not request.pod_sandbox_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sandbox id must not be empty")
        try:
            record = self.runtime.sandbox(request.pod_sandbox_id)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        return cri.PodSandboxStatusResponse(status=record.status())

    async def ListPodSandbox(
        self, request: cri.ListPodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> cri.ListPodSandboxResponse:
        records = self.runtime.list_sandboxes(request.filter)
        return cri.ListPodSandboxResponse(items=[r.item() for r in records])

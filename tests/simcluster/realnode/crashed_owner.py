"""A real node's owner that dies without stopping it (run as a subprocess by the tests).

Starts a RealContainerd and one runc pod, prints one JSON line describing them
(node id, directories, socket, bridge, containerd's PID, the pod's IP and its
server's PID), then
sleeps until it is killed: the state an owner's crash leaves behind.
"""

from __future__ import annotations

import asyncio
import json

from rtbench.cri import api_pb2 as cri
from simcluster.realnode import RealContainerd
from tests.simcluster.realnode.conftest import start_pod


async def main() -> None:
    node = RealContainerd()
    await node.start()
    pod = await start_pod(node, "runc")
    status = await node.runtime.ContainerStatus(
        cri.ContainerStatusRequest(container_id=pod.container_id, verbose=True), timeout=10
    )
    facts = {
        "id": node.id,
        "run_dir": str(node.run_dir),
        "base": str(node.base),
        "socket": str(node.socket),
        "bridge": node.bridge,
        "containerd_pid": node._containerd_pid,
        "ip": pod.ip,
        "sandbox_id": pod.sandbox_id,
        "container_pid": json.loads(status.info["info"])["pid"],
    }
    print(json.dumps(facts), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())

"""The pod network of a real node: one Linux bridge with no uplink, through CNI.

containerd's CRI plugin sets up each sandbox's network with the CNI plugins of
the Debian package (``/usr/lib/cni``) from the one conflist a node writes into
its own ``conf_dir``: ``bridge`` (the node's own bridge, which is the pods'
gateway but not the host's default route; no masquerading, hairpin on so a pod
reaches itself through its service address), ``host-local`` addresses from the
node's /22 of 198.18.0.0/15 with its own data directory, then ``loopback``.
Nothing connects the bridge to any uplink, so benchmark traffic cannot leave
the machine; the host reaches every pod directly over the bridge.

What CNI leaves behind is undone here: containerd never deletes the bridge; the
bridge plugin with ``isGateway`` turns on ``net.ipv4.ip_forward`` host-wide (the
value from before the first node is put back by the last one to stop); and
containerd 1.6 keeps result caches in ``/var/lib/cni/results`` whatever the
configuration says.

Host networking (no CNI at all) is the fallback when a machine has no bridge
plugin; pods then share the node's address and need distinct ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from pathlib import Path

__all__ = [
    "BENCHMARK_RANGE",
    "CNI_BIN_DIR",
    "CNI_PLUGINS",
    "IP_FORWARD",
    "bridge_exists",
    "delete_bridge",
    "forget_results",
    "hold_benchmark_range",
    "network_name",
    "release_benchmark_range",
    "write_conflist",
]

CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CNI_RESULTS = Path("/var/lib/cni/results")


def network_name(node_id: str) -> str:
    return f"rtbench-{node_id}"


def write_conflist(conf_dir: Path, node_id: str, bridge: str, subnet: str, data_dir: Path) -> Path:
    """The node's one CNI conflist in ``conf_dir``; its path."""
    network = ipaddress.ip_network(subnet)
    gateway = str(next(network.hosts()))
    conflist = {
        "cniVersion": "0.4.0",
        "name": network_name(node_id),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "loopback"},
        ],
    }
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / "10-rtbench.conflist"
    path.write_text(json.dumps(conflist, indent=1))
    return path


BENCHMARK_RANGE = "198.18.0.0/15"
"""RFC 2544's range for benchmarking: every node's subnet is a /22 of it."""


def hold_benchmark_range() -> None:
    """A blackhole route for the whole range while a node lives: a node's own /22 (on
    its bridge) is more specific and wins; any other address of the range, such as a
    deleted pod's whose bridge is gone, is refused here instead of following the
    default route off the machine (where a gateway might even answer)."""
    subprocess.run(
        ["ip", "route", "replace", "blackhole", BENCHMARK_RANGE], capture_output=True, check=False
    )


def release_benchmark_range() -> None:
    """Undo ``hold_benchmark_range`` (the last node to stop does)."""
    subprocess.run(
        ["ip", "route", "del", "blackhole", BENCHMARK_RANGE], capture_output=True, check=False
    )


def bridge_exists(bridge: str) -> bool:
    return Path(f"/sys/class/net/{bridge}").exists()


def delete_bridge(bridge: str) -> None:
    """Deletes the bridge (its veths went with their pods' namespaces)."""
    if bridge_exists(bridge):
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def forget_results(node_id: str, sandbox_ids: list[str]) -> None:
    """containerd 1.6's CNI result caches of this node's network, and the loopback
    network's of its sandboxes (normally removed with each sandbox; not when a
    sandbox's setup failed half-way)."""
    if not CNI_RESULTS.is_dir():
        return
    paths = list(CNI_RESULTS.glob(f"{network_name(node_id)}-*"))
    paths += [CNI_RESULTS / f"cni-loopback-{sandbox}-lo" for sandbox in sandbox_ids]
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def read_ip_forward() -> str:
    try:
        return IP_FORWARD.read_text().strip()
    except OSError:
        return ""


def write_ip_forward(value: str) -> None:
    if value and read_ip_forward() != value:
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text(value + "\n")

"""Real pods for the simulated cluster: a private containerd (CRI) with runc, crun and runsc.

A real-pod node's kubelet starts pods through the Kubernetes CRI against a real
containerd, so what is measured is the runtimes' own start-up, not a profile's
delay. This package is everything under that kubelet:

- containerd.py: ``RealContainerd``, the private containerd, its start, stop and
  the recovery of nodes whose owner died;
- images.py: the pause and workload images, built from static binaries, no registry;
- network.py: the node's CNI bridge network on 198.18.0.0/15, with no uplink;
- cgroups.py: pod cgroups with kubelet-style memory limits, v1 and v2;
- registry.py: the record of live nodes that makes crash cleanup possible;
- wrappers/: shell wrappers that make crun and runsc work under the runc v2 shim.
"""

from .containerd import UNUSABLE_HANDLERS, RealContainerd, clean_leftovers

__all__ = ["UNUSABLE_HANDLERS", "RealContainerd", "clean_leftovers"]

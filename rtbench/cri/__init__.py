"""Generated from proto/rtbench/cri by scripts/gen-proto. Do not edit.

The subset of the Kubernetes CRI (runtime.v1) that the agent asks about pod
sandboxes and the simulated cluster's nodes serve; see the .proto file for what
is kept and why.
"""

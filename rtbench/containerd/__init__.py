"""Generated from proto/rtbench/containerd by scripts/gen-proto. Do not edit.

A subset of containerd's public gRPC API (events, containers, tasks) that the
agent reads; see the .proto files for what is kept and why.
"""

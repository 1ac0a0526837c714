"""The simulated cluster: a stand-in for Kubernetes on machines that have none.

``rtbench-sim`` serves, over real HTTP on loopback, the part of the Kubernetes API
that rtbench and kubectl use. Simulated kubelets start the real workload process
on a unique loopback address after runtime-specific delays, so the whole pipeline
(agent watch and probe, collector, rtctl) runs unchanged against it.
"""

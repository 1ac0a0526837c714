"""The simulated cluster as a process, and a Kubernetes client for it, for the pipeline tests."""

from __future__ import annotations

from tests.simcluster.conftest import sim_process, sim_process_api

__all__ = ["sim_process", "sim_process_api"]

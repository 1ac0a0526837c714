"""Fixtures for the deploy tests: the simulated cluster as the other layers build it.

``sim`` (an in-process SimCluster, 2 nodes, kubeconfig in tmp_path), ``api`` (a
kubernetes-asyncio client for it) and ``http`` come from tests/simcluster/conftest.py;
helm and the schema checks are plain helpers in tests/deploy/helm.py.
"""

from __future__ import annotations

from tests.simcluster.conftest import api, http, sim

__all__ = ["api", "http", "sim"]

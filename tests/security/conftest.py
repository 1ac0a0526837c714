"""Fixtures for the bad-input and security tests: real processes and a test PKI.

- ``collector_process(*args)``: ``collector serve`` as a subprocess (the real CLI,
  its real logging), killed after the test if it is still running; the collector
  tests' fixture, shared here.
- ``pki``: a CA, a server certificate for 127.0.0.1 and a client certificate,
  made with the openssl CLI (scripts/setup installs it; tests/pki.py).
"""

from __future__ import annotations

import pytest

from tests.collector.conftest import collector_process
from tests.pki import Pki, make_pki

__all__ = ["collector_process", "pki"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "rtbench security test CA")

"""Fixtures for the bad-input and security tests: real processes and a test PKI.

- ``collector_serve(*args)``: ``collector serve`` as a subprocess (the real CLI,
  its real logging), killed after the test if it is still running.
- ``pki``: a CA, a server certificate for 127.0.0.1 and a client certificate,
  made here with the openssl CLI (scripts/setup installs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.collector.conftest import CollectorProcess, start_collector
from tests.pki import Pki, make_pki

StartCollector = Callable[..., CollectorProcess]


@pytest.fixture
def collector_serve(tmp_path: Path) -> Iterator[StartCollector]:
    started: list[CollectorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> CollectorProcess:
        proc = start_collector(args, env or {}, tmp_path / f"collector-{len(started)}.stderr")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()
        if proc.process.stdout is not None:
            proc.process.stdout.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "rtbench security test CA")

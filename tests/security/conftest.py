"""Fixtures for the bad-input and security tests: real processes and a test PKI.

- ``collector_serve(*args)``: ``collector serve`` as a subprocess (the real CLI,
  its real logging), killed after the test if it is still running.
- ``pki``: a CA, a server certificate for 127.0.0.1 and a client certificate,
  made here with the openssl CLI (scripts/setup installs it).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector.conftest import CollectorProcess, start_collector

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


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-days", "2", "-subj", "/CN=rtbench security test CA")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
                 "-subj", f"/CN=rtbench {name}")  # fmt: skip
        _openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem",
                 "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                 "-out", d / f"{name}.pem", "-extfile", d / f"{name}.ext")  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")

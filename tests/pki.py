"""A test PKI made with the openssl CLI (scripts/setup installs it): a CA, a server
certificate for 127.0.0.1 and localhost, and a client certificate.

Shared by the collector's TLS tests and the end-to-end security tests, which
each make their own in a temporary directory (``make_pki``), so no key is ever
committed or reused across runs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_pki(d: Path, name: str = "rtbench test CA") -> Pki:
    """EC P-256 keys, valid two days, signed by a CA called ``name``, all under ``d``."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-days", "2", "-subj", f"/CN={name}")  # fmt: skip
    for who, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{who}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", d / f"{who}.key", "-out", d / f"{who}.csr",
                 "-subj", f"/CN=rtbench {who}")  # fmt: skip
        _openssl("x509", "-req", "-in", d / f"{who}.csr", "-CA", d / "ca.pem",
                 "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                 "-out", d / f"{who}.pem", "-extfile", d / f"{who}.ext")  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")

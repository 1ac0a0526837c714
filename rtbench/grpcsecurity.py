"""How a client reaches the collector over gRPC: address rules, bearer token, TLS credentials.

The agent (its uplink) and rtctl (the control API) are both clients of the
collector and must agree on what securing that connection means, or a collector
set up for one would refuse the other in ways nobody can explain:

- the address is ``HOST:PORT`` (IPv6 in brackets); plaintext is only taken for
  granted towards loopback, anything else needs TLS or an explicit opt-in
  (``is_loopback`` decides without a DNS lookup, so settings checks stay free
  of I/O);
- TLS is on exactly when a CA file is given, a client certificate and key make
  it mutual, and a server name overrides the name checked in the certificate;
- the token travels as ``authorization: Bearer <token>`` metadata. A token file
  is read again for every call or stream that asks for metadata: it is usually a
  mounted Kubernetes Secret, which the kubelet updates in place, and fixing a
  wrong token should not need a restart.

``ChannelSecurity.from_settings`` reads the certificate files once, so an unreadable
file is reported once with its path; everything wrong is a ``CredentialsError``
with one line saying which file and why. Each component maps it into its own
error hierarchy (the agent's StartupError/AuthError, rtctl's CollectorError).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import grpc

__all__ = [
    "ChannelSecurity",
    "ConnectionOptions",
    "CredentialsError",
    "channel_problem",
    "is_hostname",
    "is_loopback",
    "parse_target",
    "read_token_file",
]

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


class CredentialsError(Exception):
    """A TLS file or token file is missing, unreadable or malformed (one line, with the path)."""


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as (host, port); raises ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(f"must be HOST:PORT, got {text!r}")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port 1-65535, got {text!r}")
    return host, int(port)


def is_hostname(text: str) -> bool:
    """Whether ``text`` could name a host in a certificate (letters, digits, dots, dashes)."""
    return bool(_HOSTNAME.match(text))


def is_loopback(host: str) -> bool:
    """Whether ``host`` certainly stays on this machine (no DNS lookup: no I/O here)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConnectionOptions(Protocol):
    """The connection settings the agent and rtctl share, by the same names and flags."""

    @property
    def collector(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    @property
    def token_file(self) -> Path | None: ...
    @property
    def tls_ca(self) -> Path | None: ...
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def tls_key(self) -> Path | None: ...
    @property
    def tls_server_name(self) -> str | None: ...
    @property
    def insecure(self) -> bool: ...


def channel_problem(settings: ConnectionOptions) -> str | None:
    """What is wrong with these connection options, in one line naming the flags; None if
    nothing. The agent and rtctl check the same rules and raise their own usage error."""
    collector, token, token_file = settings.collector, settings.token, settings.token_file
    tls_ca, tls_cert, tls_key = settings.tls_ca, settings.tls_cert, settings.tls_key
    tls_server_name, insecure = settings.tls_server_name, settings.insecure
    try:
        host, _ = parse_target(collector)
    except ValueError as exc:
        return f"--collector {exc}"
    if token is not None and token_file is not None:
        return "give --token or --token-file, not both"
    if token is not None and (
        not token or not token.isprintable() or any(c.isspace() for c in token)
    ):
        return "--token must be non-empty printable text without spaces"
    if (tls_cert is None) != (tls_key is None):
        return "--tls-cert and --tls-key go together"
    if tls_ca is None:
        for name, value in (("--tls-cert", tls_cert), ("--tls-server-name", tls_server_name)):
            if value is not None:
                return f"{name} needs --tls-ca (TLS is on when a CA is given)"
    elif insecure:
        return "--insecure contradicts --tls-ca: choose TLS or plaintext"
    if tls_server_name is not None and not is_hostname(tls_server_name):
        return f"--tls-server-name is not a host name: {tls_server_name!r}"
    if tls_ca is None and not insecure and not is_loopback(host):
        return (
            f"collector {collector} is not on loopback: give --tls-ca for TLS, "
            "or --insecure to send in plaintext"
        )
    return None


def read_token_file(path: Path) -> str:
    """The one token a token file holds; raises OSError, or ValueError when it is not one token."""
    token = path.read_text().strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("must hold one token: non-empty printable text without spaces")
    return token


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise CredentialsError(f"{what} {path} is empty")
    return data


@dataclass(frozen=True)
class ChannelSecurity:
    """Where the collector is, and the credentials and metadata to reach it with."""

    target: str
    credentials: grpc.ChannelCredentials | None
    """None: plaintext (the caller's settings allowed it: loopback or an explicit opt-in)."""
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()
    """grpc channel options every channel opened from here gets (each client has its own)."""

    @classmethod
    def from_settings(
        cls, settings: ConnectionOptions, *, options: Sequence[tuple[str, Any]] = ()
    ) -> Self:
        """Read the TLS files and check the token file (blocking I/O; raises CredentialsError)."""
        token, token_file = settings.token, settings.token_file
        tls_ca, tls_cert, tls_key = settings.tls_ca, settings.tls_cert, settings.tls_key
        credentials = None
        if tls_ca is not None:
            root = _read(tls_ca, "TLS CA file")
            key = cert = None
            if tls_cert is not None and tls_key is not None:
                cert = _read(tls_cert, "TLS client certificate")
                key = _read(tls_key, "TLS client key")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root, private_key=key, certificate_chain=cert
            )
        if token_file is not None:
            try:
                read_token_file(token_file)
            except OSError as exc:
                raise CredentialsError(
                    f"cannot read token file {token_file}: {exc.strerror or exc}"
                ) from exc
            except ValueError as exc:
                raise CredentialsError(f"token file {token_file} {exc}") from exc
        return cls(
            target=settings.collector,
            credentials=credentials,
            server_name=settings.tls_server_name,
            token=token,
            token_file=token_file,
            options=tuple(options),
        )

    @property
    def scheme(self) -> str:
        return "tls" if self.credentials is not None else "plaintext"

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata; a token file is read now (raises CredentialsError)."""
        token = self.token
        if self.token_file is not None:
            try:
                token = await asyncio.to_thread(read_token_file, self.token_file)
            except (OSError, ValueError) as exc:
                raise CredentialsError(f"token file {self.token_file}: {exc}") from exc
        if token is None:
            return ()
        return (("authorization", f"Bearer {token}"),)

    def open_channel(self) -> grpc.aio.Channel:
        """A new channel to the collector with this client's options and credentials."""
        options = list(self.options)
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        if self.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.target, self.credentials, options=options)

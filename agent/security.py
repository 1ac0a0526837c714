"""Who the agent is to the collector: bearer token metadata and TLS channel credentials.

``ChannelSecurity.load`` reads the certificate files once at start, so a missing
or unreadable file stops the agent with one line (exit 1) instead of failing
every reconnect. The token file, by contrast, is read again at every connect:
it is usually a mounted Kubernetes Secret, which the kubelet updates in place,
and an operator fixing a wrong token should not have to restart every agent.

Every session gets a new gRPC channel (``open_channel``): grpc's own channel
reconnect backoff grows to two minutes, which would override the uplink's
backoff and keep an agent away from a collector that is already back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .errors import AuthError, StartupError
from .settings import UplinkSettings

__all__ = ["ChannelSecurity"]

_OPTIONS: list[tuple[str, Any]] = [
    # The uplink resends by itself, with its own backoff; grpc retrying underneath
    # would only blur which attempt a failure belongs to.
    ("grpc.enable_retries", 0),
    # A batch can exceed the 4 MiB default only with a very large --batch-max-events;
    # the collector enforces its own limit and says so.
    ("grpc.max_send_message_length", 64 * 2**20),
]


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise StartupError(f"{what} {path} is empty")
    return data


def _token_from(path: Path) -> str:
    token = path.read_text().strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("must hold one token: non-empty printable text without spaces")
    return token


@dataclass(frozen=True)
class ChannelSecurity:
    """Credentials and metadata for connecting to the collector."""

    target: str
    credentials: grpc.ChannelCredentials | None
    """None: plaintext (settings allowed it: loopback or --insecure)."""
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None

    @classmethod
    def load(cls, settings: UplinkSettings) -> ChannelSecurity:
        """Read TLS files and check the token file (blocking I/O; raises StartupError)."""
        credentials = None
        if settings.tls_ca is not None:
            root = _read(settings.tls_ca, "TLS CA file")
            key = cert = None
            if settings.tls_cert is not None and settings.tls_key is not None:
                cert = _read(settings.tls_cert, "TLS client certificate")
                key = _read(settings.tls_key, "TLS client key")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root, private_key=key, certificate_chain=cert
            )
        if settings.token_file is not None:
            try:
                _token_from(settings.token_file)
            except OSError as exc:
                raise StartupError(
                    f"cannot read token file {settings.token_file}: {exc.strerror or exc}"
                ) from exc
            except ValueError as exc:
                raise StartupError(f"token file {settings.token_file} {exc}") from exc
        return cls(
            target=settings.collector,
            credentials=credentials,
            server_name=settings.tls_server_name,
            token=settings.token,
            token_file=settings.token_file,
        )

    @property
    def scheme(self) -> str:
        return "tls" if self.credentials is not None else "plaintext"

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata for a new stream; the token file is read now (raises AuthError)."""
        token = self.token
        if self.token_file is not None:
            try:
                token = await asyncio.to_thread(_token_from, self.token_file)
            except (OSError, ValueError) as exc:
                raise AuthError(f"token file {self.token_file}: {exc}") from exc
        if token is None:
            return ()
        return (("authorization", f"Bearer {token}"),)

    def open_channel(self) -> grpc.aio.Channel:
        """A fresh channel to the collector (see the module docstring for why fresh)."""
        options = list(_OPTIONS)
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        if self.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.target, self.credentials, options=options)

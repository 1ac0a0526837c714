"""Who the agent is to the collector: bearer token metadata and TLS channel credentials.

The mechanics (reading certificates, the token file, opening a channel) are
shared with rtctl in ``rtbench.grpcsecurity``; this module adds what is the
agent's own: the uplink's channel options and the mapping of credential
problems into the agent's errors.

``ChannelSecurity.load`` reads the certificate files once at start, so a missing
or unreadable file stops the agent with one line (exit 1) instead of failing
every reconnect. The token file, by contrast, is read again at every connect:
it is usually a mounted Kubernetes Secret, which the kubelet updates in place,
and an operator fixing a wrong token should not have to restart every agent
(an unreadable token file then is an ``AuthError``, retried slowly).

Every session gets a new gRPC channel (``open_channel``): grpc's own channel
reconnect backoff grows to two minutes, which would override the uplink's
backoff and keep an agent away from a collector that is already back.
"""

from __future__ import annotations

from typing import Any

from rtbench import grpcsecurity

from .errors import AuthError, StartupError
from .settings import UplinkSettings

__all__ = ["ChannelSecurity"]

_OPTIONS: tuple[tuple[str, Any], ...] = (
    # The uplink resends by itself, with its own backoff; grpc retrying underneath
    # would only blur which attempt a failure belongs to.
    ("grpc.enable_retries", 0),
    # A batch can exceed the 4 MiB default only with a very large --batch-max-events;
    # the collector enforces its own limit and says so.
    ("grpc.max_send_message_length", 64 * 2**20),
)


class ChannelSecurity(grpcsecurity.ChannelSecurity):
    """Credentials and metadata for connecting to the collector."""

    @classmethod
    def load(cls, settings: UplinkSettings) -> ChannelSecurity:
        """Read TLS files and check the token file (blocking I/O; raises StartupError)."""
        try:
            return cls.from_settings(settings, options=_OPTIONS)
        except grpcsecurity.CredentialsError as exc:
            raise StartupError(str(exc)) from exc

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata for a new stream; the token file is read now (raises AuthError)."""
        try:
            return await super().metadata()
        except grpcsecurity.CredentialsError as exc:
            raise AuthError(str(exc)) from exc

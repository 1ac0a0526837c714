"""Who may talk to the collector: bearer tokens per service, and TLS.

Agents and rtctl authenticate with ``authorization: Bearer <token>`` metadata;
the two may use separate tokens so a node never holds the key that registers and
finishes runs. The check is one server interceptor keyed on the service name, so
a method added to a service later is covered without remembering to call
anything. The health service stays open: load balancers and probes carry no
token. Tokens are compared in constant time.

TLS: a certificate and key make the port speak TLS; a client CA additionally
requires every client to present a certificate signed by it (mutual TLS).

Files (tokens, certificates) are read here, when the server starts, not while
settings are checked: settings validation does no I/O.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from .errors import ConfigError
from .settings import CollectorSettings

__all__ = [
    "AGENT_SERVICE",
    "CONTROL_SERVICE",
    "TokenInterceptor",
    "Tokens",
    "load_tokens",
    "server_credentials",
]

log = logging.getLogger("collector.security")

AGENT_SERVICE = "rtbench.v1.AgentService"
CONTROL_SERVICE = "rtbench.v1.ControlService"


@dataclass(frozen=True)
class Tokens:
    """The expected bearer tokens; empty = that service is open."""

    agent: str
    control: str


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not value:
        raise ConfigError(f"{what} {path} is empty")
    return value


def load_tokens(settings: CollectorSettings) -> Tokens:
    """The agent and control tokens from flags or files; control defaults to agent."""
    agent = settings.agent_token
    if settings.agent_token_file is not None:
        agent = _read_secret(settings.agent_token_file, "agent token file")
    control = settings.control_token
    if settings.control_token_file is not None:
        control = _read_secret(settings.control_token_file, "control token file")
    return Tokens(agent=agent, control=control or agent)


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{what} {path} is not PEM")
    return data


def server_credentials(settings: CollectorSettings) -> Any | None:
    """grpc.ServerCredentials for TLS (mutual when a client CA is set), or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = _read_pem(settings.tls_cert, "TLS certificate")
    key = _read_pem(settings.tls_key, "TLS key")
    client_ca = (
        _read_pem(settings.tls_client_ca, "TLS client CA")
        if settings.tls_client_ca is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    scheme, _, token = presented.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


_Continuation = Callable[[Any], Awaitable[Any]]


# grpc ships no type information, so the base class is Any to mypy.
class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses agent and control calls without the right bearer token (UNAUTHENTICATED)."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self.refused = 0

    def _expected(self, method: str) -> str:
        service = method.lstrip("/").partition("/")[0]
        if service == AGENT_SERVICE:
            return self._tokens.agent
        if service == CONTROL_SERVICE:
            return self._tokens.control
        return ""

    async def intercept_service(self, continuation: _Continuation, details: Any) -> Any:
        expected = self._expected(details.method)
        if not expected:
            return await continuation(details)
        presented: str | None = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode(errors="replace")
                break
        if _matches(presented, expected):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None
        self.refused += 1
        reason = "missing bearer token" if presented is None else "wrong bearer token"
        if self.refused <= 10 or self.refused % 1000 == 0:
            log.warning("refused %s: %s (%d refused so far)", details.method, reason, self.refused)
        return _refusal(handler, f"{reason} for {details.method.lstrip('/').partition('/')[0]}")


def _refusal(handler: Any, message: str) -> Any:
    """A handler of the same shape as ``handler`` that only answers UNAUTHENTICATED."""

    async def refuse(_request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)

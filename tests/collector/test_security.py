"""Bearer tokens per service and TLS (a CA the test makes with the openssl CLI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from collector.app import Collector
from collector.errors import ConfigError
from collector.settings import CollectorSettings
from rtbench.v1 import control_pb2, control_pb2_grpc
from tests.collector.agent_client import StreamEnded, TestAgent, make_batch, metadata
from tests.collector.conftest import running
from tests.pki import Pki, make_pki

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def guarded(settings: CollectorSettings) -> AsyncIterator[Collector]:
    async with running(settings, agent_token="agent-secret", control_token="control-secret") as c:
        yield c


async def list_runs(address: str, token: str | None, credentials: object = None) -> grpc.StatusCode:
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        try:
            await stub.ListRuns(control_pb2.ListRunsRequest(), metadata=metadata(token), timeout=30)
        except grpc.aio.AioRpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK


async def agent_status(address: str, token: str | None) -> grpc.StatusCode:
    """The status an agent stream ends with (OK when its batch was acknowledged).

    grpcio's asyncio client can report INTERNAL "Internal error from Core" instead
    of the server's status when a write races the server ending the stream
    (grpc/grpc#36066): that is the client library's report, not the collector's
    answer, so such an attempt is made again.
    """
    for _ in range(5):
        agent = TestAgent(address, token=token)
        try:
            await agent.connect()
            await agent.send_all([make_batch(1, 3)])
            return grpc.StatusCode.OK
        except StreamEnded as ended:
            code: grpc.StatusCode = ended.code
            if code == grpc.StatusCode.INTERNAL and "Internal error from Core" in ended.details:
                continue
            return code
        finally:
            await agent.close()
    raise AssertionError("every attempt ended in the client library's INTERNAL error")


async def test_tokens_per_service(guarded: Collector) -> None:
    address = guarded.address
    assert await agent_status(address, "agent-secret") == grpc.StatusCode.OK
    assert await agent_status(address, "wrong") == UNAUTHENTICATED
    assert await agent_status(address, None) == UNAUTHENTICATED
    # A node's token does not drive runs, and rtctl's does not send batches.
    assert await agent_status(address, "control-secret") == UNAUTHENTICATED
    assert await list_runs(address, "agent-secret") == UNAUTHENTICATED
    assert await list_runs(address, None) == UNAUTHENTICATED
    assert await list_runs(address, "control-secret") == grpc.StatusCode.OK
    async with grpc.aio.insecure_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_unauthenticated_details_and_scheme(guarded: Collector) -> None:
    async with grpc.aio.insecure_channel(guarded.address) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListRuns(
                control_pb2.ListRunsRequest(), metadata=(("authorization", "Basic control-secret"),)
            )
        assert raised.value.code() == UNAUTHENTICATED
        assert raised.value.details() == "wrong bearer token for rtbench.v1.ControlService"


async def test_token_files_and_control_defaults_to_agent_token(
    settings: CollectorSettings, tmp_path: Path
) -> None:
    (tmp_path / "agent.token").write_text("from-a-file\n")
    async with running(settings, agent_token_file=tmp_path / "agent.token") as c:
        assert await agent_status(c.address, "from-a-file") == grpc.StatusCode.OK
        assert await list_runs(c.address, "from-a-file") == grpc.StatusCode.OK
        assert await list_runs(c.address, "other") == UNAUTHENTICATED


async def test_unreadable_secrets_refuse_to_start(
    settings: CollectorSettings, tmp_path: Path, pki: Pki
) -> None:
    (tmp_path / "empty.token").write_text("\n")
    cases = [
        ({"agent_token_file": tmp_path / "missing.token"}, "cannot read agent token file"),
        ({"control_token_file": tmp_path / "empty.token"}, "is empty"),
        ({"tls_cert": tmp_path / "empty.token", "tls_key": pki.server_key}, "is not PEM"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            async with running(settings, **overrides):
                pass
    assert not settings.journal.exists()  # refused before the journal was touched


async def test_tls(settings: CollectorSettings, pki: Pki) -> None:
    async with running(settings, tls_cert=pki.server_cert, tls_key=pki.server_key) as c:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        assert await list_runs(c.address, None, creds) == grpc.StatusCode.OK
        agent = TestAgent(c.address, credentials=creds)
        try:
            await agent.connect()
            await agent.send_all([make_batch(1, 5)])
        finally:
            await agent.close()
        # Plaintext against the TLS port gets nowhere.
        assert await list_runs(c.address, None) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(
    settings: CollectorSettings, pki: Pki
) -> None:
    async with running(
        settings, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
    ) as c:
        ca = pki.ca.read_bytes()
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        assert await list_runs(c.address, None, anonymous) == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        assert await list_runs(c.address, None, with_cert) == grpc.StatusCode.OK

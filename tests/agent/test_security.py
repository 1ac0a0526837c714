"""Token and TLS between the uplink and a real gRPC collector on loopback.

The certificates come from the ``openssl`` command line (installed by
scripts/setup): a CA, a server certificate for 127.0.0.1 / collector.test, a
client certificate, and a second CA that signed nothing the server uses.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import AuthError, OperatorError, StartupError, TlsError, UplinkError
from agent.security import ChannelSecurity
from tests.agent.fake_collector import FakeCollector, ServerTls
from tests.agent.harness import record, record_ids, running_uplink, uplink_settings, wait_for


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server(self, *, require_client: bool = False) -> ServerTls:
        return ServerTls(
            cert=self.server_cert.read_bytes(),
            key=self.server_key.read_bytes(),
            client_ca=self.ca.read_bytes() if require_client else None,
        )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=rtbench test {name}",
        cwd=directory,
    )  # fmt: skip


def _issue(directory: Path, name: str, usage: str, alt_names: str) -> None:
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={alt_names}\nextendedKeyUsage={usage}\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    _new_ca(directory, "ca")
    _new_ca(directory, "other-ca")
    _issue(directory, "server", "serverAuth", "IP:127.0.0.1,DNS:localhost,DNS:collector.test")
    _issue(directory, "client", "clientAuth", "DNS:agent.test")
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


async def test_right_token_is_accepted(tmp_path: Path) -> None:
    async with FakeCollector(token="s3cret") as fake:
        settings = uplink_settings(fake.address, tmp_path, token="s3cret")
        async with running_uplink(settings) as stack:
            for i in range(20):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: fake.event_count() == 20, what="records")
        assert fake.rejected_tokens == 0


async def test_wrong_token_is_reported_clearly_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.sending")
    token_file = tmp_path / "token"
    token_file.write_text("wrong\n")
    async with FakeCollector(token="s3cret") as fake:
        settings = uplink_settings(fake.address, tmp_path / "state", token_file=token_file)
        async with running_uplink(settings) as stack:
            for i in range(20):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: stack.uplink.counters.auth_failures >= 2, what="two refusals")
            error = stack.uplink.last_error
            assert isinstance(error, AuthError)
            assert "refused our token" in str(error) and "UNAUTHENTICATED" in str(error)
            assert not fake.committed and stack.spool.unacked > 0
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, "one clear line, not one per retry"
            assert "refused our token" in errors[0].getMessage()
            # The operator fixes the mounted token: picked up at the next retry.
            token_file.write_text("s3cret\n")
            await wait_for(lambda: fake.event_count() == 20, what="records after the fix")
            assert stack.uplink.last_error is None
        assert sorted(record_ids(fake.events())) == list(range(20))


async def test_tls_with_ca_and_server_certificate(tmp_path: Path, pki: Pki) -> None:
    async with FakeCollector(tls=pki.server()) as fake:
        settings = uplink_settings(fake.address, tmp_path, tls_ca=pki.ca, token="t")
        assert ChannelSecurity.load(settings).scheme == "tls"
        async with running_uplink(settings) as stack:
            for i in range(20):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: fake.event_count() == 20, what="records over TLS")


async def test_tls_server_name_override(tmp_path: Path, pki: Pki) -> None:
    async with FakeCollector(tls=pki.server()) as fake:
        good = uplink_settings(
            fake.address, tmp_path / "a", tls_ca=pki.ca, tls_server_name="collector.test"
        )
        async with running_uplink(good) as stack:
            await wait_for(lambda: stack.uplink.connected, what="a TLS session")
        bad = uplink_settings(
            fake.address, tmp_path / "b", tls_ca=pki.ca, tls_server_name="elsewhere.test"
        )
        async with running_uplink(bad) as stack:
            await wait_for(lambda: stack.uplink.last_error is not None, what="a failure")
            assert isinstance(stack.uplink.last_error, TlsError)
            assert not stack.uplink.connected


async def test_tls_with_client_certificate(tmp_path: Path, pki: Pki) -> None:
    async with FakeCollector(tls=pki.server(require_client=True)) as fake:
        settings = uplink_settings(
            fake.address,
            tmp_path / "with",
            tls_ca=pki.ca,
            tls_cert=pki.client_cert,
            tls_key=pki.client_key,
        )
        async with running_uplink(settings) as stack:
            stack.batcher.put_event(record(1))
            await wait_for(lambda: fake.event_count() == 1, what="a record over mutual TLS")
        without = uplink_settings(fake.address, tmp_path / "without", tls_ca=pki.ca)
        async with running_uplink(without) as stack:
            stack.batcher.put_event(record(2))
            await wait_for(lambda: stack.uplink.last_error is not None, what="a refusal")
            # The server drops the handshake; the client only sees a closed socket.
            assert isinstance(stack.uplink.last_error, UplinkError)
            assert not stack.uplink.connected
        assert fake.event_count() == 1


async def test_wrong_ca_fails_with_a_clear_tls_error(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agent.sending")
    async with FakeCollector(tls=pki.server()) as fake:
        settings = uplink_settings(fake.address, tmp_path, tls_ca=pki.other_ca)
        async with running_uplink(settings) as stack:
            stack.batcher.put_event(record(1))
            await wait_for(lambda: stack.uplink.last_error is not None, what="a failure")
            error = stack.uplink.last_error
            assert isinstance(error, TlsError) and isinstance(error, OperatorError)
            assert str(error).startswith(f"TLS handshake with collector {fake.address} failed")
            assert not stack.uplink.connected and not fake.committed
        assert any("TLS handshake" in r.getMessage() for r in caplog.records)


def test_unreadable_tls_files_stop_the_start(tmp_path: Path, pki: Pki) -> None:
    settings = uplink_settings("127.0.0.1:1", tmp_path, tls_ca=tmp_path / "missing.pem")
    with pytest.raises(StartupError, match="cannot read TLS CA file"):
        ChannelSecurity.load(settings)
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    with pytest.raises(StartupError, match="token file"):
        ChannelSecurity.load(uplink_settings("127.0.0.1:1", tmp_path, token_file=empty))

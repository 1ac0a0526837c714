"""rtctl's collector client against a real ``collector serve`` process on loopback.

Every control call round-trips through real gRPC; the failures a user meets
(nothing listening, a wrong or missing token, an unknown run, a run id used
twice, TLS) come back as the rtctl error type with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtbench.influxd import free_port
from rtbench.v1 import control_pb2
from rtctl.control import Collector
from rtctl.errors import (
    CollectorAuthError,
    CollectorError,
    CollectorUnreachable,
    RunExists,
    UnknownRun,
)
from rtctl.settings import ConnectionSettings
from tests.agent.test_security import Pki, pki  # noqa: F401 (pki is a fixture)
from tests.collector.conftest import CollectorProcess, start_collector
from tests.conftest import wait_until

TOKEN = "ctl-s3cret"


def _stop(proc: CollectorProcess) -> None:
    if proc.process.poll() is None:
        assert proc.terminate() == 0, proc.stderr()
    if proc.process.stdout is not None:
        proc.process.stdout.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A journal-only collector whose control API wants TOKEN."""
    args = ["--listen", "127.0.0.1:0", "--journal", str(tmp_path / "journal.sqlite")]
    proc = start_collector([*args, "--control-token", TOKEN], {}, tmp_path / "collector.err")
    yield proc
    _stop(proc)


def connect(address: str, **overrides: object) -> Collector:
    return Collector.connect(ConnectionSettings(collector=address, **overrides))  # type: ignore[arg-type]


def spec(run_id: str, replicas: int = 2) -> control_pb2.RunSpec:
    return control_pb2.RunSpec(
        run_id=run_id, test_id="ctl", runtime_class="runc", variant="runc", replicas=replicas,
        environment={"cluster_type": "test"},
    )  # fmt: skip


async def test_a_run_goes_through_the_whole_control_api(collector: CollectorProcess) -> None:
    async with connect(collector.listen, token=TOKEN) as client:
        clock = await client.sync_clock(exchanges=5)
        # Same machine, same clock: the true offset is 0, and NTP's bound holds for it.
        assert clock.samples == 5 and client.clock == clock
        assert abs(clock.offset_ns) <= clock.uncertainty_ns
        assert 0 < clock.uncertainty_ns < 1_000_000_000

        assert await client.register_run(spec("ctl-1")) == "ctl-1"
        created = await client.record_create("ctl-1", 10**18, 10**18 + 2_000_000, clock)
        assert created == 10**18 + clock.offset_ns

        seen: list[control_pb2.Progress] = []

        async def follow() -> None:
            async for message in client.watch_progress("ctl-1"):
                seen.append(message)

        follower = asyncio.create_task(follow(), name="follow")
        await wait_until(lambda: seen, within=30, what="a first progress message")
        assert seen[0].run_id == "ctl-1" and seen[0].replicas == 2
        await client.finish_run("ctl-1", control_pb2.RUN_STATE_ABORTED, "test says stop")
        await asyncio.wait_for(follower, 30)  # the stream ends with the run
        assert seen[-1].state == control_pb2.RUN_STATE_ABORTED

        summary = await client.summary("ctl-1", include_pods=True)
        assert summary.state == control_pb2.RUN_STATE_ABORTED
        assert summary.message == "test says stop"
        assert summary.created_ns == created
        assert summary.spec.environment["cluster_type"] == "test"
        assert summary.rtctl_clock.offset_ns == clock.offset_ns

        await client.register_run(spec("ctl-2"))
        listed = await client.runs(test_id="ctl")
        assert [r.spec.run_id for r in listed] == ["ctl-1", "ctl-2"]
        assert await client.runs(test_id="other") == []
        assert await client.agents() == []


async def test_early_exit_from_the_progress_stream_cancels_it(
    collector: CollectorProcess,
) -> None:
    async with connect(collector.listen, token=TOKEN) as client:
        await client.register_run(spec("early"))
        async with contextlib.aclosing(client.watch_progress("early")) as stream:
            async for message in stream:
                assert message.run_id == "early"
                break
        # The connection is still good for other calls.
        assert [r.spec.run_id for r in await client.runs()] == ["early"]


async def test_collector_errors_are_typed_and_say_what_happened(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    address = collector.listen
    async with connect(address, token=TOKEN) as client:
        await client.register_run(spec("twice"))
        with pytest.raises(RunExists, match="twice"):
            await client.register_run(spec("twice"))
        with pytest.raises(UnknownRun, match=f"collector {address}: .*nope"):
            await client.summary("nope")
        with pytest.raises(UnknownRun):
            await client.finish_run("nope", control_pb2.RUN_STATE_FAILED)
        with pytest.raises(UnknownRun):
            async for _ in client.watch_progress("nope"):
                pass
        with pytest.raises(CollectorError, match="does not finish a run"):
            await client.finish_run("twice", control_pb2.RUN_STATE_RUNNING)

    async with connect(address, token="wrong") as client:
        with pytest.raises(CollectorAuthError, match=f"collector {address} refused our token"):
            await client.runs()
    async with connect(address) as client:
        with pytest.raises(CollectorAuthError, match="missing bearer token"):
            await client.sync_clock()

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with connect(address, token_file=token_file) as client:
        assert await client.runs() != []
        token_file.write_text("rotated\n")  # read again for every call
        with pytest.raises(CollectorAuthError):
            await client.runs()

    with pytest.raises(CollectorError, match="cannot read token file"):
        async with connect(address, token_file=tmp_path / "missing"):
            pass


async def test_nothing_listening_is_unreachable_with_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    async with connect(address, rpc_timeout_s=5.0) as client:
        with pytest.raises(CollectorUnreachable, match=f"collector {address} is unreachable"):
            await client.agents()


async def test_control_api_over_tls_with_a_client_certificate(
    tmp_path: Path,
    pki: Pki,  # noqa: F811 (the imported fixture)
) -> None:
    args = ["--listen", "127.0.0.1:0", "--journal", str(tmp_path / "journal.sqlite")]
    args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args += ["--tls-client-ca", str(pki.ca), "--control-token", TOKEN]
    proc = start_collector(args, {}, tmp_path / "collector.err")
    try:
        port = proc.listen.rpartition(":")[2]
        client_files = {"tls_cert": pki.client_cert, "tls_key": pki.client_key}
        async with connect(
            f"localhost:{port}", token=TOKEN, tls_ca=pki.ca, **client_files
        ) as client:
            assert (await client.sync_clock(exchanges=2)).samples == 2
        # The certificate is for collector.test too: checked when dialling an address.
        async with connect(
            proc.listen,
            token=TOKEN,
            tls_ca=pki.ca,
            tls_server_name="collector.test",
            **client_files,
        ) as client:
            assert await client.runs() == []
        async with connect(
            proc.listen, token=TOKEN, tls_ca=pki.other_ca, rpc_timeout_s=10.0, **client_files
        ) as client:
            with pytest.raises(CollectorUnreachable, match="TLS handshake"):
                await client.runs()
    finally:
        _stop(proc)

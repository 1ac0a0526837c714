"""TLS end to end: every hop to the collector over mutual TLS with a CA the test made.

The stack (simulated cluster, ``collector serve``, one ``agent run`` per node) runs
with the collector serving a certificate of the test CA (``pki`` fixture) and
requiring client certificates of that CA; the agents and ``rtctl`` present the
test's client certificate and trust only the test CA. A real ``rtctl start-run``
and ``rtctl report`` go through it, and the run must come back complete.

On the same port, what must not get in: a plaintext gRPC client, a TLS client
without a certificate, and one whose certificate comes from another CA. An agent
that trusts the wrong CA says so in one clear line in its log, keeps running
(an operator can fix the file) and never connects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from rtbench.v1 import control_pb2, control_pb2_grpc
from rtctl.localstack import LocalStack, StackSettings
from rtctl.settings import ConnectionSettings
from tests.pki import Pki, make_pki
from tests.security.extra_agent import extra_agent

BIN = Path(sys.executable).parent
REPLICAS = 4
LIVE_PHASES = ("scheduled", "running", "first_response", "ready")
"""Phases every pod of a successful run reaches (names as ``rtctl --format json`` gives)."""


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA, and a client certificate it signed: valid, but not ours."""
    return make_pki(tmp_path_factory.mktemp("other-ca"), "some other CA")


def list_runs(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """How ListRuns ends on a fresh channel with ``credentials`` (None: plaintext)."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        try:
            stub.ListRuns(control_pb2.ListRunsRequest(), timeout=30)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def agent_ids(address: str, credentials: grpc.ChannelCredentials) -> dict[str, bool]:
    """Every agent the collector knows: agent id → connected."""
    with grpc.secure_channel(address, credentials) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        agents = stub.ListAgents(control_pb2.ListAgentsRequest(), timeout=30).agents
    return {a.agent_id: a.connected for a in agents}


def rtctl(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    return subprocess.run(
        [str(BIN / "rtctl"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, **stack.rtctl_env()},
        cwd=stack.settings.root,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_for_line(log: Path, text: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in {log} after {within:g} s:\n{log.read_text()}")
        time.sleep(0.2)


def test_mutual_tls_end_to_end(
    tmp_path: Path, pki: Pki, other_ca: Pki, workload_binary: Path
) -> None:
    client_tls: tuple[str, ...] = ("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert))
    client_tls += ("--tls-key", str(pki.client_key))
    server_tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    settings = StackSettings(
        root=tmp_path / "stack",
        nodes=2,
        seed=9,
        workload=workload_binary,
        pleg_period=0.1,
        collector_args=(*server_tls, "--tls-client-ca", str(pki.ca)),
        agent_args=client_tls,
        control=ConnectionSettings(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key),
    )
    ca = pki.ca.read_bytes()
    ours = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    with LocalStack(settings) as stack:  # returns once every agent is connected over TLS
        address = stack.collector_address
        assert "(tls," in stack.logs["agent-sim-node-1"].read_text()
        run = rtctl(
            stack, "start-run", "--runtime-class", "runc", "--replicas", str(REPLICAS),
            "--settle", "0", "--timeout", "120", "--run-id", "tls-run", "--format", "json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        report = rtctl(stack, "report", "tls-run", "--format", "json", "--bootstrap", "50")
        assert report.returncode == 0, report.stderr
        assert "tls-run" in report.stdout

        # What must not get in, next to what must (so the refusals are about the certificate).
        assert list_runs(address, ours) == grpc.StatusCode.OK
        assert list_runs(address, None) == grpc.StatusCode.UNAVAILABLE
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        assert list_runs(address, anonymous) == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=other_ca.client_key.read_bytes(),
            certificate_chain=other_ca.client_cert.read_bytes(),
        )
        assert list_runs(address, foreign) == grpc.StatusCode.UNAVAILABLE

        # An agent trusting another CA: one clear line, no connection, still running.
        wrong = ("--tls-ca", other_ca.ca, "--tls-cert", pki.client_cert)
        with extra_agent(
            stack, "wrong-ca", *wrong, "--tls-key", pki.client_key, check_alive=True
        ) as log:
            wait_for_line(log, "TLS handshake with collector")
            # Let it try again (the reconnect path must not log a line per attempt).
            time.sleep(2)
            text = log.read_text()
            errors = [line for line in text.splitlines() if " ERROR " in line]
            assert len(errors) == 1, errors
            assert f"TLS handshake with collector {address} failed" in errors[0]
            # Nobody else (gRPC's core) repeats it, once per reconnect attempt.
            told = [line for line in text.splitlines() if "handshake" in line.lower()]
            assert told == errors, told
            assert "Traceback" not in text and "connected to collector" not in text
            assert "wrong-ca" not in agent_ids(address, ours)

    summary = json.loads(run.stdout)
    assert summary["state"] == "succeeded", summary
    pods = summary["pods"]
    assert len(pods) == REPLICAS
    for pod in pods:
        assert set(LIVE_PHASES) <= set(pod["phases"]), pod
    assert summary["phases"]["first_response"]["reached"] == REPLICAS

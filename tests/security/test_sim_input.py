"""Bad input on the simulated cluster's ports: its Kubernetes API and its containerd sockets.

``rtbench-sim`` runs as a real process with ``--containerd-dir``. Every bad HTTP
request must get a 4xx with a Kubernetes ``Status`` body saying why (never a
5xx, never a hang), every bad gRPC call on a containerd socket its own status,
and afterwards the process is alive and still answers a good list and a good
containerd call.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from rtbench.containerd import containers_pb2, containers_pb2_grpc
from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc
from tests.security.wire import garbage_corpus, raw_exchange, raw_unary
from tests.simcluster.conftest import start_sim_process, stop_sim_process

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JSON = {"Content-Type": "application/json"}


def _deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "corpus"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "c"}},
            "template": {
                "metadata": {"labels": {"app": "c"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
            **spec,
        },
    }


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


# (method, path, body bytes or None, headers); each must be answered 4xx with a message.
HTTP_CORPUS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", PODS, b"{not json", JSON),
    ("POST", DEPLOYMENTS, b"\xff\xfe\x00garbage", JSON),
    ("POST", DEPLOYMENTS, b"[]", JSON),
    ("POST", DEPLOYMENTS, b'"a string"', JSON),
    ("POST", DEPLOYMENTS, b"", JSON),
    ("POST", DEPLOYMENTS, b"{}", JSON),
    ("POST", DEPLOYMENTS, b"1" * 400 + b"e99999", JSON),
    ("POST", DEPLOYMENTS, b"[" * 100_000 + b"]" * 100_000, JSON),
    # Nested just below the parser's limit, where the object is a deployment.
    ("POST", DEPLOYMENTS, json.dumps(_deployment(template={"a": _nested(450)})).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment(strategy=_nested(450))).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment(replicas=-1)).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment(replicas=2**70)).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment(replicas="many")).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment(selector=None)).encode(), JSON),
    ("POST", DEPLOYMENTS, json.dumps(_deployment()).encode(), {"Content-Type": "text/plain"}),
    ("POST", DEPLOYMENTS, b"\x0a\x02k8s", {"Content-Type": "application/vnd.kubernetes.protobuf"}),
    ("POST", DEPLOYMENTS, b"{" + b" " * (40 << 20) + b"}", JSON),  # 40 MB body
    ("PATCH", DEPLOYMENTS + "/nope", b"{}", {"Content-Type": "application/merge-patch+json"}),
    ("PATCH", DEPLOYMENTS + "/x", b"{}", {"Content-Type": "application/bogus"}),
    ("GET", PODS + "?labelSelector=a%20in%20(", None, {}),
    ("GET", PODS + "?labelSelector=%3D%3D%3D", None, {}),
    ("GET", PODS + "?labelSelector=a%20notin%20b", None, {}),
    ("GET", PODS + "?labelSelector=" + "a," * 20_000, None, {}),
    ("GET", PODS + "?fieldSelector=spec.bogus%3Dx", None, {}),
    ("GET", PODS + "?fieldSelector=%21%21", None, {}),
    ("GET", PODS + "?resourceVersion=abc", None, {}),
    ("GET", PODS + "?resourceVersion=-1", None, {}),
    ("GET", PODS + "?watch=1&resourceVersion=abc", None, {}),
    ("GET", PODS + "?watch=1&resourceVersion=99999999999999999999999", None, {}),
    ("GET", PODS + "?watch=1&timeoutSeconds=soon", None, {}),
    ("GET", PODS + "?watch=maybe", None, {}),
    ("GET", PODS + "?resourceVersion=%C2%B2", None, {}),  # a Unicode digit
    ("GET", "/api/v1/nonsense", None, {}),
    ("GET", "/apis/nope/v9/things", None, {}),
    ("DELETE", "/api/v1/namespaces/default/pods/nope", None, {}),
    ("PUT", "/version", b"{}", JSON),
    ("POST", "/_sim/faults/errors", b"{bad", JSON),
    ("POST", "/_sim/faults/errors", b'{"status": "x", "seconds": -1}', JSON),
    ("POST", "/_sim/faults/errors", b'{"status": 200, "seconds": 1e308}', JSON),
    ("POST", "/_sim/faults/slow", b'{"delay_ms": -5}', JSON),
    ("POST", "/_sim/faults/kill-container", b'{"pod": "nope", "signal": 999}', JSON),
    ("GET", "/_sim/runtime-events?since=yesterday", None, {}),
    ("GET", "/_sim/nodes/nope/meminfo", None, {}),
]


async def test_sim_http_and_containerd_corpus(workload_binary: Path, tmp_path: Path) -> None:
    sockets = tmp_path / "ctr"
    sim = start_sim_process(
        tmp_path, "--workload", str(workload_binary), "--containerd-dir", str(sockets)
    )
    try:
        address = sim.url.removeprefix("http://").rstrip("/")
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(sim.url, timeout=timeout) as http:
            for name, data in garbage_corpus():
                raw_exchange(address, data)
                assert sim.process.poll() is None, f"rtbench-sim died on {name}"
            # A request line and a header far beyond any sane size, then a slow half request.
            raw_exchange(address, b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            raw_exchange(address, b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n")
            raw_exchange(address, b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nContent-Le")
            answers: list[tuple[Any, ...]] = []
            for method, path, body, headers in HTTP_CORPUS:
                payload: io.BytesIO | None = None if body is None else io.BytesIO(body)
                async with http.request(method, path, data=payload, headers=headers) as resp:
                    text = await resp.text(errors="replace")
                    answers.append((len(answers), method, path[:60], resp.status, text[:300]))
                    assert 400 <= resp.status < 500, answers[-1][:4]
                    # aiohttp refuses a request line over 8 KiB itself, in plain text.
                    if resp.content_type == "application/json":
                        assert json.loads(text).get("message"), answers[-1]
                    else:
                        assert "more than" in text, answers[-1]
            # A watch that asks to last for ages is a valid watch: it starts, no overflow.
            async with http.get(PODS + "?watch=1&timeoutSeconds=" + "9" * 30) as resp:
                assert resp.status == 200
            assert sim.process.poll() is None
            async with http.get(PODS) as resp:
                assert resp.status == 200
                assert (await resp.json())["kind"] == "PodList"

        socket = sockets / "sim-node-1.sock"
        for name, data in garbage_corpus():
            raw_exchange(socket, data)
            assert sim.process.poll() is None, f"rtbench-sim died on containerd {name}"
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            ns = (("containerd-namespace", "k8s.io"),)
            code, details = await raw_unary(
                channel, "/containerd.services.containers.v1.Containers/List", b"\xff\xff\x0f", None
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
            assert "unmarshalling" in details, details
            stub = containers_pb2_grpc.ContainersStub(channel)
            try:
                await stub.List(containers_pb2.ListContainersRequest(), timeout=30)
                raise AssertionError("a call without a namespace was answered")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            bad_filter = containers_pb2.ListContainersRequest(filters=['labels."a==(('])
            try:
                await stub.List(bad_filter, metadata=ns, timeout=30)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            try:
                await stub.Get(containers_pb2.GetContainerRequest(id="x" * 1000), metadata=ns)
                raise AssertionError("an unknown container was found")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.List(containers_pb2.ListContainersRequest(), metadata=ns)
            assert listed is not None
            # The CRI calls on the same socket: garbage, absurd ids and selectors.
            code, details = await raw_unary(
                channel, "/runtime.v1.RuntimeService/PodSandboxStatus", b"\xff\xff\x0f", None
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
            runtime = cri_grpc.RuntimeServiceStub(channel)
            try:
                huge = cri.PodSandboxStatusRequest(pod_sandbox_id="x" * 100_000)
                await runtime.PodSandboxStatus(huge, timeout=30)
                raise AssertionError("an unknown sandbox was found")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            selector = cri.ListPodSandboxRequest()
            selector.filter.label_selector.update({f"k{i}" * 50: "v" * 500 for i in range(200)})
            selector.filter.state.state = 7  # type: ignore[assignment]  # no such state
            none = await runtime.ListPodSandbox(selector, timeout=30)
            assert list(none.items) == []
        assert sim.process.poll() is None
    finally:
        code = stop_sim_process(sim.process)
    assert code == 0, sim.stderr()
    # aiohttp logs each request it cannot parse with its traceback (its logger, not
    # ours); any other traceback is a failure of the simulator's own code.
    log = sim.stderr()
    assert log.count("Traceback") == log.count("aiohttp.server: Error handling request"), log
